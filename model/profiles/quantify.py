"""Shares corrected for the classifier's errors (quantification), with intervals that
carry those errors, from the tallies of model/profiles/tally.py.

Per group and label, one binary estimate of the share of articles that carry the label:

- `cc`, classify and count: the share the served rule gave the label. Thresholds tuned
  for F1 over-predict common labels, and that bias does not shrink with more articles.
- `pcc`, probabilistic classify and count: the mean calibrated score (the served scores
  are calibrated, model/core/calibration.py). Runs from predictions alone.
- `acc`, adjusted classify and count: (cc - fpr) / (tpr - fpr), with the rates measured on
  held-out training articles and stored in the artifact (model/core/heldout.py).
- `pacc`: the same adjustment of pcc, by the mean scores of held-out positives and negatives.
- `sld`: the EM prior adjustment of Saerens, Latinne and Decaestecker (2002): the
  calibrated scores re-weighted until the share they imply is a fixed point.

(The binary adjustments are QuaPy's `solve_adjustment_binary` and `EMQ.EM`; the tests
check these against QuaPy. They are written over the tallies' score histograms here
because a profile streams, where QuaPy takes every article's score at once.)

The interval is a bootstrap of `draws` replicates: articles are resampled (a multinomial
draw over the tally's cells), the stored error estimates are redrawn (model/core/
heldout.py's `label_errors`), and for the score-based estimates the articles' own labels
are drawn from their calibrated scores, so the interval covers the share of the group's
articles, not only the mean of their scores. Replicates are kept per (group, label) so
that model/profiles/compare.py can difference two groups under the same error draws.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model.core.heldout import LabelErrors, label_errors
from model.profiles.tally import BINS, Tally

METHODS = ("cc", "pcc", "acc", "pacc", "sld")
NEEDS_HELDOUT = ("acc", "pacc", "sld")
# The method `profile` uses unless told otherwise, chosen by measurement (BENCHMARKS.md,
# "Profiles": per-outlet share error and interval coverage of every method).
DEFAULT_METHOD = "pcc"
DRAWS = 1000
MAX_DRAWS = 10_000
Z95 = 1.959963984540054
MIN_SEPARATION = 0.01  # tpr - fpr (or mean_pos - mean_neg) below this cannot be inverted


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """95% Wilson score interval of a proportion k/n (sound for small n and k = 0 or n).
    It counts sampling error only: the classify-and-count interval of earlier releases."""
    if n == 0:
        return 0.0, 0.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _em(counts: np.ndarray, q: np.ndarray, prior: np.ndarray, iterations: int = 200):
    """EM prior adjustment over histogram cells: `counts` (draws x cells) articles per
    cell, `q` (cells) their mean calibrated score, `prior` (draws) the training share.
    Returns the estimated share (draws) and the adjusted posteriors (draws x cells)."""
    n = counts.sum(axis=1)
    prior = np.clip(prior, 1e-6, 1 - 1e-6)
    share = prior.copy()
    post = np.broadcast_to(q, counts.shape)
    for _ in range(iterations):
        up = (share / prior)[:, None] * q
        down = ((1 - share) / (1 - prior))[:, None] * (1 - q)
        post = up / np.maximum(up + down, 1e-12)
        new = (counts * post).sum(axis=1) / n
        if np.max(np.abs(new - share)) < 1e-7:
            share = new
            break
        share = new
    return share, post


def _adjust(estimate, low, high):
    return np.clip((estimate - low) / np.maximum(high - low, MIN_SEPARATION), 0.0, 1.0)


def estimate_cell(counts: np.ndarray, sums: np.ndarray, method: str,
                  errors: LabelErrors | None, rng: np.random.Generator | None = None,
                  draws: int = 0, shift: np.ndarray | float = 0.0) -> np.ndarray:
    """The share of one (group, label) by `method`: one value (draws=0), or `draws`
    bootstrap replicates. `counts`/`sums`: the tally's (2, BINS) cells; `errors`: the
    label's held-out rates (replicates when drawing); `shift`: per replicate, the
    calibration's error in the mean (drawn once per label and shared by every group, so
    it cancels in a difference), added to score-based replicates."""
    flat, total = counts.ravel().astype(float), sums.ravel()
    n = flat.sum()
    q = np.divide(total, flat, out=np.zeros_like(total), where=flat > 0)
    if draws:
        resampled = rng.multinomial(int(n), flat / n, size=draws).astype(float)
    else:
        resampled = flat[None, :]
    given = resampled[:, BINS:].sum(axis=1) / n
    if method == "cc":
        return given if draws else given[0]
    if method == "sld":
        share, post = _em(resampled, q, errors.prior)
    else:
        share = resampled @ q / n
        post = np.broadcast_to(q, resampled.shape)
    if method == "acc":
        out = _adjust(given, errors.fpr, errors.tpr)
    elif method == "pacc":
        out = _adjust(share, errors.mean_neg, errors.mean_pos)
    elif method in ("pcc", "sld"):
        out = share
    else:
        raise ValueError(f"unknown profile method {method!r} (known: {METHODS})")
    if not draws:
        return float(out[0])
    if method in ("pcc", "sld"):
        # Each article carries the label with its (adjusted) probability: the group's
        # share varies around the mean score by the sum of those Bernoulli variances.
        spread = np.sqrt((resampled * post * (1 - post)).sum(axis=1)) / n
        out = out + rng.normal(0.0, 1.0, draws) * spread + shift
    return np.clip(out, 0.0, 1.0)


def calibration_sd(heldout: dict | None, j: int) -> float:
    """Standard error of the calibrated scores' mean against the truth on held-out
    articles: sqrt(Brier / n), from the stored sums (0 without them)."""
    if not heldout:
        return 0.0
    n = heldout["articles"]
    brier = (heldout["score_sumsq_pos"][j] - 2 * heldout["score_sum_pos"][j]
             + heldout["positives"][j] + heldout["score_sumsq_neg"][j]) / max(n, 1)
    return float(np.sqrt(max(brier, 0.0) / max(n, 1)))


@dataclass
class Estimates:
    """A profile's rows and, per (group, label), its bootstrap replicates."""

    rows: list[dict]
    replicates: dict
    method: str


