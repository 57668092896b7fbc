"""HTTP prediction service (FastAPI on uvicorn).

    article-classifier serve runs/bbc_topic/model --host 127.0.0.1 --port 8000

    POST /predict   {"text": "..."}  or  {"articles": [{"id": "a1", "title": "...", "text": "..."}]}
                    a web page: {"html": "<html>...", "url": "https://..."} (also in articles)
                    "evidence": K adds each label's K best passages (model/runtime/evidence.py)
    GET  /health    liveness and the loaded model (open even with an API key)
    GET  /metadata  tasks, labels, thresholds, preprocessing and the model card metrics;
                    `model.max_chunks` is the served value (`serve --max-chunks`), the
                    artifact's own is `model.artifact_max_chunks`
    GET  /docs      OpenAPI documentation
    GET  /          the web UI, on the same endpoints (model/serving/ui.py)
    POST /profile   per-source profile of uploaded predictions, GET /profile of
                    `serve --profile FILE` (model/serving/profile_api.py)

Concurrent requests are gathered into one forward pass: a request waits at most
`batch_wait_ms` for others, a pass takes at most `max_batch_articles` (a larger request
is split over several passes), and at most `max_queue` articles may wait; past that the
service answers 503 rather than letting latency and memory grow without bound.

With an API key (`serve --api-key KEY` or ARTICLE_CLASSIFIER_API_KEY), every endpoint but
/health and the web UI's own files (/, /web/*) needs `Authorization: Bearer KEY` or
`X-API-Key: KEY`; anything else is a 401.
"""

from __future__ import annotations

import asyncio
import functools
import sys
import time
from contextlib import asynccontextmanager
from typing import Literal

from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, model_validator

from model.inputs.records import read_record, uses_html
from model.runtime.classifier import ArticleClassifier
from model.runtime.evidence import in_fields, resolve_method
from model.runtime.loading import load_classifier
from model.serving.limits import ServiceLimits
from model.serving.middleware import ApiKey, BodyLimit
from model.serving.profile_api import add_profile_routes
from model.serving.ui import add_ui


class Article(BaseModel):
    """One article: its `text`, `title`, or both (read as batch prediction reads them), or
    a web page's `html` (and `url`), whose article is extracted as for `predict`."""

    id: str | int | None = None
    title: str | None = None
    text: str | None = None
    html: str | None = None
    url: str | None = None


class PredictRequest(BaseModel):
    """One article (`text` and/or `title`, or `html`) or a batch (`articles`)."""

    text: str | None = None
    title: str | None = None
    html: str | None = None
    url: str | None = None
    articles: list[Article] | None = None
    threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=1)
    evidence: int = Field(default=0, ge=0, le=20,
                          description="K: each given label's K best evidence passages")
    evidence_method: Literal["auto", "attribution", "sentences"] = "auto"

    @model_validator(mode="after")
    def one_kind(self):
        single = any(v is not None for v in (self.text, self.title, self.html))
        if single == (self.articles is not None):
            raise ValueError("give either 'text' (with an optional 'title'), 'html' (with an "
                             "optional 'url') or 'articles'")
        if self.articles is not None and not self.articles:
            raise ValueError("'articles' is empty")
        return self


ARTICLE_FIELDS = {"text", "title", "html", "url"}  # what an article may give


def read_articles(records: list[tuple[str, object, dict]],
                  max_chars: int) -> list[tuple[object, str, dict]]:
    """`(id, text, page)` for each `(where, id, record)`, read as `predict` reads records;
    `page` is what an `html` article gave (title, text, date, source, url), else empty.
    The first unreadable or over-long article is a 422 naming it and its field."""
    items = []
    for where, rid, record in records:
        field = "html" if uses_html(record) else "text"
        text, page = None, None
        if field == "html" and len(record["html"]) > max_chars:  # not parsed at all
            error = f"{len(record['html'])} characters; at most {max_chars}"
        else:
            text, page, error = read_record(record)
            if error is None and len(text) > max_chars:
                error = f"{len(text)} characters; at most {max_chars}"
        if error is not None:
            raise HTTPException(422, f"{where}{field}: {error}")
        items.append((rid, text, page or {}))
    return items


class BatcherDown(RuntimeError):
    """The micro-batcher stopped, so no request can be answered."""


