"""Inference: `ArticleClassifier`, the object users hold to predict (loaded by
`load_classifier`, model/runtime/loading.py).

Articles are cleaned as the artifact says, cut into token windows, and the windows of
many articles are run through the encoder in length-sorted batches with no more padding
than the longest window of each batch needs. Chunk embeddings are then pooled per article.
"""

from __future__ import annotations

import numbers
import os
from contextlib import nullcontext
from dataclasses import replace
from types import MappingProxyType

import numpy as np
import torch
from tqdm.auto import tqdm

from model.core.calibration import apply_calibration
from model.core.config import ModelConfig
from model.core.domain import DomainReference, Typicality
from model.core.tasks import (
    MULTI_LABEL,
    TaskSpec,
    check_threshold,
    check_top_k,
    decide_labels,
)
from model.core.text import EncodedArticle, chunk_articles, clean_text, clean_text_mapped
from model.runtime.backends import choose_backend
from model.runtime.devices import resolve_device, resolve_precision
from model.runtime.domain import Reading, answer
from model.runtime.early_exit import read_adaptively
from model.runtime.evidence import explain
from model.runtime.settings import ServingSettings


class ArticleClassifier:
    """A loaded model: the object users hold to predict.

    Build it with `load_classifier(path)`; training code wraps a network it is training
    with the same class, so evaluation and serving run the very same code.
    """

    def __init__(self, network, tokenizer, metadata: dict | None = None,
                 lexical: dict | None = None, settings: ServingSettings | None = None,
                 artifact: str | os.PathLike | None = None, quiet: bool = False,
                 encoder_runtime=None, domain: DomainReference | None = None):
        self.network = network
        self.tokenizer = tokenizer
        self.metadata = metadata or {}
        self.artifact = artifact
        self.settings = settings = settings or ServingSettings()
        # Lexical models by task, mixed in by the task's `lexical_weight` (model/core/lexical.py).
        self._lexical = MappingProxyType(dict(lexical or {}))
        # The training articles each prediction is compared with (model/core/domain.py);
        # None (an artifact from before it was stored): predictions carry no `domain`.
        if domain is not None and domain.hidden_size != network.encoder.config.hidden_size:
            raise ValueError(f"{artifact or 'model'}: the domain reference's embeddings do "
                             "not match the encoder's size")
        self._domain = domain
        if settings.device is not None:
            self.network.to(resolve_device(settings.device))
        # How articles are read here: the trained config with the served overrides. The
        # network's own config (what was trained, and is saved) is left as it is.
        overrides = {k: v for k, v in (("max_chunks", settings.max_chunks),
                                       ("pooling", settings.pooling)) if v is not None}
        if overrides.get("pooling") and network.model_config.pooling == "attention":
            raise ValueError("a learned attention pooling cannot be replaced by "
                             f"{settings.pooling!r} pooling")
        self._config = replace(network.model_config, **overrides)
        self._precision = resolve_precision(settings.precision, self.device)
        # What runs the encoder (model/runtime/backends.py): the network itself, or a
        # compiled int8 graph of it; `backend_reason` says why that one. `encoder_runtime`
        # (anything with `name` and `token_states(input_ids, attention_mask)`) takes that
        # place where a caller brings its own, as the benchmarks do for their baselines.
        if encoder_runtime is not None:
            self._backend, self._backend_reason = encoder_runtime, "given"
        else:
            self._backend, self._backend_reason = choose_backend(
                settings.backend, settings.precision, self._precision, self.device, artifact,
                network, quiet=quiet)
        if self._backend is not None:
            self._precision = "int8"

    def with_settings(self, **changes) -> ArticleClassifier:
        """A classifier of the same network and lexical models, served with `changes` to
        this one's settings (`precision`, `backend`, `max_chunks`, `early_exit`, `pooling`).
        Not `device`: the network is shared, and moving it would move it for both."""
        if "device" in changes:
            raise ValueError("with_settings cannot move the shared network: load the model "
                             "again with load_classifier(path, device=...)")
        return ArticleClassifier(self.network, self.tokenizer, self.metadata, self._lexical,
                                 replace(self.settings, **changes), self.artifact, quiet=True,
                                 domain=self._domain)

    # What is served, read-only: a different way of serving is a new classifier.
    @property
    def config(self) -> ModelConfig:
        """How articles are read: the artifact's config with the served overrides."""
        return self._config

    @property
    def precision(self) -> str:
        """What the encoder runs in: `fp32`, `bf16`, `fp16` or `int8`."""
        return self._precision

    @property
    def backend(self):
        """What runs the encoder in place of the network (the int8 graph), or None."""
        return self._backend

    @property
    def backend_reason(self) -> str:
        return self._backend_reason

    @property
    def early_exit(self) -> float | None:
        """Stop after an article's first window where every task is decided with this
        confidence (model/runtime/early_exit.py); None reads whole articles."""
        return self.settings.early_exit

    @property
    def lexical(self):
        """The lexical models by task (read-only)."""
        return self._lexical

    @property
    def domain(self) -> DomainReference | None:
        """The training articles predictions are compared with, or None."""
        return self._domain

    @property
    def backend_name(self) -> str:
        """`torch-fp32`, `torch-bf16`, `torch-fp16` or `openvino-int8`."""
        return self._backend.name if self._backend is not None else f"torch-{self._precision}"

    @property
    def tasks(self) -> list[TaskSpec]:
        return self.network.tasks

    # -- encoding -----------------------------------------------------------------------
    def encode(self, texts: list[str], spans: bool = False) -> list[EncodedArticle]:
        """Clean and window `texts` as this model was trained to read them. `spans` keeps
        the way back from tokens to characters of `texts` (for evidence)."""
        boilerplate = self.config.clean_boilerplate
        cleaned = [clean_text_mapped(t, boilerplate) if spans
                   else (clean_text(t, boilerplate), None) for t in texts]
        encoded = chunk_articles(self.tokenizer, [text for text, _ in cleaned],
                                 self.config.max_length, self.config.stride,
                                 self.config.max_chunks, self.config.text_prefix or "", spans)
        if spans:
            for article, (_, origin) in zip(encoded, cleaned):
                article.origin = origin
        return encoded

    def probabilities(self, encoded: list[EncodedArticle],
                      batch_size: int = 32) -> dict[str, np.ndarray]:
        """Per-task probabilities, one row per article: the network's (softmax or sigmoid),
        mixed with the task's lexical model where it has one, as far as the article is
        typical (`answer`)."""
        mixed, _ = self.answer(self.embed_windows(encoded, batch_size), encoded)
        return {name: served for name, (served, _, _) in mixed.items()}

    def read(self, encoded: list[EncodedArticle], batch_size: int = 32,
             threshold: float | None = None, top_k: int | None = None,
             at_least_one: bool = True) -> Reading:
        """The served probabilities of `encoded` as `predict` reads them, each article as
        read, and how typical each is (None without a domain reference): adaptively where
        the model has `early_exit` (model/runtime/early_exit.py), else whole. Early exit
        decides by the stored thresholds, so a caller's own `threshold` or `top_k` reads
        whole articles."""
        if self.early_exit is None or threshold is not None or top_k is not None:
            mixed, domain = self.answer(self.embed_windows(encoded, batch_size), encoded)
            return Reading({name: m[0] for name, m in mixed.items()}, encoded, domain)
        return Reading(*read_adaptively(self, encoded, batch_size, self.early_exit,
                                        at_least_one))

    def answer(self, embeddings: torch.Tensor, encoded: list[EncodedArticle],
               lexical_probs: dict[str, np.ndarray] | None = None
               ) -> tuple[dict[str, tuple], Typicality | None]:
        """What is served from the window `embeddings` of `encoded`: per task `(served,
        network, lexical)` as `mix` gives them, each article's lexical share scaled by how
        typical it is (none out of domain), and the articles' typicality, or None
        without a domain reference (model/runtime/domain.py)."""
        return answer(self, embeddings, encoded, lexical_probs)

    def mix(self, logits: dict[str, np.ndarray], encoded: list[EncodedArticle],
            lexical_probs: dict[str, np.ndarray] | None = None, calibrated: bool = True
            ) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
        """Per task: the probabilities served, the network's alone, and the lexical
        model's (None without one); served = calibrated(w * lexical + (1 - w) * network).
        `lexical_probs`: the lexical models' probabilities of `encoded` where the caller
        already has them; `calibrated=False` leaves out the calibration (for ranking)."""
        out = {}
        for task in self.tasks:
            values = torch.from_numpy(logits[task.name])
            network = (torch.sigmoid(values) if task.type == MULTI_LABEL
                       else torch.softmax(values, dim=-1)).numpy()
            weight, lexical, probs = task.lexical_weight, None, network
            if weight and len(encoded):
                if task.name not in self.lexical:
                    raise ValueError(f"task {task.name!r} mixes in a lexical model "
                                     f"(weight {weight}), but none was given")
                lexical = (lexical_probs or {}).get(task.name)
                if lexical is None:
                    lexical = self.lexical[task.name].probabilities([a.text for a in encoded])
                probs = weight * lexical + (1.0 - weight) * network
            # Served scores are calibrated (model/core/calibration.py): a monotone map per
            # label, so the thresholds, tuned on calibrated scores, apply to these.
            if calibrated:
                probs = apply_calibration(task.calibration, probs, task.type)
            out[task.name] = (probs.astype(np.float32), network, lexical)
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
    def embed_windows(self, encoded: list[EncodedArticle], batch_size: int = 32,
                      token_heads: torch.Tensor | None = None):
        """One fp32 CPU row per window of `encoded`, article by article, window by window.
        `batch_size` counts windows per encoder call.

        With `token_heads` (hidden x columns), also returns, per window, every token's
        state times `token_heads` divided by the window's token count: each token's term
        in a linear head applied to the mean-pooled window (see model/runtime/evidence.py)."""
        was_training = self.network.training
        self.network.eval()
        device = self.device
        n_windows = sum(len(art.windows) for art in encoded)
        embeddings = torch.zeros((n_windows, self.network.encoder.config.hidden_size))
        half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        autocast = torch.autocast(device.type, dtype=half) if half else nullcontext()
        per_token: list = [None] * n_windows
        with autocast:
            for rows, batch in self.window_batches(encoded, batch_size):
                mask = batch["attention_mask"].to(device)
                states = (self.backend or self.network).token_states(batch["input_ids"].to(device),
                                                               mask)
                embeddings[rows] = self.network.pool_tokens(states, mask).float().cpu()
                if token_heads is not None:
                    with torch.autocast(device.type, enabled=False):  # heads score in fp32
                        terms = (states.float() @ token_heads.to(device)) \
                            / mask.sum(1, keepdim=True).unsqueeze(-1)
                    for row, values, n in zip(rows, terms.cpu().numpy(), mask.sum(1).tolist()):
                        per_token[row] = values[:n]
        self.network.train(was_training)
        return embeddings if token_heads is None else (embeddings, per_token)

    @torch.inference_mode()
    def score(self, embeddings: torch.Tensor,
              encoded: list[EncodedArticle]) -> dict[str, np.ndarray]:
        """Per-task article logits from the window embeddings of `encoded`.

        Always in fp32, whatever the encoder ran in: the heads cost next to nothing, and a
        frozen head's weights and bias (a standardisation folded into a logistic
        regression) are large numbers that cancel, which half precision would blur."""
        was_training = self.network.training
        self.network.eval()
        device = self.device
        chunk_article = torch.tensor([a for a, art in enumerate(encoded) for _ in art.windows],
                                     dtype=torch.long)
        logits = self.network.score_articles(embeddings.to(device), chunk_article.to(device),
                                             len(encoded), self.config.pooling)
        self.network.train(was_training)
        return {name: value.float().cpu().numpy() for name, value in logits.items()}

    def logits(self, encoded: list[EncodedArticle],
               batch_size: int = 32) -> dict[str, np.ndarray]:
        """Per-task article logits of the network alone (no lexical model)."""
        return self.score(self.embed_windows(encoded, batch_size), encoded)

    # -- prediction ---------------------------------------------------------------------
    def predict(self, texts, *, batch_size: int = 32, threshold: float | None = None,
                top_k: int | None = None, at_least_one: bool = True,
                progress: bool = False, evidence: int | bool = 0,
                evidence_method: str = "auto"):
        """Predict every task for one text (returns a dict) or a list of texts (a list).

        Multi-label tasks use the per-label thresholds stored in the artifact unless
        `threshold` (one value for all labels) or `top_k` (the k best labels) is given;
        `at_least_one` adds the best label when none passes its threshold.

        Where the model has `early_exit`, an article whose first window already decides
        every task stops there (`chunks` 1; model/runtime/early_exit.py). `evidence` reads whole
        articles, so its scores are whole-article ones.

        Where the model has a domain reference, each prediction says how typical its
        article is of the training articles: `domain` = `{"typicality": 0-100,
        "in_domain": bool}` (model/core/domain.py).

        `evidence=K` (True: 3) adds `evidence`: for every task, for each label it gives,
        the K passages that raise that label's probability most, best first, each with
        `start`/`end` (character offsets into the text passed in, in code points), its
        `score` (attribution: the probability it adds, to first order; sentences: the
        label's probability for it alone) and its `text`. `evidence_method`:
        `attribution`, `sentences` or `auto` (attribution where the encoder is mean-pooled);
        model/runtime/evidence.py says how each works.
        """
        if not isinstance(evidence, numbers.Integral) or evidence < 0:  # bools are too
            raise ValueError(f"evidence must be True, False or a number of passages >= 0, "
                             f"got {evidence!r}")
        n_evidence = 3 if evidence is True else int(evidence)
        # The same rule as --threshold / --top-k (model/core/tasks.py), before any work.
        threshold = None if threshold is None else check_threshold(threshold)
        top_k = None if top_k is None else check_top_k(top_k)
        single = isinstance(texts, str)
        texts = [texts] if single else list(texts)
        for i, text in enumerate(texts):
            check_text(text, i)
        outputs: list[dict] = []
        # Windowing happens in slices so a huge list never holds every token at once.
        step = max(batch_size * 8, 256)
        with tqdm(total=len(texts), desc="predict", unit="article", disable=not progress) as bar:
            for start in range(0, len(texts), step):
                chunk = texts[start:start + step]
                encoded = self.encode(chunk, spans=bool(n_evidence))
                if n_evidence:
                    probs, passages, domain = explain(self, encoded, chunk, batch_size,
                                                      evidence_method)
                else:
                    (probs, encoded, domain), passages = self.read(
                        encoded, batch_size, threshold, top_k, at_least_one), None
                for j, art in enumerate(encoded):
                    out = self.format_prediction({k: v[j] for k, v in probs.items()}, art,
                                                 threshold, top_k, at_least_one,
                                                 domain.entry(j) if domain else None)
                    if passages is not None:
                        out["evidence"] = passages[j].select(out, n_evidence)
                    outputs.append(out)
                bar.update(len(encoded))
        return outputs[0] if single else outputs

    def format_prediction(self, probs: dict[str, np.ndarray], article: EncodedArticle,
                          threshold: float | None = None, top_k: int | None = None,
                          at_least_one: bool = True, domain: dict | None = None) -> dict:
        """One article's prediction as plain JSON-ready values; `domain`: its typicality
        entry (`Typicality.entry`), where the model has a domain reference."""
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
        if domain is not None:
            out["domain"] = domain
        return out


def check_text(text, index: int) -> None:
    """Refuse what is not an article, naming its position."""
    if not isinstance(text, str):
        raise TypeError(f"text {index}: expected a string, got {type(text).__name__}")
    if not text.strip():
        raise ValueError(f"text {index}: empty text")
