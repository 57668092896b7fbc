"""Batch prediction on Ray Data, for corpora that outgrow one machine.

    article-classifier predict MODEL corpus/ --output predictions/ --runner ray --workers 8
    RAY_ADDRESS=ray://head:10001 article-classifier predict MODEL s3://bucket/corpus/ \\
        --output s3://bucket/predictions/ --runner ray --workers 64 --gpus-per-worker 1

The input is JSONL (a file, or a folder of shards) or Parquet, local or any URI that
pyarrow's filesystems read (s3://, gs://, ...); every record needs an id column, since
line numbers mean nothing once a corpus is sharded. Web pages and WARC crawls are read
by the local runner only (`model/inputs/crawl.py`); records must give `text`. `map_batches`
runs an actor pool: each actor loads the model once and predicts batch after batch. The
output is a folder of JSONL shards, or of Parquet files when --output ends in `.parquet`,
one row per input record: its `id` and `prediction`, the JSON text of the very object the
local runner writes for that record (kept fields included; error lines name the file
they came from).
Install with `pip install article-classifier[ray]`.
"""

from __future__ import annotations

import json
from pathlib import Path

from model.inputs.records import HTML_SUFFIXES, JSONL_SUFFIXES, WARC_SUFFIXES, record_text


class RayPredictor:
    """A Ray Data actor: loads the model once, then predicts batches of records."""

    def __init__(self, model_dir: str, load: dict, options: dict, columns: dict,
                 keep: list[str], threads: int):
        import torch

        from model.runtime.loading import load_classifier

        torch.set_num_threads(threads)
        self.clf = load_classifier(model_dir, **load)
        self.options = options
        self.columns = columns
        self.keep = keep

    def __call__(self, batch):
        """`batch` is a pyarrow Table, so missing values arrive as None (numpy batches
        would turn them into NaN)."""
        import pyarrow as pa

        rows = batch.to_pylist()
        id_column = self.columns["id"]
        ids = [None if row.get(id_column) is None else str(row[id_column]) for row in rows]
        records = [record_text(row, self.columns["text"], self.columns["title"])
                   if rid is not None else (None, f"no {id_column!r} value")
                   for rid, row in zip(ids, rows)]
        good = [text for text, error in records if error is None]
        predictions = iter(self.clf.predict(good, **self.options) if good else ())
        out = []
        for rid, row, (_, error) in zip(ids, rows, records):
            line = {"id": rid, **{name: row.get(name) for name in self.keep}}
            if error is None:
                line.update(next(predictions))
            else:
                line.update(error=error, where=f"{row.get('path')} (id {rid})")
            # default=str: kept columns may hold dates, decimals or bytes (Parquet).
            out.append(json.dumps(line, ensure_ascii=False, default=str))
        return pa.table({"id": ids, "prediction": out})


