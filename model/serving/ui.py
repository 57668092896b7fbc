"""The web page of the prediction service, and the per-source profile endpoint it uses.

    GET  /                 the page (model/serving/static/index.html)
    GET  /web/NAME         its scripts, style sheet and icon, nothing else
    POST /profile?by=source&task=frames   body: prediction JSONL -> profile rows as JSON
    GET  /profile?by=source&task=frames   the same for the file given to `serve --profile`

The page is plain HTML, CSS and JavaScript shipped inside the package: nothing is loaded
from elsewhere (the machines it runs on are often offline), and a Content-Security-Policy
of 'self' makes the browser refuse anything else. It calls the same /predict and
/metadata that API users call. The profile rows come from model/serving/profiles.py, the
function `article-classifier profile` uses, so the page and the command agree. A
profile counts only the served model's labels of its task (others are counted as
`ignored_labels` and named in `ignored_examples`), and at most `max_groups` distinct
groups: more are a 422 naming the bound (`serve --max-profile-groups`).
"""

from __future__ import annotations

import io
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from model.serving.profiles import (
    MAX_GROUPS,
    count_profile,
    parse_predictions,
    read_predictions,
)

STATIC = Path(__file__).with_name("static")
MEDIA_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
               ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
# Only this origin: no CDN, no inline script; fetch() may talk to this service alone.
# Styles set through element.style (bar widths, heatmap colours) are not inline markup,
# so style-src 'self' allows them.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
           "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache"}


def page_files() -> dict[str, Path]:
    """The files /web/ may serve, by name: a fixed list, so no path reaches elsewhere."""
    return {p.name: p for p in sorted(STATIC.iterdir())
            if p.is_file() and p.suffix in MEDIA_TYPES and p.name != "index.html"}


def profile_answer(lines, by: str, task: str, source: str,
                   task_labels: dict[str, list[str]] | None = None,
                   max_groups: int = MAX_GROUPS) -> dict:
    """The JSON the page draws its heatmap from; ValueError for what cannot be profiled.
    With `task_labels` (the served model's labels per task) only those labels count."""
    labels = None
    if task_labels is not None:
        if task not in task_labels:
            raise ValueError(f"this model has no task {task!r} (its tasks: "
                             f"{', '.join(task_labels)})")
        labels = task_labels[task]
    profile = count_profile(lines, by, task, labels, max_groups)
    rows = profile.rows
    if not rows:
        raise ValueError(f"{source}: no {task!r} predictions to profile ({profile.skipped} "
                         "lines without one)")
    groups = {r[by]: r["articles"] for r in rows}
    return {"by": by, "task": task, "source": source, "skipped": profile.skipped,
            "ignored_labels": profile.ignored, "ignored_examples": profile.ignored_examples,
            "articles": sum(groups.values()), "groups": len(groups),
            "labels": sorted({r["label"] for r in rows}), "rows": rows}


def add_page(app: FastAPI, profile_file: str | Path | None = None,
             task_labels: dict[str, list[str]] | None = None,
             max_groups: int = MAX_GROUPS) -> None:
    """Serve the page and the /profile endpoint on `app` (create_app calls this, with the
    served model's labels per task)."""
    files = page_files()

    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(STATIC / "index.html", media_type=MEDIA_TYPES[".html"],
                            headers=HEADERS)

    @app.get("/web/{name}", include_in_schema=False)
    async def web_file(name: str):
        if name not in files:
            raise HTTPException(404, f"no page file {name!r}")
        return FileResponse(files[name], media_type=MEDIA_TYPES[files[name].suffix],
                            headers=HEADERS)

    @app.post("/profile", summary="Per-source profile of uploaded prediction lines")
    async def profile_upload(request: Request, by: str = "source", task: str = "frames"):
        """The body is prediction JSONL as `article-classifier predict --keep FIELD` writes
        it; the answer has one row per (value of `by`, label of the model's task) with the
        count of articles, the share and its 95% Wilson interval. Labels the model does
        not have are counted in `ignored_labels`; more than the service's bound on groups
        is a 422. The service's body limit applies (413)."""
        body = await request.body()
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as err:
            raise HTTPException(422, f"the upload is not UTF-8 text (byte {err.start})") from None
        source = "the uploaded file"
        # Read line by line from the one copy of the body, not split into a list of lines.
        return await _profile(parse_predictions(io.StringIO(text), source), by, task,
                              source)

    @app.get("/profile", summary="Per-source profile of the file given to serve --profile")
    async def profile_file_answer(by: str = "source", task: str = "frames"):
        if profile_file is None:
            raise HTTPException(404, "this service was started without --profile FILE; "
                                     "upload a predictions file instead")
        path = Path(profile_file)
        return await _profile(read_predictions(path), by, task, path.name)

    async def _profile(lines, by: str, task: str, source: str) -> dict:
        # `lines` is a lazy generator: reading and parsing happen in the thread too, off
        # the event loop, so predictions go on meanwhile; a bad line is a 422 naming it.
        try:
            return await run_in_threadpool(profile_answer, lines, by, task, source,
                                           task_labels, max_groups)
        except (ValueError, OSError) as err:
            raise HTTPException(422, str(err)) from None

