"""Topic benchmark: our fine-tuned model beside a TF-IDF + LinearSVC baseline, same split.

    python -m bench.topic --config configs/bbc_topic.yaml      # or: make bench-topic
    python -m bench.topic --config configs/bbc_topic.yaml --set training.epochs=1

Trains the config's model (as `python -m train` does), then fits the baseline on the very
same training articles and scores both on the same test articles. Prints a table and
writes it, with the raw numbers, to bench/results/bench_topic.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics import accuracy_score, f1_score
from sklearn.pipeline import make_pipeline
from sklearn.svm import LinearSVC

from train.config import load_run_config
from train.data import load_task, split_examples
from train.metrics import environment
from train.run import train


def tfidf_baseline(train_examples, test_examples, repeats: int = 3) -> dict:
    """TF-IDF (word 1-2 grams, sublinear tf) + LinearSVC; fit time is the median of repeats."""
    seconds, pipeline = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        pipeline = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True,
                                                 min_df=2), LinearSVC(C=1.0))
        pipeline.fit([e.text for e in train_examples], [e.label for e in train_examples])
        seconds.append(time.perf_counter() - started)
    predicted = pipeline.predict([e.text for e in test_examples])
    gold = [e.label for e in test_examples]
    return {"accuracy": accuracy_score(gold, predicted),
            "macro_f1": f1_score(gold, predicted, average="macro"),
            "fit_seconds": statistics.median(seconds)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/bbc_topic.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", default="bench/results")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    cfg = load_run_config(args.config, args.set)
    task = cfg.tasks[0]

    data = load_task(task, cfg.data)
    splits = split_examples(data.examples, data.labels, task.type, cfg.data)
    baseline = tfidf_baseline(splits["train"], splits["test"])

    started = time.perf_counter()
    if train(cfg) != 0:
        return 1
    wall = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    metrics = json.loads((Path(cfg.training.output_dir) / "metrics.json").read_text())
    ours = metrics["tasks"][task.name]

    rows = [("TF-IDF + LinearSVC", baseline["accuracy"], baseline["macro_f1"],
             baseline["fit_seconds"]),
            (f"{cfg.model.encoder} fine-tuned", ours["accuracy"], ours["macro_f1"],
             metrics["training_seconds"])]
    lines = [f"BBC News topic, test split n={ours['n']} (train n={len(splits['train'])}), "
             f"seed {cfg.data.split_seed}", "",
             "| model | accuracy | macro-F1 | training s |", "|---|---|---|---|"]
    lines += [f"| {name} | {acc:.4f} | {f1:.4f} | {sec:.1f} |" for name, acc, f1, sec in rows]
    lines += ["", f"whole job {wall:.0f} s (data, training, evaluation, saving); peak RSS "
              f"{peak_mib:.0f} MiB; precision {metrics['precision']}",
              f"beats the baseline on accuracy: {ours['accuracy'] > baseline['accuracy']}, "
              f"on macro-F1: {ours['macro_f1'] > baseline['macro_f1']}"]
    env = environment()
    lines.append(f"machine: {env['cpu']}, {env['cpu_count']} CPUs, torch {env['torch']}")
    report = "\n".join(lines)
    print(report)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_topic.md").write_text(report + "\n")
    (out / "bench_topic.json").write_text(json.dumps(
        {"baseline_tfidf_svc": baseline, "model": ours, "training_seconds":
         metrics["training_seconds"], "job_seconds": wall, "peak_rss_mib": peak_mib,
         "config": cfg.to_dict(), "environment": env}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