def predict_with_ray(model_dir: str, source: str, output: str, *, workers: int = 1,
                     precision: str = "auto", device: str = "auto",
                     backend: str = "auto", gpus_per_worker: float = 0,
                     batch_size: int = 32, threshold=None, top_k=None, text_column="text",
                     id_column="id", title_column="title",
                     max_chunks: int | None = None, keep: list[str] = (),
                     allow_pickle: bool = False) -> None:
    """Predict every record of `source` on Ray, writing shards into the folder `output`."""
    try:
        import ray
    except ImportError as err:
        raise RuntimeError("--runner ray needs Ray: pip install 'article-classifier[ray]'") \
            from err
    device = ray_device(device, gpus_per_worker)
    filesystem, files, prefix = _list_files(source)
    pages = [f for f in files if f.lower().endswith(HTML_SUFFIXES + WARC_SUFFIXES)]
    if pages:
        raise ValueError(f"{source}: the Ray runner does not read web pages or WARC files "
                         f"({pages[0]}); use --runner local")
    if not ray.is_initialized():
        # Joins the cluster named by RAY_ADDRESS, or starts a local one (before reading:
        # Ray Data would otherwise start one with its own defaults).
        ray.init(ignore_reinit_error=True, log_to_driver=False, include_dashboard=False)
    data = _read(source, filesystem, files, prefix)
    missing = [c for c in (text_column, id_column) if c not in data.columns()]
    if missing:
        raise ValueError(f"{source}: missing column(s) {missing}; the Ray runner needs an "
                         "id column and a text column")
    cpus = int(ray.available_resources().get("CPU", 1))
    threads = max(1, cpus // max(1, workers))
    # Leave a CPU's worth of room for the read and write tasks: actors holding every CPU
    # would starve them and the pipeline would stall.
    actor_cpus = max(0.25, min(threads, (cpus - 1) / max(1, workers)))
    columns = {"id": id_column, "text": text_column, "title": title_column}
    load = {"precision": precision, "device": device, "max_chunks": max_chunks,
            "allow_pickle": allow_pickle, "backend": backend}
    options = {"batch_size": batch_size, "threshold": threshold, "top_k": top_k}
    predicted = data.map_batches(
        RayPredictor, fn_constructor_args=(str(Path(model_dir).resolve()), load, options,
                                           columns, list(keep), threads),
        batch_size=256, concurrency=workers, num_cpus=actor_cpus,
        num_gpus=gpus_per_worker or None, batch_format="pyarrow")
    # Writing runs the pipeline; counting afterwards would run it a second time.
    target = output if "://" in output else str(Path(output).resolve())
    if output.endswith(".parquet"):
        predicted.write_parquet(target)
    else:
        predicted.write_json(target)


def ray_device(device: str, gpus_per_worker: float) -> str:
    """The device each actor runs on: a GPU only where Ray gives the actor one, since an
    actor that asked for none may still see every GPU of its node."""
    if device in (None, "auto"):
        return "cuda" if gpus_per_worker > 0 else "cpu"
    if device.startswith("cuda") and gpus_per_worker <= 0:
        raise ValueError("--device cuda with --runner ray needs --gpus-per-worker (e.g. 1), "
                         "so that Ray gives each actor its GPU")
    if device == "cpu" and gpus_per_worker > 0:
        raise ValueError("--gpus-per-worker asks Ray for GPUs that --device cpu would not use")
    return device


def _read(source: str, filesystem, files: list[str], prefix: str):
    """A Ray dataset of `files` (JSONL or Parquet), with each record's file in `path`."""
    import ray

    lower = [f.lower() for f in files]
    if files and all(f.endswith(".parquet") for f in lower):
        return ray.data.read_parquet(files, filesystem=filesystem, include_paths=True)
    if files and all(f.endswith(JSONL_SUFFIXES) for f in lower):
        # Ray's line-by-line JSON reader takes no filesystem: hand it full URIs.
        return ray.data.read_json([prefix + f for f in files], lines=True,
                                  include_paths=True)
    raise ValueError(f"{source}: the Ray runner reads JSONL or Parquet files (or a folder "
                     f"of them); found {files[:5] or 'no files'}")


def _list_files(source: str):
    """`(filesystem, paths, prefix)`: the data files at `source` (a file or a folder,
    local or a URI), skipping hidden and underscore-prefixed files and folders (_SUCCESS,
    _temporary/, .ipynb_checkpoints/); `prefix + path` is a file's URI (empty locally)."""
    from pyarrow import fs

    uri = source if "://" in source else str(Path(source).resolve())
    try:
        filesystem, path = fs.FileSystem.from_uri(uri)
        # The scheme and authority (s3://, hdfs://host:port) in front of the path.
        prefix = uri[:uri.find(path)] if "://" in source and path in uri else ""
        info = filesystem.get_file_info(path)
        if info.type == fs.FileType.NotFound:
            raise FileNotFoundError(f"{source}: no such file or folder")
        if info.type == fs.FileType.File:
            return filesystem, [path], prefix
        found = filesystem.get_file_info(fs.FileSelector(path, recursive=True))
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as err:
        raise ValueError(f"{source}: cannot list it ({err})") from err
    root = len(path.rstrip("/")) + 1

    def hidden(name: str) -> bool:
        return any(part.startswith((".", "_")) for part in name[root:].split("/"))

    return filesystem, sorted(f.path for f in found
                              if f.type == fs.FileType.File and not hidden(f.path)), prefix


def read_ray_output(folder: str | Path) -> dict[str, dict]:
    """The predictions a Ray run wrote, by id (for checks and for merging shards)."""
    import pyarrow.parquet as pq

    rows = {}
    for path in sorted(Path(folder).iterdir()):
        if path.suffix == ".parquet":
            table = pq.read_table(path).to_pylist()
        elif path.suffix in (".json", ".jsonl"):
            table = [json.loads(line) for line in path.read_text().splitlines() if line]
        else:
            continue
        for row in table:
            rows[row["id"]] = json.loads(row["prediction"])
    return rows
