"""Linear models chosen by cross-validation: the frozen-encoder heads, the lexical component
and the TF-IDF + logistic regression baseline all fit through here.

One rule for all three: logistic regression (one-vs-rest for multi-label, multinomial for
single-label), its C picked from a grid by k-fold cross-validation on the training articles,
scored under the decision rule that is served (`decide` with one tuned threshold for
multi-label, argmax for single-label). The out-of-fold probabilities of the chosen C come
back too, so later choices (the lexical mixing weight, the thresholds) are made on articles
the models did not see.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold, StratifiedKFold

from model.core.lexical import LexicalModel, linear_probabilities
from model.core.tasks import MULTI_LABEL, TaskSpec
from train.data import multi_hot
from train.tuning import served_score

# Logits given to a label every training article has (or none has): certain, but finite.
CERTAIN = 12.0
# C of the lexical component's logistic regression, chosen by cross-validation.
LEXICAL_C_GRID = (1.0, 10.0, 100.0)


def tfidf_vectorizer() -> TfidfVectorizer:
    """The bag-of-words features of the lexical component and the baselines."""
    return TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2)


@dataclass
class LinearFit:
    """A fitted linear model in the space of the features it was given."""

    coef: np.ndarray       # labels x features
    intercept: np.ndarray  # labels

    def probabilities(self, x, task_type: str) -> np.ndarray:
        return linear_probabilities(x, self.coef, self.intercept, task_type)


def fit_logistic(x, y: np.ndarray, spec: TaskSpec, c: float, balanced: bool,
                 standardize: bool = False) -> LinearFit:
    """Logistic regression on features `x` (dense or sparse). `y` is multi-hot for
    multi-label tasks, class indices otherwise. With `standardize`, features are scaled to
    zero mean and unit variance for the fit and the scaling is folded back into the
    coefficients, so the result applies to raw features (and so to the network's head)."""
    mean = scale = None
    if standardize:
        mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
        x = (x - mean) / scale
    weight = "balanced" if balanced else None
    n_features = x.shape[1]
    if spec.type == MULTI_LABEL:
        coef = np.zeros((len(spec.labels), n_features))
        intercept = np.zeros(len(spec.labels))
        counts = y.sum(axis=0)
        for j in range(len(spec.labels)):
            if counts[j] in (0, len(y)):
                intercept[j] = CERTAIN if counts[j] else -CERTAIN
                continue
            model = LogisticRegression(C=c, class_weight=weight, max_iter=3000).fit(x, y[:, j])
            coef[j], intercept[j] = model.coef_[0], model.intercept_[0]
    else:
        model = LogisticRegression(C=c, class_weight=weight, max_iter=3000).fit(x, y)
        coef = np.full((len(spec.labels), n_features), 0.0)
        intercept = np.full(len(spec.labels), -CERTAIN)  # classes absent from training
        rows = model.classes_
        if len(rows) == 2:  # scikit-learn keeps one row for two classes: logit of the second
            coef[rows[1]], intercept[rows[1]] = model.coef_[0], model.intercept_[0]
            intercept[rows[0]] = 0.0
        else:
            coef[rows], intercept[rows] = model.coef_, model.intercept_
    if standardize:
        coef = coef / scale
        intercept = intercept - coef @ mean
    return LinearFit(coef.astype(np.float32), intercept.astype(np.float32))


Features = Callable[[np.ndarray, np.ndarray], tuple[object, object]]


def cross_validated(features: Features, y: np.ndarray, spec: TaskSpec, folds: list,
                    grid: tuple[float, ...], balanced: bool,
                    standardize: bool = False) -> tuple[float, np.ndarray, float]:
    """Pick C from `grid` by cross-validation over `folds` (pairs of index arrays).

    `features(fit, held)` returns the feature matrices of those articles, fitted on `fit`
    alone (a TF-IDF vocabulary must not see the held-out articles). Returns the chosen C,
    its out-of-fold probabilities and its out-of-fold score.
    """
    blocks = [features(fit, held) for fit, held in folds]
    best = None
    for c in grid:
        oof = np.zeros((len(y), len(spec.labels)))
        for (fit, held), (x_fit, x_held) in zip(folds, blocks):
            model = fit_logistic(x_fit, y[fit], spec, c, balanced, standardize)
            oof[held] = model.probabilities(x_held, spec.type)
        score = served_score(spec, y, oof)[0]
        if best is None or score > best[0]:
            best = (score, c, oof)
    score, c, oof = best
    return c, oof, score


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
