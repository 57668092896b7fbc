"""HTTP prediction service (FastAPI on uvicorn).

    article-classifier serve runs/bbc_topic/model --host 127.0.0.1 --port 8000

    POST /predict   {"text": "..."}  or  {"articles": [{"id": "a1", "title": "...", "text": "..."}]}
    GET  /health    liveness and the loaded model
    GET  /metadata  tasks, labels, thresholds, preprocessing and the model card metrics
    GET  /docs      OpenAPI documentation

Concurrent requests are gathered into one forward pass: a request waits at most
`batch_wait_ms` for others, a pass takes at most `max_batch_articles`, and at most
`max_queue` articles may wait; past that the service answers 503 rather than letting
latency and memory grow without bound.
"""

from __future__ import annotations

import asyncio
import functools
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, model_validator

from .inference import ArticleClassifier, load_classifier
from .text import join_title


@dataclass
class ServiceLimits:
    """Request limits of the service; each breach gets its own clear status code."""

    max_body_bytes: int = 10 * 1024 * 1024   # 413 beyond
    max_articles: int = 256                  # per request; 422 beyond
    max_article_chars: int = 2_000_000       # per article; 422 beyond (longer ones are chunked)
    max_batch_articles: int = 64             # per forward pass
    batch_wait_ms: float = 5.0               # how long a request waits for company
    max_queue: int = 2048                    # articles waiting; 503 beyond


class Article(BaseModel):
    id: str | int | None = None
    title: str | None = None
    text: str = Field(min_length=1)


class PredictRequest(BaseModel):
    """One article (`text`, optional `title`) or a batch (`articles`)."""

    text: str | None = None
    title: str | None = None
    articles: list[Article] | None = None
    threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def one_kind(self):
        if (self.text is None) == (self.articles is None):
            raise ValueError("give either 'text' or 'articles'")
        if self.articles is not None and not self.articles:
            raise ValueError("'articles' is empty")
        return self


class MicroBatcher:
    """Gathers articles from concurrent requests into shared forward passes."""

    def __init__(self, clf: ArticleClassifier, limits: ServiceLimits):
        self.clf = clf
        self.limits = limits
        self.queue: asyncio.Queue = asyncio.Queue()
        self.waiting = 0
        self.passes = 0          # forward passes run, for /health
        self.articles_served = 0
        self.task: asyncio.Task | None = None

    def start(self):
        self.task = asyncio.create_task(self.run())

    async def stop(self):
        if self.task:
            self.task.cancel()

    async def predict(self, texts: list[str], options: dict) -> list[dict]:
        if self.waiting + len(texts) > self.limits.max_queue:
            raise HTTPException(503, "the service is at capacity; retry shortly",
                                headers={"Retry-After": "1"})
        future = asyncio.get_running_loop().create_future()
        self.waiting += len(texts)
        await self.queue.put((texts, options, future))
        return await future

    async def run(self):
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await self.queue.get()]
            size = len(jobs[0][0])
            deadline = loop.time() + self.limits.batch_wait_ms / 1000
            # Drain without wait_for(queue.get()): cancelling a get on timeout can drop
            # the item it was handed, leaving that request waiting for ever.
            while size < self.limits.max_batch_articles and loop.time() < deadline:
                try:
                    job = self.queue.get_nowait()
                except asyncio.QueueEmpty:
                    await asyncio.sleep(0.001)
                    continue
                jobs.append(job)
                size += len(job[0])
            await self.serve(jobs, loop)

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
                for job in group:
                    if not job[2].done():  # a client that left has cancelled its future
                        job[2].set_exception(err)
                continue
            finally:
                self.waiting -= len(texts)
                self.passes += 1
                self.articles_served += len(texts)
            start = 0
            for job in group:
                if not job[2].done():
                    job[2].set_result(out[start:start + len(job[0])])
                start += len(job[0])


def create_app(model_dir: str, precision: str = "auto",
               limits: ServiceLimits | None = None, max_chunks: int | None = None) -> FastAPI:
    limits = limits or ServiceLimits()
    clf = load_classifier(model_dir, precision=precision, max_chunks=max_chunks)
    batcher = MicroBatcher(clf, limits)

    @asynccontextmanager
    async def lifespan(app):
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="article-classifier", lifespan=lifespan,
                  description="Topic and framing predictions for news articles.")

    @app.middleware("http")
    async def limit_body(request: Request, call_next):
        too_large = JSONResponse({"detail": f"request body over {limits.max_body_bytes} "
                                            "bytes"}, status_code=413)
        declared = request.headers.get("content-length")
        if declared is not None:
            if declared.isdigit() and int(declared) > limits.max_body_bytes:
                return too_large
        elif request.method == "POST":
            # No declared length (chunked upload): count while reading, stop at the cap.
            size = 0
            async for chunk in request.stream():
                size += len(chunk)
                if size > limits.max_body_bytes:
                    return too_large
        return await call_next(request)

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": str(model_dir), "precision": clf.precision,
                "max_chunks": clf.config.max_chunks,
                "queued_articles": batcher.waiting, "forward_passes": batcher.passes,
                "articles_served": batcher.articles_served}

    @app.get("/metadata")
    async def metadata():
        doc = clf.metadata
        return {"tasks": doc.get("tasks"), "model": doc.get("model"),
                "metrics": doc.get("metrics"), "format_version": doc.get("format_version"),
                "limits": limits.__dict__}

    @app.post("/predict")
    async def predict(body: PredictRequest):
        started = time.perf_counter()
        if body.text is not None:
            items = [(None, join_title(body.title, body.text))]
        else:
            if len(body.articles) > limits.max_articles:
                raise HTTPException(422, f"'articles' has {len(body.articles)} items; at most "
                                         f"{limits.max_articles} per request")
            items = [(a.id, join_title(a.title, a.text)) for a in body.articles]
        for i, (_, text) in enumerate(items):
            where = "text" if body.text is not None else f"articles[{i}].text"
            if not text.strip():
                raise HTTPException(422, f"{where}: empty text")
            if len(text) > limits.max_article_chars:
                raise HTTPException(422, f"{where}: {len(text)} characters; at most "
                                         f"{limits.max_article_chars}")
        options = {"threshold": body.threshold, "top_k": body.top_k}
        outputs = await batcher.predict([t for _, t in items], options)
        took = round((time.perf_counter() - started) * 1000, 2)
        if body.text is not None:
            return {**outputs[0], "took_ms": took}
        return {"predictions": [{"id": i, **o} for (i, _), o in zip(items, outputs)],
                "took_ms": took}

    return app


def serve(model_dir: str, host: str = "127.0.0.1", port: int = 8000, precision: str = "auto",
          limits: ServiceLimits | None = None, max_chunks: int | None = None) -> None:
    import uvicorn

    uvicorn.run(create_app(model_dir, precision, limits, max_chunks), host=host, port=port,
                log_level="info")
