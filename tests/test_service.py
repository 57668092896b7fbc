"""The prediction service, started for real and spoken to over a local socket."""

from __future__ import annotations

import http.client
import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from model import load_classifier
from tests.conftest import request


def test_single_and_batch_match_the_python_api(server, keyword_run):
    clf = load_classifier(keyword_run / "model")
    text = "the striker scored a goal and the team won the cup"
    status, one = request(server, "POST", "/predict", {"text": text})
    assert status == 200
    expected = clf.predict(text)
    assert one["topic"]["label"] == expected["topic"]["label"] == "sport"
    for label, p in expected["topic"]["probabilities"].items():
        assert one["topic"]["probabilities"][label] == pytest.approx(p, abs=1e-4)
    status, many = request(server, "POST", "/predict", {"articles": [
        {"id": "a", "text": "bank shares and profit"},
        {"id": 7, "title": "Cup final", "text": "the team won"}]})
    assert status == 200
    assert [p["id"] for p in many["predictions"]] == ["a", 7]
    assert many["predictions"][0]["topic"]["label"] == "business"


def test_health_metadata_and_docs(server):
    status, health = request(server, "GET", "/health")
    assert status == 200 and health["status"] == "ok"
    status, meta = request(server, "GET", "/metadata")
    assert status == 200 and meta["tasks"][0]["labels"] == ["business", "sport"]
    assert "accuracy" in meta["metrics"]["test"]["topic"]
    status, schema = request(server, "GET", "/openapi.json")
    assert status == 200 and "/predict" in schema["paths"]
    assert request(server, "GET", "/docs")[0] == 200


def test_concurrent_requests_share_forward_passes(server):
    before = request(server, "GET", "/health")[1]
    texts = [("bank shares profit market", "business"), ("goal team striker cup", "sport")] * 16
    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(lambda t: request(server, "POST", "/predict", {"text": t[0]}),
                                texts))
    assert all(status == 200 for status, _ in results)
    assert [r["topic"]["label"] for _, r in results] == [label for _, label in texts]
    after = request(server, "GET", "/health")[1]
    served = after["articles_served"] - before["articles_served"]
    passes = after["forward_passes"] - before["forward_passes"]
    assert served == 32 and passes < 32  # micro-batched, not one pass per request


@pytest.mark.parametrize("body,field", [
    ({"text": 5}, "text"),
    ({"articles": [{"id": "x", "text": ["a"]}]}, "text"),
    ({"articles": [{"id": "x", "title": 3}]}, "title"),
    ({"articles": "nope"}, "articles"),
    ({"text": "x", "top_k": 0}, "top_k"),
])
def test_wrong_types_are_422_naming_the_field(server, body, field):
    status, payload = request(server, "POST", "/predict", body)
    assert status == 422
    assert any(field in map(str, err["loc"]) for err in payload["detail"])


def test_other_bad_requests(server):
    status, payload = request(server, "POST", "/predict", raw=b'{"text": "unterminated')
    assert status == 422 and payload["detail"][0]["type"] == "json_invalid"
    assert request(server, "POST", "/predict", {})[0] == 422
    assert request(server, "POST", "/predict", {"text": "   "}) == (422, {
        "detail": "text: empty text"})
    status, payload = request(server, "POST", "/predict",
                              {"articles": [{"text": "a"}] * 9})
    assert status == 422 and "at most 8" in payload["detail"]
    status, payload = request(server, "POST", "/predict", {"text": "word " * 5000})
    assert status == 413


