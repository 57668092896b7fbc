"""Inference: `load_classifier(path).predict(texts)` and the one-call `predict`.

Articles are cleaned as the artifact says, cut into token windows, and the windows of
many articles are run through the encoder in length-sorted batches with no more padding
than the longest window of each batch needs. Chunk embeddings are then pooled per article.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .artifact import load_artifact
from .config import MULTI_LABEL, ModelConfig, TaskSpec
from .text import EncodedArticle, chunk_articles, clean_text

PRECISIONS = ("fp32", "bf16", "int8")


def native_bf16() -> bool:
    """Whether this machine runs bf16 matrix work natively (CUDA bf16, AVX512-BF16, AMX)."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    cpu = getattr(torch, "cpu", None)
    return any(getattr(cpu, name, lambda: False)() for name in
               ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))


# The order `auto` tries the fast paths in, fastest first as measured by
# `make bench-infer` (BENCHMARKS.md); each is taken only where the hardware has it.
AUTO_ORDER = ("bf16", "int8", "fp32")


def resolve_precision(requested: str | None, document: dict | None = None) -> str:
    """`auto` (or None) takes the first of AUTO_ORDER that the artifact supports and this
    machine runs well: bf16 only with native support, int8 only on the CPU."""
    if requested not in (None, "auto"):
        return requested
    supported = (document or {}).get("inference", {}).get("supported_precisions", ["fp32"])
    for precision in AUTO_ORDER:
        if precision not in supported:
            continue
        if precision == "bf16" and not native_bf16():
            continue
        if precision == "int8" and torch.cuda.is_available():
            continue
        return precision
    return "fp32"


class ArticleClassifier:
    """A loaded model: the object users hold to predict.

    Build it with `load_classifier(path)`; training code wraps a network it is training
    with the same class, so evaluation and serving run the very same code.
    """

    def __init__(self, network, tokenizer, metadata: dict | None = None,
                 precision: str = "fp32", device: str | torch.device | None = None):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.network = network
        self.tokenizer = tokenizer
        self.metadata = metadata or {}
        self.precision = precision
        if device is not None:
            self.network.to(torch.device(device))
        if precision == "int8":
            if self.device.type != "cpu":
                raise ValueError("int8 (dynamic quantization) runs on the CPU only")
            # Weights of every Linear layer of the encoder become int8; activations are
            # quantized on the fly. The heads stay in fp32.
            self.network.encoder = torch.ao.quantization.quantize_dynamic(
                self.network.encoder, {torch.nn.Linear}, dtype=torch.qint8)

    @property
    def config(self) -> ModelConfig:
        return self.network.model_config

    @property
    def tasks(self) -> list[TaskSpec]:
        return self.network.tasks

    # -- encoding -----------------------------------------------------------------------
    def encode(self, texts: list[str]) -> list[EncodedArticle]:
        """Clean and window `texts` as this model was trained to read them."""
        cleaned = [clean_text(t, self.config.clean_boilerplate) for t in texts]
        return chunk_articles(self.tokenizer, cleaned, self.config.max_length,
                              self.config.stride, self.config.max_chunks)

    def probabilities(self, encoded: list[EncodedArticle],
                      batch_size: int = 32) -> dict[str, np.ndarray]:
        """Per-task probabilities (softmax or sigmoid), one row per article."""
        logits = self.logits(encoded, batch_size)
        out = {}
        for task in self.tasks:
            values = torch.from_numpy(logits[task.name])
            out[task.name] = (torch.sigmoid(values) if task.type == MULTI_LABEL
                              else torch.softmax(values, dim=-1)).numpy()
        return out

    @property
    def device(self) -> torch.device:
        """Where the network is now: a `Trainer` may move it after this object was made."""
        return next(self.network.parameters()).device

    def window_batches(self, encoded: list[EncodedArticle], batch_size: int = 32):
        """The windows of all `encoded` articles, sorted by length and padded per batch.

        Yields `(rows, batch)`: the batch's positions in the flat list of windows (article
        by article, window by window) and its padded `input_ids` / `attention_mask`.
        """
        windows = [w for art in encoded for w in art.windows]
        order = sorted(range(len(windows)), key=lambda i: len(windows[i]))
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            # Lengths rounded up to a multiple of 16 keep the number of distinct
            # shapes small, so oneDNN reuses its compiled kernels (bf16 especially).
            yield rows, self.tokenizer.pad({"input_ids": [windows[i] for i in rows]},
                                           pad_to_multiple_of=16, return_tensors="pt")

    @torch.inference_mode()
    def logits(self, encoded: list[EncodedArticle],
               batch_size: int = 32) -> dict[str, np.ndarray]:
        """Per-task article logits. `batch_size` counts windows per encoder call."""
        was_training = self.network.training
        self.network.eval()
        device = self.device
        chunk_article = torch.tensor([a for a, art in enumerate(encoded) for _ in art.windows],
                                     dtype=torch.long)
        embeddings = torch.zeros((len(chunk_article), self.network.encoder.config.hidden_size))
        autocast = (torch.autocast(device.type, dtype=torch.bfloat16)
                    if self.precision == "bf16" else nullcontext())
        with autocast:
            for rows, batch in self.window_batches(encoded, batch_size):
                emb = self.network.embed_chunks(batch["input_ids"].to(device),
                                                batch["attention_mask"].to(device))
                embeddings[rows] = emb.float().cpu()
            logits = self.network.score_articles(embeddings.to(device),
                                                 chunk_article.to(device), len(encoded))
        self.network.train(was_training)
        return {name: value.float().cpu().numpy() for name, value in logits.items()}

    # -- prediction ---------------------------------------------------------------------
    def predict(self, texts, *, batch_size: int = 32, threshold: float | None = None,
                top_k: int | None = None, at_least_one: bool = True,
                progress: bool = False):
        """Predict every task for one text (returns a dict) or a list of texts (a list).

        Multi-label tasks use the per-label thresholds stored in the artifact unless
        `threshold` (one value for all labels) or `top_k` (the k best labels) is given;
        `at_least_one` adds the best label when none passes its threshold.
        """
        single = isinstance(texts, str)
        texts = [texts] if single else list(texts)
        for i, text in enumerate(texts):
            check_text(text, i)
        outputs: list[dict] = []
        # Windowing happens in slices so a huge list never holds every token at once.
        step = max(batch_size * 8, 256)
        with tqdm(total=len(texts), desc="predict", unit="article", disable=not progress) as bar:
            for start in range(0, len(texts), step):
                encoded = self.encode(texts[start:start + step])
                probs = self.probabilities(encoded, batch_size)
                for j, art in enumerate(encoded):
                    outputs.append(self.format_prediction({k: v[j] for k, v in probs.items()},
                                                          art, threshold, top_k, at_least_one))
                bar.update(len(encoded))
        return outputs[0] if single else outputs

    def format_prediction(self, probs: dict[str, np.ndarray], article: EncodedArticle,
                          threshold: float | None = None, top_k: int | None = None,
                          at_least_one: bool = True) -> dict:
        """One article's prediction as plain JSON-ready values."""
        out: dict = {}
        for task in self.tasks:
            p = probs[task.name]
            scores = {label: round(float(s), 6) for label, s in zip(task.labels, p)}
            if task.type == MULTI_LABEL:
                out[task.name] = {"labels": decide_labels(task, p, threshold, top_k,
                                                          at_least_one),
                                  "scores": scores}
            else:
                best = int(np.argmax(p))
                out[task.name] = {"label": task.labels[best], "score": round(float(p[best]), 6),
                                  "probabilities": scores}
        out.update(tokens=article.n_tokens, chunks=len(article.windows),
                   chunks_total=article.n_windows_total, truncated=article.truncated)
        return out


