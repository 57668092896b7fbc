"""Calibrated probabilities: a task's served scores are mapped so that, of the articles
given 0.7 for a label, about 70% carry it. Profiles count expected shares from these
scores (model/profiles/), so a score that over-claims would bias every share.

A calibration is fitted at training on held-out probabilities (out-of-fold for frozen
training, the validation split for fine-tuning), chosen among

- `none`: the mixed probabilities as they are;
- `temperature`: one temperature for the task (logits divided by T; single- and
  multi-label);
- `platt`: per label, a logistic regression on the logit (multi-label);
- `isotonic`: per label, a monotone step map, stored as its knots and applied by linear
  interpolation (multi-label);

by the Brier score of cross-validation on those held-out probabilities (a proper scoring
rule, so it cannot be gamed by hedging; expected calibration error is reported, not
optimised). Every map is monotone per label, so the order of an article's labels, and
with it evidence and top-k answers, is the same before and after.

Stored in the artifact as the task's `calibration` entry (plain numbers in config.json).
"""

from __future__ import annotations

import numpy as np

SINGLE = "single_label"
METHODS = ("none", "temperature", "platt", "isotonic")
EPS = 1e-6
BOUND = 1e-3  # calibrated scores stay within [BOUND, 1 - BOUND]
ECE_BINS = 15


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def apply_calibration(calibration: dict | None, probs: np.ndarray, task_type: str) -> np.ndarray:
    """`probs` (articles x labels) mapped by a stored calibration (None or `none`: as is)."""
    if not calibration or calibration.get("method", "none") == "none" or len(probs) == 0:
        return probs
    probs = np.asarray(probs, dtype=np.float64)
    method = calibration["method"]
    if method == "temperature":
        t = float(calibration["temperature"])
        if task_type == SINGLE:
            out = _softmax(np.log(np.clip(probs, EPS, 1.0)) / t)
        else:
            out = _sigmoid(_logit(probs) / t)
    elif method == "platt":
        a, b = np.asarray(calibration["slope"]), np.asarray(calibration["intercept"])
        out = _sigmoid(a * _logit(probs) + b)
    elif method == "isotonic":
        out = np.column_stack([np.interp(probs[:, j], x, y) for j, (x, y) in
                               enumerate(zip(calibration["x"], calibration["y"]))])
    else:
        raise ValueError(f"unknown calibration method {method!r} (known: {METHODS})")
    # A few hundred held-out articles cannot make a score certain: an isotonic step fitted
    # on a bin of positives alone would otherwise serve exactly 1.0 (or 0.0).
    return np.clip(out, BOUND, 1 - BOUND).astype(np.float32)


def check_calibration(calibration: dict | None, n_labels: int, task_type: str) -> None:
    """Refuse a stored calibration that does not fit its task (a clear error at load, not a
    broadcast error at the first prediction)."""
    if calibration is None:
        return
    if not isinstance(calibration, dict) or calibration.get("method") not in METHODS:
        raise ValueError(f"calibration must name a method among {METHODS}, got "
                         f"{calibration!r}"[:200])
    method = calibration["method"]

    def finite(value) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) \
            and bool(np.isfinite(value))

    if method == "temperature":
        t = calibration.get("temperature")
        if not finite(t) or not t > 0:
            raise ValueError(f"calibration temperature must be a finite number > 0, got {t!r}")
    elif method in ("platt", "isotonic"):
        if task_type == SINGLE:
            raise ValueError(f"calibration {method!r} is per label: multi-label tasks only")
        keys = ("slope", "intercept") if method == "platt" else ("x", "y")
        for key in keys:
            values = calibration.get(key)
            if not isinstance(values, list) or len(values) != n_labels:
                raise ValueError(f"calibration {method!r}: {key!r} needs one entry per "
                                 f"label ({n_labels})")
        if method == "platt" and not all(finite(v) for key in keys for v in calibration[key]):
            raise ValueError("calibration 'platt': slopes and intercepts must be finite numbers")
        if method == "isotonic":
            for j, (x, y) in enumerate(zip(calibration["x"], calibration["y"])):
                if not isinstance(x, list) or not isinstance(y, list) or len(x) != len(y) \
                        or not x or not all(finite(v) for v in (*x, *y)) \
                        or any(b < a for a, b in zip(x, x[1:])):
                    raise ValueError(f"calibration 'isotonic': label {j} needs knots x "
                                     "(ascending) and y of one length, finite numbers")


# ---- fitting ----------------------------------------------------------------------------

def fit_temperature(probs: np.ndarray, y: np.ndarray, task_type: str) -> dict:
    """The temperature that minimises the log loss (a 1-D search over log T)."""
    grid = np.exp(np.linspace(np.log(0.2), np.log(5.0), 81))

    def loss(t):
        p = apply_calibration({"method": "temperature", "temperature": t}, probs, task_type)
        p = np.clip(p.astype(np.float64), EPS, 1 - EPS)
        if task_type == SINGLE:
            return -np.mean(np.log(p[np.arange(len(y)), y]))
        return -np.mean(y * np.log(p) + (1 - y) * np.log1p(-p))

    return {"method": "temperature", "temperature": float(min(grid, key=loss))}


