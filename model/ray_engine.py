"""Batch prediction on Ray Data, for corpora that outgrow one machine.

    article-classifier predict MODEL corpus/ --output predictions/ --engine ray --workers 8
    RAY_ADDRESS=ray://head:10001 article-classifier predict MODEL s3://bucket/corpus/ \\
        --output s3://bucket/predictions/ --engine ray --workers 64

The input is JSONL (a file, or a folder of shards) or Parquet; every record needs an id
column, since line numbers mean nothing once a corpus is sharded. `map_batches` runs an
actor pool: each actor loads the model once and predicts batch after batch. The output
is a folder of JSONL shards, or of Parquet files when --output ends in `.parquet`, one
row per input record: its `id` and `prediction`, the JSON text of the very object the
local engine writes for that record. Install with `pip install article-classifier[ray]`.
"""

from __future__ import annotations

import json
from pathlib import Path

from .text import join_title


class RayPredictor:
    """A Ray Data actor: loads the model once, then predicts batches of records."""

    def __init__(self, model_dir: str, precision: str, max_chunks: int | None, options: dict,
                 columns: dict, threads: int):
        import torch

        from .inference import load_classifier

        torch.set_num_threads(threads)
        self.clf = load_classifier(model_dir, precision=precision, max_chunks=max_chunks)
        self.options = options
        self.columns = columns

    def __call__(self, batch: dict) -> dict:
        ids = [str(i) for i in batch[self.columns["id"]]]
        texts, errors = [], []
        titles = batch.get(self.columns["title"])
        for i, text in enumerate(batch[self.columns["text"]]):
            title = titles[i] if titles is not None else None
            if not isinstance(text, str) or not text.strip():
                errors.append("empty text" if isinstance(text, str) or text is None
                              else f"text is {type(text).__name__}, expected a string")
                texts.append(None)
                continue
            errors.append(None)
            texts.append(join_title(title if isinstance(title, str) else None, text))
        good = [t for t in texts if t is not None]
        predictions = iter(self.clf.predict(good, **self.options)) if good else iter(())
        out = []
        for rid, error in zip(ids, errors):
            line = {"id": rid, **next(predictions)} if error is None else \
                {"id": rid, "error": error}
            out.append(json.dumps(line, ensure_ascii=False))
        return {"id": ids, "prediction": out}


def predict_with_ray(model_dir: str, source: str, output: str, *, workers: int = 1,
                     precision: str = "auto", batch_size: int = 32, threshold=None,
                     top_k=None, text_column="text", id_column="id",
                     title_column="title", max_chunks: int | None = None) -> None:
    """Predict every record of `source` on Ray, writing shards into the folder `output`."""
    try:
        import ray
    except ImportError as err:
        raise RuntimeError("--engine ray needs Ray: pip install 'article-classifier[ray]'") \
            from err
    if not ray.is_initialized():
        # Joins the cluster named by RAY_ADDRESS, or starts a local one.
        ray.init(ignore_reinit_error=True, log_to_driver=False, include_dashboard=False)
    data = _read(source)
    missing = [c for c in (text_column, id_column) if c not in data.columns()]
    if missing:
        raise ValueError(f"{source}: missing column(s) {missing}; the Ray engine needs an "
                         "id column and a text column")
    cpus = int(ray.available_resources().get("CPU", 1))
    threads = max(1, cpus // max(1, workers))
    # Leave a CPU's worth of room for the read and write tasks: actors holding every CPU
    # would starve them and the pipeline would stall.
    actor_cpus = max(0.25, min(threads, (cpus - 1) / max(1, workers)))
    columns = {"id": id_column, "text": text_column, "title": title_column}
    options = {"batch_size": batch_size, "threshold": threshold, "top_k": top_k}
    predicted = data.map_batches(
        RayPredictor, fn_constructor_args=(str(Path(model_dir).resolve()), precision, max_chunks,
                                           options, columns, threads),
        batch_size=256, concurrency=workers, num_cpus=actor_cpus, batch_format="numpy")
    # Writing runs the pipeline; counting afterwards would run it a second time.
    if output.endswith(".parquet"):
        predicted.write_parquet(output)
    else:
        predicted.write_json(output)


def _read(source: str):
    import ray

    paths = [str(p) for p in sorted(Path(source).glob("*"))] if Path(source).is_dir() \
        else [source]
    if all(p.endswith(".parquet") for p in paths):
        return ray.data.read_parquet(paths)
    if all(p.endswith((".jsonl", ".json", ".ndjson")) for p in paths):
        return ray.data.read_json(paths, lines=True)
    raise ValueError(f"{source}: the Ray engine reads JSONL or Parquet files (or a folder "
                     "of them)")


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
