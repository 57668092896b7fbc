"""Metrics, the markdown report and the plots of an evaluation.

All scores come from scikit-learn; plots from matplotlib (headless backend).
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

from model.core.tasks import MULTI_LABEL, TaskSpec, decide
from train.data import multi_hot


def task_metrics(task: TaskSpec, gold: list, probs: np.ndarray) -> dict:
    """Scores of one task. `gold` holds label names (lists of them for multi-label)."""
    if task.type == MULTI_LABEL:
        y_true = multi_hot(gold, task.labels)
        y_pred = decide(probs, task.thresholds).astype(np.float32)
        average = {"micro_f1": f1_score(y_true, y_pred, average="micro", zero_division=0),
                   "macro_f1": f1_score(y_true, y_pred, average="macro", zero_division=0)}
        p, r, f, s = precision_recall_fscore_support(y_true, y_pred, zero_division=0)
        return {**{k: float(v) for k, v in average.items()}, "n": len(gold),
                "per_label": _per_class(task.labels, p, r, f, s)}
    index = {name: i for i, name in enumerate(task.labels)}
    y_true = np.array([index[g] for g in gold])
    y_pred = probs.argmax(axis=1)
    labels = list(range(len(task.labels)))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    return {"accuracy": float(accuracy_score(y_true, y_pred)),
            "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro",
                                       zero_division=0)),
            "n": len(gold),
            "per_class": _per_class(task.labels, p, r, f, s),
            "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist()}


def _per_class(names, p, r, f, s) -> dict:
    return {name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
                   "support": int(s[i])} for i, name in enumerate(names)}


CPU_FLAGS = ("avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


def environment() -> dict:
    """Hardware and library versions, so a number can be traced to where it was measured."""
    import sklearn
    import torch
    import transformers

    cpu, flags = platform.processor() or platform.machine(), []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                # The features that decide CPU speed and `auto` precision here.
                flags = [f for f in line.split(":", 1)[1].split() if f in CPU_FLAGS]
                break
    except OSError:
        pass
    return {"cpu": cpu, "cpu_flags": flags, "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "scikit_learn": sklearn.__version__,
            "platform": platform.platform()}


def write_reports(out_dir: Path, results: dict[str, dict], tasks: list[TaskSpec],
                  extra: dict, split: str) -> dict:
    """Write metrics.json, report.md and one plot per task into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    document = {"split": split, "tasks": results, **extra}
    (out_dir / "metrics.json").write_text(json.dumps(document, indent=2))
    lines = [f"# Evaluation on the {split} split", ""]
    for task in tasks:
        result = results[task.name]
        lines += report_section(task, result)
        plot = out_dir / ("confusion_matrix.png" if len(tasks) == 1
                          else f"confusion_matrix_{task.name}.png")
        if task.type != MULTI_LABEL:
            plot_confusion(result["confusion_matrix"], task.labels, plot, task.name)
            lines += [f"![confusion matrix]({plot.name})", ""]
        else:
            bars = out_dir / f"per_label_f1_{task.name}.png"
            plot_per_label(result["per_label"], bars, task.name)
            lines += [f"![per-label scores]({bars.name})", ""]
        if "calibration" in result:
            lines += calibration_section(task, result["calibration"], out_dir)
    for key in ("training_seconds", "examples", "bad_records"):
        if key in extra:
            lines.append(f"- {key.replace('_', ' ')}: {json.dumps(extra[key])}")
    if "environment" in extra:
        env = extra["environment"]
        lines += ["", f"Measured on {env['cpu']} ({env['cpu_count']} CPUs, "
                  f"gpu: {env['gpu']}), torch {env['torch']}, transformers "
                  f"{env['transformers']}."]
    (out_dir / "report.md").write_text("\n".join(lines) + "\n")
    return document


def calibration_section(task: TaskSpec, calibration: dict, out_dir: Path) -> list[str]:
    """The task's expected calibration error before and after its calibration, and the
    reliability diagram of both."""
    plot = out_dir / f"reliability_{task.name}.png"
    plot_reliability(calibration, plot, task.name)
    scores = ("top label's probability" if task.type != MULTI_LABEL
              else "every article x label score")
    return [f"Calibration ({calibration['method']}, fitted on held-out training articles): "
            f"expected calibration error {calibration['ece_before']:.4f} before, "
            f"**{calibration['ece_after']:.4f}** after (15 bins, {scores}).", "",
            f"![reliability diagram]({plot.name})", ""]


def plot_reliability(calibration: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect")
    for key, name in (("reliability_before", "before"), ("reliability_after", "after")):
        rows = [r for r in calibration[key] if r["n"]]
        ece = calibration[key.replace("reliability", "ece")]
        ax.plot([r["mean_probability"] for r in rows], [r["frequency"] for r in rows],
                marker="o", label=f"{name} (ECE {ece:.3f})")
    ax.set_xlabel("predicted probability")
    ax.set_ylabel("observed frequency")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left")
    ax.set_title(f"{title}: reliability ({calibration['method']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report_section(task: TaskSpec, result: dict) -> list[str]:
    if task.type == MULTI_LABEL:
        head = (f"## {task.name} (multi-label, n={result['n']})\n\nmicro-F1 "
                f"**{result['micro_f1']:.4f}**, macro-F1 **{result['macro_f1']:.4f}**")
        table = result["per_label"]
    else:
        head = (f"## {task.name} (n={result['n']})\n\naccuracy **{result['accuracy']:.4f}**, "
                f"macro-F1 **{result['macro_f1']:.4f}**")
        table = result["per_class"]
    lines = [head, "", "| label | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for name, row in table.items():
        lines.append(f"| {name} | {row['precision']:.3f} | {row['recall']:.3f} | "
                     f"{row['f1']:.3f} | {row['support']} |")
    return lines + [""]


def plot_confusion(matrix: list[list[int]], labels: list[str], path: Path, title: str) -> None:
    import matplotlib

    matrix_np = np.asarray(matrix)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    size = max(4.0, 0.6 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ConfusionMatrixDisplay(matrix_np, display_labels=labels).plot(ax=ax, colorbar=False,
                                                                   xticks_rotation=45)
    ax.set_title(f"{title}: confusion matrix")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_per_label(per_label: dict, path: Path, title: str) -> None:
    """Horizontal bars of precision, recall and F1 per label, with each label's support."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(per_label)
    y = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(names) + 1.5))
    for offset, key in ((-0.27, "precision"), (0.0, "recall"), (0.27, "f1")):
        ax.barh(y + offset, [per_label[n][key] for n in names], height=0.27, label=key)
    ax.set_yticks(y, [f"{n} (n={per_label[n]['support']})" for n in names])
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.legend(loc="lower right")
    ax.set_title(f"{title}: per-label scores")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
