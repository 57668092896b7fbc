"""Frozen-encoder training (`training.mode: frozen`) and the lexical component of a task.

Frozen: the encoder is not trained. Every window of every article is embedded once (cached
on disk, `train/embedding_cache.py`), and each head is a logistic regression on the mean of
its article's window embeddings. With mean pooling that is exactly the network's own head:
the mean of the window logits `W e_i + b` is `W mean(e) + b`. Training takes seconds once
the articles are embedded.

No validation split is needed to stop training, so the training and validation articles
are pooled and every choice is made by k-fold cross-validation over them: the C of each
head, the C and mixing weight of the lexical component, and the decision thresholds, all
scored on out-of-fold probabilities (hundreds of articles rather than the few dozen of a
validation split). The final models are then fitted on all of them.

Lexical component (`tasks[].lexical: true`, either mode): TF-IDF + logistic regression
fitted on the same articles, mixed with the network's probabilities by a weight chosen on
held-out articles, and stored in the artifact as plain arrays (`model/core/lexical.py`).
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch
from sklearn.model_selection import KFold, StratifiedKFold

from model.core.lexical import LexicalModel
from model.core.tasks import MULTI_LABEL, TaskSpec
from model.core.text import clean_text
from model.runtime.classifier import ArticleClassifier
from train.config import RunConfig, TaskConfig
from train.data import multi_hot
from train.embedding_cache import EmbeddingCache
from train.linear import best_mixture, cross_validated, fit_logistic, served_score, tfidf_vectorizer
from train.metrics import tune_thresholds

LEXICAL_C_GRID = (1.0, 10.0, 100.0)


def label_matrix(spec: TaskSpec, examples) -> np.ndarray:
    """Multi-hot rows (multi-label) or class indices (single-label)."""
    if spec.type == MULTI_LABEL:
        return multi_hot([e.label for e in examples], spec.labels)
    index = {name: i for i, name in enumerate(spec.labels)}
    return np.array([index[e.label] for e in examples])


def make_folds(spec: TaskSpec, y: np.ndarray, k: int, seed: int) -> list:
    if spec.type == MULTI_LABEL:
        return list(KFold(k, shuffle=True, random_state=seed).split(y))
    counts = np.bincount(y, minlength=len(spec.labels))
    present = counts[counts > 0]
    if len(present) > 1 and present.min() >= k:
        return list(StratifiedKFold(k, shuffle=True, random_state=seed).split(y, y))
    return list(KFold(k, shuffle=True, random_state=seed).split(y))


def fit_lexical(spec: TaskSpec, texts: list[str], y: np.ndarray, folds: list,
                balanced: bool) -> tuple[LexicalModel, np.ndarray, dict]:
    """TF-IDF + logistic regression for one task: C by cross-validation, then fitted on
    all `texts`. Returns the model, its out-of-fold probabilities and a report."""
    def features(fit, held):
        vectorizer = tfidf_vectorizer()
        return (vectorizer.fit_transform([texts[i] for i in fit]),
                vectorizer.transform([texts[i] for i in held]))

    c, oof, score = cross_validated(features, y, spec, folds, LEXICAL_C_GRID, balanced)
    vectorizer = tfidf_vectorizer()
    fitted = fit_logistic(vectorizer.fit_transform(texts), y, spec, c, balanced)
    model = LexicalModel.from_fitted(spec.type, vectorizer, fitted.coef, fitted.intercept)
    return model, oof, {"lexical_C": c, "lexical_cv_score": round(score, 4),
                        "lexical_terms": len(model.vocabulary)}


def set_head(clf: ArticleClassifier, task: str, coef: np.ndarray, intercept: np.ndarray):
    head = clf.network.heads[task]
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(coef).to(head.weight))
        head.bias.copy_(torch.from_numpy(intercept).to(head.bias))


def train_frozen(clf: ArticleClassifier, cfg: RunConfig, specs: list[TaskSpec],
                 splits: dict) -> dict:
    """Fit every head (and lexical component) of `clf` on frozen window embeddings; sets
    the heads, `clf.lexical`, the tasks' lexical weights and thresholds. Returns a report."""
    if cfg.model.pooling != "mean":
        raise ValueError("training.mode frozen fits each head on the mean window embedding, "
                         f"which is the network's head only under model.pooling mean "
                         f"(got {cfg.model.pooling!r})")
    training = cfg.training
    cache = EmbeddingCache(clf, training.embedding_cache)
    report, lexical = {}, {}
    started = time.perf_counter()
    for task_cfg, spec in zip(cfg.tasks, specs):
        examples = splits[spec.name]["train"] + splits[spec.name]["validation"]
        encoded, windows = cache.windows([e.text for e in examples], training.eval_batch_size)
        x = np.stack([w.mean(axis=0) for w in windows])
        y = label_matrix(spec, examples)
        folds = make_folds(spec, y, training.cv_folds, training.seed)
        balanced = task_cfg.class_weights == "balanced"
        def rows(fit, held, x=x):
            return x[fit], x[held]

        c, oof, score = cross_validated(rows, y, spec, folds, tuple(training.frozen_c_grid),
                                        balanced, standardize=True)
        head = fit_logistic(x, y, spec, c, balanced, standardize=True)
        set_head(clf, spec.name, head.coef, head.intercept)
        report[spec.name] = {"articles": len(examples), "C": c, "cv_score": round(score, 4)}
        if spec.type == MULTI_LABEL:  # what the network alone would decide by
            report[spec.name]["network_thresholds"] = tune_thresholds(
                spec, [e.label for e in examples], oof, task_cfg.threshold_tuning)
        mixed = add_lexical(spec, task_cfg, [a.text for a in encoded], y, folds, oof,
                            lexical, report[spec.name])
        if spec.type == MULTI_LABEL:
            spec.thresholds = tune_thresholds(spec, [e.label for e in examples], mixed,
                                              task_cfg.threshold_tuning)
        mixed_note = ("" if spec.lexical_weight is None else
                      f"; mixed with lexical (w={spec.lexical_weight}) "
                      f"{report[spec.name]['mixed_cv_score']:.4f}")
        print(f"{spec.name}: frozen head C={c}, cross-validated score {score:.4f}{mixed_note}",
              file=sys.stderr)
    clf.lexical = lexical
    report["embedding_cache"] = {"folder": str(cache.folder), "hits": cache.hits,
                                 "misses": cache.misses}
    report["seconds"] = round(time.perf_counter() - started, 1)
    return report


