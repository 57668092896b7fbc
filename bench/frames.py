"""Framing benchmark: cross-validated micro/macro-F1 beside bag-of-words baselines.

    # SemEval-2023 English, 5 stratified folds of the shared train set
    python -m bench.frames --config configs/semeval_frames.yaml --cv 5
    # GVFC, the five published folds
    python -m bench.frames --config configs/gvfc_frames.yaml --published-folds 0,1,2,3,4

For every fold the config's model is trained (as `python -m train` does) and the
bag-of-words baselines of `bench.baselines` (TF-IDF + LinearSVC, and TF-IDF + logistic
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

from bench.baselines import BASELINES
from model.runtime.loading import load_classifier
from train.config import load_run_config
from train.metrics import environment, task_metrics
from train.run import prepare_data, train, tune_on_validation


def language_of(example) -> str:
    return example.meta.get("lang") or "?"


def run_baselines(parts: dict, labels: list[str], by_language: bool) -> dict:
    """Every baseline fitted on the articles the model learns from (train + validation)
    and scored on the test articles; with `by_language`, one per language as well, fitted
    on that language's articles alone."""
    train_set = parts["train"] + parts["validation"]
    scores = {label: fit(train_set, parts["test"], labels) for label, fit in BASELINES.items()}
    if by_language:
        for lang in sorted({language_of(e) for e in parts["test"]}):
            own = [e for e in train_set if language_of(e) == lang]
            test = [e for e in parts["test"] if language_of(e) == lang]
            for label, fit in BASELINES.items():
                scores[label].setdefault("by_language", {})[lang] = {
                    **fit(own, test, labels), "n": len(test)}
    return scores


def run_fold(cfg, name: str, fold_dir: Path, task: str, baselines_only: bool = False,
             by_language: bool = False, earlier: dict | None = None) -> dict:
    cfg.training.output_dir = str(fold_dir)
    specs, splits, _ = prepare_data(deepcopy(cfg))
    spec = next(s for s in specs if s.name == task)
    parts = splits[task]
    if earlier is not None:  # the same fold of an earlier run: same articles, same baselines
        if earlier["fold"] != name or earlier["n_test"] != len(parts["test"]) or (
                by_language and "by_language" not in next(iter(earlier["baselines"].values()))):
            raise ValueError(f"--baselines-from: fold {name} does not match the earlier run's")
        baselines = earlier["baselines"]
    else:
        baselines = run_baselines(parts, spec.labels, by_language)
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
    trained_report = (metrics.get("frozen") or metrics.get("lexical") or {})
    result.update(model={"micro_f1": ours["micro_f1"], "macro_f1": ours["macro_f1"]},
                  training_seconds=metrics["training_seconds"], pooling={},
                  mode=metrics.get("mode", "finetune"),
                  lexical_weight=trained_report.get(task, {}).get("lexical_weight"),
                  top=trained_report.get("top"),
                  cross_validated={k: v for k, v in trained_report.get(task, {}).items()
                                   if k in ("cv_score", "network_cv_score", "mixed_cv_score",
                                            "probe_mixed_cv_score", "by_language")})
    clf = load_classifier(fold_dir / "model", precision="fp32")
    trained = next(t for t in clf.tasks if t.name == task)
    test = parts["test"]
    encoded = clf.encode([e.text for e in test])
    # The test windows are embedded once; every reading below mixes from them.
    embeddings = clf.embed_windows(encoded)

    def served():
        return {name: m[0] for name, m in clf.answer(embeddings, encoded)[0].items()}

    if by_language:
        probs = served()[task]
        result["model"]["by_language"] = {}
        for lang in sorted({language_of(e) for e in test}):
            rows = [i for i, e in enumerate(test) if language_of(e) == lang]
            scores = task_metrics(trained, [test[i].label for i in rows], probs[rows])
            result["model"]["by_language"][lang] = {"micro_f1": scores["micro_f1"],
                                                    "macro_f1": scores["macro_f1"],
                                                    "n": len(rows)}
    alone = (metrics.get("frozen") or {}).get(task, {}).get("network_thresholds")
    if alone and trained.lexical_weight is not None:
        # The same network without its lexical component, at the thresholds that were
        # tuned for it on the same out-of-fold articles.
        mixed = (trained.lexical_weight, trained.thresholds)
        trained.lexical_weight, trained.thresholds = None, alone
        scores = task_metrics(trained, [e.label for e in test], served()[task])
        trained.lexical_weight, trained.thresholds = mixed
        result["network_alone"] = {"micro_f1": scores["micro_f1"],
                                   "macro_f1": scores["macro_f1"]}
    for pooling in ("mean", "max"):
        if clf.config.pooling == "attention" or metrics.get("mode") in ("frozen", "top"):
            break  # learned pooling is trained in, frozen heads are fitted for the mean
        clf = clf.with_settings(pooling=pooling)
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
        mode = folds[0].get("mode", "finetune")
        name = {"frozen": "frozen encoder, logistic-regression heads",
                "top": "top layers trained on cached states, from the probe"}.get(
                    mode, f"fine-tuned, trained pooling ({pooling})")
        weights = [f["lexical_weight"] for f in folds if f.get("lexical_weight") is not None]
        if weights:
            name += (f", mixed with its lexical component (weight "
                     f"{min(weights):.1f}-{max(weights):.1f})")
        rows.append((name, [f["model"] for f in folds]))
        if all("network_alone" in f for f in folds):
            rows.append(("same models without the lexical component",
                         [f["network_alone"] for f in folds]))
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
    if trained and "by_language" in folds[0]["model"]:
        lines += ["", *language_table(folds)]
    if trained and folds[0].get("cross_validated", {}).get("by_language"):
        lines += ["", "Per-language against shared choices, nested cross-validation on each "
                  "fold's training articles (pooled micro-F1, mean over folds):", ""]
        for choice in folds[0]["cross_validated"]["by_language"]:
            values = [f["cross_validated"]["by_language"][choice] for f in folds]
            lines.append(f"- {choice}: {stats(values)}")
    if trained and folds[0].get("top"):
        lines += ["", "Top layers, per fold: out-of-fold score by epoch, by WiSE-FT share, "
                  "the chosen epoch and share:", ""]
        for f in folds:
            t = f["top"]
            lines.append(f"- {f['fold']}: {t['epoch_scores']} / {t['wise_scores']} -> epoch "
                         f"{t['epochs']}, alpha {t['wise_alpha']}; probe + lexical "
                         f"{f['cross_validated'].get('probe_mixed_cv_score')}, tuned + lexical "
                         f"{f['cross_validated'].get('mixed_cv_score')} ({t['seconds']:.0f} s)")
    env = environment()
    lines.append(f"machine: {env['cpu']}, {env['cpu_count']} CPUs, torch {env['torch']}")
    return "\n".join(lines)


