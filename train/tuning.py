"""Choices made on held-out probabilities, under the rule that is served: the decision
thresholds of a multi-label task, the weight of the lexical component, and the score both
are chosen by (`decide` with one tuned threshold for multi-label, argmax for single-label).
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import f1_score

from model.core.calibration import apply_calibration, choose_calibration, expected_calibration_error
from model.core.heldout import heldout_summary
from model.core.tasks import MULTI_LABEL, TaskSpec, decide
from train.data import multi_hot

THRESHOLD_GRID = np.round(np.arange(0.05, 0.951, 0.025), 3)


def tune_thresholds(task: TaskSpec, gold: list, probs: np.ndarray, mode: str) -> list[float]:
    """Decision thresholds of a multi-label task that maximise F1 on held-out articles.

    Candidates are scored under the rule predictions are made with (`decide`: an article
    that passes no threshold gets its best label), so the F1 tuned for is the F1 served.
    `global` picks one threshold for the micro-F1 of all labels; `per_label` then adjusts
    each label's threshold for that label's F1, the others held fixed (two sweeps, since
    the fallback ties the labels together); `none` keeps 0.5. Ties go to the threshold
    nearest 0.5.
    """
    if mode == "none" or len(gold) == 0:
        return [0.5] * len(task.labels)
    y = multi_hot(gold, task.labels)
    by_distance = sorted(THRESHOLD_GRID, key=lambda t: abs(t - 0.5))
    n_labels = len(task.labels)
    best = max(by_distance, key=lambda t: f1_score(y, decide(probs, [t] * n_labels),
                                                   average="micro", zero_division=0))
    thresholds = [float(best)] * n_labels
    if mode == "global":
        return thresholds
    for _ in range(2):
        for j in range(n_labels):
            def label_f1(t, j=j):
                trial = [*thresholds[:j], t, *thresholds[j + 1:]]
                return f1_score(y[:, j], decide(probs, trial)[:, j], zero_division=0)
            thresholds[j] = float(max(by_distance, key=label_f1))
    return thresholds


def served_score(spec: TaskSpec, y: np.ndarray, probs: np.ndarray) -> tuple[float, list]:
    """The headline score of `probs` under the served rule, and the thresholds it used:
    micro-F1 with one threshold tuned on these very articles (multi-label), accuracy
    (single-label)."""
    if spec.type != MULTI_LABEL:
        return float((probs.argmax(axis=1) == y).mean()), []
    gold = [[spec.labels[j] for j in np.flatnonzero(row)] for row in y]
    thresholds = tune_thresholds(spec, gold, probs, "global")
    predicted = decide(probs, thresholds)
    return float(f1_score(y, predicted, average="micro", zero_division=0)), thresholds


def best_mixture(spec: TaskSpec, y: np.ndarray, network: np.ndarray, lexical: np.ndarray,
                 step: float = 0.1) -> tuple[float, float]:
    """The lexical weight `w` in `w * lexical + (1 - w) * network` that scores best on
    held-out probabilities, and that score; ties go to the smaller weight."""
    best = None
    for w in np.round(np.arange(0.0, 1.0 + 1e-9, step), 3):
        score = served_score(spec, y, w * lexical + (1 - w) * network)[0]
        if best is None or score > best[1] + 1e-12:
            best = (float(w), score)
    return best


def calibrate_and_tune(spec: TaskSpec, gold: list, y: np.ndarray, probs: np.ndarray,
                       calibration: str = "auto", threshold_mode: str = "global",
                       seed: int = 0) -> tuple[np.ndarray, dict]:
    """The last choices of a task, made on its held-out probabilities `probs` (as mixed,
    uncalibrated; `y` multi-hot or class indices): the calibration (model/core/
    calibration.py), then the thresholds tuned on the calibrated scores, then the
    held-out error counts profiles correct their shares with (model/core/heldout.py).
    Sets them on `spec`; returns the calibrated probabilities and a report."""
    methods = None if calibration == "auto" else (calibration,)
    spec.calibration, table = choose_calibration(probs, y, spec.type, seed=seed,
                                                 methods=methods)
    calibrated = apply_calibration(spec.calibration, probs, spec.type)
    if spec.type == MULTI_LABEL:
        spec.thresholds = tune_thresholds(spec, gold, calibrated, threshold_mode)
        decided = decide(calibrated, spec.thresholds)
    else:
        decided = np.eye(len(spec.labels), dtype=bool)[calibrated.argmax(axis=1)]
    spec.heldout = heldout_summary(spec.type, calibrated, y, decided)
    report = {"calibration": spec.calibration["method"], "calibration_cv": table,
              "ece_before": round(expected_calibration_error(probs, y, spec.type), 4),
              "ece_after_cv": table[spec.calibration["method"]]["ece"]}
    return calibrated, report