def fit_platt(probs: np.ndarray, y: np.ndarray) -> dict:
    from sklearn.linear_model import LogisticRegression

    slope, intercept = [], []
    for j in range(probs.shape[1]):
        z = _logit(probs[:, j])[:, None]
        if y[:, j].min() == y[:, j].max():  # a label always (or never) present: keep as is
            slope.append(1.0)
            intercept.append(0.0)
            continue
        model = LogisticRegression(C=1e4, max_iter=1000).fit(z, y[:, j])
        slope.append(float(model.coef_[0, 0]))
        intercept.append(float(model.intercept_[0]))
    return {"method": "platt", "slope": slope, "intercept": intercept}


def fit_isotonic(probs: np.ndarray, y: np.ndarray) -> dict:
    from sklearn.isotonic import IsotonicRegression

    xs, ys = [], []
    for j in range(probs.shape[1]):
        model = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
        model.fit(probs[:, j], y[:, j])
        # Knots rounded to 6 places: plain numbers in config.json, applied with np.interp.
        xs.append([round(float(v), 6) for v in model.X_thresholds_])
        ys.append([round(float(v), 6) for v in model.y_thresholds_])
    return {"method": "isotonic", "x": xs, "y": ys}


def fit_method(method: str, probs: np.ndarray, y: np.ndarray, task_type: str) -> dict:
    if method == "none":
        return {"method": "none"}
    if method == "temperature":
        return fit_temperature(probs, y, task_type)
    if method == "platt":
        return fit_platt(probs, y)
    if method == "isotonic":
        return fit_isotonic(probs, y)
    raise ValueError(f"unknown calibration method {method!r} (known: {METHODS})")


def candidate_methods(task_type: str) -> tuple[str, ...]:
    return ("none", "temperature") if task_type == SINGLE else METHODS


def brier(probs: np.ndarray, y: np.ndarray, task_type: str) -> float:
    if task_type == SINGLE:
        onehot = np.eye(probs.shape[1])[y]
        return float(np.mean(np.sum((probs - onehot) ** 2, axis=1)))
    return float(np.mean((probs - y) ** 2))


def choose_calibration(probs: np.ndarray, y: np.ndarray, task_type: str, folds: int = 5,
                       seed: int = 0, methods: tuple[str, ...] | None = None
                       ) -> tuple[dict, dict]:
    """The calibration, fitted on all of `probs` (held-out probabilities, articles x
    labels; `y` multi-hot or class indices), whose method scores the lowest Brier score in
    `folds`-fold cross-validation over these articles. Returns it and the report (each
    method's cross-validated Brier score and ECE)."""
    probs = np.asarray(probs, dtype=np.float64)
    methods = methods or candidate_methods(task_type)
    order = np.random.default_rng(seed).permutation(len(probs))
    parts = np.array_split(order, min(folds, len(probs))) if len(probs) >= 2 else []
    report = {}
    for method in methods:
        held = np.zeros_like(probs)
        for part in parts:
            fit = np.setdiff1d(order, part)
            params = fit_method(method, probs[fit], y[fit], task_type)
            held[part] = apply_calibration(params, probs[part], task_type)
        if not parts:
            held = probs
        report[method] = {"brier": round(brier(held, y, task_type), 5),
                          "ece": round(expected_calibration_error(held, y, task_type), 4)}
    # Ties (to 5 places) go to the simpler method, in the order of METHODS.
    best = min(methods, key=lambda m: (report[m]["brier"], METHODS.index(m)))
    return fit_method(best, probs, y, task_type), report


# ---- measuring --------------------------------------------------------------------------

def reliability(probs: np.ndarray, y: np.ndarray, task_type: str,
                bins: int = ECE_BINS) -> list[dict]:
    """Equal-width bins of the predicted probabilities, each with its count, mean
    probability and observed frequency. Single-label: the top label's probability against
    whether it was right. Multi-label: every (article, label) score against whether the
    article carries the label."""
    probs = np.asarray(probs, dtype=np.float64)
    if task_type == SINGLE:
        p = probs.max(axis=1)
        hit = (probs.argmax(axis=1) == np.asarray(y)).astype(float)
    else:
        p, hit = probs.ravel(), np.asarray(y, dtype=float).ravel()
    index = np.minimum((p * bins).astype(int), bins - 1)
    out = []
    for b in range(bins):
        mask = index == b
        n = int(mask.sum())
        out.append({"low": b / bins, "high": (b + 1) / bins, "n": n,
                    "mean_probability": float(p[mask].mean()) if n else None,
                    "frequency": float(hit[mask].mean()) if n else None})
    return out


def expected_calibration_error(probs: np.ndarray, y: np.ndarray, task_type: str,
                               bins: int = ECE_BINS) -> float:
    """ECE: the count-weighted mean gap between mean probability and observed frequency
    over the bins of `reliability`."""
    table = reliability(probs, y, task_type, bins)
    total = sum(row["n"] for row in table)
    if not total:
        return 0.0
    return float(sum(row["n"] * abs(row["mean_probability"] - row["frequency"])
                     for row in table if row["n"]) / total)
