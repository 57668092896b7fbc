"""Profiles benchmark: how far each way of estimating a group's frame shares lands from
the annotators' shares, how often its 95% interval holds them, and how well calibrated
the served scores are.

    python -m bench.profiles narrative     # the authors' five folds, per-outlet shares
    python -m bench.profiles semeval       # SemEval-2023 English, 5-fold CV, per fold
    python -m bench.profiles stream        # time and peak memory of `profile` by file size

For every fold the config's model is trained as `python -m train` does (frozen encoder +
lexical component: calibration and held-out error counts are stored in the artifact),
its test articles are predicted, and the prediction lines are profiled as `profile`
does, by every method of model/profiles/quantify.py, against the gold share of the same
articles. Narrative frames: the five folds' test articles together (each article once,
predicted by the model that did not see it), grouped by outlet (spellings such as
"The Huffington Post" / "thehuffingtonpost" merged), outlets with at least 10 articles;
the acc/pacc/sld corrections use the five models' held-out counts summed. SemEval: each
fold's test articles are one group. Also the expected calibration error of the test
scores before (as mixed) and after calibration. Prints the tables and writes
bench/results/bench_profiles_<name>.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from copy import deepcopy
from pathlib import Path

import numpy as np

from model.core.calibration import expected_calibration_error
from model.profiles.quantify import DEFAULT_METHOD, METHODS, estimate, wilson_interval
from model.profiles.tally import tally_predictions
from model.runtime.loading import load_classifier
from train.config import load_run_config
from train.data import multi_hot
from train.metrics import environment, task_metrics
from train.run import prepare_data, train

SETS = {
    "narrative": {"config": "configs/narrative_frames.yaml", "folds": [1, 2, 3, 4, 5],
                  "set": ["training.mode=frozen", "tasks.0.lexical=true",
                          "model.pooling=mean", "training.eval_batch_size=32",
                          "training.check_served=false"]},
    "semeval": {"config": "configs/semeval_frames.yaml", "cv": 5,
                "set": ["training.check_served=false"]},
}
MIN_ARTICLES = 10


def outlet(name) -> str:
    """One spelling per outlet: lower case, letters and digits only."""
    return re.sub(r"[^a-z0-9]", "", str(name).lower()) or "(unknown)"


def run_fold(cfg, fold_dir: Path, task: str) -> dict:
    cfg.training.output_dir = str(fold_dir)
    _, splits, _ = prepare_data(deepcopy(cfg))
    test = splits[task]["test"]
    started = time.perf_counter()
    if train(cfg) != 0:
        raise RuntimeError(f"training failed in {fold_dir}")
    seconds = time.perf_counter() - started
    clf = load_classifier(fold_dir / "model", precision="fp32", backend="torch")
    spec = next(t for t in clf.tasks if t.name == task)
    encoded = clf.encode([e.text for e in test])
    served = clf.probabilities(encoded)[task]
    calibration, spec.calibration = spec.calibration, None
    mixed = clf.probabilities(encoded)[task]
    spec.calibration = calibration
    lines = [clf.format_prediction({task: served[i]}, art) for i, art in enumerate(encoded)]
    gold = multi_hot([e.label for e in test], spec.labels)
    scores = task_metrics(spec, [e.label for e in test], served)
    for line, example in zip(lines, test):
        line["source"] = outlet(example.meta.get("source"))
    return {"lines": lines, "gold": gold, "labels": spec.labels, "heldout": spec.heldout,
            "mixed": mixed, "served": served, "calibration": calibration["method"],
            "micro_f1": scores["micro_f1"], "macro_f1": scores["macro_f1"],
            "training_seconds": round(seconds, 1), "n_test": len(test)}


def summed(heldouts: list[dict]) -> dict:
    out = {"articles": sum(h["articles"] for h in heldouts)}
    for key in heldouts[0]:
        if key != "articles":
            out[key] = list(np.sum([h[key] for h in heldouts], axis=0))
    return out


def score_groups(groups: dict[str, list[int]], lines: list[dict],
                 gold: np.ndarray, labels: list[str], heldout: dict, draws: int) -> dict:
    """Every method's share per (group, label) against the gold share: mean absolute
    error, coverage of the 95% interval, mean interval width; Wilson beside cc."""
    wanted = {g for g, rows in groups.items() if len(rows) >= MIN_ARTICLES}
    member = {i: g for g, rows in groups.items() if g in wanted for i in rows}
    kept = [dict(lines[i], group=member[i]) for i in sorted(member)]
    truth = {(g, label): gold[groups[g], j].mean() for g in wanted
             for j, label in enumerate(labels)}
    tally = tally_predictions(kept, "group", labels=labels)
    results = {}
    for method in METHODS:
        rows = estimate(tally, method, dict(heldout, labels=labels), draws).rows
        errors = [abs(r["share"] - truth[(r["group"], r["label"])]) for r in rows]
        inside = [r["ci95_low"] <= truth[(r["group"], r["label"])] <= r["ci95_high"]
                  for r in rows]
        results[method] = {"mae": float(np.mean(errors)), "coverage": float(np.mean(inside)),
                           "width": float(np.mean([r["ci95_high"] - r["ci95_low"]
                                                   for r in rows])),
                           "cells": len(rows),
                           "per_label_mae": {label: float(np.mean(
                               [e for e, r in zip(errors, rows) if r["label"] == label]))
                               for label in labels}}
    cc_rows = estimate(tally, "cc", None, 0).rows
    wilson = [wilson_interval(r["count"], r["articles"]) for r in cc_rows]
    results["cc"]["wilson_coverage"] = float(np.mean([
        low <= truth[(r["group"], r["label"])] <= high
        for (low, high), r in zip(wilson, cc_rows)]))
    results["groups"] = {g: len(groups[g]) for g in sorted(wanted)}
    return results


def outlet_table(lines: list[dict], gold: np.ndarray, labels: list[str], heldout: dict,
                 method: str, draws: int, least: int = 15) -> list[str]:
    """Per outlet with at least `least` articles: each frame's annotated share, the
    `method`'s share (95% interval) and the count the decisions give."""
    groups: dict[str, list[int]] = {}
    for i, line in enumerate(lines):
        groups.setdefault(line["source"], []).append(i)
    kept = [line for line in lines if len(groups[line["source"]]) >= least]
    tally = tally_predictions(kept, "source", labels=labels)
    rows = {(r["source"], r["label"]): r for r in
            estimate(tally, method, dict(heldout, labels=labels), draws).rows}
    out = ["| outlet | articles | " + " | ".join(labels) + " |",
           "|---|---|" + "---|" * len(labels)]
    for name in sorted(g for g in groups if len(groups[g]) >= least):
        cells = []
        for j, label in enumerate(labels):
            r = rows[(name, label)]
            cells.append(f"{r['share']:.2f} ({r['ci95_low']:.2f}-{r['ci95_high']:.2f}) "
                         f"[{r['count']}] gold {gold[groups[name], j].mean():.2f}")
        out.append(f"| {name} | {len(groups[name])} | " + " | ".join(cells) + " |")
    return out