def add_lexical(spec: TaskSpec, task_cfg: TaskConfig, texts: list[str], y: np.ndarray,
                folds: list, network_probs: np.ndarray, lexical: dict,
                report: dict) -> np.ndarray:
    """Fit the task's lexical component if it has one and choose its weight on the
    held-out probabilities `network_probs` (same articles, same order). Returns the
    probabilities to tune thresholds on."""
    if not task_cfg.lexical:
        spec.lexical_weight = None
        return network_probs
    model, oof, info = fit_lexical(spec, texts, y, folds, task_cfg.class_weights == "balanced")
    weight, score = ((task_cfg.lexical_weight, None) if task_cfg.lexical_weight is not None
                     else best_mixture(spec, y, network_probs, oof))
    mixed = weight * oof + (1 - weight) * network_probs
    if score is None:
        score = served_score(spec, y, mixed)[0]
    lexical[spec.name] = model
    spec.lexical_weight = weight
    report.update(info, lexical_weight=weight, mixed_cv_score=round(score, 4))
    return mixed


def lexical_for_finetuned(clf: ArticleClassifier, cfg: RunConfig, specs: list[TaskSpec],
                          splits: dict, batch_size: int) -> dict:
    """Lexical components of a fine-tuned model: fitted on the training split, their
    weight chosen on the validation split against the network's validation probabilities."""
    report = {}
    for task_cfg, spec in zip(cfg.tasks, specs):
        if not task_cfg.lexical:
            continue
        train, validation = splits[spec.name]["train"], splits[spec.name]["validation"]
        if not validation:
            raise ValueError(f"task {spec.name}: a lexical component needs a validation "
                             "split to choose its weight")
        texts = [clean_text(e.text, cfg.model.clean_boilerplate) for e in train]
        y = label_matrix(spec, train)
        folds = make_folds(spec, y, cfg.training.cv_folds, cfg.training.seed)
        model, _, info = fit_lexical(spec, texts, y, folds, task_cfg.class_weights == "balanced")
        encoded = clf.encode([e.text for e in validation])
        saved, spec.lexical_weight = spec.lexical_weight, None
        network = clf.probabilities(encoded, batch_size)[spec.name]
        lexical_probs = model.probabilities([a.text for a in encoded])
        y_val = label_matrix(spec, validation)
        weight, score = ((task_cfg.lexical_weight, None) if task_cfg.lexical_weight is not None
                         else best_mixture(spec, y_val, network, lexical_probs))
        spec.lexical_weight = weight if weight is not None else saved
        clf.lexical[spec.name] = model
        report[spec.name] = {**info, "lexical_weight": weight, "validation_score": score}
    return report
