"""The frozen-mode embedding cache (train/embedding_cache.py): a new entry for every setting
the window embeddings depend on, the same entry for every setting they do not.

Defect 11a: the end-to-end test varied only `max_length`. Here each setting is varied on
its own, on classifiers built directly (no training run), and the embeddings themselves
are compared: where they differ, the cache must not hand back the old ones."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer

from model.core.config import ModelConfig
from model.core.network import ArticleClassifierNetwork
from model.core.tasks import TaskSpec
from model.runtime.classifier import ArticleClassifier
from model.runtime.settings import ServingSettings
from tests.conftest import bbc_texts
from train.embedding_cache import EmbeddingCache

TEXTS = bbc_texts(6)
BASE = dict(max_length=32, stride=4, max_chunks=4, pooling="mean", token_pooling="mean",
            text_prefix="", clean_boilerplate=True, dropout=0.0)


def classifier(encoder_dir: Path, precision: str = "fp32", config_changes: dict | None = None,
               **settings) -> ArticleClassifier:
    config = AutoConfig.from_pretrained(encoder_dir)
    for key, value in (config_changes or {}).items():
        setattr(config, key, value)
    encoder = AutoModel.from_pretrained(encoder_dir, config=config, add_pooling_layer=False)
    model = ModelConfig(encoder=str(encoder_dir), **{**BASE, **settings})
    network = ArticleClassifierNetwork(encoder, [TaskSpec("topic", "single_label",
                                                          ["a", "b"])], model)
    return ArticleClassifier(network, AutoTokenizer.from_pretrained(encoder_dir),
                             settings=ServingSettings(precision=precision, device="cpu"))


def embed(clf: ArticleClassifier, root: Path) -> tuple[EmbeddingCache, list[np.ndarray]]:
    cache = EmbeddingCache(clf, root)
    return cache, cache.windows(TEXTS)[1]


@pytest.fixture(scope="module")
def baseline(tiny_encoder, tmp_path_factory):
    root = tmp_path_factory.mktemp("embedding_cache")
    cache, vectors = embed(classifier(tiny_encoder), root)
    assert cache.misses == len(TEXTS) and cache.hits == 0
    again, same = embed(classifier(tiny_encoder), root)
    assert (again.folder, again.hits, again.misses) == (cache.folder, len(TEXTS), 0)
    assert all(np.array_equal(a, b) for a, b in zip(vectors, same))
    settings = json.loads((cache.folder / "settings.json").read_text())
    assert settings["token_pooling"] == "mean" and settings["precision"] == "fp32"
    assert sorted(p.name for p in root.iterdir()) == [cache.folder.name]  # no temp folder
    return root, cache.folder, vectors


def differs(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return any(x.shape != y.shape or not np.allclose(x, y, atol=1e-6) for x, y in zip(a, b))


@pytest.mark.parametrize("change", ["token_pooling", "precision", "weights", "hidden_act",
                                    "layer_norm_eps"])
def test_a_setting_the_embeddings_depend_on_gets_its_own_entry(baseline, tiny_encoder,
                                                               tmp_path, change):
    root, folder, vectors = baseline
    encoder = tiny_encoder
    if change == "weights":  # the same architecture, one weight changed: another encoder
        encoder = tmp_path / "encoder"
        shutil.copytree(tiny_encoder, encoder)
        model = AutoModel.from_pretrained(encoder)
        with torch.no_grad():
            model.embeddings.word_embeddings.weight[:, 0] += 0.5
        model.save_pretrained(encoder)
    clf = classifier(
        encoder, precision="bf16" if change == "precision" else "fp32",
        config_changes={"hidden_act": {"hidden_act": "relu"},
                        "layer_norm_eps": {"layer_norm_eps": 0.5}}.get(change),
        **({"token_pooling": "cls"} if change == "token_pooling" else {}))
    cache, got = embed(clf, root)
    assert differs(got, vectors), "the change does not change the embeddings; a bad test"
    assert cache.folder != folder
    assert (cache.hits, cache.misses) == (0, len(TEXTS))


@pytest.mark.parametrize("change", ["pooling", "dropout", "encoder_folder", "max_chunks"])
def test_a_setting_they_do_not_depend_on_reuses_the_entry(baseline, tiny_encoder, tmp_path,
                                                          change):
    """Window pooling and dropout act after the window embeddings; a copy of the encoder
    in another folder is the same encoder."""
    root, folder, vectors = baseline
    encoder = tiny_encoder
    if change == "encoder_folder":
        encoder = tmp_path / "copy"
        shutil.copytree(tiny_encoder, encoder)
    settings = {"pooling": {"pooling": "max"}, "dropout": {"dropout": 0.3},
                "max_chunks": {"max_chunks": 8}}.get(change, {})
    cache, got = embed(classifier(encoder, **settings), root)
    assert cache.folder == folder
    if change != "max_chunks":  # more windows per long article: their entries are new
        assert (cache.hits, cache.misses) == (len(TEXTS), 0)
        assert not differs(got, vectors)


@pytest.mark.parametrize("change", [{"max_length": 24}, {"text_prefix": "passage: "},
                                    {"clean_boilerplate": False}])
def test_settings_that_change_the_windows_are_new_files_in_the_same_entry(
        baseline, tiny_encoder, change):
    """Entries are named by the token windows themselves, so whatever changes the
    windows (window length, prefix, text cleaning) is a new file, never a stale one."""
    root, folder, vectors = baseline
    clf = classifier(tiny_encoder, **change)
    texts = TEXTS
    if "clean_boilerplate" in change:  # boilerplate that cleaning would have removed
        texts = [t + "\n\nShare this article on Facebook Twitter Email" for t in TEXTS]
    cache = EmbeddingCache(clf, root)
    encoded, got = cache.windows(texts)
    assert cache.folder == folder
    fresh = clf.embed_windows(encoded).numpy()
    assert np.allclose(np.concatenate(got), fresh, atol=1e-5)  # never a stale vector
    assert cache.misses > 0


def test_every_model_setting_is_placed_in_one_of_the_groups_above():
    """A new ModelConfig field must be placed: in the key, in the windows (file names), or
    after the window embeddings (neither), and tested as such."""
    in_key = {"encoder", "token_pooling"}
    in_windows = {"max_length", "stride", "text_prefix", "clean_boilerplate"}
    after_windows = {"pooling", "dropout", "max_chunks", "train_max_chunks",
                     "train_chunk_selection", "early_exit"}
    fields = set(ModelConfig.__dataclass_fields__)
    assert fields == in_key | in_windows | after_windows, sorted(
        fields ^ (in_key | in_windows | after_windows))