def table(results: dict) -> list[str]:
    base = results["cc"]["mae"]
    lines = ["| method | mean abs. error of the shares | vs cc | 95% interval coverage | "
             "mean width |", "|---|---|---|---|---|"]
    for method in METHODS:
        r = results[method]
        lines.append(f"| {method} | {r['mae']:.4f} | {r['mae'] / base:.2f}x | "
                     f"{r['coverage']:.2f} | {r['width']:.3f} |")
    lines.append(f"| cc, Wilson interval (sampling error only) | | | "
                 f"{results['cc']['wilson_coverage']:.2f} | |")
    return lines


STREAM_LINES = (10_000, 100_000, 1_000_000)
FRAMES = [f"frame{i:02d}" for i in range(14)]


def write_stream(path: Path, n: int, seed: int = 0) -> None:
    """`n` prediction lines of 14 frames, 50 sources and three years of dates."""
    rng = np.random.default_rng(seed)
    with open(path, "w") as handle:
        for start in range(0, n, 10_000):
            block = rng.random((min(10_000, n - start), len(FRAMES)))
            for i, scores in enumerate(block):
                k = start + i
                handle.write(json.dumps({
                    "id": k, "source": f"outlet{k % 50}",
                    "date": f"{2019 + k % 3}-{1 + k % 12:02d}-01",
                    "frames": {"labels": [f for f, s in zip(FRAMES, scores) if s >= 0.5],
                               "scores": {f: round(float(s), 6)
                                          for f, s in zip(FRAMES, scores)}}}) + "\n")


