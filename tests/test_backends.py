"""The int8 OpenVINO backend and adaptive reading on real (tiny) trained models: agreement
with fp32, the graph cache and its rebuild, falling back with a reason, calibration, and
early exit giving whole-article results wherever it does not stop."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
from safetensors.torch import load_file, save_file

from model import load_classifier
from model.core.artifact import CALIBRATION_NAME
from model.core.config import ModelConfig
from model.core.tasks import confident
from model.runtime.backends import BackendError
from tests.conftest import bbc_texts, run_cli
from tests.test_precision import batch_texts


@pytest.fixture()
def graph_cache(tmp_path, monkeypatch):
    """A cache of its own, so a test sees what it builds; and the backend line printed
    anew (it is printed once per process)."""
    import model.runtime.classifier

    cache = tmp_path / "cache"
    monkeypatch.setenv("ARTICLE_CLASSIFIER_CACHE", str(cache))
    monkeypatch.setattr(model.runtime.loading, "_SAID", set())
    return cache / "openvino"


@pytest.fixture()
def model_copy(trained_run, tmp_path):
    return shutil.copytree(trained_run / "model", tmp_path / "model")


def probabilities(outputs, task="topic"):
    return np.array([[o[task]["probabilities"][k] for k in sorted(o[task]["probabilities"])]
                     for o in outputs])


def test_auto_runs_the_int8_backend_close_to_fp32(trained_run, graph_cache, capsys):
    texts = bbc_texts(40)
    exact = load_classifier(trained_run / "model", precision="fp32", device="cpu")
    fast = load_classifier(trained_run / "model", device="cpu")
    assert fast.backend_name == "openvino-int8" and fast.precision == "int8"
    err = capsys.readouterr().err
    assert "building the int8 OpenVINO backend" in err and "encoder runs openvino-int8" in err
    rows = fast.embed_windows(fast.encode(texts)).numpy()
    ref = exact.embed_windows(exact.encode(texts)).numpy()
    cosine = (rows * ref).sum(1) / np.linalg.norm(rows, axis=1) / np.linalg.norm(ref, axis=1)
    assert cosine.min() >= 0.99, cosine.min()  # stated tolerance: window cosine >= 0.99
    a, b = exact.predict(texts), fast.predict(texts)
    assert np.abs(probabilities(a) - probabilities(b)).max() <= 0.05
    assert np.mean([x["topic"]["label"] == y["topic"]["label"] for x, y in zip(a, b)]) >= 0.9
    # Built once: a second load takes it from the cache, silently.
    load_classifier(trained_run / "model", device="cpu", quiet=True)
    assert "building" not in capsys.readouterr().err
    assert len(list(graph_cache.iterdir())) == 1


def test_the_cache_is_rebuilt_when_the_artifact_changes(model_copy, graph_cache, capsys):
    texts = batch_texts()
    before = load_classifier(model_copy, backend="openvino").predict(texts)  # CPU, even on GPUs
    weights = load_file(str(model_copy / "model.safetensors"))
    name = next(k for k in weights if k.endswith("attention.output.dense.weight"))
    weights[name] = weights[name] * 0.5  # a different encoder, as retraining would give
    save_file(weights, str(model_copy / "model.safetensors"))
    capsys.readouterr()
    changed = load_classifier(model_copy, backend="openvino")
    assert "building the int8 OpenVINO backend" in capsys.readouterr().err
    assert len(list(graph_cache.iterdir())) == 2
    after = changed.predict(texts)
    fp32 = load_classifier(model_copy, precision="fp32", device="cpu").predict(texts)
    # The new graph follows the new weights, not the old graph.
    assert np.abs(probabilities(after) - probabilities(fp32)).max() <= 0.05
    assert np.abs(probabilities(after) - probabilities(before)).max() > 1e-4


def test_a_graph_that_cannot_load_falls_back_saying_why(model_copy, graph_cache, capsys):
    (model_copy / CALIBRATION_NAME).unlink()
    clf = load_classifier(model_copy, device="cpu")
    assert clf.backend_name == "torch-" + clf.precision and clf.precision in ("fp32", "bf16")
    err = capsys.readouterr().err
    assert "openvino unavailable" in err and CALIBRATION_NAME in err
    with pytest.raises(BackendError, match="no calibration.safetensors"):
        load_classifier(model_copy, backend="openvino")
    src = model_copy.parent / "in.jsonl"
    src.write_text('{"id": 1, "text": "Shares rose on the market."}\n')
    proc = run_cli("-m", "model.cli", "predict", str(model_copy), str(src), "-o",
                   str(model_copy.parent / "out.jsonl"), "--backend", "openvino",
                   check=False)
    assert proc.returncode == 2 and "calibration" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_broken_cached_graph_is_built_again(model_copy, graph_cache, capsys):
    texts = batch_texts()
    good = load_classifier(model_copy, backend="openvino").predict(texts)
    (xml,) = graph_cache.glob("*/encoder.xml")
    xml.write_text("<net>not a graph")
    capsys.readouterr()
    clf = load_classifier(model_copy, device="cpu")
    assert clf.backend_name == "openvino-int8"
    assert "does not load" in capsys.readouterr().err
    assert probabilities(clf.predict(texts)) == pytest.approx(probabilities(good), abs=1e-6)


def test_a_graph_that_fails_to_build_falls_back_saying_why(model_copy, graph_cache,
                                                              capsys):
    graph_cache.parent.mkdir(parents=True)
    graph_cache.write_text("a file where the cache folder should be")
    clf = load_classifier(model_copy, device="cpu")
    assert clf.backend is None
    assert "openvino unavailable: cannot write the int8 backend" in capsys.readouterr().err
    with pytest.raises(BackendError, match="ARTICLE_CLASSIFIER_CACHE"):
        load_classifier(model_copy, backend="openvino")


def test_sequence_buckets_give_the_same_states(trained_run, graph_cache):
    """Batches are padded to a multiple of 64 tokens: a window must come out the same
    whichever bucket (compiled graph) it lands in."""
    import torch

    clf = load_classifier(trained_run / "model", backend="openvino")
    window = clf.encode(bbc_texts(1))[0].windows[0][:40]
    ids = torch.tensor([window + [0] * 90])
    mask = torch.tensor([[1] * 40 + [0] * 90])
    short = clf.backend.token_states(ids[:, :40], mask[:, :40])  # the 64-token graph
    long = clf.backend.token_states(ids, mask)                  # the 192-token graph
    assert sorted(clf.backend.requests) == [64, 192]
    assert long[:, :40].numpy() == pytest.approx(short.numpy(), abs=1e-4)


@pytest.mark.slow  # 13-20 s: make test-slow (and CI) runs it
def test_calibrate_gives_an_old_model_the_int8_backend(model_copy, graph_cache, tmp_path):
    (model_copy / CALIBRATION_NAME).unlink()
    src = tmp_path / "articles.txt"
    src.mkdir()
    for i, text in enumerate(bbc_texts(30)):
        (src / f"{i}.txt").write_text(text)
    proc = run_cli("-m", "model.cli", "calibrate", str(model_copy), str(src))
    assert "wrote 30 windows" in proc.stderr
    assert load_classifier(model_copy, device="cpu", quiet=True).backend_name == "openvino-int8"
    few = tmp_path / "few"
    few.mkdir()
    (few / "a.txt").write_text("one article only")
    proc = run_cli("-m", "model.cli", "calibrate", str(model_copy), str(few), check=False)
    assert proc.returncode == 2 and "at least 16" in proc.stderr


def test_backend_choices_are_checked(trained_run):
    with pytest.raises(ValueError, match="backend must be one of"):
        load_classifier(trained_run / "model", backend="onnx")
    with pytest.raises(BackendError, match="int8 runs on the openvino backend"):
        load_classifier(trained_run / "model", backend="torch", precision="int8")
    with pytest.raises(BackendError, match="runs int8, not fp32"):
        load_classifier(trained_run / "model", backend="openvino", precision="fp32")
    assert load_classifier(trained_run / "model", precision="fp32").backend is None


# -- adaptive reading --------------------------------------------------------------------
def long_articles():
    """Articles of several windows of the tiny keyword model (64 tokens each), some clearly
    about one class from the start, some mixed."""
    sport = "match goal striker league coach season win team football cup".split()
    business = "shares market profit bank economy investors growth company price".split()
    rng = np.random.default_rng(0)
    return [" ".join(rng.choice(sport if rng.random() < share else business)
                     for _ in range(int(rng.integers(150, 300))))
            for share in np.linspace(0, 1, 20)]


def test_early_exit_stops_only_where_sure_and_matches_whole_reading_elsewhere(keyword_run):
    texts = long_articles()
    whole = load_classifier(keyword_run / "model", precision="fp32", early_exit=None)
    full = whole.predict(texts)
    # The confidence each article's first window reaches decides where it stops.
    firsts = whole.probabilities([replace(e, windows=e.windows[:1])
                                  for e in whole.encode(texts)])["topic"]
    firsts = firsts[:, np.argsort(whole.tasks[0].labels)]  # as `probabilities` orders them
    level = float(np.median(firsts.max(axis=1)))
    adaptive = load_classifier(keyword_run / "model", precision="fp32", early_exit=level)
    out = adaptive.predict(texts, batch_size=5)
    stopped = firsts.max(axis=1) >= level
    assert 0 < stopped.sum() < len(texts)
    for s, a, b, p in zip(stopped, out, full, firsts):
        if s:
            assert a["chunks"] == 1 and a["truncated"]
            assert probabilities([a])[0] == pytest.approx(p, abs=1e-5)
        else:
            assert a["chunks"] == b["chunks"] > 1
            assert probabilities([a])[0] == pytest.approx(probabilities([b])[0], abs=1e-5)


def test_early_exit_comes_from_the_artifact_and_is_checked(model_copy):
    assert load_classifier(model_copy, precision="fp32").early_exit is None
    document = json.loads((model_copy / "config.json").read_text())
    document["model"]["early_exit"] = 0.9
    (model_copy / "config.json").write_text(json.dumps(document))
    assert load_classifier(model_copy, precision="fp32").early_exit == 0.9
    assert load_classifier(model_copy, precision="fp32", early_exit=None).early_exit is None
    with pytest.raises(ValueError, match="early_exit must be a confidence"):
        load_classifier(model_copy, early_exit=0.3)
    with pytest.raises(ValueError, match="model.early_exit must be a confidence"):
        ModelConfig(early_exit=1.5)


def test_multi_label_confidence_needs_every_label_clear_of_its_threshold():
    from model.core.tasks import TaskSpec

    task = TaskSpec(name="frames", type="multi_label", labels=["a", "b"],
                    thresholds=[0.5, 0.3])
    probs = np.array([[0.95, 0.02], [0.95, 0.2], [0.5, 0.01], [0.92, 0.96], [0.04, 0.01]])
    assert confident(task, probs, 0.9).tolist() == [True, False, False, True, False]
    # With no fallback label, an article clearly without any label is decided too.
    assert confident(task, probs, 0.9, at_least_one=False).tolist()[-1]
