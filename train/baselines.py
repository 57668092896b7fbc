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
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.model_selection import KFold
from sklearn.multiclass import OneVsRestClassifier
from sklearn.svm import LinearSVC

from model.config import TaskSpec
from model.inference import decide

from .data import multi_hot
from .metrics import tune_thresholds

C_GRID = (1.0, 10.0, 100.0)


def _vectorizer() -> TfidfVectorizer:
    return TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2)


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
    vectorizer = _vectorizer()
    x_train = vectorizer.fit_transform([e.text for e in train_examples])
    model, learned, always = _one_vs_rest(LinearSVC(C=1.0), x_train, y_train)
    predicted = np.zeros_like(y_test)
    predicted[:, learned] = model.predict(vectorizer.transform([e.text for e in test_examples]))
    predicted[:, always] = 1
    return _scores(y_test, predicted)


def _probabilities(c: float, texts_train, y_train, texts_test, n_labels: int) -> np.ndarray:
    vectorizer = _vectorizer()
    x_train = vectorizer.fit_transform(texts_train)
    model, learned, always = _one_vs_rest(LogisticRegression(C=c, class_weight="balanced",
                                                             max_iter=2000), x_train, y_train)
    probs = np.zeros((len(texts_test), n_labels))
    probs[:, learned] = model.predict_proba(vectorizer.transform(texts_test))
    probs[:, always] = 1.0
    return probs


def tfidf_logreg(train_examples, test_examples, labels: list[str], folds: int = 5,
                 seed: int = 42) -> dict:
    """Fit on the training articles; C and the threshold come from cross-validation on
    them, never from the test articles."""
    texts = [e.text for e in train_examples]
    y_train = multi_hot([e.label for e in train_examples], labels)
    spec = TaskSpec("frames", "multi_label", list(labels))
    best = None
    for c in C_GRID:
        oof = np.zeros(y_train.shape)
        for fit, held in KFold(folds, shuffle=True, random_state=seed).split(texts):
            oof[held] = _probabilities(c, [texts[i] for i in fit], y_train[fit],
                                       [texts[i] for i in held], len(labels))
        gold = [e.label for e in train_examples]
        threshold = tune_thresholds(spec, gold, oof, "global")[0]
        score = _scores(y_train, decide(oof, [threshold] * len(labels)))["micro_f1"]
        if best is None or score > best[0]:
            best = (score, c, threshold)
    _, c, threshold = best
    probs = _probabilities(c, texts, y_train, [e.text for e in test_examples], len(labels))
    y_test = multi_hot([e.label for e in test_examples], labels)
    return {**_scores(y_test, decide(probs, [threshold] * len(labels))), "C": c,
            "threshold": threshold}


BASELINES = {"TF-IDF + LinearSVC (one-vs-rest)": tfidf_svm,
             "TF-IDF + logistic regression (balanced, CV-tuned C and threshold)": tfidf_logreg}
