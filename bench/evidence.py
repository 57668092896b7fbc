"""Evidence benchmark: ERASER faithfulness of the evidence passages, and what they cost.

    python -m train --config configs/semeval_frames.yaml        # trains runs/semeval_frames
    python -m bench.evidence --run runs/semeval_frames

On the run's held-out test articles (splits.json), for every label the model gives an
article, the top-K evidence passages of each method (model/runtime/evidence.py) are scored as
ERASER does (DeYoung et al., 2020):

- comprehensiveness = p(label | article) - p(label | article without the passages):
  how much the prediction needed them (higher is better);
- sufficiency = p(label | article) - p(label | the passages alone): how much is lost
  reading only them (lower is better);

each beside random passages of the same article and about the same length (of 20 random
draws of as many sentences, the one closest in characters), with the mean paired
difference and its bootstrap 95% interval. The cost part times prediction with and without
evidence, one article per call and all in one call, median of `--repeats` runs. Prints a
table and writes bench/results/bench_evidence.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from bench.report import save_result
from model.runtime.evidence import METHODS, explain, given_labels, in_original
from model.runtime.loading import load_classifier
from train.metrics import environment
from train.run import run_split


def random_match(units: list[tuple[int, int]], chosen: list[tuple[int, int]],
                 rng: random.Random, draws: int = 20) -> list[tuple[int, int]]:
    """As many random passages as `chosen`, closest to its length in characters."""
    target = sum(e - s for s, e in chosen)
    options = [sorted(rng.sample(units, len(chosen))) for _ in range(draws)]
    return min(options, key=lambda o: abs(sum(e - s for s, e in o) - target))


def without(text: str, spans: list[tuple[int, int]]) -> str:
    out, done = [], 0
    for s, e in sorted(spans):
        out.append(text[done:s])
        done = e
    return "".join(out + [text[done:]])


def alone(text: str, spans: list[tuple[int, int]]) -> str:
    return "\n".join(text[s:e] for s, e in sorted(spans))


def bootstrap(diffs: list[float], rng: np.random.Generator, n: int = 2000) -> list[float]:
    values = np.asarray(diffs)
    means = values[rng.integers(0, len(values), (n, len(values)))].mean(1)
    return [round(float(np.quantile(means, q)), 4) for q in (0.025, 0.975)]


def faithfulness(clf, texts: list[str], task: str, ks: list[int], seed: int,
                 batch_size: int) -> dict:
    predictions = clf.predict(texts, batch_size=batch_size)
    encoded = clf.encode(texts, spans=True)
    evidence = {m: explain(clf, encoded, texts, batch_size, m)[1] for m in METHODS}
    labels = next(t for t in clf.tasks if t.name == task).labels
    rng = random.Random(seed)
    cases, queries = [], []  # (method, k, article, label, kind) ; texts to predict
    for a, prediction in enumerate(predictions):
        for label in given_labels(prediction[task]):
            for method in METHODS:
                article = evidence[method][a]
                originals = [in_original(u, article.origin, texts[a]) for u in article.units]
                for k in ks:
                    spans = [(p["start"], p["end"]) for p in article.passages(task, label, k)]
                    if not spans or len(spans) >= len(article.units):
                        continue  # nothing to show, or nothing would be left
                    sets = {"evidence": spans,
                            "random": random_match(originals, spans, rng)}
                    for kind, chosen in sets.items():
                        cases.append((method, k, a, label, kind,
                                      sum(e - s for s, e in chosen)))
                        queries += [without(texts[a], chosen), alone(texts[a], chosen)]
    scores = clf.predict(queries, batch_size=batch_size)

    def prob(prediction, label):
        answer = prediction[task]
        return answer["scores"][label] if "scores" in answer else \
            answer["probabilities"][label]

    table: dict = {}
    for i, (method, k, a, label, kind, length) in enumerate(cases):
        full = prob(predictions[a], label)
        row = table.setdefault(f"{method} k={k}", {}).setdefault(kind, [])
        row.append((full - prob(scores[2 * i], label), full - prob(scores[2 * i + 1], label),
                    length))
    boot = np.random.default_rng(seed)
    summary = {}
    for name, kinds in table.items():
        ev, rnd = np.array(kinds["evidence"]), np.array(kinds["random"])
        summary[name] = {
            "pairs": len(ev),
            "comprehensiveness": round(float(ev[:, 0].mean()), 4),
            "comprehensiveness_random": round(float(rnd[:, 0].mean()), 4),
            "comprehensiveness_gain_ci95": bootstrap(list(ev[:, 0] - rnd[:, 0]), boot),
            "sufficiency": round(float(ev[:, 1].mean()), 4),
            "sufficiency_random": round(float(rnd[:, 1].mean()), 4),
            "sufficiency_gain_ci95": bootstrap(list(rnd[:, 1] - ev[:, 1]), boot),
            "chars": round(float(ev[:, 2].mean())), "chars_random": round(float(rnd[:, 2].mean())),
        }
    return {"labels": labels, "articles": len(texts), "results": summary}


def cost(clf, texts: list[str], repeats: int, batch_size: int) -> dict:
    """Seconds for predicting `texts`, one call per article and one call for all, with no
    evidence and with each method's; the median of `repeats` runs each."""
    clf.predict(texts[:4], evidence=3)  # warm-up: kernels compiled, caches filled
    out = {}
    for mode in ("none", *METHODS):
        options = {} if mode == "none" else {"evidence": 3, "evidence_method": mode}
        single, batched = [], []
        for _ in range(repeats):
            start = time.perf_counter()
            for text in texts:
                clf.predict(text, batch_size=batch_size, **options)
            single.append(time.perf_counter() - start)
            start = time.perf_counter()
            clf.predict(texts, batch_size=batch_size, **options)
            batched.append(time.perf_counter() - start)
        out[mode] = {"per_article_s": round(statistics.median(single) / len(texts), 4),
                     "batch_s": round(statistics.median(batched), 3)}
    for mode in METHODS:
        out[mode]["per_article_ratio"] = round(out[mode]["per_article_s"]
                                               / out["none"]["per_article_s"], 2)
        out[mode]["batch_ratio"] = round(out[mode]["batch_s"] / out["none"]["batch_s"], 2)
    return out


