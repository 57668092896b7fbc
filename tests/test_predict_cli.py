"""`article-classifier predict` over JSONL, CSV and folders, through the real command."""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

import pytest

from tests.conftest import bbc_texts, run_cli

CLI = str(Path(sys.executable).with_name("article-classifier"))


def predict_cli(*args, check=True):
    import subprocess

    exe = [CLI] if Path(CLI).exists() else [sys.executable, "-m", "model.cli"]
    proc = subprocess.run([*exe, "predict", *args], capture_output=True, text=True, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_jsonl_in_order_with_ids_scores_and_progress(trained_run, tmp_path):
    texts = bbc_texts(300)
    src = tmp_path / "articles.jsonl"
    with open(src, "w") as handle:
        for i in range(1000):
            handle.write(json.dumps({"id": f"doc-{i}", "text": texts[i % len(texts)][:600]})
                         + "\n")
    out = tmp_path / "pred.jsonl"
    proc = predict_cli(str(trained_run / "model"), str(src), "--output", str(out),
                       "--batch-size", "64")
    rows = read_jsonl(out)
    assert [r["id"] for r in rows] == [f"doc-{i}" for i in range(1000)]
    labels = {"business", "entertainment", "politics", "sports", "tech"}
    for row in rows:
        assert row["topic"]["label"] in labels and set(row["topic"]["probabilities"]) == labels
        assert row["topic"]["score"] == max(row["topic"]["probabilities"].values())
        assert row["tokens"] > 0 and row["chunks"] >= 1
    assert "1000/1000" in proc.stderr  # the progress bar reached the end


def test_title_and_text_are_read_together(trained_run, tmp_path):
    src = tmp_path / "titled.jsonl"
    src.write_text(json.dumps({"id": 1, "title": "Chancellor outlines budget",
                               "text": "The plan was welcomed."}) + "\n")
    out = tmp_path / "o.jsonl"
    predict_cli(str(trained_run / "model"), str(src), "-o", str(out))
    titled = read_jsonl(out)[0]
    src.write_text(json.dumps({"id": 1, "text": "The plan was welcomed."}) + "\n")
    predict_cli(str(trained_run / "model"), str(src), "-o", str(out))
    assert titled["tokens"] > read_jsonl(out)[0]["tokens"]


def test_bad_lines_get_error_entries_and_the_rest_is_predicted(trained_run, tmp_path):
    src = tmp_path / "mixed.jsonl"
    lines = [json.dumps({"id": "ok1", "text": "Shares fell sharply."}), "{not json",
             json.dumps({"id": "empty", "text": "   "}), json.dumps({"id": "num", "text": 5}),
             json.dumps({"id": "ok2", "text": "The band released a new album."})]
    src.write_bytes(("\n".join(lines) + "\n").encode() + b'{"id": "bytes", "text": "\xff"}\n')
    out = tmp_path / "out.jsonl"
    proc = predict_cli(str(trained_run / "model"), str(src), "-o", str(out))
    rows = read_jsonl(out)
    assert [r["id"] for r in rows] == ["ok1", "2", "empty", "num", "ok2", "6"]
    assert "topic" in rows[0] and "topic" in rows[4]
    assert "malformed JSON" in rows[1]["error"] and rows[1]["where"].endswith("mixed.jsonl:2")
    assert rows[2]["error"] == "empty text" and "string" in rows[3]["error"]
    assert "UTF-8" in rows[5]["error"]
    assert "4 records with errors" in proc.stderr


def test_csv_with_text_column(trained_run, tmp_path):
    src = tmp_path / "a.csv"
    with open(src, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "body"])
        writer.writerow(["x", "Profits rose at the bank,\nsaid the chief executive."])
        writer.writerow(["y", "The film won an award."])
    out = tmp_path / "o.jsonl"
    predict_cli(str(trained_run / "model"), str(src), "--text-column", "body", "-o", str(out))
    assert [r["id"] for r in read_jsonl(out)] == ["x", "y"]
    missing = predict_cli(str(trained_run / "model"), str(src), "-o", str(out), check=False)
    assert missing.returncode == 2 and "missing column(s) ['text']" in missing.stderr


