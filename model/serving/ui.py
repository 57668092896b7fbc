"""The web UI of the prediction service: its files, and nothing else.

    GET  /                 the web UI (model/serving/static/index.html)
    GET  /web/NAME         its scripts, style sheet and icon, nothing else

The web UI is plain HTML, CSS and JavaScript shipped inside the package: nothing is loaded
from elsewhere (the machines it runs on are often offline), and a Content-Security-Policy
of 'self' makes the browser refuse anything else. It calls the same /predict, /metadata
and /profile (model/serving/profile_api.py) that API users call.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse, HTMLResponse

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


def ui_files() -> dict[str, Path]:
    """The files /web/ may serve, by name: a fixed list, so no path reaches elsewhere."""
    return {p.name: p for p in sorted(STATIC.iterdir())
            if p.is_file() and p.suffix in MEDIA_TYPES and p.name != "index.html"}


# With an API key, the footer's links to /openapi.json and /docs would answer 401: a link
# cannot send the key. The footer is marked `keyed` instead, and the style sheet shows a
# note saying how to fetch them in place of the links. Done here, not in the browser, so
# the right footer is there from the first paint, before any call is answered.
FOOTER = '<footer class="muted">'
KEYED_FOOTER = '<footer class="muted keyed">'


def keyed_index() -> str:
    """index.html with its footer marked `keyed` (for a service with an API key)."""
    html = (STATIC / "index.html").read_text(encoding="utf-8")
    if html.count(FOOTER) != 1:  # index.html was edited: say so rather than keep the links
        raise RuntimeError(f"model/serving/static/index.html needs one {FOOTER!r}")
    return html.replace(FOOTER, KEYED_FOOTER)


def add_ui(app: FastAPI, keyed: bool = False) -> None:
    """Serve the web UI's files on `app` (create_app calls this). `keyed`: the service
    needs an API key, so the footer says the API description needs it too."""
    files = ui_files()
    index_html = keyed_index() if keyed else None

    @app.get("/", include_in_schema=False)
    async def index():
        if index_html is not None:
            return HTMLResponse(index_html, headers=HEADERS)
        return FileResponse(STATIC / "index.html", media_type=MEDIA_TYPES[".html"],
                            headers=HEADERS)

    @app.get("/web/{name}", include_in_schema=False)
    async def web_file(name: str):
        if name not in files:
            raise HTTPException(404, f"no web UI file {name!r}")
        return FileResponse(files[name], media_type=MEDIA_TYPES[files[name].suffix],
                            headers=HEADERS)
