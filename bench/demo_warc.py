"""A WARC crawl to try `predict` and `profile` on, made from the narrative-frames climate
articles (their outlets become the crawled sites).

    python -m bench.demo_warc --out demo/climate.warc.gz
    article-classifier predict MODEL demo/climate.warc.gz -o demo/out.jsonl
    article-classifier profile demo/out.jsonl --by source --out demo/profile

Each article is served as a news page of its outlet's site (navigation, a cookie banner,
lists of other headlines, a footer: `bench.cleaning.as_page`), as a crawler would
store it; the crawl also holds what real crawls hold besides articles: the request
records, a front page of headlines, a 404, a redirect and an image. Nothing here leaves
this machine: the data comes from `../shared/data` and the file is written locally (it
holds the articles' text, so keep it out of the repository).
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import re
import sys
from io import BytesIO
from pathlib import Path

from bench.cleaning import as_page, furniture


def articles(data_dir: Path) -> list[dict]:
    csv.field_size_limit(sys.maxsize)
    path = data_dir / "framing" / "narrative_frames_climate" / "articles_metadata.tsv"
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def domain(outlet: str) -> str:
    return re.sub(r"[^a-z0-9]", "", outlet.lower()) + ".com"


def write_crawl(rows: list[dict], out: Path, seed: int = 0) -> int:
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    rng = random.Random(seed)
    titles = [r["text"][:90].rsplit(" ", 1)[0] for r in rows]
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "wb") as handle:
        writer = WARCWriter(handle, gzip=True)
        writer.write_record(writer.create_warcinfo_record(out.name, {"software": "demo_warc"}))

        def response(url, status, ctype, body: bytes):
            headers = StatusAndHeaders(status, [("Content-Type", ctype)], protocol="HTTP/1.1")
            writer.write_record(writer.create_warc_record(url, "response", payload=BytesIO(body),
                                                          http_headers=headers))

        for n, row in enumerate(rows):
            url = f"https://www.{domain(row['source'])}/climate/{row['ID']}"
            request = StatusAndHeaders(f"GET /climate/{row['ID']} HTTP/1.1",
                                       [("Host", f"www.{domain(row['source'])}")],
                                       is_http_request=True)
            writer.write_record(writer.create_warc_record(url, "request", payload=BytesIO(b""),
                                                          http_headers=request))
            head, body = titles[n], row["text"]
            blocks = furniture(rng.sample(titles, 14))
            response(url, "200 OK", "text/html; charset=utf-8",
                     as_page(head, body, blocks, n).encode())
        front = "".join(f'<li><a href="/s/{i}">{t}</a></li>' for i, t in enumerate(titles[:30]))
        response("https://www.example-news.com/", "200 OK", "text/html",
                 f"<html><body><nav>Home</nav><ul>{front}</ul></body></html>".encode())
        response("https://www.example-news.com/gone", "404 Not Found", "text/html",
                 b"<html><body><h1>Page not found</h1></body></html>")
        response("https://www.example-news.com/old", "301 Moved Permanently", "text/html", b"")
        response("https://www.example-news.com/logo.png", "200 OK", "image/png",
                 b"\x89PNG\r\n\x1a\n" + bytes(64))
    return len(rows)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="demo/climate.warc.gz")
    parser.add_argument("--data-dir", default=os.environ.get("ARTICLE_DATA_DIR", "../shared/data"),
                        help="the framing data (default: $ARTICLE_DATA_DIR, else ../shared/data)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    n = write_crawl(articles(Path(args.data_dir)), Path(args.out))
    print(f"wrote {args.out}: {n} article pages and 4 other responses", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
