"""Frozen-encoder training (`training.mode: frozen`, and `top`), as one story per task:

1. embed: every window of every article is embedded once (cached on disk,
   train/embedding_cache.py) and each article is the mean of its window embeddings;
2. fit the head: a logistic regression on those means, its C chosen by cross-validation.
   With mean pooling that is exactly the network's own head: the mean of the window
   logits `W e_i + b` is `W mean(e) + b`;
   2b. (`mode: top` only) train the encoder's top layers, the heads starting from those
   probes, on cached lower-layer states (train/top_layers.py); its out-of-fold
   probabilities replace the probes' in what follows;
3. fit the lexical component (`tasks[].lexical: true`): TF-IDF + logistic regression on
   the same articles and folds;
4. mix: the lexical weight that scores best on the out-of-fold probabilities of both;
5. calibrate and tune: a calibration of the mixed out-of-fold probabilities
   (model/core/calibration.py), the decision thresholds of a multi-label task on the
   calibrated ones, under the rule that is served, and the held-out error counts that
   profiles correct their shares with (model/core/heldout.py).

No validation split is needed to stop training, so the training and validation articles
are pooled and every choice is made on out-of-fold probabilities of k-fold
cross-validation (hundreds of articles rather than the few dozen of a validation split).
The final models are then fitted on all of them. The helpers live in train/linear.py
(fits and folds) and train/tuning.py (choices under the served rule).
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch

from model.core.lexical import LexicalModel
from model.core.tasks import MULTI_LABEL, TaskSpec
from model.runtime.classifier import ArticleClassifier
from train.config import RunConfig, TaskConfig
from train.embedding_cache import EmbeddingCache
from train.languages import language_report
from train.linear import cross_validated, fit_lexical, fit_logistic, label_matrix, make_folds
from train.top_layers import encoder_layers, states_to_embeddings, tune_top_layers
from train.trainer import balanced_weights
from train.tuning import best_mixture, calibrate_and_tune, served_score, tune_thresholds


def train_frozen(clf: ArticleClassifier, cfg: RunConfig, specs: list[TaskSpec],
                 splits: dict) -> tuple[dict, dict[str, LexicalModel]]:
    """Fit every head of `clf.network` (and lexical component) on frozen window embeddings
    of the training and validation articles in `splits`; sets the heads and the tasks'
    lexical weights and thresholds. `clf` embeds, in its own precision. Returns a report
    and the lexical models by task."""
    if cfg.model.pooling != "mean":
        raise ValueError("training.mode frozen fits each head on the mean window embedding, "
                         f"which is the network's head only under model.pooling mean "
                         f"(got {cfg.model.pooling!r})")
    training = cfg.training
    top = training.mode == "top"
    layer = len(encoder_layers(clf.network.encoder)) - training.top.layers if top else None
    cache = EmbeddingCache(clf, training.embedding_cache, layer=layer)
    report, lexical, fitted = {}, {}, []
    started = time.perf_counter()
    for task_cfg, spec in zip(cfg.tasks, specs):
        examples = splits[spec.name]["train"] + splits[spec.name]["validation"]
        # 1. embed
        encoded, entries = cache.entries([e.text for e in examples], training.eval_batch_size)
        x = (states_to_embeddings(clf.network, entries, layer, clf.precision) if top
             else np.stack([entry["windows"].mean(axis=0) for entry in entries]))
        y = label_matrix(spec, examples)
        folds = make_folds(spec, y, training.cv_folds, training.seed)
        balanced = task_cfg.class_weights == "balanced"
        # 2. fit the head
        oof, info = fit_head(clf, spec, x, y, folds, tuple(training.frozen_c_grid), balanced)
        fitted.append({"examples": examples, "encoded": encoded, "entries": entries, "y": y,
                       "folds": folds, "oof": oof, "info": info, "balanced": balanced})
    if top:  # 2b. train the top layers from the probe, on cached states
        network_oof, report["top"] = top_layers(clf, cfg, specs, fitted)
    for task_cfg, spec, task in zip(cfg.tasks, specs, fitted):
        gold, y, info = [e.label for e in task["examples"]], task["y"], task["info"]
        oof = network_oof[spec.name] if top else task["oof"]
        if spec.type == MULTI_LABEL:  # what the network alone would decide by
            info["network_thresholds"] = tune_thresholds(spec, gold, oof,
                                                         task_cfg.threshold_tuning)
        if top:
            info["network_cv_score"] = round(served_score(spec, y, oof)[0], 4)
        # 3. fit the lexical component, 4. mix
        mixed = oof
        spec.lexical_weight = None
        if task_cfg.lexical:
            model, lexical_oof, lexical_info = fit_lexical(
                spec, [a.text for a in task["encoded"]], y, task["folds"], task["balanced"])
            lexical[spec.name] = model
            spec.lexical_weight, mixed, score = mix(spec, task_cfg, y, oof, lexical_oof)
            info.update(lexical_info, lexical_weight=spec.lexical_weight,
                        mixed_cv_score=round(score, 4))
            if top:  # the probe the top layers started from, mixed the same way
                info["probe_mixed_cv_score"] = round(
                    best_mixture(spec, y, task["oof"], lexical_oof)[1], 4)
            by_language = language_report(spec, task["examples"],
                                          [a.text for a in task["encoded"]], y, task["folds"],
                                          oof, lexical_oof, task["balanced"])
            if by_language:
                info["by_language"] = by_language
        # 5. calibrate, tune the thresholds on the calibrated scores, record the errors
        _, calibration = calibrate_and_tune(spec, gold, y, mixed, task_cfg.calibration,
                                            task_cfg.threshold_tuning, training.seed)
        info.update(calibration)
        report[spec.name] = info
        say(spec, info)
    report["embedding_cache"] = {"folder": str(cache.folder), "hits": cache.hits,
                                 "misses": cache.misses}
    report["seconds"] = round(time.perf_counter() - started, 1)
    return report, lexical


def top_layers(clf: ArticleClassifier, cfg: RunConfig, specs: list[TaskSpec],
               fitted: list[dict]) -> tuple[dict[str, np.ndarray], dict]:
    """Cross-fit the top layers on every task's cached states (train/top_layers.py);
    the heads start from the probes just fitted. Returns the out-of-fold probabilities of
    each task's network and a report."""
    training = cfg.training
    tasks = []
    for spec, task in zip(specs, fitted):
        targets = task["y"] if spec.type == MULTI_LABEL else task["y"].astype(np.int64)
        weights = (balanced_weights(spec, task["examples"]).float() if task["balanced"]
                   else None)
        tasks.append({"entries": task["entries"], "targets": list(targets),
                      "folds": make_folds(spec, task["y"], training.top.folds, training.seed),
                      "loss_weights": weights})

    def score(index: int, probs: np.ndarray) -> float:
        return served_score(specs[index], fitted[index]["y"], probs)[0]

    return tune_top_layers(clf.network, tasks, training.top, training, clf.precision, score)


