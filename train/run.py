"""Train a model from a run config, evaluate it on the test split, save the artifact.

One CPU or one GPU:
    python -m train --config configs/bbc_topic.yaml             # frozen encoder: minutes
    python -m train --config configs/bbc_topic_finetune.yaml    # fine-tuned
    python -m train --config configs/bbc_topic_finetune.yaml \
        --set training.epochs=1 --set data.max_samples=200
Resume an interrupted fine-tuning run from its last checkpoint:
    python -m train --config configs/bbc_topic_finetune.yaml --resume
Several GPUs or nodes (the Trainer handles the distribution):
    torchrun --nproc_per_node 4 -m train --config configs/bbc_topic_finetune.yaml
    accelerate launch -m train --config configs/bbc_topic_finetune.yaml

Writes into `training.output_dir`: model/ (the artifact), metrics.json, report.md,
confusion_matrix.png, config.yaml (the resolved config), splits.json, checkpoints/ (when
fine-tuning).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from transformers import set_seed

from model.core.artifact import build_network, record_metrics, save_artifact
from model.core.calibration import apply_calibration, expected_calibration_error, reliability
from model.core.tasks import MULTI_LABEL, TaskSpec
from model.encoders.registry import EncoderError
from model.runtime.backends import calibration_windows
from model.runtime.classifier import ArticleClassifier
from model.runtime.devices import auto_precision, resolve_device
from model.runtime.loading import load_classifier
from train.config import RunConfig, load_run_config
from train.data import DataError, load_task, split_examples
from train.domain import fit_domain
from train.finetune import finetune, lexical_for_finetuned
from train.frozen import train_frozen
from train.linear import label_matrix
from train.metrics import environment, task_metrics, write_reports
from train.trainer import (
    choose_precision,
    data_parallel_problem,
)
from train.tuning import calibrate_and_tune


def parse_args(argv=None, description: str = __doc__):
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML run config (configs/*.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. training.epochs=1 (repeatable)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the last checkpoint in the output folder")
    return parser.parse_args(argv)


def prepare_data(cfg: RunConfig, label_sets: dict[str, list[str]] | None = None):
    """Load, check and split every task. Returns `(task_specs, splits, data_report)`.

    `splits[task][split]` is a list of examples. `label_sets` fixes each task's labels
    (when evaluating a trained model); otherwise they come from the config or the data.
    """
    specs, splits, report = [], {}, {}
    for task in cfg.tasks:
        if label_sets and task.name in label_sets:
            task.dataset.labels = label_sets[task.name]
        data = load_task(task, cfg.data)
        specs.append(TaskSpec(task.name, task.type, data.labels))
        splits[task.name] = split_examples(data.examples, data.labels, task.type, cfg.data)
        report[task.name] = {**data.summary(),
                             **{f"{k}_size": len(v) for k, v in splits[task.name].items()},
                             "first_bad_records": [f"{w}: {p}" for w, p in data.bad_records[:20]]}
        for where, problem in data.bad_records[:5]:
            print(f"skipped {where}: {problem}", file=sys.stderr)
        if len(data.bad_records) > 5:
            print(f"... {len(data.bad_records) - 5} more bad records in task {task.name}",
                  file=sys.stderr)
    return specs, splits, report


def evaluate_split(clf: ArticleClassifier, splits: dict, split: str, batch_size: int,
                   calibration: bool = False) -> dict:
    """Scores of every task of `clf` on one split; with `calibration`, also what each
    task's calibration did there (one more reading of the split)."""
    results = {}
    for task in clf.tasks:
        if task.name not in splits:
            continue
        examples = splits[task.name][split]
        encoded = clf.encode([e.text for e in examples])
        probs = clf.read(encoded, batch_size)[0][task.name]  # as served (early exit too)
        results[task.name] = task_metrics(task, [e.label for e in examples], probs)
        lengths = [a.n_tokens for a in encoded]
        results[task.name]["truncated_articles"] = int(sum(a.truncated for a in encoded))
        results[task.name]["median_tokens"] = float(np.median(lengths))
        if calibration and task.calibration is not None:
            results[task.name]["calibration"] = calibration_effect(clf, task, examples,
                                                                   encoded, batch_size)
    return results


