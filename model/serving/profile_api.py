"""The per-source profile endpoints of the prediction service (the web UI's profile view
draws them; API users may call them too).

    POST /profile?by=source&task=frames   body: prediction JSONL -> profile rows as JSON
    GET  /profile?by=source&task=frames   the same for the file given to `serve --profile`

The rows come from model/profiles/ (`profile_predictions`), as `article-classifier
profile`'s do, so the web UI and the command agree: shares corrected for the model's
errors with the model's own held-out error estimates, `method`, `over` (month, quarter
or year of each line's `date`) and `domain` (keep, drop or apart) as the command's
options. A profile counts only the served model's
labels of its task (others are counted as `ignored_labels` and named in
`ignored_examples`), and at most `max_groups` distinct groups: more are a 422 naming the
bound (`serve --max-profile-groups`).

An upload is counted as it arrives: its chunks go through an incremental UTF-8 decoder
and each complete line straight to the counter, so no copy of the whole body is ever
held, and an upload with too many groups is refused as soon as the bound is passed. The
body limit (BodyLimit, 413) applies as to any request.
"""

from __future__ import annotations

import codecs
from pathlib import Path

from anyio import from_thread
from fastapi import FastAPI, HTTPException, Request
from starlette.concurrency import run_in_threadpool

from model.profiles import profile_predictions
from model.profiles.quantify import DEFAULT_METHOD
from model.profiles.reading import parse_predictions, read_predictions
from model.profiles.tally import MAX_GROUPS

UPLOAD = "the uploaded file"


def profile_answer(lines, by: str, task: str, source: str,
                   task_labels: dict[str, list[str]] | None = None,
                   max_groups: int = MAX_GROUPS, method: str = DEFAULT_METHOD,
                   over: str | None = None, domain: str = "keep",
                   task_heldout: dict[str, dict | None] | None = None) -> dict:
    """The JSON the web UI draws its profile view from; ValueError for what cannot be
    profiled. With `task_labels` (the served model's labels per task) only those labels
    count; `task_heldout`: the model's held-out error estimates per task."""
    labels = heldout = None
    if task_labels is not None:
        if task not in task_labels:
            raise ValueError(f"this model has no task {task!r} (its tasks: "
                             f"{', '.join(task_labels)})")
        labels = task_labels[task]
        heldout = (task_heldout or {}).get(task)
    if over in ("", "none"):
        over = None
    profile = profile_predictions(lines, by, task, labels, heldout, method, over, domain,
                                  max_groups=max_groups)
    rows, tally = profile.rows, profile.tally
    if not rows:
        raise ValueError(f"{source}: no {task!r} predictions to profile ({tally.skipped} "
                         "lines without one)")
    groups = {r[by] for r in rows}
    return {"by": by, "task": task, "source": source, "method": method, "over": over,
            "skipped": tally.skipped, "ignored_labels": tally.ignored,
            "ignored_examples": tally.ignored_examples, "undated": tally.undated,
            "out_of_domain": tally.out_of_domain,
            "articles": sum(tally.articles.values()), "groups": len(groups),
            "labels": list(tally.labels), "rows": rows}


def text_lines(chunks):
    """The lines (without their newline) of UTF-8 byte `chunks`, decoded as they come: only
    the current chunk and the unfinished line are held. Not UTF-8 is a ValueError naming
    the byte where it fails."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    read = 0  # bytes handed to the decoder so far
    tail = ""
    for chunk in chunks:
        # The decoder may still hold the first bytes of a character split between chunks:
        # an error's offset counts from them, not from this chunk.
        start = read - len(decoder.getstate()[0])
        read += len(chunk)
        try:
            text = tail + decoder.decode(chunk)
        except UnicodeDecodeError as err:
            raise ValueError(f"the upload is not UTF-8 text (byte {start + err.start})") from None
        # Line by line out of the chunk, not split into a list of its lines (another copy).
        start = 0
        while (end := text.find("\n", start)) >= 0:
            yield text[start:end]
            start = end + 1
        tail = text[start:]
    start = read - len(decoder.getstate()[0])
    try:
        tail += decoder.decode(b"", final=True)
    except UnicodeDecodeError as err:  # the body ends inside a character
        raise ValueError(f"the upload is not UTF-8 text (byte {start + err.start})") from None
    if tail:
        yield tail


def body_chunks(request: Request):
    """The request body's chunks, for a worker thread: each is awaited on the event loop
    (anyio's from_thread), so the thread reads only as fast as it counts."""
    stream = request.stream().__aiter__()
    while True:
        try:
            chunk = from_thread.run(stream.__anext__)
        except StopAsyncIteration:
            return
        if chunk:
            yield chunk


def add_profile_routes(app: FastAPI, profile_file: str | Path | None = None,
                       task_labels: dict[str, list[str]] | None = None,
                       max_groups: int = MAX_GROUPS,
                       task_heldout: dict[str, dict | None] | None = None) -> None:
    """POST and GET /profile on `app` (create_app calls this, with the served model's labels
    per task and `serve --profile FILE`)."""

    @app.post("/profile", summary="Per-source profile of uploaded prediction lines")
    async def profile_upload(request: Request, by: str = "source", task: str = "frames",
                             method: str = DEFAULT_METHOD, over: str | None = None,
                             domain: str = "keep"):
        """The body is prediction JSONL as `article-classifier predict --keep FIELD` writes
        it; the answer has one row per (value of `by` [and period], label of the model's
        task) with the articles, the count the model's decisions give, the share corrected
        by `method` and its 95% bootstrap interval. Labels the model does
        not have are counted in `ignored_labels`; more than the service's bound on groups
        is a 422. The service's body limit applies (413)."""
        lines = parse_predictions(text_lines(body_chunks(request)), UPLOAD)
        return await _profile(lines, by, task, UPLOAD, method, over, domain)

    @app.get("/profile", summary="Per-source profile of the file given to serve --profile")
    async def profile_file_answer(by: str = "source", task: str = "frames",
                                  method: str = DEFAULT_METHOD, over: str | None = None,
                                  domain: str = "keep"):
        if profile_file is None:
            raise HTTPException(404, "this service was started without --profile FILE; "
                                     "upload a predictions file instead")
        path = Path(profile_file)
        return await _profile(read_predictions(path), by, task, path.name, method, over,
                              domain)

    async def _profile(lines, by: str, task: str, source: str, method: str,
                       over: str | None, domain: str) -> dict:
        # `lines` is a lazy generator: reading, decoding and parsing happen in the thread,
        # off the event loop, so predictions go on meanwhile; a bad line is a 422 naming it.
        try:
            return await run_in_threadpool(profile_answer, lines, by, task, source,
                                           task_labels, max_groups, method, over, domain,
                                           task_heldout)
        except (ValueError, OSError) as err:
            raise HTTPException(422, str(err)) from None
