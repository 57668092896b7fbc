"""Batch runners: the local runner beside Ray Data with 1 and 2 workers.

    python -m bench.runners --model runs/bbc_topic/model [--articles 2000]

Every runner predicts the same real articles (SemEval English and BBC, full length) through
`article-classifier predict`; the time is the whole command (start-up, reading, model
loading, prediction, writing), median of --repeats. Writes bench/results/bench_runners.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.infer import ROOT, bench_articles
from train.metrics import environment


def time_command(cmd: list[str], repeats: int) -> float:
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="runs/bbc_topic/model")
    parser.add_argument("--articles", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--out", default="bench/results")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    work = Path(args.out) / "runners"
    (work / "shards").mkdir(parents=True, exist_ok=True)
    texts = bench_articles(args.articles)
    lines = [json.dumps({"id": str(i), "text": t}) + "\n" for i, t in enumerate(texts)]
    (work / "all.jsonl").write_text("".join(lines))
    for k in range(4):
        (work / "shards" / f"part{k}.jsonl").write_text("".join(lines[k::4]))
    base = [sys.executable, "-m", "model.cli", "predict", args.model, "--precision",
            args.precision]
    runs = {"local": time_command([*base, str(work / "all.jsonl"), "-o",
                                   str(work / "local.jsonl")], args.repeats)}
    for workers in (1, 2):
        runs[f"ray, {workers} worker(s)"] = time_command(
            [*base, str(work / "shards"), "-o", str(work / f"ray{workers}"), "--runner", "ray",
             "--workers", str(workers)], args.repeats)
    env = environment()
    report = [f"Batch prediction of {len(texts)} real articles (full length), whole command, "
              f"median of {args.repeats}", "", "| runner | seconds | articles/s |",
              "|---|---|---|"]
    report += [f"| {name} | {s:.1f} | {len(texts) / s:.1f} |" for name, s in runs.items()]
    report += ["", f"machine: {env['cpu']}, {env['cpu_count']} CPUs, torch {env['torch']}"]
    text = "\n".join(report)
    print(text)
    (Path(args.out) / "bench_runners.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