def fit_head(clf: ArticleClassifier, spec: TaskSpec, x: np.ndarray, y: np.ndarray,
             folds: list, grid: tuple[float, ...], balanced: bool) -> tuple[np.ndarray, dict]:
    """The task's head: C by cross-validation on the article means `x`, then fitted on all
    of them and written into the network. Returns its out-of-fold probabilities."""
    def rows(fit, held):
        return x[fit], x[held]

    c, oof, score = cross_validated(rows, y, spec, folds, grid, balanced, standardize=True)
    fitted = fit_logistic(x, y, spec, c, balanced, standardize=True)
    head = clf.network.heads[spec.name]
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(fitted.coef).to(head.weight))
        head.bias.copy_(torch.from_numpy(fitted.intercept).to(head.bias))
    return oof, {"articles": len(x), "C": c, "cv_score": round(score, 4)}


def mix(spec: TaskSpec, task_cfg: TaskConfig, y: np.ndarray, network: np.ndarray,
        lexical: np.ndarray) -> tuple[float, np.ndarray, float]:
    """The lexical weight (the config's, else the best on these held-out probabilities),
    the mixed probabilities and their score."""
    if task_cfg.lexical_weight is not None:
        weight = task_cfg.lexical_weight
        mixed = weight * lexical + (1 - weight) * network
        return weight, mixed, served_score(spec, y, mixed)[0]
    weight, score = best_mixture(spec, y, network, lexical)
    return weight, weight * lexical + (1 - weight) * network, score


def say(spec: TaskSpec, info: dict) -> None:
    mixed = ("" if spec.lexical_weight is None else
             f"; mixed with lexical (w={spec.lexical_weight}) {info['mixed_cv_score']:.4f}")
    print(f"{spec.name}: frozen head C={info['C']}, cross-validated score "
          f"{info['cv_score']:.4f}{mixed}", file=sys.stderr)
