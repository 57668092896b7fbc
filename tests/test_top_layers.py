"""Top-layer training (`training.mode: top`): cached lower-layer states, the top layers and
heads trained from the probe, cross-fitted and averaged; trained for real, saved, loaded
and predicted."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from model import load_classifier
from model.core.artifact import load_encoder
from tests.conftest import run_cli
from tests.test_frozen_and_lexical import frozen_overrides, write_frames_jsonl


def top_overrides(encoder, out, data, cache, *extra):
    return frozen_overrides(encoder, out, data, cache, "training.mode=top",
                            "training.top.layers=1", "training.top.epochs=2",
                            "training.top.folds=2", "training.top.wise=[0.5,1.0]",
                            "training.top.learning_rate=1e-3",
                            "training.top.head_learning_rate=1e-3", *extra)


@pytest.fixture(scope="module")
def top_run(tiny_encoder, tmp_path_factory):
    root = tmp_path_factory.mktemp("top")
    data = write_frames_jsonl(root / "frames.jsonl", n=120)
    out, cache = root / "run", root / "cache"
    run_cli("-m", "train", "--config", "configs/bbc_topic_finetune.yaml",
            *top_overrides(tiny_encoder, out, data, cache, "tasks.0.lexical=true"))
    return out, cache


def test_top_training_changes_only_the_top_layers_and_reports_its_choices(top_run,
                                                                         tiny_encoder):
    out, _ = top_run
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mode"] == "top"
    top = metrics["frozen"]["top"]
    assert top["layers"] == 1 and top["from_layer"] == 1 and top["folds"] == 2
    assert len(top["epoch_scores"]) == 2 and top["epochs"] in (1, 2)
    assert top["wise_alpha"] in (0.5, 1.0) and set(top["wise_scores"]) == {"0.5", "1.0"}
    assert top["wise_scores"][str(top["wise_alpha"])] == max(top["wise_scores"].values())
    # An ordinary encoder: the lower layer and embeddings as pretrained, the top one not.
    pretrained, _ = load_encoder(str(tiny_encoder))
    served = load_classifier(out / "model", precision="fp32").network.encoder
    before, after = pretrained.state_dict(), served.state_dict()
    lower = [k for k in before if "layer.0." in k or k.startswith("embeddings.")]
    upper = [k for k in before if "layer.1." in k and k.endswith("weight")]
    assert lower and upper
    assert all(torch.equal(before[k], after[k]) for k in lower)
    assert any(not torch.allclose(before[k], after[k]) for k in upper)
    assert metrics["tasks"]["frames"]["micro_f1"] >= 0.9


def test_states_are_cached_once_and_match_the_encoder(top_run, tiny_encoder):
    out, cache = top_run
    folders = [p for p in cache.iterdir() if (p / "settings.json").is_file()]
    settings = [json.loads((p / "settings.json").read_text()) for p in folders]
    assert [s.get("states_after_layer") for s in settings] == [1]
    entries = list(folders[0].glob("*/*.safetensors"))
    splits = json.loads((out / "splits.json").read_text())["frames"]
    # One per training article, shared by the probe, the folds and the domain step.
    assert len(entries) == len(splits["train"]) + len(splits["validation"])
    entry = load_file(str(entries[0]))
    assert entry["states"].dtype == np.float16
    assert entry["states"].shape == (int(entry["lengths"].sum()), 32)


def test_cached_states_are_the_encoders_hidden_states(tiny_encoder, tmp_path):
    """The states after layer 1, run through the top layer as trained, give the encoder's
    own window embeddings; keyed by the layers below, so a tuned top shares them."""
    from model.core.config import ModelConfig
    from model.core.network import ArticleClassifierNetwork
    from model.core.tasks import TaskSpec
    from model.runtime.classifier import ArticleClassifier
    from model.runtime.settings import ServingSettings
    from tests.conftest import bbc_texts
    from train.embedding_cache import EmbeddingCache
    from train.top_layers import states_to_embeddings

    encoder, tokenizer = load_encoder(str(tiny_encoder))
    config = ModelConfig(encoder=str(tiny_encoder), max_length=32, stride=4, max_chunks=4,
                         text_prefix="", dropout=0.0)
    network = ArticleClassifierNetwork(encoder, [TaskSpec("t", "single_label", ["a", "b"])],
                                       config)
    clf = ArticleClassifier(network, tokenizer,
                            settings=ServingSettings(precision="fp32", device="cpu"))
    texts = bbc_texts(5)
    encoded, entries = EmbeddingCache(clf, tmp_path, layer=1).entries(texts)
    whole = clf.embed_windows(encoded).numpy()
    starts = np.cumsum([0] + [len(a.windows) for a in encoded])
    means = np.stack([whole[a:b].mean(0) for a, b in zip(starts[:-1], starts[1:])])
    assert np.allclose(states_to_embeddings(network, entries, 1, "fp32"), means, atol=2e-2)
    with torch.no_grad():  # a changed top layer: same states folder, found, not recomputed
        encoder.encoder.layer[1].output.dense.weight.mul_(1.5)
    again = EmbeddingCache(clf, tmp_path, layer=1)
    again.entries(texts)
    assert (again.hits, again.misses) == (5, 0)
    with torch.no_grad():  # a changed lower layer: a new folder
        encoder.encoder.layer[0].output.dense.weight.mul_(1.5)
    other = EmbeddingCache(clf, tmp_path, layer=1)
    other.entries(texts)
    assert other.folder != again.folder and other.misses == 5


def test_top_mode_refuses_an_encoder_it_cannot_split(tiny_encoder, tmp_path):
    from train.top_layers import encoder_layers

    encoder, _ = load_encoder(str(tiny_encoder))
    assert len(encoder_layers(encoder)) == 2
    encoder.config.model_type = "mpnet"
    with pytest.raises(ValueError, match="BERT-like"):
        encoder_layers(encoder)
