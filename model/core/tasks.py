"""What a trained model knows of each task, and the rules that turn its probabilities
into answers.

`TaskSpec` is what the artifact records about each head once the labels are known.
`decide` is the one multi-label decision rule: serving, evaluation and threshold tuning
all go through it, so thresholds are tuned under the rule that is applied. `confident`
says when an article's answer can no longer change (early exit, model/runtime/early_exit.py).
Training code that needs only these rules imports this module, not the inference stack.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np

from model.core.calibration import check_calibration
from model.core.heldout import check_heldout

SINGLE_LABEL = "single_label"
MULTI_LABEL = "multi_label"
TASK_TYPES = (SINGLE_LABEL, MULTI_LABEL)


@dataclass
class TaskSpec:
    """One head of a trained model: its name, type, labels and decision thresholds.

    `lexical_weight`: the share of the task's lexical model (TF-IDF + logistic regression,
    `lexical.safetensors`) in its probabilities; None when the task has none.
    `calibration`: the map from mixed to served probabilities (model/core/calibration.py);
    None serves them as mixed.
    `heldout`: what the served scores did on held-out training articles (counts per label,
    model/core/heldout.py), from which profiles correct their shares; None when the
    model was trained before it was recorded.
    """

    name: str
    type: str
    labels: list[str]
    thresholds: list[float] | None = None  # multi-label only, one per label
    lexical_weight: float | None = None
    calibration: dict | None = None
    heldout: dict | None = None

    def __post_init__(self):
        if self.type not in TASK_TYPES:
            raise ValueError(f"task {self.name!r}: type must be one of {TASK_TYPES}, "
                             f"got {self.type!r}")
        if len(self.labels) < 2 and self.type == SINGLE_LABEL:
            raise ValueError(f"task {self.name!r} needs at least two labels, got {self.labels}")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"task {self.name!r} has duplicate labels: {self.labels}")
        if self.lexical_weight is not None and not 0.0 <= self.lexical_weight <= 1.0:
            raise ValueError(f"task {self.name!r}: lexical_weight must be in [0, 1]")
        if self.type == MULTI_LABEL and self.thresholds is None:
            self.thresholds = [0.5] * len(self.labels)
        self.check_thresholds()
        try:
            check_calibration(self.calibration, len(self.labels), self.type)
            check_heldout(self.heldout, len(self.labels))
        except ValueError as err:
            raise ValueError(f"task {self.name!r}: {err}") from None

    def check_thresholds(self) -> None:
        """One threshold in [0, 1] per label of a multi-label task, none on a single-label
        one. Checked here because `decide` broadcasts: a one-element list would otherwise
        apply its value to every label without a word, and a wrong count fail far from the
        artifact that stored it. A single-label task answers by argmax and never reads
        thresholds, so stored ones are refused rather than ignored: whoever wrote them
        expected them to matter."""
        if self.type != MULTI_LABEL:
            if self.thresholds is not None:
                raise ValueError(f"task {self.name!r} is single-label (it answers with its "
                                 f"most probable label): thresholds must be null, got "
                                 f"{self.thresholds!r}")
            return
        if not isinstance(self.thresholds, (list, tuple)) or \
                len(self.thresholds) != len(self.labels):
            count = (len(self.thresholds) if isinstance(self.thresholds, (list, tuple))
                     else repr(self.thresholds))
            raise ValueError(f"task {self.name!r}: one threshold per label is needed, got "
                             f"{count} for {len(self.labels)} labels {self.labels}")
        for label, value in zip(self.labels, self.thresholds):
            try:
                check_threshold(value)
            except ValueError as err:
                raise ValueError(f"task {self.name!r}: label {label!r}: {err}") from None


def check_threshold(value, name: str = "threshold") -> float:
    """A decision threshold: a real number in [0, 1] (not a bool, not NaN). The one rule
    for stored thresholds, `predict(threshold=...)` and `--threshold`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) \
            or not 0.0 <= value <= 1.0:  # NaN fails the comparison too
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def check_top_k(value, name: str = "top_k") -> int:
    """How many best labels to give: a whole number >= 1 (not a bool). `[:k]` with 0 or
    a negative k would silently give none or all but the last; one rule for
    `predict(top_k=...)` and `--top-k`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
    return int(value)


def decide_labels(task: TaskSpec, probs: np.ndarray, threshold: float | None = None,
                  top_k: int | None = None, at_least_one: bool = True) -> list[str]:
    """The labels of a multi-label task that an article gets, best first."""
    order = [int(i) for i in np.argsort(-probs, kind="stable")]
    if top_k is not None:
        return [task.labels[i] for i in order[:top_k]]
    cut = [threshold] * len(task.labels) if threshold is not None else task.thresholds
    chosen = decide(probs[None, :], cut, at_least_one)[0]
    return [task.labels[i] for i in order if chosen[i]]


def decide(probs: np.ndarray, thresholds, at_least_one: bool = True) -> np.ndarray:
    """The multi-label decision rule, for a matrix of articles x labels.

    A label is given when its probability reaches its threshold; an article that gets
    no label that way gets its most probable one, unless `at_least_one` is off. Serving,
    evaluation and threshold tuning all decide through this one function, so thresholds
    are tuned under the rule that is applied.
    """
    probs = np.asarray(probs)
    chosen = probs >= np.asarray(thresholds, dtype=probs.dtype)
    if at_least_one and len(probs):
        empty = ~chosen.any(axis=1)
        chosen[np.flatnonzero(empty), probs[empty].argmax(axis=1)] = True
    return chosen


def confident(task: TaskSpec, probs: np.ndarray, level: float,
              at_least_one: bool = True) -> np.ndarray:
    """Per article (rows of `probs`): is this task decided with confidence `level`?
    With `at_least_one` (the rule that gives an article with no label its most probable
    one), a multi-label article with no label clearly in is not decided: its fallback
    label could differ once the whole article is read."""
    if task.type != MULTI_LABEL:
        return probs.max(axis=1) >= level
    thresholds = np.asarray(task.thresholds, dtype=probs.dtype)
    clear_in = (probs >= level) & (probs >= thresholds)
    clear_out = (probs <= 1 - level) & (probs < thresholds)
    decided = (clear_in | clear_out).all(axis=1)
    return decided & clear_in.any(axis=1) if at_least_one else decided
