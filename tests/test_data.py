"""Every loader, the record checks, deduplication, splits and run-config overrides."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from train.config import DataConfig, DatasetConfig, TaskConfig, apply_override, load_run_config
from train.data import DataError, load_task, split_examples


def task(fmt: str, path=None, type_="single_label", **ds) -> TaskConfig:
    return TaskConfig(name="t", type=type_, dataset=DatasetConfig(format=fmt, path=str(path)
                                                                  if path else None, **ds))


def test_bbc_corpus_from_the_package():
    data = load_task(task("bbc"), DataConfig())
    assert data.labels == ["business", "entertainment", "politics", "sports", "tech"]
    assert len(data.examples) + data.duplicates_removed == 2225 and not data.bad_records
    # 98 byte-identical copies, plus sports/344 which repeats sports/332 but for spacing.
    assert data.duplicates_removed == 99
    latin1 = next(e for e in data.examples if e.id == "sports/199")
    assert "£" in latin1.text
    first = data.examples[0]
    assert first.id == "business/001" and first.where.endswith("business/001.txt")


def test_bbc_split_is_stratified_and_seeded():
    data = load_task(task("bbc"), DataConfig())
    a = split_examples(data.examples, data.labels, "single_label", DataConfig())
    b = split_examples(data.examples, data.labels, "single_label", DataConfig())
    assert [e.id for e in a["test"]] == [e.id for e in b["test"]]
    total = Counter(e.label for e in data.examples)
    test = Counter(e.label for e in a["test"])
    for label in total:  # each class keeps its share within one article
        assert abs(test[label] - total[label] * 0.15) <= 1.5
    texts = {e.text for e in a["train"]}
    assert not any(e.text in texts for e in a["test"])


def write_jsonl(path, rows):
    path.write_bytes(b"".join(r if isinstance(r, bytes) else (json.dumps(r) + "\n").encode()
                              for r in rows))
    return path


def test_jsonl_bad_records_are_reported_with_file_and_line(tmp_path):
    src = write_jsonl(tmp_path / "d.jsonl", [
        {"id": 1, "text": "good one", "label": "a"},
        {"id": 2, "text": "  ", "label": "a"},
        {"id": 3, "text": "no label"},
        {"id": 4, "text": "wrong type", "label": 7},
        b'{"id": 5, "text": "bad \xff bytes", "label": "a"}\n',
        b"{broken\n",
        {"id": 1, "text": "duplicate id", "label": "b"},
        {"id": 8, "text": "good two", "label": "b"},
        {"id": 9, "text": "unknown", "label": "zzz"},
    ])
    data = load_task(task("jsonl", src, labels=["a", "b"]), DataConfig())
    assert [e.id for e in data.examples] == ["1", "8"]
    problems = dict(data.bad_records)
    assert problems[f"{src}:2"] == "empty text"
    assert problems[f"{src}:3"] == "missing label"
    assert problems[f"{src}:4"].startswith("label must be a string")
    assert problems[f"{src}:5"].startswith("not valid UTF-8")
    assert problems[f"{src}:6"].startswith("malformed JSON")
    assert problems[f"{src}:7"].startswith("duplicate id '1'")
    assert problems[f"{src}:9"] == "unknown label 'zzz'"
    assert data.summary()["bad_records"] == 7


def test_fail_policy_stops_at_the_first_bad_record(tmp_path):
    src = write_jsonl(tmp_path / "d.jsonl", [{"text": "x", "label": "a"},
                                             {"text": "", "label": "a"}])
    with pytest.raises(DataError, match=r"d.jsonl:2: empty text"):
        load_task(task("jsonl", src), DataConfig(on_bad_record="fail"))


def test_csv_loader_single_and_multi_label(tmp_path):
    src = tmp_path / "d.csv"
    src.write_text('id,text,label\n1,"first, with comma",a\n2,second,"b;c"\n'
                   '3,third,"[""a"",""c""]"\n')
    multi = load_task(task("csv", src, type_="multi_label"), DataConfig())
    assert [e.label for e in multi.examples] == [["a"], ["b", "c"], ["a", "c"]]
    assert multi.labels == ["a", "b", "c"]
    single = load_task(task("csv", src), DataConfig())
    assert [e.id for e in single.examples] == ["1"] and len(single.bad_records) == 2


def test_csv_missing_column_and_empty_file(tmp_path):
    src = tmp_path / "d.csv"
    src.write_text("id,body,label\n1,x,a\n")
    with pytest.raises(DataError, match="missing column"):
        load_task(task("csv", src), DataConfig())
    empty = tmp_path / "e.jsonl"
    empty.write_text("")
    with pytest.raises(DataError, match="no usable examples"):
        load_task(task("jsonl", empty), DataConfig())


def test_text_folders_loader(tmp_path):
    for label in ("sport", "tech"):
        (tmp_path / label).mkdir()
        for i in range(3):
            (tmp_path / label / f"{i}.txt").write_text(f"{label} article {i}")
    (tmp_path / "tech" / "bad.txt").write_bytes(b"\xff\xfe broken")
    data = load_task(task("text_folders", tmp_path), DataConfig())
    assert Counter(e.label for e in data.examples) == {"sport": 3, "tech": 3}
    assert data.bad_records[0][0].endswith("tech/bad.txt")


def test_hf_loader_on_a_local_dataset(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [{"text": f"t{i}", "label": "ab"[i % 2]}
                                           for i in range(6)])
    data = load_task(task("hf", hf_name=str(tmp_path)), DataConfig())
    assert len(data.examples) == 6 and data.labels == ["a", "b"]


def test_path_is_read_from_the_data_dir(tmp_path, monkeypatch):
    write_jsonl(tmp_path / "x.jsonl", [{"text": "a b", "label": "a"}])
    monkeypatch.setenv("ARTICLE_DATA_DIR", str(tmp_path))
    assert len(load_task(task("jsonl", "x.jsonl"), DataConfig()).examples) == 1


def test_duplicates_are_removed_before_splitting(tmp_path):
    rows = [{"id": i, "text": f"article {i % 10}", "label": "ab"[i % 2]} for i in range(20)]
    data = load_task(task("jsonl", write_jsonl(tmp_path / "d.jsonl", rows)), DataConfig())
    assert len(data.examples) == 10 and data.duplicates_removed == 10


def test_a_class_too_small_to_split_is_a_clear_error(tmp_path):
    rows = [{"text": f"x {i}", "label": "big"} for i in range(20)] + [{"text": "y", "label": "one"}]
    data = load_task(task("jsonl", write_jsonl(tmp_path / "d.jsonl", rows)), DataConfig())
    with pytest.raises(DataError, match=r"fewer than 3 examples.*'one': 1"):
        split_examples(data.examples, data.labels, "single_label", DataConfig())


def test_multilabel_split_uses_every_example(tmp_path):
    rows = [{"text": f"x {i}", "label": [["a"], ["b"], ["a", "c"]][i % 3]} for i in range(60)]
    data = load_task(task("jsonl", write_jsonl(tmp_path / "d.jsonl", rows), "multi_label"),
                     DataConfig())
    parts = split_examples(data.examples, data.labels, "multi_label", DataConfig())
    assert sorted(len(p) for p in parts.values()) == [9, 9, 42]
    assert any("c" in e.label for e in parts["test"])


def test_overrides_and_unknown_keys(tmp_path):
    cfg = load_run_config("configs/bbc_topic.yaml", ["training.epochs=1", "data.max_samples=200",
                                                     "tasks.0.dataset.format=jsonl"])
    assert cfg.training.epochs == 1 and cfg.data.max_samples == 200
    assert cfg.tasks[0].dataset.format == "jsonl"
    with pytest.raises(ValueError, match="unknown key"):
        load_run_config("configs/bbc_topic.yaml", ["model.layers=3"])
    with pytest.raises(ValueError, match="not an index"):
        apply_override({"tasks": [{}]}, "tasks.3.name=x")
    with pytest.raises(ValueError, match="key=value"):
        apply_override({}, "training.epochs")


def test_cv_folds_are_refused_when_records_carry_their_split(tmp_path):
    rows = [{"id": i, "text": f"text {i}", "label": "ab"[i % 2],
             "split": "test" if i < 10 else "train"} for i in range(40)]
    src = write_jsonl(tmp_path / "s.jsonl", rows)
    data = load_task(task("jsonl", src, split_field="split"), DataConfig())
    with pytest.raises(DataError, match="cv_folds is set, but the records carry their own"):
        split_examples(data.examples, data.labels, "single_label", DataConfig(cv_folds=5))
    parts = split_examples(data.examples, data.labels, "single_label", DataConfig())
    assert len(parts["test"]) == 10


def test_cv_folds_partition_the_data(tmp_path):
    rows = [{"id": i, "text": f"text {i}", "label": "ab"[i % 2]} for i in range(50)]
    data = load_task(task("jsonl", write_jsonl(tmp_path / "c.jsonl", rows)), DataConfig())
    tests = [split_examples(data.examples, data.labels, "single_label",
                            DataConfig(cv_folds=5, cv_fold=k))["test"] for k in range(5)]
    ids = [e.id for fold in tests for e in fold]
    assert sorted(ids, key=int) == [str(i) for i in range(50)]  # each article tested once


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "configs")
                                         .glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    """A shipped config with a misspelt key would fail only when a user runs it."""
    cfg = load_run_config(path)
    assert cfg.tasks and cfg.training.output_dir.startswith("runs/")