def calibration_effect(clf: ArticleClassifier, task, examples, encoded,
                       batch_size: int) -> dict:
    """The task's scores on these articles before (as mixed) and after its calibration,
    read whole: expected calibration error and reliability bins of each."""
    stored, task.calibration = task.calibration, None
    try:
        before = clf.probabilities(encoded, batch_size)[task.name]
    finally:
        task.calibration = stored
    after = apply_calibration(stored, before, task.type)
    y = label_matrix(task, examples)
    return {"method": stored["method"],
            "ece_before": round(expected_calibration_error(before, y, task.type), 4),
            "ece_after": round(expected_calibration_error(after, y, task.type), 4),
            "reliability_before": reliability(before, y, task.type),
            "reliability_after": reliability(after, y, task.type)}


def tune_on_validation(clf: ArticleClassifier, cfg: RunConfig, splits: dict,
                       batch_size: int) -> dict[str, list[float]]:
    """Calibrate every task of `clf` on its validation split and tune the decision
    thresholds of the multi-label ones on the calibrated scores, as `clf` now reads
    articles (pooling, windows, precision, lexical mixing); store them (and the held-out
    error counts) in the task specs. Returns the thresholds of the multi-label tasks."""
    configs = {t.name: t for t in cfg.tasks}
    tuned = {}
    for spec in clf.tasks:
        if spec.name not in splits:
            continue
        examples = splits[spec.name]["validation"]
        if not examples:
            print(f"{spec.name}: no validation articles; thresholds kept as they are",
                  file=sys.stderr)
            continue
        # Calibration is fitted on these very probabilities, so they are read uncalibrated.
        spec.calibration = None
        probs = clf.probabilities(clf.encode([e.text for e in examples]), batch_size)
        task_cfg = configs[spec.name]
        calibrate_and_tune(spec, [e.label for e in examples],
                           label_matrix(spec, examples), probs[spec.name],
                           task_cfg.calibration, task_cfg.threshold_tuning, cfg.training.seed)
        if spec.type == MULTI_LABEL:
            tuned[spec.name] = spec.thresholds
    return tuned


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        cfg = load_run_config(args.config, args.set)
        return train(cfg, resume=args.resume, config_path=args.config)
    except (DataError, EncoderError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def train(cfg: RunConfig, resume: bool = False, config_path: str = "CONFIG") -> int:
    out_dir = Path(cfg.training.output_dir)
    problem = data_parallel_problem(torch.cuda.device_count(),
                                    int(os.environ.get("WORLD_SIZE", "1")), config_path)
    if problem:
        raise ValueError(problem)
    if cfg.training.threads:
        torch.set_num_threads(cfg.training.threads)
    set_seed(cfg.training.seed)
    specs, splits, data_report = prepare_data(cfg)
    network, tokenizer = build_network(cfg.model, specs)
    clf = ArticleClassifier(network, tokenizer)
    started = time.perf_counter()
    if cfg.training.mode in ("frozen", "top"):
        # Window embeddings are computed in the precision torch's `auto` runs here (bf16
        # where native, else fp32; on the GPU where there is one): fast, and as close to
        # what the served int8 backend gives as to fp32 (its scores are recorded below);
        # test scores are fp32 as always.
        clf.network.to(resolve_device("auto"))
        precision, checkpoint = choose_precision(cfg.training.precision, clf.device), None
        report, lexical = train_frozen(clf.with_settings(precision=precision), cfg, specs,
                                       splits)
        domain, domain_report = fit_domain(clf.with_settings(precision=precision), cfg, splits)
        details = {"frozen": report, "domain": domain_report}
        clf = ArticleClassifier(network, tokenizer, lexical=lexical, domain=domain)
    else:
        precision, checkpoint = finetune(clf, cfg, specs, splits, out_dir, resume)
        if precision is None:
            return 0  # a worker process of distributed training: the main one writes
        report, lexical = lexical_for_finetuned(clf, cfg, specs, splits,
                                                cfg.training.eval_batch_size)
        # How typical a served article is (model/core/domain.py), by the final encoder.
        domain, domain_report = fit_domain(clf.with_settings(precision=precision), cfg, splits)
        details = {"lexical": report, "domain": domain_report}
        clf = ArticleClassifier(network, tokenizer, lexical=lexical, domain=domain)
        # Thresholds are tuned on what is served: network and lexical model mixed.
        tune_on_validation(clf, cfg, splits, cfg.training.eval_batch_size)
    seconds = time.perf_counter() - started

    results = evaluate_split(clf, splits, "test", cfg.training.eval_batch_size,
                             calibration=True)
    by_precision = scores_by_precision(clf, splits, results, cfg.training.eval_batch_size)
    metrics = {"test": results, "test_precision": "fp32", "test_device": str(clf.device),
               "test_by_precision": by_precision}
    save_artifact(out_dir / "model", network, tokenizer, metrics=metrics, lexical=clf.lexical,
                  calibration=calibration_windows(
                      clf, [e.text for spec in specs for e in splits[spec.name]["train"]],
                      seed=cfg.training.seed), domain=clf.domain)
    if cfg.training.check_served:
        score_as_served(out_dir / "model", network, clf.device, metrics, splits,
                        cfg.training.eval_batch_size)
    extra = {"training_seconds": round(seconds, 1), "mode": cfg.training.mode,
             "precision": precision, "resumed_from": checkpoint, "examples": data_report,
             **details,
             "test_precision": "fp32", "test_by_precision": by_precision,
             "environment": environment()}
    document = write_reports(out_dir, results, specs, extra, "test")
    (out_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    (out_dir / "splits.json").write_text(json.dumps(
        {t: {s: [e.id for e in ex] for s, ex in by_split.items()}
         for t, by_split in splits.items()}))
    print_summary(document, out_dir)
    return 0


def run_split(run: Path, task: str, split: str = "test") -> list:
    """The examples of one split of a finished run (its splits.json), as its config's
    data gives them: what benchmarks of a trained model read as held out."""
    cfg = load_run_config(run / "config.yaml")
    ids = set(json.loads((run / "splits.json").read_text())[task][split])
    spec = next(t for t in cfg.tasks if t.name == task)
    return [e for e in load_task(spec, cfg.data).examples if e.id in ids]


def score_as_served(model_dir: Path, network, device, metrics: dict, splits: dict,
                    batch_size: int) -> None:
    """Load the saved model as `auto` serves it here and, when that is a compiled backend
    (int8 on a CPU), add its test scores (multi-label thresholds included) to `metrics`
    and the saved artifact; its int8 graph is built now rather than on the first prediction."""
    served = load_classifier(model_dir, device=device, quiet=True)
    if served.backend is not None:
        metrics["test_by_precision"][served.backend_name] = headline_scores(
            evaluate_split(served, splits, "test", batch_size))
        record_metrics(model_dir, network, metrics)
    elif "openvino" in served.backend_reason:  # it could not load here: say why
        print(f"note: this model will be served by torch here: {served.backend_reason}",
              file=sys.stderr)


def headline_scores(results: dict) -> dict:
    """The headline numbers of each task's test results."""
    keep = ("accuracy", "micro_f1", "macro_f1", "n")
    return {task: {k: v for k, v in r.items() if k in keep} for task, r in results.items()}


def scores_by_precision(clf: ArticleClassifier, splits: dict, fp32_results: dict,
                        batch_size: int) -> dict:
    """Headline test scores of the torch paths this model is served by on the device it
    was trained on: fp32 (the reported figures) and torch's `auto` there, if not fp32."""
    paths = {"fp32": headline_scores(fp32_results)}
    served = auto_precision(clf.device)
    if served != "fp32":
        fast = clf.with_settings(precision=served)
        paths[served] = headline_scores(evaluate_split(fast, splits, "test", batch_size))
    return paths


def print_summary(document: dict, out_dir: Path) -> None:
    for name, result in document["tasks"].items():
        keys = ("accuracy", "macro_f1") if "accuracy" in result else ("micro_f1", "macro_f1")
        scores = ", ".join(f"{k} {result[k]:.4f}" for k in keys)
        print(f"{document.get('split', 'test')} {name}: {scores} (n={result['n']})")
    for path, tasks in document.get("test_by_precision", {}).items():
        if path != "fp32":
            print(f"  served as {path}: " + "; ".join(
                f"{name} " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items() if k != "n")
                for name, scores in tasks.items()))
    if "training_seconds" in document:
        print(f"training took {document['training_seconds']:.0f} s")
    print(f"wrote {out_dir}/")
