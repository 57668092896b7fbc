"""Frozen-encoder training, the embedding cache and the lexical component, end to end:
trained for real through `python -m train`, saved, loaded, predicted and served."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from model import load_classifier
from model.core.calibration import apply_calibration
from model.core.lexical import LexicalModel, load_lexical, save_lexical
from tests.conftest import run_cli, tiny_overrides


def write_frames_jsonl(path: Path, n: int = 160, seed: int = 1) -> Path:
    """Multi-label articles: each frame has its own vocabulary, one to three frames each."""
    rng = random.Random(seed)
    words = {"Economic": "tax budget jobs cost market prices wages",
             "Security": "army troops missile border attack defence",
             "Health": "hospital virus doctors vaccine patients care",
             "Legality": "court judge law ruling lawsuit appeal"}
    filler = "the a of and in on said it was for with".split()
    with open(path, "w") as handle:
        for i in range(n):
            frames = rng.sample(sorted(words), rng.randint(1, 3))
            vocab = " ".join(words[f] for f in frames).split()
            tokens = [rng.choice(vocab if rng.random() < 0.4 else filler)
                      for _ in range(rng.randint(20, 160))]
            handle.write(json.dumps({"id": f"f{i}", "text": " ".join(tokens),
                                     "label": frames}) + "\n")
    return path


@pytest.fixture(scope="module")
def frames_data(tmp_path_factory) -> Path:
    return write_frames_jsonl(tmp_path_factory.mktemp("frames") / "frames.jsonl")


def frozen_overrides(encoder, out, data, cache, *extra):
    return tiny_overrides(encoder, out, "tasks.0.name=frames", "tasks.0.type=multi_label",
                          "tasks.0.dataset.format=jsonl", f"tasks.0.dataset.path={data}",
                          "tasks.0.threshold_tuning=global", "training.mode=frozen",
                          f"training.embedding_cache={cache}", *extra)


@pytest.fixture(scope="module")
def frozen_run(tiny_encoder, frames_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("frozen")
    out, cache = root / "run", root / "cache"
    run_cli("-m", "train", "--config", "configs/bbc_topic_finetune.yaml",
            *frozen_overrides(tiny_encoder, out, frames_data, cache, "tasks.0.lexical=true"))
    return out, cache


def test_frozen_training_with_lexical_component_learns_and_saves_it(frozen_run):
    out, _ = frozen_run
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mode"] == "frozen"
    # The words decide the frames, so the lexical component must carry this task.
    assert metrics["tasks"]["frames"]["micro_f1"] >= 0.9
    report = metrics["frozen"]["frames"]
    assert 0.0 < report["lexical_weight"] <= 1.0
    assert report["mixed_cv_score"] >= report["cv_score"]
    assert (out / "model" / "lexical.safetensors").is_file()
    task = json.loads((out / "model" / "config.json").read_text())["tasks"][0]
    assert task["lexical_weight"] == report["lexical_weight"]


def test_loaded_model_mixes_network_and_lexical_probabilities(frozen_run):
    out, _ = frozen_run
    clf = load_classifier(out / "model", precision="fp32")
    task = clf.tasks[0]
    # Word salads like the training articles: a short phrase is out of domain for this
    # model, and there the network answers alone (model/core/domain.py).
    texts = ["the court said the judge and the ruling on the law of a lawsuit was for the "
             "appeal in the tax budget with the cost and the wages of jobs it was said on the "
             "court", "troops at the border said the army and the missile attack on the border "
             "was for the defence of the troops with the army in the attack it was said"]
    encoded = clf.encode(texts)
    served = clf.probabilities(encoded)["frames"]
    calibration, task.calibration = task.calibration, None
    mixed = clf.probabilities(encoded)["frames"]
    weight, task.lexical_weight = task.lexical_weight, None
    network = clf.probabilities(encoded)["frames"]
    task.lexical_weight, task.calibration = weight, calibration
    lexical = clf.lexical["frames"].probabilities([a.text for a in encoded])
    # Each article gets the lexical weight as far as it is typical of the training
    # articles (model/core/domain.py, DomainReference.lexical_trust).
    share = weight * clf.domain.lexical_trust(clf.read(encoded).domain)[:, None]
    np.testing.assert_allclose(mixed, share * lexical + (1 - share) * network, atol=1e-6)
    # What is served is the mix, calibrated (model/core/calibration.py).
    np.testing.assert_allclose(served, apply_calibration(calibration, mixed, task.type),
                               atol=1e-6)
    assert not np.allclose(mixed, network, atol=1e-3)  # the lexical part does count
    prediction = clf.predict(texts[0])
    assert "Legality" in prediction["frames"]["labels"]


def test_predict_cli_and_service_serve_the_mixed_model(frozen_run, tmp_path):
    from tests.conftest import free_port, request

    out, _ = frozen_run
    records = tmp_path / "in.jsonl"
    texts = ["vaccine patients in hospital", "missile attack on the border army"]
    records.write_text("".join(json.dumps({"id": str(i), "text": t}) + "\n"
                               for i, t in enumerate(texts)))
    run_cli("-m", "model.cli", "predict", str(out / "model"), str(records), "-o",
            str(tmp_path / "out.jsonl"), "--precision", "fp32")
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    direct = load_classifier(out / "model", precision="fp32").predict(texts)
    for line, expected in zip(lines, direct):
        assert line["frames"]["scores"] == pytest.approx(expected["frames"]["scores"], abs=1e-5)

    from tests.servers import start_service, stop_service

    port = free_port()
    proc = start_service(out / "model", port, tmp_path / "serve.log", "--precision", "fp32")
    try:
        status, body = request(port, "POST", "/predict",
                               {"articles": [{"id": i, "text": t} for i, t in enumerate(texts)]})
        assert status == 200
        for got, expected in zip(body["predictions"], direct):
            assert got["frames"]["scores"] == pytest.approx(expected["frames"]["scores"],
                                                            abs=1e-5)
    finally:
        stop_service(proc)


@pytest.mark.slow  # 13-20 s: make test-slow (and CI) runs it
def test_embedding_cache_is_reused_and_keyed_by_settings(tiny_encoder, frames_data, frozen_run,
                                                         tmp_path):
    out, cache = frozen_run
    first = json.loads((out / "metrics.json").read_text())["frozen"]["embedding_cache"]
    assert first["misses"] > 0
    files = sorted(p for p in Path(first["folder"]).rglob("*.safetensors"))
    assert len(files) == first["misses"]
    again = tmp_path / "again"
    run_cli("-m", "train", "--config", "configs/bbc_topic_finetune.yaml",
            *frozen_overrides(tiny_encoder, again, frames_data, cache, "tasks.0.lexical=true"))
    second = json.loads((again / "metrics.json").read_text())
    assert second["frozen"]["embedding_cache"] == {**first, "hits": first["misses"],
                                                   "misses": 0}
    assert (json.loads((again / "model" / "config.json").read_text())["tasks"]
            == json.loads((out / "model" / "config.json").read_text())["tasks"])
    # Shorter windows are other embeddings, except for articles that fit one window
    # either way: entries are named by the token windows themselves.
    other = tmp_path / "other"
    run_cli("-m", "train", "--config", "configs/bbc_topic_finetune.yaml",
            *frozen_overrides(tiny_encoder, other, frames_data, cache, "model.max_length=48"))
    third = json.loads((other / "metrics.json").read_text())["frozen"]["embedding_cache"]
    assert third["folder"] == first["folder"]
    assert third["hits"] + third["misses"] == first["misses"]
    assert third["misses"] > first["misses"] // 2
    assert len(list(Path(first["folder"]).rglob("*.safetensors"))) == \
        len(files) + third["misses"]
    assert "lexical_weight" not in json.loads((other / "metrics.json").read_text())[
        "frozen"]["frames"]
    assert not (other / "model" / "lexical.safetensors").exists()


def test_frozen_mode_refuses_pooling_it_cannot_fit(tiny_encoder, frames_data, tmp_path):
    proc = run_cli("-m", "train", "--config", "configs/bbc_topic_finetune.yaml",
                   *frozen_overrides(tiny_encoder, tmp_path / "run", frames_data,
                                     tmp_path / "cache", "model.pooling=max"), check=False)
    assert proc.returncode != 0
    assert "model.pooling mean" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_finetuned_model_gets_a_lexical_component_weighted_on_validation(
        tiny_encoder, frames_data, tmp_path):
    out = tmp_path / "run"
    run_cli("-m", "train", "--config", "configs/bbc_topic_finetune.yaml",
            *tiny_overrides(tiny_encoder, out, "tasks.0.name=frames", "tasks.0.type=multi_label",
                            "tasks.0.dataset.format=jsonl", f"tasks.0.dataset.path={frames_data}",
                            "tasks.0.lexical=true", "training.epochs=1"))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mode"] == "finetune"
    assert metrics["lexical"]["frames"]["lexical_weight"] is not None
    clf = load_classifier(out / "model", precision="fp32")
    assert clf.tasks[0].lexical_weight == metrics["lexical"]["frames"]["lexical_weight"]
    assert metrics["tasks"]["frames"]["micro_f1"] >= 0.8


def test_lexical_arrays_reproduce_scikit_learn(tmp_path):
    texts = ["the court ruled on the appeal", "troops crossed the border", "tax and budget",
             "the judge and the law", "missile attack on troops", "jobs and wages fell"]
    y = np.array([1, 0, 0, 1, 0, 0])
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
    model = LogisticRegression().fit(vectorizer.fit_transform(texts), y)
    lexical = LexicalModel.from_fitted("multi_label", vectorizer, model.coef_, model.intercept_)
    save_lexical(tmp_path, {"frames": lexical})
    loaded = load_lexical(tmp_path)["frames"]
    new = ["a ruling by the court", "border troops", "unseen words only"]
    expected = model.predict_proba(vectorizer.transform(new))[:, 1]
    np.testing.assert_allclose(loaded.probabilities(new)[:, 0], expected, rtol=1e-5)
    assert not list(tmp_path.glob("*.pkl"))


def test_artifact_with_a_missing_lexical_file_is_refused(frozen_run, tmp_path):
    import shutil

    from model.core.artifact import ArtifactError

    out, _ = frozen_run
    copy = tmp_path / "model"
    shutil.copytree(out / "model", copy)
    (copy / "lexical.json").unlink()
    with pytest.raises(ArtifactError, match="lexical"):
        load_classifier(copy, precision="fp32")


def test_frozen_head_is_the_logistic_regression_on_mean_window_embeddings(
        tiny_encoder, frames_data, tmp_path):
    """The head written into the network must reproduce, through the network's own mean
    pooling, a logistic regression fitted on standardised mean window embeddings."""
    from sklearn.preprocessing import StandardScaler

    from train.embedding_cache import EmbeddingCache

    out = tmp_path / "run"
    run_cli("-m", "train", "--config", "configs/bbc_topic_finetune.yaml",
            *frozen_overrides(tiny_encoder, out, frames_data, tmp_path / "cache",
                              "training.frozen_c_grid=[0.1]", "training.precision=fp32"))
    clf = load_classifier(out / "model", precision="fp32")
    task = clf.tasks[0]
    splits = json.loads((out / "splits.json").read_text())["frames"]
    rows = {r["id"]: r for r in map(json.loads, frames_data.read_text().splitlines())}
    fit_ids = splits["train"] + splits["validation"]
    _, windows = EmbeddingCache(clf, tmp_path / "check").windows(
        [rows[i]["text"] for i in fit_ids])
    x = np.stack([w.mean(axis=0) for w in windows])
    scaler = StandardScaler().fit(x)
    test = [rows[i]["text"] for i in splits["test"]]
    encoded, test_windows = EmbeddingCache(clf, tmp_path / "check").windows(test)
    x_test = scaler.transform(np.stack([w.mean(axis=0) for w in test_windows]))
    logits = clf.logits(encoded)["frames"]
    for j, label in enumerate(task.labels):
        y = np.array([label in rows[i]["label"] for i in fit_ids])
        model = LogisticRegression(C=0.1, max_iter=3000).fit(scaler.transform(x), y)
        np.testing.assert_allclose(logits[:, j], model.decision_function(x_test),
                                   rtol=1e-3, atol=1e-3)


def test_single_label_heads_with_two_classes_and_an_absent_one():
    from model.core.tasks import TaskSpec
    from train.linear import CERTAIN, fit_logistic

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5))
    y = (x[:, 0] > 0).astype(int) * 2  # classes 0 and 2; class 1 never occurs
    spec = TaskSpec("topic", "single_label", ["a", "b", "c"])
    fit = fit_logistic(x, y, spec, 1.0, balanced=False)
    probs = fit.probabilities(x, spec.type)
    reference = LogisticRegression(C=1.0, max_iter=3000).fit(x, y).predict_proba(x)
    np.testing.assert_allclose(probs[:, [0, 2]], reference, atol=1e-4)
    assert probs[:, 1].max() < np.exp(-CERTAIN) * 2
    assert (probs.argmax(axis=1) == y).mean() > 0.9
