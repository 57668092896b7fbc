"""The domain reference of a trained model (model/core/domain.py): its training articles as
embeddings, and where held-out training articles lie among them.

Built once the encoder is final, from the training and validation articles of every task,
each the mean of its window embeddings as the served model reads it:

- frozen mode: the encoder never saw any of them, so every article is held out in turn
  (leave one out: its distance to its k nearest others) and the embeddings come from the
  frozen-training cache (train/embedding_cache.py), which holds them already;
- top-layer training: as frozen (the lower layers are, and each article was held out of
  one of the fold models averaged), embedded through the trained top layers from the
  cached lower-layer states;
- fine-tuned: the encoder was fitted to the training articles, which therefore lie closer
  to each other than any new article would; only the validation articles, which it never
  saw, are ranked against (still leave one out, against all the others).

Above `MAX_REFERENCE` articles a fixed-seed sample is kept: a few MB in the artifact, and
a query costs one matrix product over them.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from model.core.domain import DomainReference, article_embeddings, knn_distances
from model.runtime.classifier import ArticleClassifier
from train.config import RunConfig
from train.embedding_cache import EmbeddingCache
from train.top_layers import encoder_layers, states_to_embeddings

# Neighbours averaged per article: enough that one near-duplicate in the training set does
# not make an article typical, few enough that a small topic (a few hundred BBC articles
# each) is still its own neighbourhood.
DOMAIN_K = 10
# The flag level: an article farther from the training set than 99% of held-out training
# articles is out of domain. It is the rate at which articles like the training ones are
# flagged (by construction on the held-out articles; BENCHMARKS.md measures it on BBC's test
# split): rare enough that a reader does not learn to ignore the flag, while the foreign
# sets measured there fall far beyond it (their AUROC).
FLAG_PERCENTILE = 99.0
# A task's lexical model is mixed in at its full weight from this typicality on, in
# proportion below it, and not at all out of domain (DomainReference.lexical_trust). 25 is
# the widest of 10, 25 and 50 that costs nothing on BBC's test split (50 costs one article
# of 319: the lexical model alone is the better half of the mix on typical articles);
# BENCHMARKS.md, "Out-of-domain flag", measures it and its alternatives.
LEXICAL_FULL_TRUST = 25.0
MAX_REFERENCE = 4000


def fit_domain(clf: ArticleClassifier, cfg: RunConfig, splits: dict,
               frozen: bool | None = None) -> tuple[DomainReference, dict]:
    """The domain reference of `clf` (trained) from the training and validation articles in
    `splits` (by task, then split). `frozen`: whether the encoder was left as it was
    (default: `cfg.training.mode`). Returns it and a report."""
    started = time.perf_counter()
    # A top-trained encoder counts as frozen here: its lower layers are, and every training
    # article was held out of one of the fold models whose mean it serves.
    frozen = cfg.training.mode in ("frozen", "top") if frozen is None else frozen
    texts, held_out = reference_articles(splits, frozen)
    if len(texts) <= DOMAIN_K:
        raise ValueError(f"the domain reference needs more than {DOMAIN_K} training "
                         f"articles, got {len(texts)}")
    keep = np.arange(len(texts))
    if len(texts) > MAX_REFERENCE:
        rng = np.random.default_rng(cfg.training.seed)
        keep = np.sort(rng.choice(len(texts), MAX_REFERENCE, replace=False))
    texts, held_out = [texts[i] for i in keep], held_out[keep]
    if not held_out.any():  # a fine-tuned model without validation articles
        print("domain reference: no validation articles; ranking against the training "
              "articles themselves, which makes new articles look less typical",
              file=sys.stderr)
        held_out[:] = True
    embeddings = embed_articles(clf, texts, cfg, cached=frozen)
    # Leave one out: each held-out article against all the others.
    distances = knn_distances(embeddings, embeddings, DOMAIN_K, exclude_self=True)[held_out]
    reference = DomainReference(embeddings, DOMAIN_K, distances, FLAG_PERCENTILE,
                                LEXICAL_FULL_TRUST)
    flag_distance = float(np.percentile(reference.reference_distances, FLAG_PERCENTILE))
    report = {"articles": len(texts), "held_out": int(held_out.sum()), "k": DOMAIN_K,
              "flag_percentile": FLAG_PERCENTILE, "flag_distance": round(flag_distance, 4),
              "lexical_full_trust": LEXICAL_FULL_TRUST,
              "median_distance": round(float(np.median(distances)), 4),
              "seconds": round(time.perf_counter() - started, 1)}
    print(f"domain reference: {report['articles']} articles, {report['held_out']} held out; "
          f"flagged beyond cosine distance {flag_distance:.4f} (median "
          f"{report['median_distance']:.4f})", file=sys.stderr)
    return reference, report


def reference_articles(splits: dict, frozen: bool) -> tuple[list[str], np.ndarray]:
    """The distinct training and validation texts of every task, and which are held out
    (all of them for a frozen encoder, the validation ones for a fine-tuned one). A text
    in both splits of two tasks counts as held out only if no task trained on it."""
    texts: dict[str, bool] = {}
    for by_split in splits.values():
        for split in ("train", "validation"):
            for example in by_split.get(split, []):
                unseen = frozen or split == "validation"
                texts[example.text] = texts.get(example.text, True) and unseen
    return list(texts), np.array(list(texts.values()), dtype=bool)


def embed_articles(clf: ArticleClassifier, texts: list[str], cfg: RunConfig,
                   cached: bool) -> np.ndarray:
    """Each text's mean window embedding as `clf` reads it (whole: no early exit)."""
    batch = cfg.training.eval_batch_size
    if cached and cfg.training.mode == "top":  # states below the trained layers are cached
        start = len(encoder_layers(clf.network.encoder)) - cfg.training.top.layers
        cache = EmbeddingCache(clf, cfg.training.embedding_cache, layer=start)
        return states_to_embeddings(clf.network, cache.entries(texts, batch)[1], start,
                                  clf.precision)
    if cached:  # frozen training embedded these very windows already
        _, windows = EmbeddingCache(clf, cfg.training.embedding_cache).windows(texts, batch)
        return np.stack([w.mean(axis=0) for w in windows])
    encoded = clf.encode(texts)
    rows = clf.embed_windows(encoded, batch).numpy()
    return article_embeddings(rows, [len(a.windows) for a in encoded])
