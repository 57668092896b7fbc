"""Cleaning benchmark: what page furniture does to topic and frame predictions, and how
much of it each way of reading a page undoes.

    python -m bench.cleaning --topic-run runs/news_topic_frames \
        --frames-run runs/semeval_frames

Scraped articles arrive with the page around them: after the story, lists of other
headlines under "Featured Video", "Editorial Pick" and "Latest News", a cookie notice, a
newsletter box. On each run's held-out test articles this benchmark adds such furniture
(headlines of other test articles, so they pull towards other topics and frames, as on a
real news site) and reads every article in four forms, each as it is and through the
boilerplate cutter (`model.clean_boilerplate`, `+ cutter`):

- `clean`: the article as the dataset has it (the reference; its cutter reading shows
  what the cutter does to text without added furniture: SemEval's texts keep the
  boilerplate of the sites they were scraped from);
- `furniture`: the text with the furniture after it, headed "Featured Video", "Editorial
  Pick", "Latest News", with a cookie notice, a newsletter line and a © line;
- `furniture, other headings`: the same lists under headings and notices that none of
  the cutter's markers name, but for a last "Copyright" line: how far the rule carries
  beyond the words it was tuned on;
- `html + trafilatura`: the article and its furniture as a web page (navigation, aside
  lists, banner, footer), read through the page extraction `predict` uses for HTML.

Reported: accuracy (topic) or micro/macro-F1 (frames), and how many predictions differ
from the clean reading. Writes bench/results/bench_cleaning.{md,json}.
"""

from __future__ import annotations

import argparse
import html
import random
import sys
from pathlib import Path

import numpy as np

from bench.report import save_result
from model.core.tasks import decide
from model.inputs.records import read_record
from model.runtime.loading import load_classifier
from train.metrics import environment, task_metrics
from train.run import run_split

SOURCES = ("clean", "furniture", "furniture, other headings", "html + trafilatura")
ARMS = tuple(a for s in SOURCES for a in (s, f"{s} + cutter"))
BANNER = "We use cookies to give you the best experience. Accept all cookies"
NEWSLETTER = "Sign up for our newsletter and get the top stories every morning."
# Furniture in words the cutter's markers do not name (only the last line was a marker
# before the cutter was tuned on the blocks above): how far the rule carries.
OTHER_HEADINGS = ("Watch now", "Don't miss", "Elsewhere on the site")
OTHER_TAIL = ["This site stores small files on your device. OK", "Get the morning briefing",
              "Copyright 2025 The Daily Example"]


def furniture(headlines: list[str], headings=("Featured Video", "Editorial Pick",
                                               "Latest News")) -> list[tuple[str, list[str]]]:
    """The blocks a news page puts after its story: a heading and a list of headlines."""
    return [(headings[0], headlines[:4]), (headings[1], headlines[4:7]),
            (headings[2], headlines[7:14])]


def as_text(text: str, blocks, tail=(BANNER, NEWSLETTER, "© 2025 The Daily Example")) -> str:
    lines = [text, ""]
    for heading, items in blocks:
        lines += [heading, *items]
    return "\n".join(lines + list(tail))


def as_page(title: str, body: str, blocks, n: int) -> str:
    """The article as a news site serves it."""
    e = html.escape
    paragraphs = "".join(f"<p>{e(p)}</p>" for p in body.split("\n") if p.strip())
    aside = "".join(f"<h2>{e(h)}</h2><ul>" + "".join(
        f'<li><a href="/story/{n}-{i}">{e(t)}</a></li>' for i, t in enumerate(items)) + "</ul>"
        for h, items in blocks)
    return (f"<!doctype html><html><head><title>{e(title)} | The Daily Example</title>"
            f'<meta property="og:title" content="{e(title)}">'
            '<meta property="article:published_time" content="2025-03-04"></head><body>'
            '<header><nav><a href="/">Home</a> <a href="/world">World</a> '
            '<a href="/business">Business</a> <a href="/sport">Sport</a></nav></header>'
            f'<div class="cookie-banner">{e(BANNER)} <button>Accept</button></div>'
            f"<main><article><h1>{e(title)}</h1>{paragraphs}</article>"
            f"<aside>{aside}</aside></main>"
            f"<footer><p>{e(NEWSLETTER)}</p><p>© 2025 The Daily Example</p></footer>"
            "</body></html>")


