"""The int8 backend's cache and build, on real OpenVINO/NNCF builds of the tiny trained
model: the cache key follows exactly what the graph is built from (the encoder in memory,
its config, the calibration windows, the library versions) and nothing else, `quiet`
silences the build, a failing build step is named and leaves nothing in the cache, and a
build leaves the caller's network as it was."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from model import load_classifier
from model.core.artifact import load_artifact, load_calibration
from model.runtime.backends import BackendError, build_openvino, load_openvino_encoder
from tests import test_backends
from tests.conftest import run_cli
from tests.test_backends import probabilities
from tests.test_precision import batch_texts

# The fixtures of tests/test_backends.py: a cache of the test's own, a copy of the model.
graph_cache = test_backends.graph_cache
model_copy = test_backends.model_copy

BUILDING = "building the int8 OpenVINO backend"


def graphs(cache) -> list:
    """Every entry of the graph cache, hidden (half-built) ones included."""
    return sorted(cache.iterdir()) if cache.exists() else []


def test_models_differing_only_in_their_heads_share_one_graph(model_copy, graph_cache,
                                                              tmp_path, capsys):
    other = shutil.copytree(model_copy, tmp_path / "other")
    weights = load_file(str(other / "model.safetensors"))
    heads = [k for k in weights if not k.startswith("encoder.")]
    assert heads, "the artifact should have head weights"
    for name in heads:
        weights[name] = weights[name] * 2 + 0.1  # a retrain that changed only the heads
    save_file(weights, str(other / "model.safetensors"))
    texts = batch_texts()
    first = load_classifier(model_copy, backend="openvino").predict(texts)
    assert BUILDING in capsys.readouterr().err
    second = load_classifier(other, backend="openvino").predict(texts)
    assert BUILDING not in capsys.readouterr().err
    assert len(graphs(graph_cache)) == 1
    # The heads still count: same encoder graph, different scores.
    assert np.abs(probabilities(first) - probabilities(second)).max() > 1e-3


def test_an_edited_encoder_config_gets_a_new_graph(model_copy, graph_cache, capsys):
    texts = batch_texts()
    before = load_classifier(model_copy, backend="openvino").predict(texts)
    document = json.loads((model_copy / "config.json").read_text())
    # layer_norm_eps is a constant of the traced graph, not a weight: only the config
    # tells the old graph from the new.
    document["encoder_config"]["layer_norm_eps"] = 0.5
    (model_copy / "config.json").write_text(json.dumps(document))
    capsys.readouterr()
    edited = load_classifier(model_copy, backend="openvino")
    assert BUILDING in capsys.readouterr().err
    assert len(graphs(graph_cache)) == 2
    after = edited.predict(texts)
    fp32 = load_classifier(model_copy, precision="fp32", device="cpu").predict(texts)
    assert np.abs(probabilities(after) - probabilities(fp32)).max() <= 0.05
    assert np.abs(probabilities(after) - probabilities(before)).max() > 1e-4


def test_the_key_follows_the_encoder_in_memory_not_the_files(model_copy, graph_cache):
    network, _, _ = load_artifact(model_copy)
    load_openvino_encoder(model_copy, network, quiet=True)
    with torch.no_grad():  # changed in memory only: the files on disk stay as they were
        name, weight = next((n, p) for n, p in network.encoder.named_parameters()
                            if n.endswith("attention.output.dense.weight"))
        weight.mul_(0.5)
    changed = load_openvino_encoder(model_copy, network, quiet=True)
    assert len(graphs(graph_cache)) == 2, f"{name} changed in memory, not the graph"
    # And the new graph is the changed encoder's.
    window = load_calibration(model_copy)[0]
    ids = torch.tensor([window])
    mask = torch.ones_like(ids)
    with torch.inference_mode():
        ref = network.eval().token_states(ids, mask)
    got = changed.token_states(ids, mask)
    cosine = torch.nn.functional.cosine_similarity(got, ref, dim=-1)
    assert cosine.min() >= 0.99, cosine.min()


@pytest.mark.slow  # 13-20 s: make test-slow (and CI) runs it
def test_quiet_prints_nothing_while_building(model_copy, graph_cache, tmp_path, capfd):
    capfd.readouterr()
    clf = load_classifier(model_copy, backend="openvino", quiet=True)
    assert clf.backend_name == "openvino-int8" and len(graphs(graph_cache)) == 1
    assert capfd.readouterr().err == ""
    # As a user's program sees it, where pytest does not catch warnings: the libraries'
    # progress bars, tracer warnings and log lines are held back too.
    proc = run_cli("-c", "from model import load_classifier; "
                   f"load_classifier({str(model_copy)!r}, backend='openvino', quiet=True)",
                   env={"ARTICLE_CLASSIFIER_CACHE": str(tmp_path / "fresh")})
    assert (tmp_path / "fresh" / "openvino").is_dir()  # it did build, in a cache of its own
    assert (proc.stdout, proc.stderr) == ("", "")


@pytest.mark.parametrize("module, function", [("nncf", "quantize"),
                                              ("openvino", "convert_model")])
def test_a_failing_build_step_is_named_and_leaves_no_folder(model_copy, graph_cache, tmp_path,
                                                            monkeypatch, capsys, module,
                                                            function):
    import importlib

    from model.cli import main

    def fail(*args, **kwargs):
        raise RuntimeError("injected failure")

    monkeypatch.setattr(importlib.import_module(module), function, fail)
    step = f"{module}.{function}"
    clf = load_classifier(model_copy, device="cpu")  # auto: falls back to torch, saying why
    assert clf.backend is None and clf.backend_name.startswith("torch-")
    assert step in clf.backend_reason and "injected failure" in clf.backend_reason
    err = capsys.readouterr().err
    assert "openvino unavailable" in err and step in err
    assert graphs(graph_cache) == []  # no half-built folder left behind
    with pytest.raises(BackendError, match=f"could not be built: .*{step}.*injected failure"):
        load_classifier(model_copy, backend="openvino", quiet=True)
    assert graphs(graph_cache) == []
    # The command line says it in one line and exits 2.
    src = tmp_path / "in.jsonl"
    src.write_text('{"id": 1, "text": "Shares rose on the market."}\n')
    capsys.readouterr()
    code = main(["predict", str(model_copy), str(src), "-o", str(tmp_path / "out.jsonl"),
                 "--backend", "openvino"])
    err = capsys.readouterr().err
    assert code == 2 and "article-classifier: error: the int8 backend could not be built" \
        in err and step in err
    assert "Traceback" not in err
    assert graphs(graph_cache) == []


def test_building_leaves_the_callers_network_as_it_was(model_copy, tmp_path):
    network, _, _ = load_artifact(model_copy)
    network.encoder.to(torch.bfloat16).train()  # a network mid-training, in bf16
    before = {n: p.detach().clone() for n, p in network.encoder.state_dict().items()}
    out = tmp_path / "graph"
    out.mkdir()
    build_openvino(network, load_calibration(model_copy), out)
    assert (out / "encoder.xml").is_file()
    assert {p.dtype for p in network.encoder.parameters()} == {torch.bfloat16}
    assert {p.device.type for p in network.encoder.parameters()} == {"cpu"}
    assert all(m.training for m in network.encoder.modules())
    after = network.encoder.state_dict()
    assert all(torch.equal(before[n], after[n]) for n in before)
