"""Loaders of the framing datasets (see ../shared/data/README.md for each one's origin).

The frame names of each set live here and nowhere else: a framing config only names the
loader, and the labels a model learns are whatever these loaders read.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from model.inputs.records import read_csv, read_jsonl, read_text_file, record_text
from train.config import DatasetConfig
from train.data import DataError, RawRow, register_loader, resolve_path

GVFC_FRAMES = {1: "Gun_or_2nd_Amendment_rights", 2: "Gun_control_or_regulation",
               3: "Politics", 4: "Mental_health", 5: "School_or_public_space_safety",
               6: "Race_or_ethnicity", 7: "Public_opinion", 8: "Society_or_culture",
               9: "Economic_consequences"}
NARRATIVE_FRAMES = {"RE": "Resolution", "HI": "Human_interest", "CO": "Conflict",
                    "MO": "Moral", "EC": "Economic"}


@register_loader("semeval2023")
def load_semeval2023(ds: DatasetConfig, data_dir: Path | None) -> Iterator[RawRow]:
    """SemEval-2023 Task 3 subtask 2 (14 generic policy frames, multi-label, full articles).

    `path` is either the `train.jsonl` of ../shared/data (id, lang, title, text, labels)
    or a folder in the organisers' layout: `<lang>/train-articles-subtask-2/article<ID>.txt`
    with `<lang>/train-labels-subtask-2.txt` (`id<TAB>frame,frame,...`).
    `languages` keeps only those languages (default: all).
    """
    path = resolve_path(ds, data_dir)
    keep = set(ds.languages) if ds.languages else None
    if path.is_file():
        for number, obj, error in read_jsonl(path):
            where = f"{path}:{number}"
            if error is not None:
                yield RawRow(where, str(number), None, None, error)
            elif keep is None or obj.get("lang") in keep:
                text, error = record_text(obj)
                yield RawRow(where, str(obj.get("id", number)), text, obj.get("labels"), error,
                             {"lang": obj.get("lang")})
        return
    languages = sorted(p.name for p in path.iterdir() if (p / "train-articles-subtask-2").is_dir())
    if not languages:
        raise DataError(f"{path}: neither a train.jsonl nor folders "
                        "<lang>/train-articles-subtask-2")
    for lang in languages:
        if keep is None or lang in keep:
            yield from _semeval_language(path / lang, lang)


def _semeval_language(folder: Path, lang: str) -> Iterator[RawRow]:
    label_file = folder / "train-labels-subtask-2.txt"
    labels = {}
    if label_file.is_file():
        for line in label_file.read_text(encoding="utf-8").splitlines():
            if line.strip():
                article_id, _, frames = line.partition("\t")
                labels[article_id.strip()] = [f for f in frames.strip().split(",") if f]
    for file in sorted((folder / "train-articles-subtask-2").glob("article*.txt")):
        article_id = file.stem.removeprefix("article")
        text, error = read_text_file(file)
        yield RawRow(str(file), article_id, text, labels.get(article_id), error, {"lang": lang})


@register_loader("gvfc")
def load_gvfc(ds: DatasetConfig, data_dir: Path | None) -> Iterator[RawRow]:
    """Gun Violence Frame Corpus headlines, multi-label over Theme1 + Theme2.

    `path` is the `gvfc` folder and `fold` (0-4) one of the published splits of Akyurek
    et al. 2020 (`akyurek2020_multilingual/folds/<k>/{train,dev}.tsv`; their dev is the
    test split here). The nine frame columns of those files hold Theme1 and Theme2 of the
    original annotation. Their guids repeat across files, so ids are `<split>:<line>`.
    """
    root = resolve_path(ds, data_dir)
    if ds.fold is None:
        raise DataError("the gvfc loader needs dataset.fold (0-4), a published split")
    for split, name in (("train", "train"), ("dev", "test")):
        file = root / "akyurek2020_multilingual" / "folds" / str(ds.fold) / f"{split}.tsv"
        if not file.is_file():
            raise DataError(f"{file}: no such fold file (folds are 0-4)")
        for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
            cells = line.split("\t")
            where = f"{file}:{number}"
            if len(cells) < 12:
                yield RawRow(where, f"{split}:{number}", None, None,
                             f"expected 12 columns, got {len(cells)}")
                continue
            frames = [GVFC_FRAMES[i + 1] for i, v in enumerate(cells[3:12]) if float(v) > 0]
            yield RawRow(where, f"{split}:{number}", cells[1], frames, None,
                         {"split": name, "guid": cells[0].strip()})


@register_loader("narrative_frames")
def load_narrative_frames(ds: DatasetConfig, data_dir: Path | None) -> Iterator[RawRow]:
    """Climate-change articles with five narrative frames and each article's outlet.

    `path` is the `narrative_frames_climate` folder; with `fold` (1-5), the authors'
    train/dev/test ids. Every record keeps its `source` and `mbfc` rating.
    """
    root = resolve_path(ds, data_dir)
    table = root / "articles_metadata.tsv"
    split_of = {}
    if ds.fold is not None:
        for split, name in (("train", "train"), ("dev", "validation"), ("test", "test")):
            ids_file = root / "folds" / f"fold{ds.fold}_{split}_ids.txt"
            if not ids_file.is_file():
                raise DataError(f"{ids_file}: no such fold file (folds are 1-5)")
            for line in ids_file.read_text().split():
                split_of[line.strip()] = name
    for number, row, error in read_csv(table, required=("ID", "text", *NARRATIVE_FRAMES)):
        where = f"{table}:{number}"
        if error is not None:
            yield RawRow(where, str(number), None, None, error)
            continue
        # One cell of the published file reads "False)"; anything but True is False.
        frames = [name for code, name in NARRATIVE_FRAMES.items()
                  if row[code].strip().lower().startswith("true")]
        meta = {"source": row.get("source"), "mbfc": row.get("mbfc")}
        if split_of:
            if row["ID"] not in split_of:
                continue  # not part of this fold's published splits
            meta["split"] = split_of[row["ID"]]
        yield RawRow(where, row["ID"], row["text"], frames, None, meta)
