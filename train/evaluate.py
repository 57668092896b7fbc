"""Re-evaluate a model artifact on a split of the data a run config describes.

    python -m train.evaluate --model runs/bbc_topic/model --config configs/bbc_topic.yaml
    python -m train.evaluate --model DIR --config configs/bbc_topic.yaml --split validation \
        --out runs/bbc_topic/eval_validation
    # How much do the later windows help? Read only the first one, or pool by max
    # (multi-label thresholds are then retuned on the validation split):
    python -m train.evaluate --model DIR --config configs/bbc_topic.yaml --max-chunks 1
    python -m train.evaluate --model DIR --config configs/bbc_topic.yaml --pooling max

The split is rebuilt exactly as training built it (same data, seed and deduplication),
and the artifact's own labels are the allowed labels. Writes metrics.json, report.md and
the plots into --out (default: the artifact's parent folder).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from model.core.artifact import ArtifactError
from model.runtime.loading import load_classifier
from train.config import load_run_config
from train.data import DataError
from train.metrics import environment, write_reports
from train.run import evaluate_split, prepare_data, print_summary, tune_on_validation


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="artifact folder")
    parser.add_argument("--config", required=True, help="run config naming the data")
    parser.add_argument("--split", default="test", choices=("train", "validation", "test"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", help="output folder (default: the model's parent)")
    parser.add_argument("--precision", default="fp32",
                        choices=("auto", "fp32", "bf16", "fp16", "int8"))
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-chunks", type=int,
                        help="read at most this many windows per article (1 = truncate)")
    parser.add_argument("--pooling", choices=("mean", "max"),
                        help="pool the window logits this way instead of the trained way")
    parser.add_argument("--retune", action="store_true",
                        help="retune multi-label thresholds on the validation split (done "
                             "anyway with --pooling or --max-chunks, which change the scores)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        clf = load_classifier(args.model, precision=args.precision, device=args.device,
                              max_chunks=args.max_chunks)
        if args.pooling:
            if clf.config.pooling == "attention":
                raise ValueError("--pooling cannot replace a learned attention pooling")
            clf = clf.with_settings(pooling=args.pooling)
        cfg = load_run_config(args.config, args.set)
        cfg.tasks = [t for t in cfg.tasks if t.name in {s.name for s in clf.tasks}]
        if not cfg.tasks:
            raise DataError(f"the config has none of the model's tasks "
                            f"{[t.name for t in clf.tasks]}")
        _, splits, data_report = prepare_data(cfg, {t.name: t.labels for t in clf.tasks})
    except (ArtifactError, DataError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    retuned = {}
    if args.retune or args.pooling or args.max_chunks:
        # Thresholds were tuned for the trained way of reading; a different reading moves
        # the scores, so comparing without retuning would confound the two.
        retuned = tune_on_validation(clf, cfg, splits, args.batch_size)
        for name, values in retuned.items():
            print(f"{name}: thresholds retuned on the validation split: "
                  f"{[round(v, 3) for v in values]}", file=sys.stderr)
        if retuned and args.split == "validation":
            print("note: scored on the validation split the thresholds were tuned on; "
                  "use --split test for an unbiased score", file=sys.stderr)
    results = evaluate_split(clf, splits, args.split, args.batch_size)
    out = Path(args.out) if args.out else Path(args.model).resolve().parent
    extra = {"model": str(args.model), "precision": clf.precision, "device": str(clf.device),
             "pooling": clf.config.pooling, "max_chunks": clf.config.max_chunks,
             "retuned_thresholds": retuned, "examples": data_report,
             "environment": environment()}
    tasks = [t for t in clf.tasks if t.name in results]
    print_summary(write_reports(out, results, tasks, extra, args.split), out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