def test_records_are_read_as_batch_prediction_reads_them(server, keyword_run):
    """Title-only articles are articles; a record with neither field is named."""
    clf = load_classifier(keyword_run / "model")
    status, out = request(server, "POST", "/predict", {"articles": [
        {"id": "t", "title": "striker goal cup team"}, {"id": "b", "title": "Bank",
                                                         "text": "shares profit"}]})
    assert status == 200
    expected = clf.predict(["striker goal cup team", "Bank\n\nshares profit"])
    for got, want in zip(out["predictions"], expected):
        assert got["topic"]["probabilities"] == pytest.approx(want["topic"]["probabilities"],
                                                              abs=1e-4)
    status, single = request(server, "POST", "/predict", {"title": "striker goal cup team"})
    assert status == 200 and single["topic"]["label"] == "sport"
    assert request(server, "POST", "/predict", {"articles": [{"id": "x"}]}) == (422, {
        "detail": "articles[0].text: no 'text' or 'title' field"})


def chunked_post(port, body: bytes, pieces: int = 4, path: str = "/predict"):
    """POST `body` with Transfer-Encoding: chunked (no Content-Length), as streaming
    HTTP clients send it."""
    conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=60)
    size = -(-len(body) // pieces)
    conn.request("POST", path, body=iter([body[i:i + size]
                                                for i in range(0, len(body), size)]),
                 headers={"Content-Type": "application/json"}, encode_chunked=True)
    response = conn.getresponse()
    payload = json.loads(response.read())
    conn.close()
    return response.status, payload


def test_chunked_uploads_are_read_and_limited(server):
    status, out = chunked_post(server, json.dumps(
        {"text": "the striker scored a goal and the team won the cup " * 20}).encode())
    assert status == 200 and out["topic"]["label"] == "sport"
    status, out = chunked_post(server, json.dumps({"articles": [
        {"id": "a", "text": "bank shares profit"}, {"id": "b", "text": "goal team"}]}).encode())
    assert status == 200 and [p["topic"]["label"] for p in out["predictions"]] == [
        "business", "sport"]
    status, out = chunked_post(server, json.dumps({"text": "word " * 5000}).encode())
    assert status == 413 and "20000 bytes" in out["detail"]


def test_profile_uploads_are_limited_and_must_be_utf8(server):
    # The service's body limit (20000 bytes here) holds for /profile as for /predict,
    # whether the upload declares its length or is sent in chunks.
    line = json.dumps({"source": "a", "topic": {"label": "sport", "score": 0.9}}) + "\n"
    raw = (line * (30000 // len(line) + 1)).encode()
    status, out = request(server, "POST", "/profile?task=topic&method=cc", raw=raw)
    assert status == 413 and "20000 bytes" in out["detail"]
    status, out = chunked_post(server, raw, pieces=8, path="/profile?task=topic&method=cc")
    assert status == 413 and "20000 bytes" in out["detail"]
    status, out = chunked_post(server, (line * 100).encode(), pieces=7,
                               path="/profile?task=topic&method=cc")
    assert status == 200 and out["articles"] == 100
    # Bytes that are not UTF-8 are a 422 naming the first bad one.
    good, start = line.encode() * 3, b'{"source": "'
    status, out = request(server, "POST", "/profile?task=topic&method=cc",
                          raw=good + start + b'\xff"}\n')
    assert status == 422
    assert out["detail"] == f"the upload is not UTF-8 text (byte {len(good) + len(start)})"


def test_profile_lines_are_decoded_as_the_chunks_come():
    from model.serving.profile_api import text_lines

    body = 'a\nZürich ✓\n\nlast'.encode()
    # Every way of cutting the body in two, through characters too, gives the same lines.
    for cut in range(len(body) + 1):
        assert list(text_lines(iter([body[:cut], body[cut:]]))) == [
            "a", "Zürich ✓", "", "last"]
    assert list(text_lines(iter(bytes([b]) for b in body))) == ["a", "Zürich ✓", "", "last"]
    for chunks, byte in (([b"ok\n", b"\xff"], 3), ([b"ok\n\xc3", b"("], 3),
                         ([b"ab", b"c\xe2\x9c"], 3)):  # the last: the body ends mid-character
        with pytest.raises(ValueError, match=rf"not UTF-8 text \(byte {byte}\)"):
            list(text_lines(iter(chunks)))
