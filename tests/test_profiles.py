"""Profiles: shares corrected for the classifier's errors (model/profiles/), checked
against QuaPy and against simulated groups whose true shares are known."""

from __future__ import annotations

import json

import numpy as np
import pytest

from model.core.heldout import heldout_summary, label_errors
from model.profiles import profile_predictions
from model.profiles.compare import benjamini_hochberg, compare
from model.profiles.quantify import estimate
from model.profiles.reading import period_of
from model.profiles.tally import tally_predictions
from tests.conftest import run_cli

LABELS = ["A", "B"]


def calibrated_articles(rng, n: int, share: float):
    """Articles of a group where a share `share` carry A, and their scores for A, which
    are calibrated at a prior of 0.5: the raw signal is Beta(3, 1.5) for carriers and
    Beta(1.5, 3) for the rest, whose likelihood ratio is (s / (1 - s)) ** 1.5, so
    P(A | s) = sigmoid(1.5 logit s) at equal priors. A group with another share is a
    prior shift, which the adjusted methods correct and the others do not."""
    truth = rng.random(n) < share
    raw = np.where(truth, rng.beta(3, 1.5, n), rng.beta(1.5, 3, n)).clip(1e-4, 1 - 1e-4)
    scores = 1 / (1 + np.exp(-1.5 * np.log(raw / (1 - raw))))
    return scores, truth


def lines_of(scores, source="s", threshold=0.5):
    return [{"source": source, "frames": {"labels": ["A"] if s >= threshold else ["B"],
                                          "scores": {"A": float(s), "B": float(1 - s)}}}
            for s in scores]


def held_out(rng, n=3000):
    scores, truth = calibrated_articles(rng, n, 0.5)
    probs = np.c_[scores, 1 - scores]
    return heldout_summary("multi_label", probs, np.c_[truth, ~truth], probs >= 0.5)


def test_adjusted_and_em_estimates_match_quapy():
    quapy = pytest.importorskip("quapy")
    from quapy.method.aggregative import EMQ

    rng = np.random.default_rng(0)
    heldout = held_out(rng)
    scores, _ = calibrated_articles(rng, 400, 0.8)
    tally = tally_predictions(lines_of(scores), "source", labels=LABELS)
    got = {m: estimate(tally, m, dict(heldout, labels=LABELS), draws=0).rows[0]["share"]
           for m in ("cc", "pcc", "acc", "pacc", "sld")}
    errors = label_errors(heldout, 0)
    cc, pcc = (scores >= 0.5).mean(), scores.mean()
    assert got["cc"] == pytest.approx(cc) and got["pcc"] == pytest.approx(pcc, abs=1e-9)
    adjust = quapy.functional.solve_adjustment_binary
    assert got["acc"] == pytest.approx(adjust(cc, errors.tpr[0], errors.fpr[0]), abs=1e-9)
    assert got["pacc"] == pytest.approx(adjust(pcc, errors.mean_pos[0], errors.mean_neg[0]),
                                        abs=1e-9)
    prior = errors.prior[0]
    expected = EMQ.EM(np.array([1 - prior, prior]), np.c_[1 - scores, scores])[0][1]
    # Ours runs over the tally's score cells (each cell's mean score), QuaPy's over every
    # article: the same fixed point up to the binning.
    assert got["sld"] == pytest.approx(expected, abs=0.01)


def test_corrected_shares_beat_counting_and_their_intervals_hold(tmp_path):
    """Groups with known shares far from the training prior: counting is biased towards
    the threshold's decisions, the corrected estimates are not, and the 95% intervals
    hold the true share of the group's articles about 95% of the time."""
    rng = np.random.default_rng(1)
    heldout = dict(held_out(rng), labels=LABELS)
    errors = {m: [] for m in ("cc", "pcc", "acc", "sld")}
    inside = {m: [] for m in errors}
    for share in (0.1, 0.3, 0.5, 0.7, 0.9) * 8:
        scores, truth = calibrated_articles(rng, 60, share)
        tally = tally_predictions(lines_of(scores), "source", labels=LABELS)
        for method in errors:
            row = estimate(tally, method, heldout, draws=400,
                           seed=int(rng.integers(1 << 30))).rows[0]
            errors[method].append(abs(row["share"] - truth.mean()))
            inside[method].append(row["ci95_low"] <= truth.mean() <= row["ci95_high"])
    mae = {m: np.mean(v) for m, v in errors.items()}
    assert mae["acc"] < 0.8 * mae["cc"] and mae["sld"] < 0.8 * mae["cc"], mae
    for method in ("acc", "sld"):
        assert np.mean(inside[method]) >= 0.85, (method, np.mean(inside[method]))