def stream(out: Path, repeats: int = 3) -> str:
    """`profile --over quarter` on files of 10k to 1M lines, each run in its own process:
    median wall time and peak resident memory."""
    import statistics
    import subprocess
    import tempfile

    rows = [f"| lines | file size | wall (median of {repeats}) | peak RSS |",
            "|---|---|---|---|"]
    measured = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in STREAM_LINES:
            path = Path(tmp) / f"pred{n}.jsonl"
            write_stream(path, n)
            walls, peaks = [], []
            for _ in range(repeats):
                probe = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
                         "subprocess.run(sys.argv[1:], check=True); "
                         "print(time.perf_counter() - t, "
                         "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
                done = subprocess.run(
                    [sys.executable, "-c", probe, sys.executable, "-m", "model.cli", "profile",
                     str(path), "--by", "source", "--over", "quarter", "--out",
                     str(Path(tmp) / "out")], check=True, capture_output=True, text=True)
                wall, peak = done.stdout.split()
                walls.append(float(wall))
                peaks.append(int(peak) / 1024)
            measured.append({"lines": n, "bytes": path.stat().st_size,
                             "wall_s": statistics.median(walls), "peak_rss_mb": max(peaks)})
            rows.append(f"| {n:,} | {path.stat().st_size / 1e6:.0f} MB | "
                        f"{statistics.median(walls):.1f} s | {max(peaks):.0f} MB |")
            path.unlink()
    env = environment()
    text = "\n".join(["# Profiles: streaming", "", "command: python -m bench.profiles stream",
                      f"machine: {env['cpu']}, {env['cpu_count']} CPUs, flags "
                      f"{' '.join(env['cpu_flags'])}", "", *rows])
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_profiles_stream.md").write_text(text + "\n")
    (out / "bench_profiles_stream.json").write_text(json.dumps(
        {"runs": measured, "environment": env}, indent=2))
    return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", choices=[*sorted(SETS), "stream"])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args(argv)
    if args.name == "stream":
        print(stream(Path(args.out)))
        return 0
    spec = SETS[args.name]
    overrides = [*spec["set"], *args.set]
    base = load_run_config(spec["config"], overrides)
    task = base.tasks[0].name
    root = Path(base.training.output_dir) / "bench_profiles"
    started = time.perf_counter()
    folds = []
    if "cv" in spec:
        for k in range(spec["cv"]):
            cfg = load_run_config(spec["config"], [*overrides, f"data.cv_folds={spec['cv']}",
                                                   f"data.cv_fold={k}"])
            folds.append(run_fold(cfg, root / f"cv{k}", task))
    else:
        for k in spec["folds"]:
            cfg = load_run_config(spec["config"], [*overrides, f"tasks.0.dataset.fold={k}"])
            folds.append(run_fold(cfg, root / f"fold{k}", task))
    labels = folds[0]["labels"]
    lines = [line for f in folds for line in f["lines"]]
    gold = np.concatenate([f["gold"] for f in folds])
    heldout = summed([f["heldout"] for f in folds])
    if "cv" in spec:
        groups, start = {}, 0
        for k, f in enumerate(folds):
            groups[f"fold{k}"] = list(range(start, start + f["n_test"]))
            start += f["n_test"]
    else:
        groups = {}
        for i, line in enumerate(lines):
            groups.setdefault(line["source"], []).append(i)
    results = score_groups(groups, lines, gold, labels, heldout, args.draws)
    mixed = np.concatenate([f["mixed"] for f in folds])
    served = np.concatenate([f["served"] for f in folds])
    ece = {"before": expected_calibration_error(mixed, gold, "multi_label"),
           "after": expected_calibration_error(served, gold, "multi_label"),
           "methods": [f["calibration"] for f in folds]}
    env = environment()
    report = [f"# Profiles: {args.name}", "",
              f"command: python -m bench.profiles {args.name}"
              + "".join(f" --set {s}" for s in args.set),
              f"machine: {env['cpu']}, {env['cpu_count']} CPUs, flags "
              f"{' '.join(env['cpu_flags'])}, torch {env['torch']}",
              f"folds: {len(folds)}; test micro-F1 per fold "
              + ", ".join(f"{f['micro_f1']:.3f}" for f in folds)
              + f"; groups: {len(results['groups'])} with >= {MIN_ARTICLES} articles "
              f"({sum(results['groups'].values())} articles); wall "
              f"{time.perf_counter() - started:.0f} s", "", *table(results), "",
              "| frame | " + " | ".join(METHODS) + " |", "|---|" + "---|" * len(METHODS)]
    for label in labels:
        report.append(f"| {label} | " + " | ".join(
            f"{results[m]['per_label_mae'][label]:.3f}" for m in METHODS) + " |")
    if "cv" not in spec:
        report += ["", f"Per outlet ({DEFAULT_METHOD} share (95% interval) [count of the "
                   "decisions] and the annotated share):", "",
                   *outlet_table(lines, gold, labels, heldout, DEFAULT_METHOD, args.draws)]
    report += ["", f"Expected calibration error of the test scores (15 bins, every article x "
               f"label): before {ece['before']:.4f}, after {ece['after']:.4f} (calibration "
               f"chosen per fold: {', '.join(ece['methods'])})"]
    text = "\n".join(report)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"bench_profiles_{args.name}.md").write_text(text + "\n")
    (out / f"bench_profiles_{args.name}.json").write_text(json.dumps(
        {"results": results, "ece": ece, "environment": env,
         "folds": [{k: v for k, v in f.items() if k in ("micro_f1", "macro_f1",
                   "training_seconds", "n_test", "calibration")} for f in folds]},
        indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
