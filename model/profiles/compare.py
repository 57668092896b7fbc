"""Outlet against outlet: the difference in share per label, with its interval, and a
flag only where it survives a false-discovery-rate correction across every comparison
made.

A difference's replicates are those of the two groups' shares (model/profiles/
quantify.py) subtracted draw by draw. Both groups share the draws of the classifier's
error estimates, so an error that moves every share alike cancels, as it should. Each
difference gets a two-sided bootstrap p-value; the Benjamini-Hochberg procedure at
`alpha` selects the differences to flag, and the flagged ones get the false-coverage-
rate adjusted intervals of Benjamini and Yekutieli (2005): level 1 - R * alpha / m for
R flagged of m comparisons, so each flagged interval excludes zero at the corrected level.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np

from model.profiles.quantify import Estimates


def group_names(estimates: Estimates, by: str) -> list[str]:
    return sorted({row[by] for row in estimates.rows})


def compare(estimates: Estimates, by: str, pairs: list[tuple[str, str]] | None = None,
            alpha: float = 0.05) -> list[dict]:
    """Rows of `share(A) - share(B)` per label for each pair of groups (every pair when
    `pairs` is None), with the 95% interval, the p-value, the BH q-value and, for those
    flagged, the FCR-adjusted interval."""
    if not estimates.replicates:
        raise ValueError("comparisons need bootstrap replicates (draws > 0, "
                         "keep_replicates=True)")
    names = group_names(estimates, by)
    pairs = list(combinations(names, 2)) if pairs is None else pairs
    for a, b in pairs:
        for name in (a, b):
            if name not in names:
                raise ValueError(f"no group {name!r} to compare (groups: "
                                 f"{', '.join(names[:20])}{' ...' if len(names) > 20 else ''})")
        if a == b:
            raise ValueError(f"cannot compare {a!r} with itself")
    shares = {(r[by], r["label"]): r for r in estimates.rows if "period" not in r}
    labels = list(dict.fromkeys(r["label"] for r in estimates.rows))
    stacked = {name: np.stack([estimates.replicates[(name, label)] for label in labels])
               .astype(np.float64) for name in names}
    out, draws = [], []
    for a, b in pairs:
        diff = stacked[a] - stacked[b]  # labels x replicates
        low, high = np.percentile(diff, [2.5, 97.5], axis=1)
        # Two-sided, counted as (k + 1) / (B + 1): B replicates cannot show p = 0.
        below, above = (diff <= 0).sum(axis=1), (diff >= 0).sum(axis=1)
        p = np.minimum(1.0, 2 * (np.minimum(below, above) + 1) / (diff.shape[1] + 1))
        for j, label in enumerate(labels):
            point = shares[(a, label)]["share"] - shares[(b, label)]["share"]
            out.append({"a": a, "b": b, "label": label, "difference": float(point),
                        "ci95_low": float(low[j]), "ci95_high": float(high[j]),
                        "articles_a": shares[(a, label)]["articles"],
                        "articles_b": shares[(b, label)]["articles"],
                        "p_value": float(p[j])})
            draws.append(diff[j])
    q = benjamini_hochberg([row["p_value"] for row in out])
    flagged = [i for i, value in enumerate(q) if value <= alpha]
    level = 1 - len(flagged) * alpha / max(len(out), 1)
    for i, row in enumerate(out):
        row["q_value"] = float(q[i])
        row["flagged"] = False
        row["fcr_low"] = row["fcr_high"] = None
        if i in flagged:
            low, high = np.percentile(draws[i], [(1 - level) / 2 * 100, (1 + level) / 2 * 100])
            row["fcr_low"], row["fcr_high"] = float(low), float(high)
            row["flagged"] = bool(low > 0 or high < 0)
    return out


def benjamini_hochberg(p_values: list[float]) -> np.ndarray:
    """BH q-values: the smallest false-discovery rate at which each test is selected."""
    p = np.asarray(p_values, dtype=float)
    m = len(p)
    if not m:
        return p
    order = np.argsort(p)
    ranked = p[order] * m / np.arange(1, m + 1)
    q = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(q, 1.0)
    return out