def estimate(tally: Tally, method: str = DEFAULT_METHOD, heldout: dict | None = None,
             draws: int = DRAWS, seed: int = 0, level: float = 0.95,
             keep_replicates: bool = False) -> Estimates:
    """One row per (group, label): articles, the raw count and share the served rule
    gives, the `method`'s share and its bootstrap interval at `level`. `heldout`: the
    task's stored error estimates (required by acc, pacc and sld). `keep_replicates`:
    keep every (group, label)'s replicates, for comparisons."""
    if not 0 <= draws <= MAX_DRAWS:
        raise ValueError(f"draws must be a whole number in [0, {MAX_DRAWS}], got {draws!r}")
    if method not in METHODS:
        raise ValueError(f"unknown profile method {method!r} (known: {', '.join(METHODS)})")
    if method in NEEDS_HELDOUT and not heldout:
        raise ValueError(f"method {method!r} needs the model's held-out error estimates: "
                         "give the model (--model MODEL), or use pcc or cc")
    if method != "cc" and tally.unscored:
        raise ValueError(f"{tally.unscored} prediction lines carry no {tally.task!r} scores; "
                         f"method {method!r} reads them (use cc, or predict again)")
    if heldout and heldout.get("labels") not in (None, tally.labels):
        raise ValueError("the held-out error estimates are of other labels than the "
                         "predictions'")
    rng = np.random.default_rng(seed)
    index = {label: j for j, label in enumerate(heldout.get("labels") or tally.labels)} \
        if heldout else {}
    tail = (1 - level) / 2 * 100
    rows, replicates = [], {}
    for j, label in enumerate(tally.labels):
        k = index.get(label, j)
        point_errors = label_errors(heldout, k) if heldout else None
        drawn = label_errors(heldout, k, draws, rng) if heldout and draws else None
        sd = calibration_sd(heldout, k) if method in ("pcc", "sld") else 0.0
        shift = rng.normal(0.0, sd, draws) if draws else 0.0
        for group in tally.groups():
            counts, sums = tally.cell(group, label)
            n = int(counts.sum())
            share = estimate_cell(counts, sums, method, point_errors)
            rep = estimate_cell(counts, sums, method, drawn, rng, draws, shift) if draws else None
            low, high = (np.percentile(rep, [tail, 100 - tail]) if rep is not None
                         else (share, share))
            name, period = group if isinstance(group, tuple) else (group, None)
            row = {tally.by: name}
            if tally.over:
                row["period"] = period
            given = int(counts[1].sum())
            row.update(label=label, articles=n, count=given, raw_share=given / n,
                       share=float(share), ci95_low=float(min(low, share)),
                       ci95_high=float(max(high, share)), method=method)
            rows.append(row)
            if rep is not None and keep_replicates:
                replicates[(group, label)] = rep.astype(np.float32)
    order = {label: i for i, label in enumerate(tally.labels)}
    rows.sort(key=lambda r: (r[tally.by], r.get("period") or "", order[r["label"]]))
    return Estimates(rows, replicates, method)
