"""The service under pressure and after an internal failure, over a real socket: a full
queue answers 503 at once, and a dead micro-batcher fails health and every request
instead of leaving them hanging."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from model.serving.service import BatcherDown, ServiceLimits, create_app
from tests.conftest import free_port, request


@pytest.fixture()
def live_app(keyword_run):
    """`create_app` served by uvicorn in a thread of this process, on a free port."""
    import uvicorn

    app = create_app(str(keyword_run / "model"), precision="fp32",
                     limits=ServiceLimits(max_queue=8, max_articles=8, batch_wait_ms=5))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not server.started:
        assert time.time() < deadline, "server did not start"
        time.sleep(0.05)
    yield app, port, server
    server.should_exit = True
    thread.join(timeout=30)


def test_more_than_max_queue_articles_is_503_with_retry_after(live_app):
    app, port, _ = live_app
    # Other requests' 5 articles wait for a pass (the queue must take a whole request, so
    # ServiceLimits refuses a max_queue under max_articles: only company fills it).
    app.state.batcher.waiting = 5
    status, payload = request(port, "POST", "/predict",
                              {"articles": [{"text": "goal team"}] * 4})
    assert status == 503 and "capacity" in payload["detail"]
    app.state.batcher.waiting = 0  # they were answered
    status, payload = request(port, "POST", "/predict",
                              {"articles": [{"text": "goal team"}] * 4})
    assert status == 200 and len(payload["predictions"]) == 4
    assert app.state.batcher.waiting == 0  # nothing left counted as waiting


def test_a_dead_batcher_fails_health_and_requests_at_once(live_app):
    app, port, _ = live_app
    assert request(port, "GET", "/health")[0] == 200
    batcher = app.state.batcher
    # The batcher dies with a request still queued: that request is answered, not hung.
    reason = asyncio.run_coroutine_threadsafe(_die_with_a_request_queued(batcher),
                                              batcher.task.get_loop()).result(timeout=10)
    assert "micro-batcher was cancelled" in reason and batcher.waiting == 0
    status, health = request(port, "GET", "/health")
    assert status == 503 and health["status"] == "failing" and "cancelled" in health["reason"]
    started = time.perf_counter()
    status, payload = request(port, "POST", "/predict", {"text": "goal team"})
    assert status == 503 and "micro-batcher" in payload["detail"]
    assert time.perf_counter() - started < 5


async def _die_with_a_request_queued(batcher) -> str:
    future = asyncio.get_running_loop().create_future()
    batcher.waiting += 1
    batcher.queue.put_nowait((["goal"], {}, future))
    batcher.task.cancel()  # no await in between: the job is still queued when it dies
    try:
        await asyncio.wait_for(future, 5)
    except BatcherDown as err:
        return str(err)
    return "answered"


def test_requests_taken_by_a_batcher_that_dies_are_answered(keyword_run):
    """A request the batcher has already taken (waiting for company, or in a group not yet
    run) gets 503 when the batcher dies, instead of waiting for ever."""
    import uvicorn

    app = create_app(str(keyword_run / "model"), precision="fp32",
                     limits=ServiceLimits(batch_wait_ms=3000))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        answers = []
        client = threading.Thread(target=lambda: answers.append(
            request(port, "POST", "/predict", {"text": "goal team"})))
        client.start()
        batcher = app.state.batcher
        deadline = time.time() + 10
        while not batcher.in_flight:  # taken off the queue, waiting 3 s for company
            assert time.time() < deadline
            time.sleep(0.01)
        batcher.task.get_loop().call_soon_threadsafe(batcher.task.cancel)
        client.join(timeout=10)
        assert answers and answers[0][0] == 503 and "micro-batcher" in answers[0][1]["detail"]
        assert batcher.waiting == 0 and not batcher.in_flight
    finally:
        server.should_exit = True
        thread.join(timeout=30)