def test_streaming_tally_keeps_no_line():
    """Memory is the groups' cells: a million-line stream is never held."""
    def stream():
        rng = np.random.default_rng(2)
        for i in range(50_000):
            s = float(rng.random())
            yield {"source": f"s{i % 3}", "frames": {"labels": ["A"] if s > .5 else ["B"],
                                                     "scores": {"A": s, "B": 1 - s}}}
    tally = tally_predictions(stream(), "source", labels=LABELS)
    assert sum(tally.articles.values()) == 50_000 and len(tally.cells) == 3
    counts, _ = tally.cell("s0", "A")
    assert counts.sum() == tally.articles["s0"]


def test_periods_and_undated_lines():
    assert period_of("2019-04-30", "month") == "2019-04"
    assert period_of("2019-04-30T10:00:00Z", "quarter") == "2019-Q2"
    assert period_of("2019-11", "quarter") == "2019-Q4"
    assert period_of("2019", "year") == "2019" and period_of("2019", "month") is None
    assert period_of(None, "year") is None and period_of("April 2019", "year") is None
    lines = [{"source": "a", "date": d, "frames": {"labels": ["A"],
                                                   "scores": {"A": 0.9, "B": 0.1}}}
             for d in ("2019-01-02", "2019-02-10", "2019-02-11", None, "n/a")]
    found = profile_predictions(lines, "source", labels=LABELS, over="month", draws=50)
    assert found.tally.undated == 2
    assert sorted({(r["source"], r["period"], r["articles"]) for r in found.rows}) == [
        ("a", "2019-01", 1), ("a", "2019-02", 2)]


def test_out_of_domain_lines_can_be_dropped_or_counted_apart():
    lines = [{"source": "a", "domain": {"in_domain": flag}, "frames": {
        "labels": ["A"], "scores": {"A": 0.8, "B": 0.2}}} for flag in (True, False, True)]
    keep = profile_predictions(lines, "source", labels=LABELS, draws=0)
    drop = profile_predictions(lines, "source", labels=LABELS, domain="drop", draws=0)
    apart = profile_predictions(lines, "source", labels=LABELS, domain="apart", draws=0)
    assert keep.rows[0]["articles"] == 3 and drop.rows[0]["articles"] == 2
    assert drop.tally.out_of_domain == 1
    assert {r["source"]: r["articles"] for r in apart.rows} == {
        "a": 2, "a (out of domain)": 1}


def test_comparisons_flag_a_real_difference_and_not_noise():
    rng = np.random.default_rng(3)
    lines = []
    for source, share in (("high", 0.8), ("low", 0.2), ("same1", 0.5), ("same2", 0.5)):
        scores, _ = calibrated_articles(rng, 150, share)
        lines += lines_of(scores, source)
    found = profile_predictions(lines, "source", labels=LABELS, draws=1000,
                                keep_replicates=True)
    rows = compare(found.estimates, "source")
    assert len(rows) == 6 * 2
    flagged = {(r["a"], r["b"]) for r in rows if r["flagged"] and r["label"] == "A"}
    assert ("high", "low") in flagged and ("same1", "same2") not in flagged
    for row in rows:
        if row["flagged"]:  # the corrected interval excludes zero
            assert row["fcr_low"] > 0 or row["fcr_high"] < 0
    with pytest.raises(ValueError, match="no group 'nope'"):
        compare(found.estimates, "source", [("high", "nope")])


def test_benjamini_hochberg_q_values():
    q = benjamini_hochberg([0.01, 0.04, 0.03, 0.5])
    # By hand: sorted p 0.01, 0.03, 0.04, 0.5 -> p*m/rank 0.04, 0.06, 0.0533, 0.5 ->
    # running minimum from the top: 0.04, 0.0533, 0.0533, 0.5.
    np.testing.assert_allclose(q, [0.04, 0.16 / 3, 0.16 / 3, 0.5])


