"""Train for real through the CLI, then save, load, predict and re-evaluate."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from model import load_classifier, predict
from model.runtime.loading import _LOADED
from tests.conftest import run_cli, tiny_overrides


def test_run_folder_holds_artifact_metrics_report_and_plot(trained_run):
    for name in ("metrics.json", "report.md", "confusion_matrix.png", "config.yaml",
                 "splits.json", "model/config.json", "model/model.safetensors",
                 "model/README.md", "model/tokenizer.json"):
        assert (trained_run / name).is_file(), name
    metrics = json.loads((trained_run / "metrics.json").read_text())
    topic = metrics["tasks"]["topic"]
    assert set(topic["per_class"]) == {"business", "entertainment", "politics", "sports", "tech"}
    matrix = topic["confusion_matrix"]
    assert sum(sum(row) for row in matrix) == topic["n"] == 23
    # The reported accuracy is the confusion matrix's, and the per-class scores too.
    assert topic["accuracy"] == pytest.approx(sum(matrix[i][i] for i in range(5)) / 23)
    for i, name in enumerate(sorted(topic["per_class"])):
        assert topic["per_class"][name]["support"] == sum(matrix[i])
    assert topic["accuracy"] > 0.2  # above chance on five topics after two epochs
    assert metrics["test_precision"] == "fp32" and "fp32" in metrics["test_by_precision"]
    assert metrics["training_seconds"] > 0
    assert metrics["environment"]["torch"] and metrics["environment"]["cpu_count"] >= 1
    assert (trained_run / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"{topic['accuracy']:.4f}" in (trained_run / "report.md").read_text()
    resolved = yaml.safe_load((trained_run / "config.yaml").read_text())
    assert resolved["data"]["max_samples"] == 150 and resolved["model"]["max_length"] == 64


def test_splits_are_disjoint_and_stratified(trained_run):
    splits = json.loads((trained_run / "splits.json").read_text())["topic"]
    ids = [set(splits[s]) for s in ("train", "validation", "test")]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert sum(map(len, ids)) == 150
    test_topics = {i.split("/")[0] for i in splits["test"]}
    assert len(test_topics) == 5  # every class reaches the test split


def test_model_learns_an_easy_task(keyword_run):
    metrics = json.loads((keyword_run / "metrics.json").read_text())
    assert metrics["tasks"]["topic"]["accuracy"] >= 0.9


def test_load_and_predict_return_the_shape_they_are_given(keyword_run):
    clf = load_classifier(keyword_run / "model")
    one = clf.predict("Shares rose as the bank reported profit growth; investors cheered.")
    assert one["topic"]["label"] == "business"
    assert abs(sum(one["topic"]["probabilities"].values()) - 1.0) < 1e-4
    assert one["topic"]["score"] == max(one["topic"]["probabilities"].values())
    assert one["tokens"] > 5 and one["chunks"] == 1 and one["truncated"] is False
    many = clf.predict(["The striker scored a goal; the team won the league cup match.",
                        "Bank shares rose; investors saw market profit growth."])
    assert isinstance(many, list) and [p["topic"]["label"] for p in many] == ["sport",
                                                                             "business"]


def test_long_article_is_chunked_not_cut(keyword_run):
    clf = load_classifier(keyword_run / "model")
    long_text = " ".join(["the striker scored a goal for the team"] * 60)
    out = clf.predict(long_text)
    assert out["chunks"] > 1 and out["tokens"] > 64
    assert out["topic"]["label"] == "sport"
    huge = clf.predict(long_text * 10)
    assert huge["truncated"] is True and huge["chunks"] == 8 and huge["chunks_total"] > 8


def test_module_predict_caches_the_model(keyword_run):
    _LOADED.clear()
    a = predict("market shares", model=keyword_run / "model")
    b = predict(["market shares"], model=str(keyword_run / "model"))
    assert len(_LOADED) == 1 and a == b[0]


def test_module_predict_reloads_a_model_replaced_at_the_same_path(keyword_run, trained_run,
                                                                 tmp_path):
    """A model retrained into the folder predict() already loaded is the one it uses next,
    and the stale one is dropped from the cache."""
    _LOADED.clear()
    folder, text = tmp_path / "model", "Shares rose as the bank reported profit growth."
    options = {"precision": "fp32", "backend": "torch"}
    shutil.copytree(keyword_run / "model", folder)
    first = predict(text, model=folder, **options)
    assert set(first["topic"]["probabilities"]) == {"business", "sport"}
    # Replaced as training replaces an artifact: a new folder swapped in at the same path.
    shutil.copytree(trained_run / "model", tmp_path / "new")
    shutil.rmtree(folder)
    (tmp_path / "new").rename(folder)
    again = predict(text, model=folder, **options)
    assert again == load_classifier(trained_run / "model", **options).predict(text)
    assert len(again["topic"]["probabilities"]) == 5 and len(_LOADED) == 1


def test_evaluate_reproduces_the_test_metrics(trained_run, tmp_path, tiny_encoder):
    proc = run_cli("-m", "train.evaluate", "--model", str(trained_run / "model"),
                   "--config", str(trained_run / "config.yaml"), "--out", str(tmp_path))
    assert "test topic: accuracy" in proc.stdout
    again = json.loads((tmp_path / "metrics.json").read_text())["tasks"]["topic"]
    first = json.loads((trained_run / "metrics.json").read_text())["tasks"]["topic"]
    assert again["confusion_matrix"] == first["confusion_matrix"]
    assert (tmp_path / "report.md").is_file() and (tmp_path / "confusion_matrix.png").is_file()


def test_evaluate_other_split(trained_run, tmp_path):
    run_cli("-m", "train.evaluate", "--model", str(trained_run / "model"),
            "--config", str(trained_run / "config.yaml"), "--split", "validation",
            "--out", str(tmp_path))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["split"] == "validation" and metrics["tasks"]["topic"]["n"] == 22


def test_evaluate_can_truncate_or_change_pooling(trained_run, tmp_path):
    proc = run_cli("-m", "train.evaluate", "--model", str(trained_run / "model"),
                   "--config", str(trained_run / "config.yaml"), "--max-chunks", "1",
                   "--pooling", "max", "--out", str(tmp_path))
    assert proc.stdout.startswith("test topic: accuracy")
    metrics = json.loads((tmp_path / "metrics.json").read_text())["tasks"]["topic"]
    full = json.loads((trained_run / "metrics.json").read_text())["tasks"]["topic"]
    assert metrics["n"] == full["n"] == 23
    # BBC articles are longer than one 64-token window: now most are marked truncated.
    assert metrics["truncated_articles"] > full["truncated_articles"]


def test_bad_config_fails_with_a_clear_message(tiny_encoder, tmp_path):
    proc = run_cli("-m", "train", "--config", "configs/bbc_topic_finetune.yaml",
                   *tiny_overrides(tiny_encoder, tmp_path, "training.epoch=1"), check=False)
    assert proc.returncode == 2 and "unknown key(s) ['epoch'] in training" in proc.stderr


@pytest.mark.slow
def test_fine_tune_packaged_minilm(tmp_path):
    """The real default encoder, a few steps on real BBC articles."""
    out = tmp_path / "minilm"
    run_cli("-m", "train", "--config", "configs/bbc_topic_finetune.yaml",
            "--set", "data.max_samples=100", "--set", "training.epochs=1",
            "--set", "model.max_length=128", "--set", f"training.output_dir={out}",
            "--set", "model.max_chunks=4")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["tasks"]["topic"]["n"] == 15
    # Five steps from the pretrained encoder already beat chance (0.2) on five topics.
    assert metrics["tasks"]["topic"]["accuracy"] > 0.4
    clf = load_classifier(out / "model")
    assert clf.predict("The striker scored twice in the cup final.")["topic"]["label"] in \
        clf.tasks[0].labels
