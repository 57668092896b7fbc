"""Out-of-domain flag of the BBC topic model (model/core/domain.py): how well typicality
tells BBC test articles from foreign news, how often the flag fires on each, and what the
flag and its lexical rule do to topic answers.

    python -m bench.domain                      # uses runs/bbc_topic, training it first
                                                # when its model has no domain reference
    python -m bench.domain --run runs/bbc_topic --out bench/results

Needs ../shared/data (or ARTICLE_DATA_DIR) for the foreign sets: SemEval-2023 (all six
languages, and English alone), GVFC (headlines alone, and headline + lead-3 sentences of the
multimodal extension, for the same 1,300 articles) and the narrative-frames climate articles.
The model is served as `predict` serves it here (`auto`: the int8 backend on a CPU, with the
artifact's early exit). AUROC ranks by the kNN distance typicality is a percentile of (the
same order, without the ties of articles beyond every held-out one). Prints a table and
writes bench/results/bench_domain.{md,json}.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from bench.report import save_result
from model.core.domain import DOMAIN_NAME, article_embeddings
from model.inputs.records import read_csv, read_jsonl, record_text
from model.runtime.classifier import ArticleClassifier
from model.runtime.loading import load_classifier
from train.config import DataConfig, load_run_config
from train.metrics import environment
from train.run import run_split, train

# A stand-in for the seed's sample (a Xinhua report of a Putin-Macron phone call on
# security guarantees, which this checkout does not hold): written for this benchmark in
# the register of a news-agency report, 2020s world politics that BBC's 2004-05 topics
# never saw.
PHONE_CALL = """Putin, Macron discuss security guarantees in phone call

MOSCOW, Dec. 3 (Xinhua) -- Russian President Vladimir Putin and French President Emmanuel
Macron on Tuesday held a telephone conversation on security guarantees in Europe and the
Ukraine crisis, the Kremlin said in a statement.

Putin stressed that Russia needs legally binding guarantees that rule out further eastward
expansion of NATO and the deployment of offensive weapons systems near its borders, the
statement said. The two presidents agreed that their advisers would continue consultations
in the Normandy format, and discussed energy supplies, gas prices and the economic
cooperation between the two countries.

The Elysee said Macron underlined the importance of dialogue and of respecting the Minsk
agreements. The leaders also exchanged views on the nuclear programme of Iran and on the
situation in Mali and the Sahel, and agreed to stay in contact, according to the Kremlin."""


def foreign_sets(data_dir: Path) -> dict[str, list[str]]:
    """The foreign articles by set, as `predict` reads records (title, blank line, text)."""
    semeval = data_dir / "framing/semeval2023_st2_train/train.jsonl"
    rows = [obj for _, obj, error in read_jsonl(semeval) if error is None]
    gvfc = data_dir / "framing/gvfc/GVFC_extension_multimodal.csv"
    leads = [row for _, row, error in read_csv(gvfc) if error is None]
    narrative = data_dir / "framing/narrative_frames_climate/articles_metadata.tsv"
    return {
        "SemEval, 6 languages": [record_text(obj)[0] for obj in rows],
        "SemEval, English": [record_text(obj)[0] for obj in rows if obj.get("lang") == "en"],
        "GVFC headlines": [row["headline"] for row in leads],
        "GVFC headline + lead-3": [
            f"{row['headline']}\n\n{row['lead_3_sentences_summary_of_full_article_text']}"
            for row in leads],
        "narrative frames (climate)": [row["text"] for _, row, error in read_csv(narrative)
                                       if error is None],
    }


def ensure_model(run: Path, config: str) -> Path:
    """The run's model folder, trained first when it has no domain reference."""
    model = run / "model"
    if not (model / DOMAIN_NAME).is_file():
        print(f"{model}: no {DOMAIN_NAME}; training {config} into {run} (about 5 minutes)",
              file=sys.stderr)
        if train(load_run_config(config, [f"training.output_dir={run}"])) != 0:
            raise SystemExit(f"training {config} failed")
    return model


def measure(clf, texts: list[str], task: str = "topic") -> dict:
    """Per article: typicality and flag read whole and as served (early exit), the kNN
    distance, the network's and the lexical model's probabilities, and the topic as served
    and as each lexical rule of `RULES` would give it (read whole)."""
    encoded = clf.encode(texts)
    rows = clf.embed_windows(encoded, 64)
    embeddings = article_embeddings(rows.numpy(), [len(a.windows) for a in encoded])
    mixed, domain = clf.answer(rows, encoded)
    _, network, lexical = mixed[task]
    as_served = clf.read(encoded, 64)
    weight = next(t.lexical_weight for t in clf.tasks if t.name == task)
    # Temperature calibration keeps the order of labels, so each rule's topic is the
    # best label of its mix.
    by_rule = {name: ((weight * trust(clf.domain, domain))[:, None] * lexical
                      + (1 - (weight * trust(clf.domain, domain))[:, None]) * network
                      ).argmax(1) for name, trust in RULES.items()}
    return {"distance": clf.domain.distances(embeddings), "typicality": domain.percentile,
            "in_domain": domain.in_domain, "served_in_domain": as_served.domain.in_domain,
            "trust": clf.domain.lexical_trust(domain),
            "network": network, "lexical": lexical, "rules": by_rule,
            "as_served": as_served.probabilities[task].argmax(1)}


