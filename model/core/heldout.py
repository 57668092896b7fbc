"""What a task's served scores did on held-out training articles: the error estimates
that corrected profile shares (model/profiles/quantify.py) are built from.

Recorded at training in each task's `heldout` entry of the artifact, from the calibrated
out-of-fold (frozen training) or validation (fine-tuning) probabilities and the decisions
the served rule makes from them. Only counts and sums, per label, so the entry is small
and holds nothing of the articles themselves:

    articles, positives          held-out articles, and how many carry each label
    tp, fp                       decisions of the served rule (multi-label: thresholds with
                                 the at-least-one fallback; single-label: argmax)
    score_sum_pos/neg, score_sumsq_pos/neg
                                 sums (and sums of squares) of the label's served score
                                 over the articles that carry it / do not

Single-label tasks record the same per label, one label against the rest.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SINGLE = "single_label"


def heldout_summary(task_type: str, probs: np.ndarray, y: np.ndarray,
                    decided: np.ndarray) -> dict:
    """The `heldout` entry of a task: `probs` are the served (calibrated) scores of held-out
    articles (articles x labels), `y` the gold (multi-hot, or class indices) and
    `decided` the served decisions (multi-hot; for single-label the argmax one-hot)."""
    probs = np.asarray(probs, dtype=np.float64)
    if task_type == SINGLE:
        y = np.eye(probs.shape[1], dtype=bool)[np.asarray(y)]
    y = np.asarray(y, dtype=bool)
    decided = np.asarray(decided, dtype=bool)

    def per_label(values):
        return [round(float(v), 6) for v in values]

    return {
        "articles": int(len(probs)),
        "positives": [int(v) for v in y.sum(axis=0)],
        "tp": [int(v) for v in (decided & y).sum(axis=0)],
        "fp": [int(v) for v in (decided & ~y).sum(axis=0)],
        "score_sum_pos": per_label((probs * y).sum(axis=0)),
        "score_sum_neg": per_label((probs * ~y).sum(axis=0)),
        "score_sumsq_pos": per_label((probs ** 2 * y).sum(axis=0)),
        "score_sumsq_neg": per_label((probs ** 2 * ~y).sum(axis=0)),
    }


@dataclass
class LabelErrors:
    """One label's held-out rates, as arrays over bootstrap draws (or one value)."""

    prior: np.ndarray   # share of held-out articles carrying the label
    tpr: np.ndarray     # P(decided | carries it)
    fpr: np.ndarray     # P(decided | does not)
    mean_pos: np.ndarray  # mean served score of articles carrying it
    mean_neg: np.ndarray  # ... and of those that do not


def label_errors(heldout: dict, j: int, draws: int = 0,
                 rng: np.random.Generator | None = None) -> LabelErrors:
    """Label `j`'s rates from a `heldout` entry: the point estimates (draws=0), or `draws`
    parametric bootstrap draws of them, so an interval carries the uncertainty of
    rates measured on a few hundred articles (a label with 20 positives has a true
    positive rate known to about +-0.1)."""
    n, pos = heldout["articles"], heldout["positives"][j]
    neg = n - pos
    tp, fp = heldout["tp"][j], heldout["fp"][j]
    s_pos, s_neg = heldout["score_sum_pos"][j], heldout["score_sum_neg"][j]
    q_pos, q_neg = heldout["score_sumsq_pos"][j], heldout["score_sumsq_neg"][j]
    m_pos = s_pos / pos if pos else 1.0
    m_neg = s_neg / neg if neg else 0.0
    if not draws:
        return LabelErrors(np.array([pos / n]), np.array([tp / pos if pos else 1.0]),
                           np.array([fp / neg if neg else 0.0]), np.array([m_pos]),
                           np.array([m_neg]))
    rng = rng or np.random.default_rng(0)
    # Resampling the held-out articles: positives ~ Binomial(n, prior); within them the
    # decisions ~ Binomial, and a mean score ~ Normal(mean, sd / sqrt(count)).
    pos_b = np.maximum(rng.binomial(n, pos / n, draws), 1)
    neg_b = np.maximum(n - pos_b, 1)
    tpr = rng.binomial(pos_b, tp / pos if pos else 1.0) / pos_b
    fpr = rng.binomial(neg_b, fp / neg if neg else 0.0) / neg_b
    sd_pos = np.sqrt(max(q_pos / pos - m_pos ** 2, 0.0)) if pos else 0.0
    sd_neg = np.sqrt(max(q_neg / neg - m_neg ** 2, 0.0)) if neg else 0.0
    mean_pos = rng.normal(m_pos, sd_pos / np.sqrt(pos_b))
    mean_neg = rng.normal(m_neg, sd_neg / np.sqrt(neg_b))
    return LabelErrors(pos_b / n, tpr, fpr, mean_pos, mean_neg)


def check_heldout(heldout, n_labels: int) -> None:
    """Refuse a `heldout` entry that does not fit its task or cannot be counts: a clear
    error at load rather than a division by zero or a numpy error at the first profile."""
    if heldout is None:
        return
    keys = ("positives", "tp", "fp", "score_sum_pos", "score_sum_neg", "score_sumsq_pos",
            "score_sumsq_neg")
    if not isinstance(heldout, dict) or not isinstance(heldout.get("articles"), int) \
            or isinstance(heldout.get("articles"), bool) or heldout["articles"] < 1:
        raise ValueError("heldout must be a mapping with a whole number of `articles` >= 1")
    n = heldout["articles"]
    for key in keys:
        values = heldout.get(key)
        if not isinstance(values, list) or len(values) != n_labels:
            raise ValueError(f"heldout {key!r} needs one entry per label ({n_labels})")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                   and np.isfinite(v) and v >= 0 for v in values):
            raise ValueError(f"heldout {key!r}: every entry must be a finite number >= 0")
    for j in range(n_labels):
        pos, tp, fp = heldout["positives"][j], heldout["tp"][j], heldout["fp"][j]
        if not (pos <= n and tp <= pos and fp <= n - pos):
            raise ValueError(f"heldout counts of label {j} do not fit: positives {pos}, tp "
                             f"{tp}, fp {fp} of {n} articles")