class MicroBatcher:
    """Gathers articles from concurrent requests into shared forward passes.

    If its task ever ends (a bug, a cancelled task), every waiting request is failed at
    once, new requests are refused with 503, and `/health` reports the failure, so
    nothing waits for an answer that cannot come.
    """

    def __init__(self, clf: ArticleClassifier, limits: ServiceLimits):
        self.clf = clf
        self.limits = limits
        self.queue: asyncio.Queue = asyncio.Queue()
        self.waiting = 0
        self.passes = 0          # forward passes run, for /health
        self.articles_served = 0
        self.largest_pass = 0    # most articles in one forward pass, for /health
        self.in_flight: list = []  # jobs taken off the queue and not yet answered
        self.held = None         # a job taken off the queue that did not fit the last pass
        self.task: asyncio.Task | None = None

    def start(self):
        self.task = asyncio.create_task(self.run())
        self.task.add_done_callback(self._stopped)

    async def stop(self):
        if self.task:
            self.task.cancel()

    def failure(self) -> str | None:
        """Why the batcher cannot serve, or None while it runs."""
        if self.task is None:
            return "the micro-batcher has not started"
        if not self.task.done():
            return None
        if self.task.cancelled():
            return "the micro-batcher was cancelled"
        return f"the micro-batcher stopped: {self.task.exception()!r}"

    def _stopped(self, task: asyncio.Task) -> None:
        reason = self.failure() or "the micro-batcher stopped"
        jobs, self.in_flight = self.in_flight, []
        if self.held is not None:
            jobs.append(self.held)
            self.held = None
        while not self.queue.empty():
            jobs.append(self.queue.get_nowait())
        for texts, _, future in jobs:
            self.waiting -= len(texts)
            if not future.done():
                future.set_exception(BatcherDown(reason))

    async def predict(self, texts: list[str], options: dict) -> list[dict]:
        reason = self.failure()
        if reason:
            raise BatcherDown(reason)
        if self.waiting + len(texts) > self.limits.max_queue:
            raise HTTPException(503, "the service is at capacity; retry shortly",
                                headers={"Retry-After": "1"})
        # A request larger than a pass is queued as pieces that each fit one; the pieces
        # may go in different passes, and their answers are put back in order.
        step = self.limits.max_batch_articles
        loop = asyncio.get_running_loop()
        futures = []
        for start in range(0, len(texts), step):
            piece = texts[start:start + step]
            futures.append(loop.create_future())
            self.waiting += len(piece)
            self.queue.put_nowait((piece, options, futures[-1]))
        # Every piece's outcome is collected, so a failure of several is not left unread.
        answers = await asyncio.gather(*futures, return_exceptions=True)
        for answer in answers:
            if isinstance(answer, BaseException):
                raise answer
        return [answer for piece in answers for answer in piece]

    def _next(self):
        """The job held back from the last pass, else the next one queued (or None)."""
        if self.held is not None:
            job, self.held = self.held, None
            return job
        try:
            return self.queue.get_nowait()
        except asyncio.QueueEmpty:
            return None

    async def run(self):
        loop = asyncio.get_running_loop()
        while True:
            first = self._next()
            if first is None:
                first = await self.queue.get()
            jobs = self.in_flight = [first]
            size = len(first[0])  # never over the bound: predict() queues pieces that fit
            deadline = loop.time() + self.limits.batch_wait_ms / 1000
            # Drain without wait_for(queue.get()): cancelling a get on timeout can drop
            # the item it was handed, leaving that request waiting for ever.
            while size < self.limits.max_batch_articles and loop.time() < deadline:
                job = self._next()
                if job is None:
                    await asyncio.sleep(0.001)
                    continue
                if size + len(job[0]) > self.limits.max_batch_articles:
                    self.held = job  # the next pass starts with it: no request overtakes
                    break
                jobs.append(job)
                size += len(job[0])
            await self.serve(jobs, loop)
            self.in_flight = []

    async def serve(self, jobs, loop):
        # Requests with the same options share one pass; the model runs in a thread so
        # the event loop keeps accepting connections meanwhile.
        groups: dict[tuple, list] = {}
        for job in jobs:
            groups.setdefault(tuple(sorted(job[1].items())), []).append(job)
        for options, group in groups.items():
            texts = [t for job in group for t in job[0]]
            try:
                out = await loop.run_in_executor(
                    None, functools.partial(self.clf.predict, texts, **dict(options)))
            except Exception as err:  # noqa: BLE001 - handed to each waiting request
                out = err
            # Answered here, so the jobs leave in_flight (which the batcher's death fails).
            answered = {id(job) for job in group}
            self.in_flight = [job for job in self.in_flight if id(job) not in answered]
            self.waiting -= len(texts)
            if isinstance(out, Exception):
                for job in group:
                    if not job[2].done():  # a client that left has cancelled its future
                        job[2].set_exception(out)
                continue
            self.passes += 1
            self.articles_served += len(texts)
            self.largest_pass = max(self.largest_pass, len(texts))
            start = 0
            for job in group:
                if not job[2].done():
                    job[2].set_result(out[start:start + len(job[0])])
                start += len(job[0])


