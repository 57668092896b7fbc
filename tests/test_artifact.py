"""The artifact folder: self-contained, safetensors only, and refused clearly when broken."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch

from model import ArtifactError, load_classifier


@pytest.fixture()
def artifact_copy(keyword_run, tmp_path):
    dst = tmp_path / "model"
    shutil.copytree(keyword_run / "model", dst)
    return dst


def test_artifact_records_everything_inference_needs(keyword_run):
    doc = json.loads((keyword_run / "model" / "config.json").read_text())
    assert doc["format_version"] == 3
    task = doc["tasks"][0]
    assert {k: task[k] for k in ("name", "type", "labels", "thresholds", "lexical_weight")} == {
        "name": "topic", "type": "single_label", "labels": ["business", "sport"],
        "thresholds": None, "lexical_weight": None}
    # Calibrated on the validation split, with its error counts for profiles.
    assert task["calibration"]["method"] in ("none", "temperature")
    assert task["heldout"]["articles"] == sum(task["heldout"]["positives"]) > 0
    assert doc["model"]["text_prefix"] == "" and doc["model"]["token_pooling"] == "mean"
    assert doc["model"]["max_length"] == 64 and doc["model"]["pooling"] == "mean"
    assert doc["encoder_config"]["hidden_size"] == 32
    assert "accuracy" in doc["metrics"]["test"]["topic"]
    # The reported figures say which path they belong to; the paths `auto` serves on the
    # training machine are measured too: torch's when it is not fp32, and the int8 backend
    # the saved model is served by on a CPU (scored from the saved folder itself).
    assert doc["metrics"]["test_precision"] == "fp32"
    by_precision = doc["metrics"]["test_by_precision"]
    assert by_precision["fp32"]["topic"]["accuracy"] == doc["metrics"]["test"]["topic"]["accuracy"]
    from model.runtime.devices import auto_precision

    on_cpu = doc["metrics"]["test_device"] == "cpu"
    assert set(by_precision) == {"fp32", auto_precision(doc["metrics"]["test_device"]),
                                 *(["openvino-int8"] if on_cpu else [])}
    served = load_classifier(keyword_run / "model", device="cpu", quiet=True)
    assert served.backend_name == "openvino-int8"
    card = (keyword_run / "model" / "README.md").read_text()
    assert "topic" in card and "accuracy" in card and "measured in fp32" in card
    assert "test_by_precision.openvino-int8.topic.accuracy" in card or not on_cpu
    metrics = json.loads((keyword_run / "metrics.json").read_text())
    assert metrics["test_by_precision"] == by_precision
    assert not list((keyword_run / "model").glob("*.bin"))


def test_loaded_copy_predicts_like_the_original(keyword_run, artifact_copy, tmp_path):
    moved = tmp_path / "elsewhere"
    shutil.move(artifact_copy, moved)  # no path back to the encoder or the run is needed
    a = load_classifier(keyword_run / "model").predict("the team won the cup")
    b = load_classifier(moved).predict("the team won the cup")
    assert a == b


def test_missing_or_corrupted_weights(artifact_copy):
    weights = artifact_copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ArtifactError, match="corrupted"):
        load_classifier(artifact_copy)
    weights.unlink()
    with pytest.raises(ArtifactError, match="no model.safetensors"):
        load_classifier(artifact_copy)


def test_newer_format_is_refused(artifact_copy):
    path = artifact_copy / "config.json"
    doc = json.loads(path.read_text())
    doc["format_version"] = 99
    path.write_text(json.dumps(doc))
    with pytest.raises(ArtifactError, match="newer than this library reads"):
        load_classifier(artifact_copy)


def test_pickle_weights_need_an_explicit_flag(artifact_copy):
    clf = load_classifier(artifact_copy, precision="fp32")
    (artifact_copy / "model.safetensors").unlink()
    torch.save(clf.network.state_dict(), artifact_copy / "pytorch_model.bin")
    with pytest.raises(ArtifactError, match="pickle weights are refused"):
        load_classifier(artifact_copy)
    trusted = load_classifier(artifact_copy, precision="fp32", allow_pickle=True)
    assert trusted.predict("goal") == clf.predict("goal")


def test_bad_texts_are_named(keyword_run):
    clf = load_classifier(keyword_run / "model")
    with pytest.raises(TypeError, match="text 1: expected a string, got NoneType"):
        clf.predict(["fine", None])
    with pytest.raises(ValueError, match="text 0: empty text"):
        clf.predict("  \n ")


def test_a_format_1_artifact_still_loads_without_a_prefix(artifact_copy):
    doc = json.loads((artifact_copy / "config.json").read_text())
    doc["format_version"] = 1
    doc["model"].pop("text_prefix")
    for task in doc["tasks"]:
        task.pop("lexical_weight")
    doc["model"]["encoder"] = "e5-small-v2"  # a registry name whose own prefix is "passage: "
    (artifact_copy / "config.json").write_text(json.dumps(doc))
    clf = load_classifier(artifact_copy, precision="fp32")
    assert clf.config.text_prefix == ""
    assert clf.tasks[0].lexical_weight is None
    assert clf.predict("the team won the cup")["topic"]["label"] in ("sport", "business")


def test_a_failed_final_rename_keeps_the_previous_artifact(tiny_encoder, tmp_path,
                                                           fail_rename_into):
    """Defect 10: saving over an artifact whose final rename fails must leave the old
    artifact in place and loadable, with no temporary folder beside it."""
    from model.core.artifact import build_network, load_artifact, save_artifact
    from model.core.config import ModelConfig
    from model.core.tasks import TaskSpec

    config = ModelConfig(encoder=str(tiny_encoder), max_length=32, stride=4, max_chunks=2)
    network, tokenizer = build_network(config, [TaskSpec("topic", "single_label",
                                                         ["a", "b"])])
    path = save_artifact(tmp_path / "model", network, tokenizer, metrics={"run": 1})
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    failed = fail_rename_into(path)  # the swap onto the artifact's name fails once
    with torch.no_grad():
        next(network.parameters()).add_(1.0)
    with pytest.raises(OSError, match="injected"):
        save_artifact(path, network, tokenizer, metrics={"run": 2})
    assert failed
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before
    assert load_artifact(path)[2]["metrics"] == {"run": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_an_artifact_tokenizer_loads_without_a_false_mistral_warning(tmp_path):
    """A fast tokenizer with no class of its own (as multilingual-e5-small's XLM-R one),
    saved beside this project's config.json, loads silently and tokenizes as the
    tokenizer.json itself does."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from model.core.artifact import load_tokenizer

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "<pad>": 3, "привет": 4, "мир": 5, ",": 6}
    # transformers only suspects vocabularies of over 100,000 entries, as XLM-R's.
    vocab.update({f"w{i}": 7 + i for i in range(100_000)})
    raw = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>", pad_token="<pad>",
                            bos_token="<s>", eos_token="</s>").save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"format_version": 3}))
    logger, seen = logging.getLogger("transformers"), []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    logger.addHandler(handler)
    try:
        tokenizer = load_tokenizer(tmp_path)
    finally:
        logger.removeHandler(handler)
    assert not [m for m in seen if "incorrect regex" in m]
    text = "привет , мир zzz"
    assert tokenizer(text, add_special_tokens=False)["input_ids"] == \
        Tokenizer.from_file(str(tmp_path / "tokenizer.json")).encode(text).ids == [4, 6, 5, 0]
