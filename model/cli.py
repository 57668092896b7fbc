"""The `article-classifier` command.

    article-classifier predict runs/bbc_topic/model articles.jsonl --output predictions.jsonl
    article-classifier predict MODEL articles.csv --text-column body --output out.jsonl
    article-classifier predict MODEL folder_of_txt/ --output out.jsonl --batch-size 64
    article-classifier profile predictions.jsonl --by source --out profile/
"""

from __future__ import annotations

import argparse
import json
import sys
from itertools import islice
from pathlib import Path

from tqdm.auto import tqdm

from .inference import load_classifier
from .inputs import iter_articles
from .profile import framing_profile, read_predictions, write_profile


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="article-classifier",
                                     description="Classify news articles by topic and framing.")
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("predict", help="batch prediction over a file or folder")
    p.add_argument("model", help="model artifact folder (e.g. runs/bbc_topic/model)")
    p.add_argument("input", help="JSONL file, CSV/TSV file, or folder of .txt files")
    p.add_argument("--output", "-o", required=True, help="where to write JSONL predictions")
    p.add_argument("--batch-size", type=int, default=32, help="token windows per forward pass")
    p.add_argument("--text-column", default="text")
    p.add_argument("--id-column", default="id")
    p.add_argument("--title-column", default="title")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    p.add_argument("--allow-pickle", action="store_true",
                   help="accept pickle weights (.bin/.pt); only for files you trust")
    p.add_argument("--keep", action="append", default=[], metavar="FIELD",
                   help="copy this input field (e.g. source) into each output line")
    p.add_argument("--threshold", type=float, help="one decision threshold for all frames")
    p.add_argument("--top-k", type=int, help="give the k best frames of each article")
    p.set_defaults(handler=run_predict)

    q = commands.add_parser("profile", help="per-source framing profile of predictions")
    q.add_argument("predictions", help="JSONL written by `predict` (with --keep SOURCE)")
    q.add_argument("--by", required=True, help="the field that names the source")
    q.add_argument("--task", default="frames", help="which task's labels to profile")
    q.add_argument("--out", default="profile", help="folder for profile.csv/.md/.png")
    q.set_defaults(handler=run_profile)
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        print(f"article-classifier: error: {err}", file=sys.stderr)
        return 2


def run_predict(args) -> int:
    output = Path(args.output)
    if output.resolve() == Path(args.input).resolve():
        raise ValueError("--output must not be the input file")
    output.parent.mkdir(parents=True, exist_ok=True)
    clf = load_classifier(args.model, precision=args.precision, allow_pickle=args.allow_pickle)
    records = iter_articles(args.input, args.text_column, args.id_column, args.title_column)
    n_errors = n_done = 0
    with open(output, "w", encoding="utf-8") as out, \
            tqdm(total=count_inputs(Path(args.input)), unit="article", file=sys.stderr) as bar:
        # Slices keep memory flat: only one slice of articles is held at a time.
        while batch := list(islice(records, 256)):
            good = [r for r in batch if r.error is None]
            predictions = iter(clf.predict([r.text for r in good], batch_size=args.batch_size,
                                           threshold=args.threshold, top_k=args.top_k))
            for record in batch:
                kept = {name: record.fields.get(name) for name in args.keep}
                if record.error is None:
                    line = {"id": record.id, **kept, **next(predictions)}
                else:
                    n_errors += 1
                    line = {"id": record.id, **kept, "error": record.error,
                            "where": record.where}
                out.write(json.dumps(line, ensure_ascii=False) + "\n")
            out.flush()
            n_done += len(batch)
            bar.update(len(batch))
    print(f"wrote {n_done} predictions to {output} ({n_errors} records with errors)",
          file=sys.stderr)
    return 0


def run_profile(args) -> int:
    rows, skipped = framing_profile(read_predictions(Path(args.predictions)), args.by,
                                    args.task)
    if not rows:
        raise ValueError(f"{args.predictions}: no {args.task!r} predictions to profile")
    paths = write_profile(rows, args.by, Path(args.out),
                          f"{args.task} by {args.by}: {Path(args.predictions).name}")
    groups = len({r[args.by] for r in rows})
    print(f"profiled {groups} values of {args.by!r} ({skipped} lines without a prediction "
          f"skipped); wrote {', '.join(map(str, paths))}", file=sys.stderr)
    return 0


def count_inputs(path: Path) -> int | None:
    """Number of records, for the progress bar (lines of a file, .txt files of a folder)."""
    if path.is_dir():
        return sum(1 for _ in path.rglob("*.txt"))
    if not path.is_file():
        return None
    with open(path, "rb") as handle:
        lines = sum(1 for line in handle if line.strip())
    return lines - 1 if path.suffix.lower() in (".csv", ".tsv") else lines


if __name__ == "__main__":
    sys.exit(main())