def readings(examples, seed: int) -> dict[str, list[str]]:
    """Each arm's texts (the cutter arms are the texts of their uncut arm)."""
    rng = random.Random(seed)
    titles = [e.text.strip().split("\n", 1)[0][:150] for e in examples]
    out = {source: [] for source in SOURCES}
    for n, example in enumerate(examples):
        others = [t for i, t in enumerate(titles) if i != n]
        chosen = rng.sample(others, min(14, len(others)))
        blocks = furniture(chosen)
        head, _, body = example.text.strip().partition("\n")
        out["clean"].append(example.text)
        out["furniture"].append(as_text(example.text, blocks))
        out["furniture, other headings"].append(
            as_text(example.text, furniture(chosen, OTHER_HEADINGS), OTHER_TAIL))
        page = as_page(head.strip(), body.strip() or head, blocks, n)
        text, _, error = read_record({"html": page, "url": f"https://example.com/{n}"})
        out["html + trafilatura"].append(text if error is None else head)
    return out


def evaluate(clf, examples, task: str, seed: int, batch_size: int) -> dict:
    spec = next(t for t in clf.tasks if t.name == task)
    texts = readings(examples, seed)
    probs, results = {}, {}
    for arm in ARMS:
        cutter = arm.endswith("cutter")
        clf.config.clean_boilerplate = cutter
        source = texts[arm.replace(" + cutter", "")]
        probs[arm] = clf.probabilities(clf.encode(source), batch_size)[task]
    clf.config.clean_boilerplate = False
    gold = [e.label for e in examples]
    for arm in ARMS:
        p = probs[arm]
        if spec.type == "multi_label":
            changed = int((decide(p, spec.thresholds)
                           != decide(probs["clean"], spec.thresholds)).any(axis=1).sum())
        else:
            changed = int((p.argmax(1) != probs["clean"].argmax(1)).sum())
        metrics = task_metrics(spec, gold, p)
        results[arm] = {**{k: round(v, 4) for k, v in metrics.items()
                           if k in ("accuracy", "micro_f1", "macro_f1")},
                        "changed": changed,
                        "mean_abs_prob_change": round(float(np.abs(p - probs["clean"]).mean()),
                                                      4),
                        "mean_chars": round(float(np.mean([len(t) for t in
                                                           texts[arm.replace(" + cutter",
                                                                             "")]])))}
    return {"articles": len(examples), "results": results}


def markdown(document: dict) -> str:
    env = document["environment"]
    lines = [f"{env['cpu']} ({', '.join(env['cpu_flags'])}), {env['cpu_count']} cores.", ""]
    for task, part in document["tasks"].items():
        lines += [f"**{task}** ({part['run']}, {part['articles']} held-out articles)", "",
                  "| reading | score | changed vs clean | mean abs prob change | chars |",
                  "|---|---|---|---|---|"]
        for arm, r in part["results"].items():
            score = (f"acc {r['accuracy']:.4f}" if "accuracy" in r
                     else f"micro {r['micro_f1']:.4f} / macro {r['macro_f1']:.4f}")
            lines.append(f"| {arm} | {score} | {r['changed']} | "
                         f"{r['mean_abs_prob_change']} | {r['mean_chars']} |")
        lines.append("")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--topic-run", help="a run with a single-label `topic` task")
    parser.add_argument("--frames-run", help="a run with a multi-label `frames` task")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--name", default="bench_cleaning")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    document = {"command": " ".join(sys.argv), "precision": args.precision,
                "environment": environment(), "tasks": {}}
    for task, run in (("topic", args.topic_run), ("frames", args.frames_run)):
        if not run:
            continue
        clf = load_classifier(Path(run) / "model", precision=args.precision)
        examples = run_split(Path(run), task)
        document["tasks"][task] = {"run": run, **evaluate(clf, examples, task, args.seed,
                                                          args.batch_size)}
    save_result(args.name, document, markdown(document))
    return 0


if __name__ == "__main__":
    sys.exit(main())