def test_folder_of_text_files(trained_run, tmp_path):
    folder = tmp_path / "txt"
    folder.mkdir()
    for i, text in enumerate(bbc_texts(5)):
        (folder / f"{i:03d}.txt").write_text(text)
    out = tmp_path / "o.jsonl"
    predict_cli(str(trained_run / "model"), str(folder), "-o", str(out))
    assert [r["id"] for r in read_jsonl(out)] == ["000", "001", "002", "003", "004"]


def test_missing_model_is_a_clear_error(tmp_path):
    src = tmp_path / "a.jsonl"
    src.write_text('{"text": "x"}\n')
    proc = predict_cli(str(tmp_path / "nope"), str(src), "-o", str(tmp_path / "o.jsonl"),
                       check=False)
    assert proc.returncode == 2 and "no such model folder" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--top-k", "0", "expected a whole number >= 1, got '0'"),
    ("--top-k", "-1", "expected a whole number >= 1, got '-1'"),
    ("--top-k", "1.5", "expected a whole number >= 1, got '1.5'"),
    ("--threshold", "1.5", "expected a number in [0, 1], got '1.5'"),
    ("--threshold", "-0.1", "expected a number in [0, 1], got '-0.1'"),
    ("--threshold", "nan", "expected a number in [0, 1], got 'nan'"),
])
def test_bad_top_k_or_threshold_is_refused_before_any_work(trained_run, tmp_path, option,
                                                           value, message):
    """--top-k -1 gave every label but the last and 0 none; any float was a threshold."""
    src = tmp_path / "a.jsonl"
    src.write_text('{"text": "Election campaign"}\n')
    out = tmp_path / "o.jsonl"
    proc = predict_cli(str(trained_run / "model"), str(src), "-o", str(out), option, value,
                       check=False)
    assert proc.returncode == 2 and f"argument {option}: {message}" in proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()


def test_module_entry_point(trained_run, tmp_path):
    src = tmp_path / "a.jsonl"
    src.write_text('{"id": "q", "text": "Election campaign"}\n')
    shutil.rmtree(tmp_path / "out", ignore_errors=True)
    run_cli("-m", "model.cli", "predict", str(trained_run / "model"), str(src),
            "-o", str(tmp_path / "out" / "p.jsonl"))
    assert read_jsonl(tmp_path / "out" / "p.jsonl")[0]["id"] == "q"


@pytest.mark.slow  # 13-20 s: make test-slow (and CI) runs it
def test_max_chunks_caps_the_windows_read(trained_run, tmp_path):
    """`--max-chunks` reads fewer windows of a long article, and says so in the output."""
    long_text = " ".join(bbc_texts(40))  # far more than 8 windows of 64 tokens
    src = tmp_path / "long.jsonl"
    src.write_text(json.dumps({"id": "long", "text": long_text}) + "\n")
    full, capped = tmp_path / "full.jsonl", tmp_path / "capped.jsonl"
    predict_cli(str(trained_run / "model"), str(src), "-o", str(full))
    predict_cli(str(trained_run / "model"), str(src), "-o", str(capped), "--max-chunks", "2")
    [whole], [short] = read_jsonl(full), read_jsonl(capped)
    assert whole["chunks"] == 8 and short["chunks"] == 2
    assert short["truncated"] and short["chunks_total"] == whole["chunks_total"] > 8
    assert short["topic"]["probabilities"] != whole["topic"]["probabilities"]
    proc = predict_cli(str(trained_run / "model"), str(src), "-o", str(capped),
                       "--max-chunks", "0", check=False)
    assert proc.returncode == 2 and "max_chunks must be" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_empty_and_unreadable_text_files_get_error_lines(trained_run, tmp_path):
    folder = tmp_path / "txt"
    folder.mkdir()
    (folder / "a.txt").write_text("The chancellor set out the budget.")
    (folder / "b.txt").write_text("")
    (folder / "c.txt").write_text("  \n\n ")
    (folder / "d.txt").write_bytes(b"bad \xff byte")
    (folder / "e.txt").write_text("The striker scored twice.")
    out = tmp_path / "o.jsonl"
    proc = predict_cli(str(trained_run / "model"), str(folder), "-o", str(out))
    rows = read_jsonl(out)
    assert [r["id"] for r in rows] == ["a", "b", "c", "d", "e"]
    assert "topic" in rows[0] and "topic" in rows[4]
    assert rows[1]["error"] == rows[2]["error"] == "empty text"
    assert rows[1]["where"].endswith("b.txt") and "UTF-8" in rows[3]["error"]
    assert "3 records with errors" in proc.stderr


