"""Bag-of-words baselines for multi-label framing, fitted on the same folds as the model.

    tfidf_svm:    TF-IDF (word 1-2 grams) + one-vs-rest LinearSVC, decision value >= 0
    tfidf_logreg: TF-IDF + one-vs-rest logistic regression with balanced class weights,
                  its C and one decision threshold chosen by 5-fold cross-validation on
                  the training articles alone, decided by the rule the model is served
                  with (an article that passes no threshold gets its best frame)

The second is the strong one: the framing model has to beat it, not the first.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import f1_score
from sklearn.model_selection import KFold
from sklearn.multiclass import OneVsRestClassifier
from sklearn.svm import LinearSVC

from model.core.tasks import TaskSpec, decide
from train.data import multi_hot
from train.linear import cross_validated, fit_logistic, served_score, tfidf_vectorizer

C_GRID = (1.0, 10.0, 100.0)


def _scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    return {"micro_f1": float(f1_score(y_true, y_pred, average="micro", zero_division=0)),
            "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0))}


def _one_vs_rest(model, x, y: np.ndarray):
    """One binary model per label that varies in training; returns `(fitted, learned,
    always)`: the labels modelled, and those every training article has (predicted
    always). A label no training article has is never predicted."""
    counts = y.sum(axis=0)
    learned, always = (counts > 0) & (counts < len(y)), counts == len(y)
    return OneVsRestClassifier(model).fit(x, y[:, learned]), learned, always


def tfidf_svm(train_examples, test_examples, labels: list[str]) -> dict:
    y_train = multi_hot([e.label for e in train_examples], labels)
    y_test = multi_hot([e.label for e in test_examples], labels)
    vectorizer = tfidf_vectorizer()
    x_train = vectorizer.fit_transform([e.text for e in train_examples])
    model, learned, always = _one_vs_rest(LinearSVC(C=1.0), x_train, y_train)
    predicted = np.zeros_like(y_test)
    predicted[:, learned] = model.predict(vectorizer.transform([e.text for e in test_examples]))
    predicted[:, always] = 1
    return _scores(y_test, predicted)


def tfidf_logreg(train_examples, test_examples, labels: list[str], folds: int = 5,
                 seed: int = 42) -> dict:
    """Fit on the training articles; C and the threshold come from cross-validation on
    them, never from the test articles (the lexical component's own rule, train/linear.py)."""
    texts = [e.text for e in train_examples]
    y_train = multi_hot([e.label for e in train_examples], labels)
    spec = TaskSpec("frames", "multi_label", list(labels))

    def features(fit, held):
        vectorizer = tfidf_vectorizer()
        return (vectorizer.fit_transform([texts[i] for i in fit]),
                vectorizer.transform([texts[i] for i in held]))

    splits = list(KFold(folds, shuffle=True, random_state=seed).split(texts))
    c, oof, _ = cross_validated(features, y_train, spec, splits, C_GRID, balanced=True)
    threshold = served_score(spec, y_train, oof)[1][0]
    vectorizer = tfidf_vectorizer()
    model = fit_logistic(vectorizer.fit_transform(texts), y_train, spec, c, balanced=True)
    probs = model.probabilities(vectorizer.transform([e.text for e in test_examples]),
                                spec.type)
    y_test = multi_hot([e.label for e in test_examples], labels)
    return {**_scores(y_test, decide(probs, [threshold] * len(labels))), "C": c,
            "threshold": threshold}


BASELINES = {"TF-IDF + LinearSVC (one-vs-rest)": tfidf_svm,
             "TF-IDF + logistic regression (balanced, CV-tuned C and threshold)": tfidf_logreg}
