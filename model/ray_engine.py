"""Batch prediction on Ray Data, for corpora that outgrow one machine.

    article-classifier predict MODEL corpus/ --output predictions/ --engine ray --workers 8
    RAY_ADDRESS=ray://head:10001 article-classifier predict MODEL s3://bucket/corpus/ \\
        --output s3://bucket/predictions/ --engine ray --workers 64 --gpus-per-worker 1

The input is JSONL (a file, or a folder of shards) or Parquet, local or any URI that
pyarrow's filesystems read (s3://, gs://, ...); every record needs an id column, since
line numbers mean nothing once a corpus is sharded. `map_batches` runs an actor pool:
each actor loads the model once and predicts batch after batch. The output is a folder
of JSONL shards, or of Parquet files when --output ends in `.parquet`, one row per input
record: its `id` and `prediction`, the JSON text of the very object the local engine
writes for that record (kept fields included; error lines name the file they came from).
Install with `pip install article-classifier[ray]`.
"""

from __future__ import annotations

import json
from pathlib import Path

from .inputs import record_text

JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")


class RayPredictor:
    """A Ray Data actor: loads the model once, then predicts batches of records."""

    def __init__(self, model_dir: str, load: dict, options: dict, columns: dict,
                 keep: list[str], threads: int):
        import torch

        from .inference import load_classifier

        torch.set_num_threads(threads)
        self.clf = load_classifier(model_dir, **load)
        self.options = options
        self.columns = columns
        self.keep = keep

    def __call__(self, batch):
        """`batch` is a pyarrow Table, so missing values arrive as None (numpy batches
        would turn them into NaN)."""
        import pyarrow as pa

        ids = [str(i) for i in column(batch, self.columns["id"], batch.num_rows)]
        n = len(ids)
        texts = column(batch, self.columns["text"], n)
        titles = column(batch, self.columns["title"], n)
        paths = column(batch, "path", n)
        kept = [column(batch, name, n) for name in self.keep]
        records = [record_text({"text": texts[i], "title": titles[i]}) for i in range(n)]
        good = [text for text, error in records if error is None]
        predictions = iter(self.clf.predict(good, **self.options) if good else ())
        out = []
        for i, (rid, (_, error)) in enumerate(zip(ids, records)):
            line = {"id": rid, **{name: values[i] for name, values in zip(self.keep, kept)}}
            if error is None:
                line.update(next(predictions))
            else:
                line.update(error=error, where=f"{paths[i]} (id {rid})")
            out.append(json.dumps(line, ensure_ascii=False))
        return pa.table({"id": ids, "prediction": out})


def column(batch, name: str | None, n: int) -> list:
    """A column of a pyarrow batch as Python values (all None where it is absent)."""
    if not name or name not in batch.column_names:
        return [None] * n
    return batch.column(name).to_pylist()


def predict_with_ray(model_dir: str, source: str, output: str, *, workers: int = 1,
                     precision: str = "auto", device: str = "auto",
                     gpus_per_worker: float = 0, batch_size: int = 32, threshold=None,
                     top_k=None, text_column="text", id_column="id", title_column="title",
                     max_chunks: int | None = None, keep: list[str] = (),
                     allow_pickle: bool = False) -> None:
    """Predict every record of `source` on Ray, writing shards into the folder `output`."""
    try:
        import ray
    except ImportError as err:
        raise RuntimeError("--engine ray needs Ray: pip install 'article-classifier[ray]'") \
            from err
    data = _read(source)
    missing = [c for c in (text_column, id_column) if c not in data.columns()]
    if missing:
        raise ValueError(f"{source}: missing column(s) {missing}; the Ray engine needs an "
                         "id column and a text column")
    if not ray.is_initialized():
        # Joins the cluster named by RAY_ADDRESS, or starts a local one.
        ray.init(ignore_reinit_error=True, log_to_driver=False, include_dashboard=False)
    cpus = int(ray.available_resources().get("CPU", 1))
    threads = max(1, cpus // max(1, workers))
    # Leave a CPU's worth of room for the read and write tasks: actors holding every CPU
    # would starve them and the pipeline would stall.
    actor_cpus = max(0.25, min(threads, (cpus - 1) / max(1, workers)))
    columns = {"id": id_column, "text": text_column, "title": title_column}
    load = {"precision": precision, "device": device, "max_chunks": max_chunks,
            "allow_pickle": allow_pickle}
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


def _read(source: str):
    """A Ray dataset of the JSONL or Parquet files at `source` (a file or a folder, local
    or a URI), with each record's file in the column `path`."""
    import ray

    files = _list_files(source)
    if files and all(f.endswith(".parquet") for f in files):
        return ray.data.read_parquet(files, include_paths=True)
    if files and all(f.endswith(JSONL_SUFFIXES) for f in files):
        return ray.data.read_json(files, lines=True, include_paths=True)
    raise ValueError(f"{source}: the Ray engine reads JSONL or Parquet files (or a folder "
                     f"of them); found {files[:5] or 'no files'}")


def _list_files(source: str) -> list[str]:
    """The data files at `source`, as paths or URIs Ray Data can read."""
    from pyarrow import fs

    uri = source if "://" in source else str(Path(source).resolve())
    try:
        filesystem, path = fs.FileSystem.from_uri(uri)
        info = filesystem.get_file_info(path)
        if info.type == fs.FileType.NotFound:
            raise FileNotFoundError(f"{source}: no such file or folder")
        if info.type == fs.FileType.File:
            return [uri]
        found = filesystem.get_file_info(fs.FileSelector(path, recursive=True))
    except (OSError, ValueError) as err:
        if isinstance(err, FileNotFoundError):
            raise
        raise ValueError(f"{source}: cannot list it ({err})") from err
    prefix = uri.split("://", 1)[0] + "://" if "://" in source else ""
    return sorted(prefix + f.path for f in found if f.type == fs.FileType.File
                  and not Path(f.path).name.startswith((".", "_")))


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