def decide_labels(task: TaskSpec, probs: np.ndarray, threshold: float | None = None,
                  top_k: int | None = None, at_least_one: bool = True) -> list[str]:
    """The labels of a multi-label task that an article gets, best first."""
    order = [int(i) for i in np.argsort(-probs)]
    if top_k is not None:
        chosen = order[:top_k]
    else:
        cut = [threshold] * len(task.labels) if threshold is not None else task.thresholds
        chosen = [i for i in order if probs[i] >= cut[i]]
        if not chosen and at_least_one:
            chosen = order[:1]
    return [task.labels[i] for i in chosen]


def check_text(text, index: int) -> None:
    """Refuse what is not an article, naming its position."""
    if not isinstance(text, str):
        raise TypeError(f"text {index}: expected a string, got {type(text).__name__}")
    if not text.strip():
        raise ValueError(f"text {index}: empty text")


def load_classifier(path: str | os.PathLike, precision: str = "auto",
                    device: str | None = None, allow_pickle: bool = False,
                    max_chunks: int | None = None) -> ArticleClassifier:
    """Load an artifact folder written by training (`runs/<job>/model`).

    `precision`: `fp32`, `bf16` (autocast), `int8` (dynamic quantization, CPU), or
    `auto`: the fast path the artifact records as its default, where this machine has it.
    `max_chunks`: read at most this many windows of an article (spread over its length)
    instead of the artifact's own limit: less work on long articles, at some accuracy
    (BENCHMARKS.md measures how much).
    """
    if max_chunks is not None and (not isinstance(max_chunks, int) or max_chunks < 1):
        raise ValueError(f"max_chunks must be a whole number >= 1, got {max_chunks!r}")
    network, tokenizer, document = load_artifact(path, allow_pickle=allow_pickle)
    if max_chunks is not None:
        network.model_config.max_chunks = max_chunks
    return ArticleClassifier(network, tokenizer, document,
                             precision=resolve_precision(precision, document),
                             device=device or "cpu")


_LOADED: dict[tuple, ArticleClassifier] = {}


def predict(texts, model: str | os.PathLike, **kwargs):
    """`load_classifier(model).predict(texts, **kwargs)`, keeping loaded models cached."""
    precision = kwargs.pop("precision", "auto")
    max_chunks = kwargs.pop("max_chunks", None)
    key = (str(Path(model).resolve()), precision, max_chunks)
    if key not in _LOADED:
        _LOADED[key] = load_classifier(model, precision=precision, max_chunks=max_chunks)
    return _LOADED[key].predict(texts, **kwargs)