def test_methods_needing_error_estimates_say_so():
    lines = lines_of([0.7, 0.2])
    with pytest.raises(ValueError, match="needs the model's held-out error estimates"):
        profile_predictions(lines, "source", labels=LABELS, method="acc")
    unscored = [{"source": "a", "frames": {"labels": ["A"]}}]
    with pytest.raises(ValueError, match="carry no 'frames' scores"):
        profile_predictions(unscored, "source", method="pcc")
    assert profile_predictions(unscored, "source", method="cc", draws=0).rows[0]["share"] == 1


def test_profile_command_over_time_and_compared(keyword_run, tmp_path):
    """The command with the model's error estimates (a tiny model trained for real),
    trends and comparisons."""
    rng = np.random.default_rng(4)
    path = tmp_path / "pred.jsonl"
    labels = json.loads((keyword_run / "model" / "config.json").read_text())["tasks"][0]["labels"]
    with open(path, "w") as handle:
        for i in range(120):
            p = float(rng.random())
            handle.write(json.dumps({
                "source": "ab"[i % 2], "date": f"2020-{1 + i % 3:02d}-15",
                "topic": {"label": labels[int(p < 0.5)], "score": max(p, 1 - p),
                          "probabilities": {labels[0]: 1 - p, labels[1]: p}}}) + "\n")
        handle.write(json.dumps({"source": "a", "topic": {"label": labels[0], "score": 0.9,
                     "probabilities": {labels[0]: 0.9, labels[1]: 0.1}}}) + "\n")
    out = tmp_path / "out"
    proc = run_cli("-m", "model.cli", "profile", str(path), "--by", "source", "--task", "topic",
                   "--model", str(keyword_run / "model"), "--method", "acc", "--over", "month",
                   "--compare", "a", "b", "--draws", "200", "--out", str(out))
    assert "by acc" in proc.stderr and "1 undated lines left out" in proc.stderr
    assert (out / "trends.csv").read_text().count("\n") == 1 + 2 * 3 * len(labels)
    assert (out / "trends" / "a.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "comparisons.csv").read_text().count("\n") == 1 + len(labels)
    bad = run_cli("-m", "model.cli", "profile", str(path), "--by", "source", "--task", "topic",
                  "--compare", "a", "zzz", "--out", str(out), check=False)
    assert bad.returncode == 2 and "no group 'zzz'" in bad.stderr
    bad = run_cli("-m", "model.cli", "profile", str(path), "--by", "source", "--task", "topic",
                  "--method", "sld", "--out", str(out), check=False)
    assert bad.returncode == 2 and "needs the model's held-out error estimates" in bad.stderr


def test_bad_lines_and_broken_stored_estimates_are_named():
    good = {"source": "a", "frames": {"labels": ["A"], "scores": {"A": 0.6, "B": 0.1}}}
    for bad, message in (
            ({"source": "a", "domain": "yes", "frames": good["frames"]}, "`domain` must be"),
            ({"source": "a", "frames": {"labels": ["A"], "scores": {"A": 1.2}}},
             "scores must map labels to numbers in \\[0, 1\\]")):
        with pytest.raises(ValueError, match=f"prediction line 2: .*{message}"):
            profile_predictions([good, bad], "source", labels=LABELS)
    from model.core.calibration import check_calibration
    from model.core.heldout import check_heldout

    heldout = held_out(np.random.default_rng(5))
    check_heldout(heldout, 2)
    for broken in ({**heldout, "articles": 0}, {**heldout, "tp": [10**6, 0]},
                   {k: v for k, v in heldout.items() if k != "fp"}):
        with pytest.raises(ValueError, match="heldout"):
            check_heldout(broken, 2)
    for broken in ({"method": "temperature", "temperature": float("inf")},
                   {"method": "isotonic", "x": [[0.0, 1.0], [0.0]], "y": [[0.0, 1.0], [0.0, 1.0]]},
                   {"method": "platt", "slope": [1.0, "a"], "intercept": [0.0, 0.0]}):
        with pytest.raises(ValueError, match="calibration"):
            check_calibration(broken, 2, "multi_label")
    with pytest.raises(ValueError, match="draws must be"):
        profile_predictions([good], "source", labels=LABELS, draws=-5)