# How much of the chosen lexical weight each article gets, by rule; "typicality ramp" is
# the one served (DomainReference.lexical_trust).
RULES = {
    "mixed always": lambda ref, typ: np.ones(len(typ.in_domain)),
    "network alone when flagged": lambda ref, typ: typ.in_domain.astype(float),
    "network alone under typicality 10": lambda ref, typ: (typ.percentile >= 10) * 1.0,
    "typicality ramp (served)": lambda ref, typ: ref.lexical_trust(typ),
    "ramp to typicality 50": lambda ref, typ: np.clip(typ.percentile / 50, 0, 1) * typ.in_domain,
    "network alone": lambda ref, typ: np.zeros(len(typ.in_domain)),
}


def typicality_of(clf, texts: list[str]):
    """Typicality of whole articles, by `clf`'s own backend and precision."""
    encoded = clf.encode(texts)
    rows = clf.embed_windows(encoded, 64).numpy()
    return clf.domain.typicality(article_embeddings(rows, [len(a.windows) for a in encoded]))


def set_row(name: str, bbc: dict, other: dict) -> dict:
    """One foreign set against BBC test: AUROC, flag rates, and how often the lexical part
    decides the topic against the network under each rule."""
    y = np.r_[np.ones(len(bbc["distance"])), np.zeros(len(other["distance"]))]
    score = -np.r_[bbc["distance"], other["distance"]]
    network = other["network"].argmax(1)
    return {"set": name, "n": len(other["distance"]), "auroc": roc_auc_score(y, score),
            "flagged": float(1 - other["in_domain"].mean()),
            "flagged_as_served": float(1 - other["served_in_domain"].mean()),
            "flagged_at_95": float((other["typicality"] < 5).mean()),
            "median_typicality": float(np.median(other["typicality"])),
            "overruled": {rule: float((topic != network).mean())
                          for rule, topic in other["rules"].items()}}


def accuracy(predicted: np.ndarray, gold: np.ndarray, rows: np.ndarray) -> tuple[int, float]:
    n = int(rows.sum())
    return n, float((predicted[rows] == gold[rows]).mean()) if n else float("nan")


def bbc_rows(bbc: dict, gold: np.ndarray) -> list[dict]:
    """Topic accuracy on BBC test, flagged articles against the rest, by each answer."""
    answers = {"as served (early exit, lexical rule)": bbc["as_served"],
               "as served, no lexical rule": bbc["as_served_no_rule"],
               **{f"whole, {rule}": topic for rule, topic in bbc["rules"].items()},
               "lexical alone": bbc["lexical"].argmax(1)}
    out = []
    for answer, topic in answers.items():
        # As served, an article is flagged as it was read (its first window, if it
        # stopped there); read whole, as the whole article.
        flagged = ~bbc["served_in_domain" if answer.startswith("as served") else "in_domain"]
        row = {"answer": answer}
        for part, rows in (("all", np.ones_like(flagged)), ("flagged", flagged),
                           ("rest", ~flagged)):
            row[f"{part}_n"], row[f"{part}_accuracy"] = accuracy(topic, gold, rows)
        out.append(row)
    return out


def sample_row(clf, labels: list[str]) -> dict:
    one = measure(clf, [PHONE_CALL])
    best = {"network": one["network"][0], "lexical": one["lexical"][0]}
    return {"typicality": round(float(one["typicality"][0]), 1),
            "in_domain": bool(one["in_domain"][0]),
            "lexical_share": round(float(one["trust"][0]), 3),
            **{k: (labels[int(p.argmax())], round(float(p.max()), 3)) for k, p in best.items()},
            "served": labels[int(one["as_served"][0])],
            "by_rule": {rule: labels[int(t[0])] for rule, t in one["rules"].items()}}


