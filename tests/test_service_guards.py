"""The service's bounds and its access control, over a real socket to
`article-classifier serve` in a child process: the API key (401 without it, /health and
the web UI's files open, its footer saying why it has no API links), the warning for a
public address without a key, limits `serve` refuses, forward passes no larger than
--max-batch-articles, the served --max-chunks in /metadata, and /profile bounded to the
model's labels and a number of groups, counted as the upload arrives."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from model import load_classifier
from tests.conftest import ServedPort, request, run_cli
from tests.servers import free_port, start_service, stop_service

KEY = "s3cret-key-for-tests"


@pytest.fixture(scope="module")
def keyed(keyword_run, tmp_path_factory):
    """Bound to every address, with the key given by --api-key."""
    port = free_port()
    proc = start_service(keyword_run / "model", port, tmp_path_factory.mktemp("keyed") / "log",
                         "--precision", "fp32", "--host", "0.0.0.0", "--api-key", KEY)
    yield port
    stop_service(proc)


def test_every_data_endpoint_needs_the_key(keyed):
    body = {"text": "the striker scored a goal"}
    for method, path in (("POST", "/predict"), ("GET", "/metadata"), ("GET", "/openapi.json"),
                         ("GET", "/docs"), ("POST", "/profile"), ("GET", "/profile"),
                         ("GET", "/nothing-here")):
        for headers in ({}, {"Authorization": f"Bearer {KEY}x"}, {"X-API-Key": "wrong"},
                        {"Authorization": KEY}):  # no scheme: not a bearer token
            status, payload = request(keyed, method, path, body, headers=headers)
            assert status == 401, (method, path, headers)
            assert "needs an API key" in payload["detail"]
    for headers in ({"Authorization": f"Bearer {KEY}"}, {"X-API-Key": KEY}):
        status, out = request(keyed, "POST", "/predict", body, headers=headers)
        assert status == 200 and out["topic"]["label"] == "sport"
        assert request(keyed, "GET", "/metadata", headers=headers)[0] == 200
        assert request(keyed, "GET", "/openapi.json", headers=headers)[0] == 200
    # Open: liveness for monitors, and the web UI's files so a browser can ask for the key.
    assert request(keyed, "GET", "/health")[0] == 200
    assert request(keyed, "GET", "/")[0] == 200
    assert request(keyed, "GET", "/web/api.js")[0] == 200


def test_with_a_key_the_footer_says_the_api_links_need_it(keyed, bounded):
    # A link cannot send the key, so /openapi.json and /docs would answer 401: the keyed
    # footer is marked, and the style sheet shows a note in place of the links.
    keyed_html, open_html = request(keyed, "GET", "/")[1], request(bounded, "GET", "/")[1]
    assert '<footer class="muted keyed">' in keyed_html
    assert '<footer class="muted">' in open_html and "keyed" not in open_html
    assert "need this service's API key" in keyed_html
    css = request(keyed, "GET", "/web/style.css")[1]
    assert "footer.keyed .api-links" in css and "footer.keyed .key-note" in css


@pytest.mark.parametrize("options,message", [
    (["--max-batch-articles", "0"], "--max-batch-articles must be at least 1, got 0"),
    (["--max-queue", "100", "--max-articles", "200"],
     "--max-queue (100) must be at least --max-articles (200)"),
    (["--max-articles", "0"], "--max-articles must be at least 1, got 0"),
    (["--batch-wait-ms", "-1"], "--batch-wait-ms must be 0 or more, got -1.0"),
])
def test_serve_refuses_limits_it_cannot_work_under(tmp_path, capsys, options, message):
    from model.cli import main

    # Checked before the model is loaded (there is none here): a pass of 0 articles would
    # fail every /predict with a 500, a queue shorter than a request a permanent 503.
    assert main(["serve", str(tmp_path / "no-model"), *options]) == 2
    assert capsys.readouterr().err.startswith(f"article-classifier: error: {message}")


def test_the_serve_command_says_which_limit_and_exits_2(tmp_path):
    proc = run_cli("-m", "model.cli", "serve", str(tmp_path / "no-model"), "--max-queue",
                   "8", check=False, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr == ("article-classifier: error: --max-queue (8) must be at least "
                           "--max-articles (256): a request of that many articles could "
                           "never be queued\n")


def test_the_key_may_come_from_the_environment(keyword_run, tmp_path, monkeypatch):
    monkeypatch.setenv("ARTICLE_CLASSIFIER_API_KEY", KEY)
    port = free_port()
    proc = start_service(keyword_run / "model", port, tmp_path / "log", "--precision", "fp32")
    try:
        assert request(port, "POST", "/predict", {"text": "goal"})[0] == 401
        assert request(port, "POST", "/predict", {"text": "goal"},
                       headers={"X-API-Key": KEY})[0] == 200
    finally:
        stop_service(proc)
    assert "WARNING" not in (tmp_path / "log").read_text()


def test_a_public_address_without_a_key_is_warned_about(keyword_run, keyed, tmp_path,
                                                        tmp_path_factory, monkeypatch):
    monkeypatch.delenv("ARTICLE_CLASSIFIER_API_KEY", raising=False)
    port = free_port()
    proc = start_service(keyword_run / "model", port, tmp_path / "log", "--precision", "fp32",
                         "--host", "0.0.0.0")
    try:
        assert request(port, "POST", "/predict", {"text": "goal"})[0] == 200  # no key: open
    finally:
        stop_service(proc)
    log = (tmp_path / "log").read_text()
    assert "WARNING: serving on 0.0.0.0" in log and "without an API key" in log
    # With a key (the `keyed` service), nothing to warn about.
    keyed_log = next(tmp_path_factory.getbasetemp().glob("keyed*/log")).read_text()
    assert "without an API key" not in keyed_log


@pytest.fixture(scope="module")
def bounded(keyword_run, tmp_path_factory):
    port = free_port()
    proc = start_service(keyword_run / "model", port, tmp_path_factory.mktemp("bounded") / "log",
                         "--precision", "fp32", "--max-batch-articles", "4",
                         "--max-articles", "12", "--batch-wait-ms", "50", "--max-chunks", "3")
    yield ServedPort(port, proc.pid)  # the pid, for the memory of an upload
    stop_service(proc)


def test_no_forward_pass_exceeds_max_batch_articles(bounded, keyword_run):
    clf = load_classifier(keyword_run / "model", precision="fp32", max_chunks=3)
    words = ["goal team striker cup", "bank shares profit market", "the coach won the league"]
    big = [{"id": f"b{i}", "text": words[i % 3] + f" {i}"} for i in range(11)]
    small = [[{"id": f"s{j}{i}", "text": words[(i + j) % 3]} for i in range(3)]
             for j in range(6)]
    before = request(bounded, "GET", "/health")[1]
    with ThreadPoolExecutor(8) as pool:  # the big request arrives among the small ones
        answers = list(pool.map(lambda arts: request(bounded, "POST", "/predict",
                                                     {"articles": arts}),
                                [small[0], small[1], big, *small[2:]]))
    after = request(bounded, "GET", "/health")[1]
    for articles, (status, out) in zip([small[0], small[1], big, *small[2:]], answers):
        assert status == 200
        assert [p["id"] for p in out["predictions"]] == [a["id"] for a in articles]
        expected = clf.predict([a["text"] for a in articles])
        for got, want in zip(out["predictions"], expected):
            assert got["topic"]["probabilities"] == pytest.approx(
                want["topic"]["probabilities"], abs=1e-4)
    assert after["articles_served"] - before["articles_served"] == 11 + 18
    assert 0 < after["largest_pass_articles"] <= 4
    assert after["forward_passes"] - before["forward_passes"] >= -(-29 // 4)


def test_metadata_and_health_agree_on_the_served_max_chunks(bounded):
    health = request(bounded, "GET", "/health")[1]
    model = request(bounded, "GET", "/metadata")[1]["model"]
    assert health["max_chunks"] == model["max_chunks"] == 3
    assert model["artifact_max_chunks"] == 8  # the artifact's own, beside it


def prediction_lines(rows) -> bytes:
    """Lines with labels but no scores per label: profiled by counting (method=cc)."""
    return "".join(json.dumps({"source": s, "topic": {"label": label, "score": 0.9}}) + "\n"
                   for s, label in rows).encode()


def test_profile_counts_only_the_models_labels(bounded):
    rows = [(f"src{i % 30}", ["sport", "business", f"new-label-{i}"][i % 3]) for i in range(90)]
    status, out = request(bounded, "POST", "/profile?by=source&task=topic&method=cc",
                          raw=prediction_lines(rows))
    assert status == 200, out
    assert out["labels"] == ["business", "sport"] and out["groups"] == 30
    assert len(out["rows"]) == 30 * 2  # not 30 x 32 labels seen
    assert out["ignored_labels"] == 30 and out["ignored_examples"][0].startswith("new-label-")
    assert out["articles"] == 90  # an article whose label is unknown is still an article
    assert sum(r["count"] for r in out["rows"]) == 60


def test_profile_refuses_more_groups_than_its_bound(bounded):
    # A new source and a new label on every line: the cross product the bound prevents.
    # The default bound, 500 groups (--max-profile-groups sets it).
    raw = prediction_lines((f"source-{i}", f"label-{i}") for i in range(520))
    status, out = request(bounded, "POST", "/profile?by=source&task=topic&method=cc", raw=raw)
    assert status == 422 and "more than 500 distinct values of 'source'" in out["detail"]
    status, out = request(bounded, "POST", "/profile?by=source&task=nope&method=cc", raw=raw)
    assert status == 422 and "no task 'nope'" in out["detail"]


def memory_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field))


def test_a_large_profile_upload_is_counted_as_it_arrives(bounded):
    rows = [(f"src{i % 50}", ("sport", "business", "sport")[i % 3]) for i in range(140_000)]
    raw = prediction_lines(rows)
    assert 8_500_000 < len(raw) < 10 * 2**20  # near the body limit, under it
    assert request(bounded, "POST", "/profile?by=source&task=topic&method=cc",
                   raw=prediction_lines(rows[:1000]))[0] == 200  # warm the code paths
    # Reset the service's peak memory (Linux: clear_refs 5), then upload.
    with open(f"/proc/{bounded.pid}/clear_refs", "w") as handle:
        handle.write("5")
    before = memory_kib(bounded.pid, "VmRSS")
    status, out = request(bounded, "POST", "/profile?by=source&task=topic&method=cc", raw=raw)
    grew = (memory_kib(bounded.pid, "VmHWM") - before) * 1024
    assert status == 200, out
    assert out["articles"] == 140_000 and out["groups"] == 50
    counts = {(r["source"], r["label"]): r["count"] for r in out["rows"]}
    for group in ("src0", "src49"):  # 2800 articles each, a third business
        sport = sum(1 for s, label in rows if s == group and label == "sport")
        assert counts[(group, "sport")] == sport and counts[(group, "business")] == 2800 - sport
    # Read, decoded and counted chunk by chunk, the service never holds a copy of the body
    # (it grew by about 3 MB here, whatever the body's size); reading it whole, then
    # decoding it, held several (it grew by 6 times the body's size).
    assert grew < len(raw), f"the service grew by {grew} bytes for {len(raw)}"


def test_profile_command_streams_and_caps_groups(tmp_path):
    # Imported here, so the other tests of this file run against code without it.
    from model.profiles.tally import TooManyGroups, tally_predictions

    lines = [{"source": f"s{i}", "frames": {"labels": [f"f{i % 4}"]}} for i in range(40)]
    tally = tally_predictions(iter(lines), "source", max_groups=40)
    assert len(tally.groups()) == 40 and tally.labels == ["f0", "f1", "f2", "f3"]
    read, many = [], [{"source": f"s{i}", "frames": {"labels": ["f"]}} for i in range(10**4)]

    def lines_read():  # a stream that must not be read past the first line over the cap
        for line in many:
            read.append(line)
            if len(read) > 40:
                raise AssertionError("read on after the cap was passed")
            yield line

    with pytest.raises(TooManyGroups, match="more than 39 distinct values"):
        tally_predictions(lines_read(), "source", max_groups=39)
    assert len(read) == 40  # stopped at the 40th source, the first over the cap
    path = tmp_path / "pred.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    proc = run_cli("-m", "model.cli", "profile", str(path), "--by", "source", "--max-groups",
                   "10", "--method", "cc", "--out", str(tmp_path / "out"), check=False)
    assert proc.returncode == 2 and "more than 10 distinct values of 'source'" in proc.stderr
    run_cli("-m", "model.cli", "profile", str(path), "--by", "source", "--method", "cc",
            "--out", str(tmp_path / "out"))
    assert (tmp_path / "out" / "profile.csv").read_text().count("\n") == 1 + 40 * 4
