"""Ensembles of frozen encoders, measured against one encoder, on the folds of bench.frames.

    python -m bench.ensemble --config configs/semeval_frames.yaml --cv 5 \
        --encoders multilingual-e5-small bge-small-en-v1.5

For every fold (the same splits `python -m bench.frames --cv K` makes): each encoder's
frozen head and the lexical component are fitted as frozen training fits them (C by
cross-validation, out-of-fold probabilities kept); the mixing weights of the encoders and
the lexical component are chosen on a 0.1 grid over the simplex, and one threshold, on
those out-of-fold probabilities; the test articles are scored under that rule. Every
encoder alone (+ lexical) goes through the same steps, so the rows differ only in the
encoders. Serving cost is each encoder's windows per second here, summed as time.
Writes bench/results/bench_ensemble_<name>.{md,json}.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import f1_score

from model.core.artifact import build_network
from model.core.tasks import decide
from model.core.text import clean_text
from model.runtime.classifier import ArticleClassifier
from model.runtime.devices import auto_precision
from train.config import load_run_config
from train.embedding_cache import EmbeddingCache
from train.linear import (
    cross_validated,
    fit_lexical,
    fit_logistic,
    label_matrix,
    make_folds,
)
from train.metrics import environment
from train.run import prepare_data
from train.tuning import served_score


def encoder_scores(args, encoder: str, fold: int, spec, train, test, folds, y):
    """Out-of-fold and test probabilities of one frozen encoder's head."""
    cfg = load_run_config(args.config, [*args.set, f"model.encoder={encoder}"])
    network, tokenizer = build_network(cfg.model, [spec])
    clf = ArticleClassifier(network, tokenizer).with_settings(precision=auto_precision("cpu"))
    cache = EmbeddingCache(clf, cfg.training.embedding_cache)
    started = time.perf_counter()
    _, fit_windows = cache.windows([e.text for e in train], cfg.training.eval_batch_size)
    _, test_windows = cache.windows([e.text for e in test], cfg.training.eval_batch_size)
    x = np.stack([w.mean(0) for w in fit_windows])
    x_test = np.stack([w.mean(0) for w in test_windows])

    def rows(fit, held):
        return x[fit], x[held]

    c, oof, _ = cross_validated(rows, y, spec, folds, tuple(cfg.training.frozen_c_grid),
                                True, standardize=True)
    head = fit_logistic(x, y, spec, c, True, standardize=True)
    print(f"[cv{fold}] {encoder}: C={c} ({time.perf_counter() - started:.0f} s)", flush=True)
    return oof, head.probabilities(x_test, spec.type)


def weights_grid(n: int, step: float = 0.1):
    """Non-negative weights of `n` parts summing to 1, on a grid."""
    ticks = int(round(1 / step))
    for parts in itertools.product(range(ticks + 1), repeat=n - 1):
        if sum(parts) <= ticks:
            yield np.array([*parts, ticks - sum(parts)]) / ticks


def choose(spec, y, oof_parts: list[np.ndarray]):
    best = None
    for w in weights_grid(len(oof_parts)):
        mixed = sum(wi * p for wi, p in zip(w, oof_parts))
        score, thresholds = served_score(spec, y, mixed)
        if best is None or score > best[0] + 1e-12:
            best = (score, w, thresholds)
    return best


def run_fold(args, k: int) -> dict:
    cfg = load_run_config(args.config, [*args.set, f"data.cv_folds={args.cv}",
                                        f"data.cv_fold={k}"])
    specs, splits, _ = prepare_data(cfg)
    spec, parts = specs[0], splits[specs[0].name]
    train, test = parts["train"] + parts["validation"], parts["test"]
    y, y_test = label_matrix(spec, train), label_matrix(spec, test)
    folds = make_folds(spec, y, cfg.training.cv_folds, cfg.training.seed)
    scores = {e: encoder_scores(args, e, k, spec, train, test, folds, y)
              for e in args.encoders}
    texts = [clean_text(e.text, cfg.model.clean_boilerplate) for e in train]
    lexical_model, lexical_oof, _ = fit_lexical(spec, texts, y, folds, True)
    lexical_test = lexical_model.probabilities(
        [clean_text(e.text, cfg.model.clean_boilerplate) for e in test])
    langs = np.array([e.meta.get("lang") or "?" for e in test])
    rows = {}
    combos = [[e] for e in args.encoders] + [list(args.encoders)]
    for combo in combos:
        for lexical in (False, True):
            oof = [scores[e][0] for e in combo] + ([lexical_oof] if lexical else [])
            held = [scores[e][1] for e in combo] + ([lexical_test] if lexical else [])
            cv, w, thresholds = choose(spec, y, oof)
            decided = decide(sum(wi * p for wi, p in zip(w, held)), thresholds)
            name = " + ".join(combo) + (" + lexical" if lexical else "")
            rows[name] = {"weights": [round(float(v), 2) for v in w], "cv": round(cv, 4),
                          "micro_f1": f1_score(y_test, decided, average="micro",
                                               zero_division=0),
                          "macro_f1": f1_score(y_test, decided, average="macro",
                                               zero_division=0),
                          "by_language": {
                              lang: f1_score(y_test[langs == lang], decided[langs == lang],
                                             average="micro", zero_division=0)
                              for lang in sorted(set(langs))}}
            print(f"[cv{k}] {name}: weights {rows[name]['weights']} micro-F1 "
                  f"{rows[name]['micro_f1']:.4f}", flush=True)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--cv", type=int, default=5)
    parser.add_argument("--encoders", nargs="+", required=True)
    parser.add_argument("--out", default="bench/results")
    parser.add_argument("--name", help="result file suffix (default: the config's name)")
    args = parser.parse_args(argv)
    folds = [run_fold(args, k) for k in range(args.cv)]
    langs = sorted(next(iter(folds[0].values()))["by_language"])
    lines = [f"{args.config}: {args.cv}-fold cross-validation, frozen heads", "",
             "| model | micro-F1 | macro-F1 | " + " | ".join(langs) + " | weights |",
             "|---|---|---|" + "---|" * (len(langs) + 1)]
    for name in folds[0]:
        def mean(key, name=name):
            return statistics.mean(f[name][key] for f in folds)
        per_lang = " | ".join(f"{statistics.mean(f[name]['by_language'][lang] for f in folds):.4f}"
                              for lang in langs)
        weights = "; ".join(str(f[name]["weights"]) for f in folds)
        lines.append(f"| {name} | {mean('micro_f1'):.4f} | {mean('macro_f1'):.4f} | "
                     f"{per_lang} | {weights} |")
    env = environment()
    lines.append(f"\nmachine: {env['cpu']}, {env['cpu_count']} CPUs, torch {env['torch']}")
    report = "\n".join(lines)
    print(report)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = args.name or Path(args.config).stem
    (out / f"bench_ensemble_{name}.md").write_text(report + "\n")
    (out / f"bench_ensemble_{name}.json").write_text(json.dumps(
        {"folds": folds, "encoders": args.encoders, "environment": env}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
