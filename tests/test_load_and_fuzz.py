"""A bounded load test and a schema-driven fuzz pass against the real service."""

from __future__ import annotations

import json
import random
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import psutil
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.conftest import request

CLIENTS, SECONDS = 16, 15.0


def one_request(port, rng: random.Random):
    """A request drawn from a mix of valid, oversized and malformed ones."""
    kind = rng.choices(["single", "batch", "oversized", "malformed", "wrong_type"],
                       [6, 1, 1, 1, 1])[0]
    label = rng.choice(["sport", "business"])
    text = {"sport": "goal team striker cup", "business": "bank shares profit market"}[label]
    started = time.perf_counter()
    if kind == "single":
        status, body = request(port, "POST", "/predict", {"text": text})
        ok = status == 200 and body["topic"]["label"] == label
    elif kind == "batch":
        status, body = request(port, "POST", "/predict",
                               {"articles": [{"id": i, "text": text} for i in range(4)]})
        ok = status == 200 and all(p["topic"]["label"] == label for p in body["predictions"])
    elif kind == "oversized":
        status, _ = request(port, "POST", "/predict", {"text": "word " * 6000})
        ok = status == 413
    elif kind == "malformed":
        status, _ = request(port, "POST", "/predict", raw=b'{"text": [1, 2')
        ok = status == 422
    else:
        status, _ = request(port, "POST", "/predict", {"articles": [{"text": None}]})
        ok = status == 422
    return kind, status, ok, (time.perf_counter() - started) * 1000


@pytest.mark.slow
def test_bounded_load_mixed_requests(server):
    proc = psutil.Process(server.pid)
    rss_before = proc.memory_info().rss
    peak = rss_before
    stop = time.perf_counter() + SECONDS

    def client(seed):
        rng, results = random.Random(seed), []
        while time.perf_counter() < stop:
            results.append(one_request(server, rng))
        return results

    with ThreadPoolExecutor(CLIENTS) as pool:
        futures = [pool.submit(client, seed) for seed in range(CLIENTS)]
        while not all(f.done() for f in futures):
            peak = max(peak, proc.memory_info().rss)
            time.sleep(0.2)
        results = [r for f in futures for r in f.result()]
    statuses = [status for _, status, _, _ in results]
    latencies = [ms for kind, _, _, ms in results if kind in ("single", "batch")]
    figures = {"requests": len(results), "clients": CLIENTS, "seconds": SECONDS,
               "server_errors": sum(s >= 500 for s in statuses),
               "wrong_answers": sum(not ok for _, _, ok, _ in results),
               "p95_ms_valid": float(np.percentile(latencies, 95)),
               "peak_rss_mib": peak / 2**20,
               "rss_growth_mib": (peak - rss_before) / 2**20}
    print("load test:", json.dumps(figures))
    assert figures["requests"] > 100
    assert figures["server_errors"] == 0 and figures["wrong_answers"] == 0
    assert figures["rss_growth_mib"] < 300


def test_fuzz_the_openapi_schema(server):
    """Requests generated from the service's own OpenAPI schema never get a 5xx."""
    base = f"http://127.0.0.1:{int(server)}"
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/predict", "/health", "/metadata"}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=40, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def no_server_error(case):
            response = case.call(base_url=base)
            assert response.status_code < 500, (case.body, response.text)

        no_server_error()
