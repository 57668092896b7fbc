"""Framing benchmark: cross-validated micro/macro-F1 beside bag-of-words baselines.

    # SemEval-2023 English, 5 stratified folds of the shared train set
    python -m train.bench_frames --config configs/semeval_frames.yaml --cv 5
    # GVFC, the five published folds
    python -m train.bench_frames --config configs/gvfc_frames.yaml --published-folds 0,1,2,3,4

For every fold the config's model is trained (as `python -m train` does) and the
bag-of-words baselines of `train.baselines` (TF-IDF + LinearSVC, and TF-IDF + logistic
regression with a cross-validated C and threshold) are fitted on the same training and
validation articles and scored on the same test articles; gains are reported against the
stronger baseline. `--baselines-only` scores the baselines alone. The trained model is also
scored with each other chunk-pooling rule that needs no retraining (mean / max of the
chunk logits), with thresholds retuned on the validation split for each. Prints a table
and writes bench/results/bench_frames_<name>.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from copy import deepcopy
from pathlib import Path

from model.inference import load_classifier

from .baselines import BASELINES
from .config import load_run_config
from .metrics import environment, task_metrics
from .run import prepare_data, train, tune_on_validation


def run_fold(cfg, name: str, fold_dir: Path, task: str, baselines_only: bool = False) -> dict:
    cfg.training.output_dir = str(fold_dir)
    specs, splits, _ = prepare_data(deepcopy(cfg))
    spec = next(s for s in specs if s.name == task)
    parts = splits[task]
    # The baselines learn from every article the model learns from (train + validation).
    baselines = {label: fit(parts["train"] + parts["validation"], parts["test"], spec.labels)
                 for label, fit in BASELINES.items()}
    result = {"fold": name, "n_test": len(parts["test"]), "baselines": baselines}
    print(f"[{name}] " + " | ".join(f"{label}: micro-F1 {b['micro_f1']:.4f} macro-F1 "
                                    f"{b['macro_f1']:.4f}" for label, b in baselines.items()),
          flush=True)
    if baselines_only:
        return result
    if train(cfg) != 0:
        raise RuntimeError(f"training failed for {name}")
    metrics = json.loads((fold_dir / "metrics.json").read_text())
    ours = metrics["tasks"][task]
    result.update(model={"micro_f1": ours["micro_f1"], "macro_f1": ours["macro_f1"]},
                  training_seconds=metrics["training_seconds"], pooling={})
    clf = load_classifier(fold_dir / "model", precision="fp32")
    trained = next(t for t in clf.tasks if t.name == task)
    test = parts["test"]
    encoded = clf.encode([e.text for e in test])
    for pooling in ("mean", "max"):
        if clf.config.pooling == "attention":
            break  # learned pooling is trained in; nothing to swap
        clf.config.pooling = pooling
        # Each pooling gets thresholds tuned for its own scores on the validation split.
        tune_on_validation(clf, cfg, splits, cfg.training.eval_batch_size)
        probs = clf.probabilities(encoded)[task]
        scores = task_metrics(trained, [e.label for e in test], probs)
        result["pooling"][pooling] = {"micro_f1": scores["micro_f1"],
                                      "macro_f1": scores["macro_f1"]}
    print(f"[{name}] ours micro-F1 {ours['micro_f1']:.4f} macro-F1 {ours['macro_f1']:.4f}",
          flush=True)
    return result


def summarise(folds: list[dict], title: str, pooling: str) -> str:
    def stats(values):
        mean = statistics.mean(values)
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{mean:.4f} ± {sd:.4f}"

    rows = [(label, [f["baselines"][label] for f in folds]) for label in folds[0]["baselines"]]
    trained = "model" in folds[0]
    if trained:
        rows.append((f"fine-tuned, trained pooling ({pooling})", [f["model"] for f in folds]))
        for alt in sorted({p for f in folds for p in f["pooling"]} - {pooling}):
            rows.append((f"same models, {alt} pooling at test (thresholds retuned)",
                         [f["pooling"][alt] for f in folds]))
    lines = [title, "", "| model | micro-F1 | macro-F1 |", "|---|---|---|"]
    for name, scores in rows:
        lines.append(f"| {name} | {stats([s['micro_f1'] for s in scores])} | "
                     f"{stats([s['macro_f1'] for s in scores])} |")
    if trained:
        # Gains are against the strongest baseline by mean micro-F1, fold by fold.
        best = max(folds[0]["baselines"], key=lambda label: statistics.mean(
            f["baselines"][label]["micro_f1"] for f in folds))
        gain = {k: statistics.mean(f["model"][k] - f["baselines"][best][k] for f in folds)
                for k in ("micro_f1", "macro_f1")}
        lines += ["", f"folds: {len(folds)}; mean gain over the best baseline ({best}): "
                  f"micro-F1 {gain['micro_f1']:+.4f}, macro-F1 {gain['macro_f1']:+.4f}; mean "
                  "training time per fold: "
                  f"{statistics.mean(f['training_seconds'] for f in folds):.0f} s"]
    env = environment()
    lines.append(f"machine: {env['cpu']}, {env['cpu_count']} CPUs, torch {env['torch']}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--cv", type=int, help="k stratified folds of the config's data")
    group.add_argument("--published-folds", help="comma-separated dataset.fold values")
    parser.add_argument("--task", help="the task to score (default: the config's first); "
                        "the others train beside it as auxiliary tasks")
    parser.add_argument("--baselines-only", action="store_true",
                        help="score the bag-of-words baselines on the folds, train nothing")
    parser.add_argument("--out", default="bench/results")
    parser.add_argument("--name", help="result file suffix (default: the config's name)")
    args = parser.parse_args(argv)
    name = args.name or Path(args.config).stem
    base = load_run_config(args.config, args.set)
    run_root = Path(base.training.output_dir) / "bench"
    task = args.task or base.tasks[0].name
    if task not in [t.name for t in base.tasks]:
        parser.error(f"--task {task}: the config has no such task")
    folds = []
    if args.cv:
        for k in range(args.cv):
            cfg = load_run_config(args.config, [*args.set, f"data.cv_folds={args.cv}",
                                                f"data.cv_fold={k}"])
            folds.append(run_fold(cfg, f"cv{k}", run_root / f"cv{k}", task,
                                  args.baselines_only))
        title = f"{name}: {args.cv}-fold cross-validation"
    else:
        for k in args.published_folds.split(","):
            cfg = load_run_config(args.config, [*args.set, f"tasks.0.dataset.fold={k}"])
            folds.append(run_fold(cfg, f"fold{k}", run_root / f"fold{k}", task,
                                  args.baselines_only))
        title = f"{name}: published folds {args.published_folds}"
    report = summarise(folds, title, base.model.pooling)
    print(report)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"bench_frames_{name}.md").write_text(report + "\n")
    (out / f"bench_frames_{name}.json").write_text(json.dumps(
        {"folds": folds, "config": base.to_dict(), "environment": environment()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