def test_a_record_reads_the_same_in_training_and_prediction(trained_run, tmp_path):
    """One rule (`record_text`): a headline alone is an article everywhere; a record
    with neither a text nor a title, or a title of the wrong type, is the same error
    everywhere."""
    from model import load_classifier
    from tests.test_data import task, write_jsonl
    from train.config import DataConfig
    from train.data import load_task

    rows = [{"id": "h", "title": "Chancellor outlines the budget", "label": "business"},
            {"id": "t", "title": "Cup final", "text": "The team won.", "label": "sports"},
            {"id": "n", "label": "sports"}, {"id": "x", "title": 4, "text": "y", "label": "a"}]
    src = write_jsonl(tmp_path / "r.jsonl", rows)
    data = load_task(task("jsonl", src), DataConfig())
    trained = {e.id: e.text for e in data.examples}
    assert set(trained) == {"h", "t"} and trained["h"] == "Chancellor outlines the budget"
    refused = [problem for _, problem in data.bad_records]
    assert refused == ["no 'text' or 'title' field", "'title' is int, expected a string"]
    out = tmp_path / "o.jsonl"
    predict_cli(str(trained_run / "model"), str(src), "-o", str(out), "--precision", "fp32")
    predicted = read_jsonl(out)
    assert [p.get("error") for p in predicted] == [None, None, *refused]
    clf = load_classifier(trained_run / "model", precision="fp32", device="cpu")
    for line in predicted[:2]:
        expected = clf.predict(trained[line["id"]])
        assert line["tokens"] == expected["tokens"]
        assert line["topic"]["probabilities"] == pytest.approx(
            expected["topic"]["probabilities"], abs=1e-5)


def kill_and_resume(model, src, out, extra=()):
    """Run predict, kill it once some lines are written, then resume it to the end."""
    import signal
    import subprocess
    import time

    cmd = [sys.executable, "-m", "model.cli", "predict", str(model), str(src), "-o", str(out),
           "--precision", "fp32", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    # Kill as soon as the first slice (256 records) is written: the input is long enough
    # that many slices are still to come.
    while not (out.exists() and out.stat().st_size > 0):
        assert time.time() < deadline and proc.poll() is None, "no partial output"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = len(out.read_text().splitlines())
    done = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return partial, read_jsonl(out)


@pytest.mark.slow
def test_resume_csv_and_folder_inputs(trained_run, tmp_path):
    n = 5000
    src = tmp_path / "in.csv"
    with open(src, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text"])
        for i in range(n):
            writer.writerow([f"c{i}", "" if i == 700 else f"shares market goal {i}"])
    partial, rows = kill_and_resume(trained_run / "model", src, tmp_path / "csv.jsonl")
    assert 0 < partial < n, partial
    assert [r["id"] for r in rows] == [f"c{i}" for i in range(n)]
    assert rows[700]["error"] == "empty text" and rows[700]["where"].endswith("in.csv:702")
    folder = tmp_path / "txt"
    folder.mkdir()
    for i in range(n):
        (folder / f"{i:05d}.txt").write_text(f"bank profit team {i}")
    partial, rows = kill_and_resume(trained_run / "model", folder, tmp_path / "dir.jsonl")
    assert 0 < partial < n, partial
    assert [r["id"] for r in rows] == [f"{i:05d}" for i in range(n)]
