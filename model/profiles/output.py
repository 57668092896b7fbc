"""Writing a profile: profile.csv / .md / .png (a heatmap of the corrected shares), with
`over` trends.csv and one chart per source (a panel per label: the share over time with
its 95% band), and with comparisons comparisons.csv / .md."""

from __future__ import annotations

import csv
import re
from pathlib import Path

METHOD_NAMES = {"cc": "classify and count (no correction)",
                "pcc": "probabilistic classify and count (mean calibrated score)",
                "acc": "adjusted classify and count", "pacc": "probabilistic adjusted "
                "classify and count", "sld": "EM prior adjustment (Saerens et al. 2002)"}


def write_csv(rows: list[dict], path: Path) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["label"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_profile(rows: list[dict], by: str, out_dir: Path, title: str) -> list[Path]:
    """profile.csv, profile.md and profile.png (a heatmap) in `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [write_csv(rows, out_dir / "profile.csv"), out_dir / "profile.md",
             out_dir / "profile.png"]
    groups = sorted({r[by] for r in rows})
    labels = list(dict.fromkeys(r["label"] for r in rows))
    cell = {(r[by], r["label"]): r for r in rows}
    method = rows[0]["method"] if rows else "cc"
    md = [f"# {title}", "",
          f"Share of each {by}'s articles that carry each label, estimated by "
          f"{METHOD_NAMES.get(method, method)}, with its 95% bootstrap interval (over "
          "articles and the model's held-out error estimates); in brackets the count the "
          "model's decisions give.", "",
          f"| {by} | articles | " + " | ".join(labels) + " |",
          "|---|---|" + "---|" * len(labels)]
    for g in groups:
        n = cell[(g, labels[0])]["articles"] if labels else 0
        md.append(f"| {g} | {n} | " + " | ".join(
            f"{cell[(g, lab)]['share']:.2f} ({cell[(g, lab)]['ci95_low']:.2f}-"
            f"{cell[(g, lab)]['ci95_high']:.2f}) [{cell[(g, lab)]['count']}]"
            for lab in labels) + " |")
    paths[1].write_text("\n".join(md) + "\n")
    _heatmap(groups, labels, cell, by, paths[2], title)
    return paths


def _heatmap(groups, labels, cell, by, path: Path, title: str) -> None:
    import numpy as np

    plt = _plt()
    shares = np.array([[cell[(g, lab)]["share"] for lab in labels] for g in groups])
    fig, ax = plt.subplots(figsize=(1.1 * len(labels) + 3, 0.35 * len(groups) + 2))
    image = ax.imshow(shares, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(labels)), labels, rotation=40, ha="right")
    ax.set_yticks(range(len(groups)),
                  [f"{g} (n={cell[(g, labels[0])]['articles']})" for g in groups])
    for i in range(len(groups)):
        for j in range(len(labels)):
            ax.text(j, i, f"{shares[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if shares[i, j] < 0.6 else "black")
    fig.colorbar(image, ax=ax, label="estimated share of articles")
    ax.set_title(title)
    ax.set_ylabel(by)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def file_name(name: str) -> str:
    """A group's name as a safe file name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._")[:80] or "group"


def write_trends(rows: list[dict], by: str, out_dir: Path, title: str) -> list[Path]:
    """trends.csv and trends/<source>.png: per source, a panel per label with the share
    by period and its 95% band."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [write_csv(rows, out_dir / "trends.csv")]
    charts = out_dir / "trends"
    charts.mkdir(exist_ok=True)
    plt = _plt()
    labels = list(dict.fromkeys(r["label"] for r in rows))
    used = set()
    for group in sorted({r[by] for r in rows}):
        mine = [r for r in rows if r[by] == group]
        periods = sorted({r["period"] for r in mine})
        columns = min(len(labels), 4)
        lines = -(-len(labels) // columns)
        fig, axes = plt.subplots(lines, columns, figsize=(3.2 * columns, 2.4 * lines),
                                 squeeze=False, sharey=True)
        for ax, label in zip(axes.ravel(), labels):
            got = {r["period"]: r for r in mine if r["label"] == label}
            x = list(range(len(periods)))
            share = [got[p]["share"] if p in got else float("nan") for p in periods]
            low = [got[p]["ci95_low"] if p in got else float("nan") for p in periods]
            high = [got[p]["ci95_high"] if p in got else float("nan") for p in periods]
            ax.fill_between(x, low, high, alpha=0.25)
            ax.plot(x, share, marker="o")
            ax.set_title(label, fontsize=9)
            ax.set_ylim(0, 1)
            ax.set_xticks(x, periods, rotation=45, ha="right", fontsize=7)
        for ax in axes.ravel()[len(labels):]:
            ax.axis("off")
        fig.suptitle(f"{title}: {group}")
        fig.tight_layout()
        name = file_name(group)
        while name in used:
            name += "_"
        used.add(name)
        fig.savefig(charts / f"{name}.png", dpi=100)
        plt.close(fig)
        paths.append(charts / f"{name}.png")
    return paths


def write_comparisons(rows: list[dict], out_dir: Path, method: str) -> list[Path]:
    """comparisons.csv and comparisons.md (flagged differences first)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [write_csv(rows, out_dir / "comparisons.csv"), out_dir / "comparisons.md"]
    md = ["# Comparisons", "",
          f"Difference in share (A - B, {METHOD_NAMES.get(method, method)}) with its 95% "
          "interval. Flagged: the interval adjusted for the false-coverage rate "
          "(Benjamini-Yekutieli, after Benjamini-Hochberg selection at 0.05 across all "
          f"{len(rows)} comparisons) excludes zero.", "",
          "| A | B | label | difference | 95% interval | q-value | flagged |",
          "|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (not r["flagged"], r["q_value"])):
        md.append(f"| {r['a']} | {r['b']} | {r['label']} | {r['difference']:+.2f} | "
                  f"{r['ci95_low']:+.2f} to {r['ci95_high']:+.2f} | {r['q_value']:.3f} | "
                  f"{'yes' if r['flagged'] else ''} |")
    paths[1].write_text("\n".join(md) + "\n")
    return paths
