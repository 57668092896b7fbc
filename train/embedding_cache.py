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
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from model.core.fingerprint import encoder_fingerprint
from model.core.text import EncodedArticle
from model.encoders.registry import cache_root
from model.runtime.classifier import ArticleClassifier
from model.storage.folders import replace_folder


class EmbeddingCache:
    """Window embeddings of the articles `clf` reads, by article text."""

    def __init__(self, clf: ArticleClassifier, root: str | os.PathLike | None = None):
        self.clf = clf
        self.settings = {"encoder": encoder_fingerprint(clf.network.encoder),
                         "token_pooling": clf.config.token_pooling,
                         "precision": clf.precision, "device": clf.device.type}
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
        encoded = self.clf.encode(texts)
        found: list[np.ndarray | None] = []
        for art in encoded:
            path = self._path(art)
            vectors = load_file(str(path))["windows"] if path.is_file() else None
            if vectors is not None and vectors.shape != (len(art.windows), self.hidden):
                vectors = None  # a foreign file: recompute
            found.append(vectors)
        missing = [i for i, v in enumerate(found) if v is None]
        self.hits += len(encoded) - len(missing)
        self.misses += len(missing)
        if missing:
            print(f"embedding {len(missing)} articles ({len(encoded) - len(missing)} cached) "
                  f"into {self.folder}", file=sys.stderr, flush=True)
            self._create_folder()
            todo = [encoded[i] for i in missing]
            flat = self.clf.embed_windows(todo, batch_size).numpy()
            start = 0
            for i, art in zip(missing, todo):
                found[i] = flat[start:start + len(art.windows)]
                start += len(art.windows)
                self._save(self._path(art), found[i])
        return encoded, found

    def _create_folder(self) -> None:
        """The settings folder with its settings.json, made whole or not at all; one that
        exists (made by an earlier or a concurrent run) is kept with its entries."""
        if self.folder.is_dir():
            return
        with replace_folder(self.folder, keep_existing=True) as new:
            (new / "settings.json").write_text(json.dumps(self.settings, indent=2))

    @staticmethod
    def _save(path: Path, vectors: np.ndarray) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.close(fd)
        try:
            save_file({"windows": np.ascontiguousarray(vectors, dtype=np.float32)}, tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