def table(doc: dict) -> str:
    bbc, s = doc["bbc"], doc["sample"]
    lines = [f"Out-of-domain flag, {doc['model']} (flag below typicality "
             f"{100 - doc['flag_percentile']:g}, k={doc['k']}, full lexical weight from "
             f"typicality {doc['lexical_full_trust']:g}); served as {doc['backend']}", "",
             f"BBC test: {bbc['n']} articles, median typicality {bbc['median_typicality']:.1f}; "
             f"flagged {100 * bbc['flagged']:.1f}% read whole, "
             f"{100 * bbc['flagged_as_served']:.1f}% as served (early exit), "
             f"{100 * bbc['flagged_fp32']:.1f}% read whole in fp32 torch, "
             f"{100 * bbc['flagged_at_95']:.1f}% if the flag were at typicality 5", "",
             "| foreign set | n | AUROC vs BBC test | flagged | flagged as served "
             "| flagged at typicality 5 | median typicality |", "|---|---|---|---|---|---|---|"]
    for r in doc["sets"]:
        lines.append(f"| {r['set']} | {r['n']} | {r['auroc']:.4f} | {100 * r['flagged']:.1f}% "
                     f"| {100 * r['flagged_as_served']:.1f}% | {100 * r['flagged_at_95']:.1f}% "
                     f"| {r['median_typicality']:.1f} |")
    lines += ["", "Topic accuracy on BBC test, flagged articles against the rest:", "",
              "| answer | all | flagged | rest |", "|---|---|---|---|"]
    for r in doc["bbc_accuracy"]:
        cells = [f"{r[f'{p}_accuracy']:.4f} (n={r[f'{p}_n']})" if r[f"{p}_n"] else "- (n=0)"
                 for p in ("all", "flagged", "rest")]
        lines.append(f"| {r['answer']} | " + " | ".join(cells) + " |")
    names = [r["set"] for r in doc["sets"]]
    lines += ["", "Lexical rule: the share of foreign articles whose topic the lexical part "
              "decides against the network (read whole), BBC test accuracy and the sample's "
              "topic:", "", "| rule | BBC test accuracy | sample | " + " | ".join(names) + " |",
              "|---|---|---|" + "---|" * len(names)]
    accuracy_of = {r["answer"]: r["all_accuracy"] for r in doc["bbc_accuracy"]}
    for rule in RULES:
        lines.append(f"| {rule} | {accuracy_of[f'whole, {rule}']:.4f} | {s['by_rule'][rule]} | "
                     + " | ".join(f"{100 * r['overruled'][rule]:.1f}%" for r in doc["sets"])
                     + " |")
    lines += ["", f"Sample (a stand-in for the seed's Xinhua Putin-Macron report): typicality "
              f"{s['typicality']}, in domain {s['in_domain']}, lexical weight served "
              f"{s['lexical_share']:g} of {doc['lexical_weight']:g}; network {s['network']}, "
              f"lexical {s['lexical']}; served {s['served']}",
              "", f"machine: {doc['environment']['cpu']}, {doc['environment']['cpu_count']} "
              f"CPUs, flags {' '.join(doc['environment']['cpu_flags']) or 'none'}; "
              f"torch {doc['environment']['torch']}",
              f"command: {doc['command']}", f"when: {doc['when']}, {doc['seconds']:.0f} s", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="runs/bbc_topic", help="the BBC topic run folder")
    parser.add_argument("--config", default="configs/bbc_topic.yaml",
                        help="what to train when the run's model has no domain reference")
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args(argv)
    started, when = time.perf_counter(), datetime.now(timezone.utc).isoformat(timespec="seconds")
    run = Path(args.run)
    model = ensure_model(run, args.config)
    data_dir = DataConfig().resolved_data_dir()
    if data_dir is None:
        raise SystemExit("no data folder: set ARTICLE_DATA_DIR (../shared/data)")
    clf = load_classifier(model, quiet=True)
    labels = clf.tasks[0].labels
    test = run_split(run, "topic", "test")
    gold = np.array([labels.index(e.label) for e in test])
    bbc = measure(clf, [e.text for e in test])
    # The same model served without its domain reference: the lexical weight in full.
    unruled = ArticleClassifier(clf.network, clf.tokenizer, clf.metadata, clf.lexical,
                                clf.settings, clf.artifact, quiet=True)
    bbc["as_served_no_rule"] = unruled.read(unruled.encode([e.text for e in test]),
                                            64).probabilities["topic"].argmax(1)
    # The reference was embedded in the training precision: is the int8 flag the same?
    exact = clf.with_settings(precision="fp32", backend="torch", early_exit=None)
    bbc_fp32 = typicality_of(exact, [e.text for e in test])
    sets = {}
    for name, texts in foreign_sets(data_dir).items():
        print(f"{name}: {len(texts)} articles", file=sys.stderr, flush=True)
        sets[name] = measure(clf, texts)
    doc = {"model": str(model), "backend": clf.backend_name, "k": clf.domain.k,
           "flag_percentile": clf.domain.flag_percentile,
           "lexical_full_trust": clf.domain.lexical_full_trust,
           "lexical_weight": clf.tasks[0].lexical_weight,
           "bbc": {"n": len(test), "flagged": float(1 - bbc["in_domain"].mean()),
                   "flagged_as_served": float(1 - bbc["served_in_domain"].mean()),
                   "flagged_fp32": float(1 - bbc_fp32.in_domain.mean()),
                   "flagged_at_95": float((bbc["typicality"] < 5).mean()),
                   "median_typicality": float(np.median(bbc["typicality"]))},
           "sets": [set_row(name, bbc, other) for name, other in sets.items()],
           "bbc_accuracy": bbc_rows(bbc, gold), "sample": sample_row(clf, labels),
           "environment": environment(), "when": when,
           "command": f"python -m bench.domain {shlex.join(argv or sys.argv[1:])}".strip()}
    doc["seconds"] = time.perf_counter() - started
    save_result("bench_domain", doc, table(doc), Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