def language_table(folds: list[dict]) -> list[str]:
    """Per language: the model against the better per-language baseline (by mean micro-F1),
    both scored on the same test articles of that language in every fold."""
    langs = sorted(folds[0]["model"]["by_language"])
    lines = ["| language | test articles | best per-language TF-IDF micro / macro | model "
             "micro / macro | micro gain |", "|---|---|---|---|---|"]
    for lang in langs:
        def mean(scores, key):
            return statistics.mean(s[key] for s in scores)

        per_baseline = {label: [f["baselines"][label]["by_language"][lang] for f in folds]
                        for label in folds[0]["baselines"]}
        best = max(per_baseline, key=lambda label: mean(per_baseline[label], "micro_f1"))
        model = [f["model"]["by_language"][lang] for f in folds]
        base = per_baseline[best]
        lines.append(f"| {lang} | {sum(m['n'] for m in model)} | "
                     f"{mean(base, 'micro_f1'):.4f} / {mean(base, 'macro_f1'):.4f} | "
                     f"{mean(model, 'micro_f1'):.4f} / {mean(model, 'macro_f1'):.4f} | "
                     f"{mean(model, 'micro_f1') - mean(base, 'micro_f1'):+.4f} |")
    return lines


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--cv", type=int, help="k stratified folds of the config's data")
    group.add_argument("--published-folds", help="comma-separated dataset.fold values")
    parser.add_argument("--task", help="the task to score (default: the config's first); "
                        "the others train beside it as auxiliary tasks")
    parser.add_argument("--by-language", action="store_true",
                        help="also score every language of a multilingual set on its own, "
                             "against baselines fitted on that language alone")
    parser.add_argument("--baselines-from", metavar="JSON",
                        help="take the baselines' scores from an earlier run's "
                             "bench_frames_<name>.json on the same folds instead of "
                             "refitting them")
    parser.add_argument("--baselines-only", action="store_true",
                        help="score the bag-of-words baselines on the folds, train nothing")
    parser.add_argument("--out", default="bench/results")
    parser.add_argument("--name", help="result file suffix (default: the config's name)")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    name = args.name or Path(args.config).stem
    base = load_run_config(args.config, args.set)
    run_root = Path(base.training.output_dir) / "bench"
    task = args.task or base.tasks[0].name
    if task not in [t.name for t in base.tasks]:
        parser.error(f"--task {task}: the config has no such task")
    folds = []
    earlier = (json.loads(Path(args.baselines_from).read_text())["folds"]
               if args.baselines_from else None)
    if args.cv:
        for k in range(args.cv):
            cfg = load_run_config(args.config, [*args.set, f"data.cv_folds={args.cv}",
                                                f"data.cv_fold={k}"])
            folds.append(run_fold(cfg, f"cv{k}", run_root / f"cv{k}", task,
                                  args.baselines_only, args.by_language,
                                  earlier[k] if earlier else None))
        title = f"{name}: {args.cv}-fold cross-validation"
    else:
        for i, k in enumerate(args.published_folds.split(",")):
            cfg = load_run_config(args.config, [*args.set, f"tasks.0.dataset.fold={k}"])
            folds.append(run_fold(cfg, f"fold{k}", run_root / f"fold{k}", task,
                                  args.baselines_only, args.by_language,
                                  earlier[i] if earlier else None))
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
