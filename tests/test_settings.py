"""How a loaded model is served is one settings object: a classifier is built, not changed
from outside; old option names still work, with a note; predict() keeps one model per
(artifact, options) and drops only what a replaced artifact made stale."""

from __future__ import annotations

import json
import warnings

import pytest

from model import load_classifier, predict
from model.runtime.loading import _LOADED
from tests.conftest import run_cli

TEXT = "Shares rose as the bank reported profit growth."
TORCH = {"precision": "fp32", "backend": "torch"}


def test_what_is_served_cannot_be_changed_from_outside(keyword_run):
    clf = load_classifier(keyword_run / "model", **TORCH)
    for name, value in (("precision", "bf16"), ("backend", None), ("early_exit", 0.9),
                        ("lexical", {}), ("config", None)):
        with pytest.raises(AttributeError):
            setattr(clf, name, value)
    with pytest.raises(TypeError):
        clf.lexical["topic"] = None  # a read-only view
    with pytest.raises(ValueError, match="cannot move the shared network"):
        clf.with_settings(device="cpu")


def test_with_settings_serves_the_same_network_another_way(keyword_run):
    clf = load_classifier(keyword_run / "model", **TORCH)
    fewer = clf.with_settings(max_chunks=1)
    assert fewer.network is clf.network and fewer.config.max_chunks == 1
    assert clf.config.max_chunks == clf.network.model_config.max_chunks == 8  # untouched
    long_text = " ".join([TEXT] * 200)
    assert fewer.predict(long_text)["chunks"] == 1 < clf.predict(long_text)["chunks"]


def test_old_option_names_still_work_with_a_note(keyword_run, tmp_path):
    with pytest.warns(DeprecationWarning, match="backend="):
        clf = load_classifier(keyword_run / "model", precision="fp32", engine="torch")
    assert clf.backend_name == "torch-fp32"
    with pytest.raises(ValueError, match="disagree"), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        load_classifier(keyword_run / "model", backend="openvino", engine="torch")
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"id": "a", "text": TEXT}) + "\n")
    proc = run_cli("-m", "model.cli", "predict", str(keyword_run / "model"), str(src), "-o",
                   str(tmp_path / "out.jsonl"), "--precision", "fp32",
                   "--encoder-engine", "torch", "--engine", "local")
    assert "--encoder-engine is now --backend" in proc.stderr
    assert "--engine is now --runner" in proc.stderr
    assert "torch-fp32" in proc.stderr and (tmp_path / "out.jsonl").read_text().count("\n") == 1
    assert "--engine" not in run_cli("-m", "model.cli", "predict", "--help").stdout


def test_predict_keeps_one_model_per_option_set(keyword_run):
    """Calls that alternate options reuse the model each option set loaded."""
    _LOADED.clear()
    model = keyword_run / "model"
    predict(TEXT, model=model, **TORCH)
    predict(TEXT, model=model, max_chunks=2, **TORCH)
    held = dict(_LOADED)
    for _ in range(2):
        predict(TEXT, model=model, **TORCH)
        predict(TEXT, model=model, max_chunks=2, **TORCH)
    assert len(_LOADED) == 2
    assert all(_LOADED[key] is clf for key, clf in held.items())