def markdown(document: dict) -> str:
    env = document["environment"]
    lines = [f"Evidence on {document['articles']} held-out articles of {document['run']} "
             f"(task {document['task']}, lexical weights {document['lexical_weights']}), "
             f"{env['cpu']} ({', '.join(env['cpu_flags'])}), "
             f"{env['cpu_count']} cores, precision {document['precision']}.", "",
             "| method | pairs | comprehensiveness ↑ (random) | gain 95% CI | "
             "sufficiency ↓ (random) | gain 95% CI | chars (random) |",
             "|---|---|---|---|---|---|---|"]
    for name, r in document["faithfulness"].items():
        lines.append(f"| {name} | {r['pairs']} | {r['comprehensiveness']:.4f} "
                     f"({r['comprehensiveness_random']:.4f}) | "
                     f"{r['comprehensiveness_gain_ci95']} | {r['sufficiency']:.4f} "
                     f"({r['sufficiency_random']:.4f}) | {r['sufficiency_gain_ci95']} | "
                     f"{r['chars']} ({r['chars_random']}) |")
    lines += ["", "| evidence | per article, one call (s) | ratio | all in one call (s) | ratio |",
              "|---|---|---|---|---|"]
    for mode, r in document["cost"].items():
        lines.append(f"| {mode} | {r['per_article_s']} | {r.get('per_article_ratio', 1.0)} | "
                     f"{r['batch_s']} | {r.get('batch_ratio', 1.0)} |")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="a training run folder (runs/<job>)")
    parser.add_argument("--task", default="frames")
    parser.add_argument("--k", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cost-articles", type=int, default=30)
    parser.add_argument("--limit", type=int, help="the first N held-out articles only")
    parser.add_argument("--cost-only", action="store_true",
                        help="time it only; keep the faithfulness results of an earlier run "
                             "of the same --name")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--network-only", action="store_true",
                        help="drop the lexical component (its weight set to 0): the "
                             "evidence of the network alone")
    parser.add_argument("--name", default="bench_evidence")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run = Path(args.run)
    texts = [e.text for e in run_split(run, args.task)][:args.limit]
    clf = load_classifier(run / "model", precision=args.precision)
    if args.network_only:
        for task in clf.tasks:
            task.lexical_weight = None
    document = {"run": str(run), "task": args.task, "articles": len(texts),
                "lexical_weights": {t.name: t.lexical_weight for t in clf.tasks},
                "precision": clf.precision, "command": " ".join(sys.argv),
                "environment": environment()}
    out = Path("bench/results")
    if args.cost_only:
        document["faithfulness"] = json.loads((out / f"{args.name}.json").read_text())[
            "faithfulness"]
    else:
        document["faithfulness"] = faithfulness(clf, texts, args.task, args.k, args.seed,
                                                args.batch_size)["results"]
    document["cost"] = cost(clf, texts[:args.cost_articles], args.repeats, args.batch_size)
    save_result(args.name, document, markdown(document), out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
