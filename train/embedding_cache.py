"""Window embeddings of a frozen encoder, cached on disk and reused across runs.

A frozen encoder embeds an article the same way every time, so each article's window
embeddings are computed once and kept: one safetensors file per article (no pickle). A file
is named by the article's token windows themselves (which covers the text, its cleaning,
the tokenizer, the prefix and the window settings), inside a folder named by what turns
windows into vectors: the encoder's weights (values and dtypes), its architecture settings
(activation, layer-norm epsilon, position embeddings: a config.json setting changes the
vectors without changing a weight), the token pooling, the precision and the device type.
The settings folder appears whole, settings.json included (model/storage/folders.py), and
files are written under a temporary name and renamed, so an interrupted run leaves no
half-written entry.

With `layer`, an entry keeps instead every window's token states after that encoder layer
(`states`, the unpadded tokens of all windows in a row, float16, and `lengths`): top-layer
training (train/top_layers.py) runs only the layers above it, so the lower layers run once
per article, ever. Such entries are keyed by the layer and the weights below it alone, so
a model whose top layers were trained still finds the states of its pretrained encoder.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file, save_file

from model.core.fingerprint import encoder_fingerprint
from model.core.text import EncodedArticle
from model.encoders.registry import cache_root
from model.runtime.classifier import ArticleClassifier
from model.storage.folders import replace_folder


class EmbeddingCache:
    """Window embeddings of the articles `clf` reads, by article text."""

    def __init__(self, clf: ArticleClassifier, root: str | os.PathLike | None = None,
                 layer: int | None = None):
        self.clf = clf
        self.layer = layer
        self.settings = {"encoder": encoder_fingerprint(clf.network.encoder, below=layer),
                         "token_pooling": clf.config.token_pooling,
                         "precision": clf.precision, "device": clf.device.type}
        if layer is not None:
            self.settings["states_after_layer"] = layer
        key = hashlib.sha256(json.dumps(self.settings, sort_keys=True).encode()).hexdigest()
        self.folder = Path(root) if root else cache_root() / "embeddings"
        self.folder = self.folder / key[:24]
        self.hidden = clf.network.encoder.config.hidden_size
        self.hits = self.misses = 0

    def _path(self, article: EncodedArticle) -> Path:
        digest = hashlib.sha256(json.dumps(article.windows).encode()).hexdigest()
        return self.folder / digest[:2] / f"{digest}.safetensors"

    def windows(self, texts: list[str], batch_size: int = 64) -> tuple[list[EncodedArticle],
                                                                          list[np.ndarray]]:
        """The articles as `clf` windows them, and each article's window embeddings
        (windows x hidden, fp32), computed only for articles not cached yet."""
        encoded, entries = self.entries(texts, batch_size)
        return encoded, [entry["windows"] for entry in entries]

    def entries(self, texts: list[str], batch_size: int = 64) -> tuple[list[EncodedArticle],
                                                                          list[dict]]:
        """The articles as `clf` windows them, and each article's entry: `windows` (window
        embeddings, windows x hidden, fp32), or with a `layer`, `states` and `lengths`."""
        encoded = self.clf.encode(texts)
        found = [self._read(art) for art in encoded]
        missing = [i for i, v in enumerate(found) if v is None]
        self.hits += len(encoded) - len(missing)
        self.misses += len(missing)
        if missing:
            print(f"embedding {len(missing)} articles ({len(encoded) - len(missing)} cached) "
                  f"into {self.folder}", file=sys.stderr, flush=True)
            self._create_folder()
            todo = [encoded[i] for i in missing]
            if self.layer is None:
                computed = self._split(todo, {"windows": self.clf.embed_windows(
                    todo, batch_size).numpy()})
            else:
                computed = lower_states(self.clf, todo, self.layer, batch_size)
            for i, art, entry in zip(missing, todo, computed):
                found[i] = entry
                self._save(self._path(art), entry)
        return encoded, found

    def _read(self, article: EncodedArticle) -> dict | None:
        path = self._path(article)
        if not path.is_file():
            return None
        entry = load_file(str(path))
        if self.layer is None:
            good = entry.get("windows") is not None and \
                entry["windows"].shape == (len(article.windows), self.hidden)
        else:
            good = "states" in entry and "lengths" in entry and \
                list(entry["lengths"]) == [len(w) for w in article.windows] and \
                entry["states"].shape == (sum(len(w) for w in article.windows), self.hidden)
        return entry if good else None  # a foreign file: recompute

    @staticmethod
    def _split(articles: list[EncodedArticle], flat: dict) -> list[dict]:
        out, start = [], 0
        for art in articles:
            out.append({key: rows[start:start + len(art.windows)] for key, rows in flat.items()})
            start += len(art.windows)
        return out

    def _create_folder(self) -> None:
        """The settings folder with its settings.json, made whole or not at all; one that
        exists (made by an earlier or a concurrent run) is kept with its entries."""
        if self.folder.is_dir():
            return
        with replace_folder(self.folder, keep_existing=True) as new:
            (new / "settings.json").write_text(json.dumps(self.settings, indent=2))

    @staticmethod
    def _save(path: Path, entry: dict) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.close(fd)
        try:
            save_file({key: np.ascontiguousarray(value) for key, value in entry.items()}, tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


@torch.inference_mode()
def lower_states(clf: ArticleClassifier, articles: list[EncodedArticle], layer: int,
                 batch_size: int) -> list[dict]:
    """Each article's entry: the unpadded token states after encoder layer `layer` (float16:
    2 bytes a number, and BERT-like hidden states stay far inside its range) with each
    window's token count. Only the layers up to `layer` run."""
    network = clf.network
    was_training = network.training
    network.eval()
    device = clf.device
    half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(clf.precision)
    layers = network.encoder.encoder.layer
    windows = [w for art in articles for w in art.windows]
    states: list = [None] * len(windows)
    try:
        network.encoder.encoder.layer = layers[:layer]  # the layers above never run here
        with torch.autocast(device.type, dtype=half) if half else nullcontext():
            for rows, batch in clf.window_batches(articles, batch_size):
                mask = batch["attention_mask"].to(device)
                lower = network.encoder(input_ids=batch["input_ids"].to(device),
                                        attention_mask=mask).last_hidden_state
                lower = lower.float().cpu().numpy()
                for row, values, n in zip(rows, lower, mask.sum(1).tolist()):
                    states[row] = values[:n].astype(np.float16)
    finally:
        network.encoder.encoder.layer = layers
    network.train(was_training)
    entries, start = [], 0
    for art in articles:
        own = states[start:start + len(art.windows)]
        entries.append({"states": np.concatenate(own),
                        "lengths": np.array([len(s) for s in own], np.int64)})
        start += len(art.windows)
    return entries
