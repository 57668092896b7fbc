"""Per-language choices against shared ones, measured on a multilingual task's out-of-fold
probabilities (a report: the served model keeps one lexical component and one threshold,
because it is not told an article's language).

Each alternative is scored fairly by nested cross-validation over the training folds: for
every fold, the thresholds (and lexical weights) are chosen on the out-of-fold
probabilities of the other folds and applied to this one, so a per-language choice gains
only what it would gain on articles it was not chosen on.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import f1_score

from model.core.tasks import MULTI_LABEL, TaskSpec, decide
from train.linear import fit_lexical
from train.tuning import best_mixture, served_score


def nested_score(spec: TaskSpec, y: np.ndarray, langs: np.ndarray, folds: list,
                 network: np.ndarray, lexical: np.ndarray | None, per_language: bool) -> float:
    """Pooled micro-F1 when, fold by fold, the lexical weight and one threshold are chosen
    on the other folds (per language, or over all articles) and applied to the fold."""
    decided = np.zeros_like(y, dtype=bool)
    groups = sorted(set(langs)) if per_language else [None]
    for fit, held in folds:
        for lang in groups:
            own = np.ones(len(y), bool) if lang is None else langs == lang
            f, h = fit[own[fit]], held[own[held]]
            if not len(h):
                continue
            mixed = network
            if lexical is not None:
                weight, _ = best_mixture(spec, y[f], network[f], lexical[f])
                mixed = weight * lexical + (1 - weight) * network
            _, thresholds = served_score(spec, y[f], mixed[f])
            decided[h] = decide(mixed[h], thresholds)
    return float(f1_score(y, decided, average="micro", zero_division=0))


def language_report(spec: TaskSpec, examples, texts: list[str], y: np.ndarray, folds: list,
                    network: np.ndarray, lexical: np.ndarray | None,
                    balanced: bool) -> dict | None:
    """Shared against per-language thresholds and lexical components, for a multi-label
    task whose articles carry two or more languages (`meta["lang"]`); None otherwise."""
    langs = np.array([e.meta.get("lang") or "?" for e in examples])
    if spec.type != MULTI_LABEL or len(set(langs)) < 2:
        return None
    report = {
        "shared lexical, one threshold": nested_score(spec, y, langs, folds, network,
                                                      lexical, False),
        "shared lexical, thresholds per language": nested_score(spec, y, langs, folds,
                                                                network, lexical, True)}
    if lexical is not None:
        own = np.zeros_like(lexical)
        for lang in sorted(set(langs)):
            rows = np.flatnonzero(langs == lang)
            inner = [(np.flatnonzero(np.isin(rows, fit)), np.flatnonzero(np.isin(rows, held)))
                     for fit, held in folds]
            _, oof, _ = fit_lexical(spec, [texts[i] for i in rows], y[rows], inner, balanced)
            own[rows] = oof
        report["lexical per language, one threshold"] = nested_score(
            spec, y, langs, folds, network, own, False)
        report["lexical per language, thresholds per language"] = nested_score(
            spec, y, langs, folds, network, own, True)
    return {name: round(score, 4) for name, score in report.items()}