def create_app(model_dir: str, precision: str = "auto",
               limits: ServiceLimits | None = None, max_chunks: int | None = None,
               device: str = "auto", profile: str | None = None,
               backend: str = "auto", api_key: str | None = None) -> FastAPI:
    """The service's application. `api_key`: when given, every endpoint but /health and
    the web UI's files requires it (ApiKey)."""
    limits = limits or ServiceLimits()
    clf = load_classifier(model_dir, precision=precision, max_chunks=max_chunks, device=device,
                          backend=backend)
    batcher = MicroBatcher(clf, limits)

    @asynccontextmanager
    async def lifespan(app):
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="article-classifier", lifespan=lifespan,
                  description="Topic and framing predictions for news articles.")
    app.state.batcher = batcher
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    if api_key:  # added last, so it runs first: no body is read for a caller without it
        app.add_middleware(ApiKey, key=api_key)

    @app.exception_handler(BatcherDown)
    async def batcher_down(request, err):
        return JSONResponse({"detail": f"the service cannot predict: {err}"}, status_code=503)

    @app.get("/health")
    async def health():
        state = {"model": str(model_dir), "precision": clf.precision,
                 "backend": clf.backend_name,
                 "device": str(clf.device), "max_chunks": clf.config.max_chunks,
                 "queued_articles": batcher.waiting, "forward_passes": batcher.passes,
                 "articles_served": batcher.articles_served,
                 "largest_pass_articles": batcher.largest_pass}
        reason = batcher.failure()
        if reason:
            return JSONResponse({"status": "failing", "reason": reason, **state},
                                status_code=503)
        return {"status": "ok", **state}

    @app.get("/metadata")
    async def metadata():
        doc = clf.metadata
        # The model as served: `serve --max-chunks` changes how many windows are read, so
        # the card and /health agree; the artifact's own value is kept beside it.
        model = dict(doc.get("model") or {})
        model.update(artifact_max_chunks=model.get("max_chunks"),
                     max_chunks=clf.config.max_chunks)
        return {"tasks": doc.get("tasks"), "model": model,
                "metrics": doc.get("metrics"), "format_version": doc.get("format_version"),
                "limits": limits.__dict__}

    @app.post("/predict")
    async def predict(body: PredictRequest):
        started = time.perf_counter()
        if body.articles is None:
            records = [("", None, body.model_dump(include=ARTICLE_FIELDS))]
        else:
            if len(body.articles) > limits.max_articles:
                raise HTTPException(422, f"'articles' has {len(body.articles)} items; at most "
                                         f"{limits.max_articles} per request")
            records = [(f"articles[{i}].", a.id, a.model_dump(include=ARTICLE_FIELDS))
                       for i, a in enumerate(body.articles)]
        read = functools.partial(read_articles, records, limits.max_article_chars)
        # Extracting a page parses its HTML (milliseconds, more for a big page), so pages
        # are read off the event loop, which keeps serving other requests meanwhile.
        items = (await asyncio.to_thread(read) if any(uses_html(r) for _, _, r in records)
                 else read())
        options = {"threshold": body.threshold, "top_k": body.top_k}
        if body.evidence:
            try:  # a method this model cannot use is the request's fault: 422, not 500
                method = resolve_method(clf, body.evidence_method)
            except ValueError as err:
                raise HTTPException(422, f"evidence_method: {err}") from err
            options.update(evidence=body.evidence, evidence_method=method)
        outputs = await batcher.predict([t for _, t, _ in items], options)
        for (_, _, record), (_, _, page), output in zip(records, items, outputs):
            # Offsets into the title or text the caller sent; for a page, into the title
            # and text the answer gives (what was extracted and read).
            if "evidence" in output:
                in_fields(output["evidence"], page.get("title") if page else record.get("title"),
                          page.get("text") if page else record.get("text"))
        took = round((time.perf_counter() - started) * 1000, 2)
        if body.articles is None:
            return {**items[0][2], **outputs[0], "took_ms": took}
        return {"predictions": [{"id": i, **page, **o} for (i, _, page), o in zip(items, outputs)],
                "took_ms": took}

    add_ui(app, keyed=bool(api_key))
    add_profile_routes(app, profile, {t.name: list(t.labels) for t in clf.tasks},
                       limits.max_profile_groups, {t.name: t.heldout for t in clf.tasks})
    return app


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def serve(model_dir: str, host: str = "127.0.0.1", port: int = 8000, precision: str = "auto",
          limits: ServiceLimits | None = None, max_chunks: int | None = None,
          device: str = "auto", profile: str | None = None, backend: str = "auto",
          api_key: str | None = None) -> None:
    import uvicorn

    if host not in LOOPBACK and not api_key:
        print(f"WARNING: serving on {host}:{port} without an API key: anyone who can reach "
              "this port can use /predict, /profile and the web UI. Set --api-key KEY or "
              "ARTICLE_CLASSIFIER_API_KEY, or bind to 127.0.0.1.", file=sys.stderr, flush=True)
    uvicorn.run(create_app(model_dir, precision, limits, max_chunks, device, profile, backend,
                           api_key),
                host=host, port=port, log_level="info")
