"""Inference benchmark: the Hugging Face pipeline beside our predict, fp32 and fast paths.

    python -m bench.infer --model runs/bbc_topic/model --config configs/bbc_topic.yaml
    make bench-infer

On the same 1,000 real articles (BBC News plus SemEval-2023 English when ../shared/data is
there, full length), each method runs in its own process so that peak memory is its own:
throughput (articles/s, median of --repeats), p50/p95 latency of one article, peak RSS.
Each fast path is compared with fp32: agreement of the predicted labels on the 1,000
articles, and the change in test scores on the config's test split. Then batch
prediction streams 10k and 100k lines through `article-classifier predict` (peak RSS of
each), and the service answers 1, 8 and 32 concurrent clients. The oneDNN / quantized
kernels that ran are printed. Where torch sees a CUDA GPU, the pipeline and our fp32,
bf16 and fp16 paths are measured on it too. Writes bench/results/bench_infer.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bench.methods import hf_pipeline, load_method, methods, split_method

ROOT = Path(__file__).resolve().parents[1]


def bench_articles(n: int) -> list[str]:
    """Real articles, full length: SemEval English when present, BBC for the rest."""
    from train.config import DataConfig, DatasetConfig, TaskConfig
    from train.data import load_task

    texts = []
    data = DataConfig()
    if data.resolved_data_dir() is not None:
        import train.framing_data as framing_data  # noqa: F401

        semeval = TaskConfig("frames", "multi_label", DatasetConfig(
            format="semeval2023", path="framing/semeval2023_st2_train/train.jsonl",
            languages=["en"]))
        texts += [e.text for e in load_task(semeval, data).examples]
    bbc = load_task(TaskConfig(), data).examples
    step = max(1, len(bbc) // max(1, n - len(texts)))
    texts += [e.text for e in bbc[::step]]
    return texts[:n]


def run_method(method: str, model_dir: str, repeats: int, batch_size: int,
               early_exit: float) -> dict:
    """Runs inside a worker process: throughput, latency and labels of one method."""
    import resource

    texts = bench_articles(1000)
    device, backend = split_method(method)[:2]
    windows = None
    if backend == "hf_pipeline":
        predict_many, predict_one = hf_pipeline(model_dir, device)
    else:
        clf = load_method(model_dir, method, early_exit)
        task = clf.tasks[0].name

        def predict_many(items):
            nonlocal windows
            out = clf.predict(items, batch_size=batch_size)
            windows = sum(o["chunks"] for o in out)
            return [o[task].get("label") or ",".join(o[task]["labels"]) for o in out]

        def predict_one(item):
            return clf.predict(item)

    predict_many(texts[:16])  # warm-up: first calls allocate and pick kernels
    seconds, labels = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        labels = predict_many(texts)
        seconds.append(time.perf_counter() - started)
    latency = []
    for text in texts[::10]:
        started = time.perf_counter()
        predict_one(text)
        latency.append((time.perf_counter() - started) * 1000)
    return {"method": method, "articles": len(texts), "windows_read": windows,
            "backend": getattr(clf, "backend_name", None) if backend != "hf_pipeline" else None,
            "articles_per_s": len(texts) / statistics.median(seconds),
            "runs_s": seconds, "p50_ms": float(np.percentile(latency, 50)),
            "p95_ms": float(np.percentile(latency, 95)),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "labels": labels}


def kernels_used(model_dir: str, method: str) -> list[str]:
    """The matrix kernels one forward pass of `method` ran: oneDNN's verbose log for
    torch, the primitives OpenVINO compiled for the openvino backend."""
    code = ("from bench.methods import load_method; "
            f"c = load_method({model_dir!r}, {method!r}, 0.9); "
            "c.predict(['A short text about markets and shares.'] * 4); "
            "print('\\n'.join('isa:' + k for k in (c.backend.kernels() if c.backend else [])))")
    env = dict(os.environ)
    if split_method(method)[1] == "torch":  # OpenVINO fails to compile under oneDNN verbose
        env.update(ONEDNN_VERBOSE="1", DNNL_VERBOSE="1")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, env=env, timeout=600).stdout
    found = set()
    for line in out.splitlines():
        parts = line.split(",")
        if line.startswith("onednn_verbose") and ",exec," in line and len(parts) > 5:
            found.add(f"{parts[4]}:{parts[5]}")
        elif "isa:" in line:
            found.add(line.split("isa:", 1)[1].strip())
    if method == "torch-int8-dynamic":
        import torch

        found.add(f"quantized engine: {torch.backends.quantized.engine} (dynamic int8 Linear)")
    return sorted(found) or ["(no oneDNN primitives: ATen/MKL kernels)"]


def test_scores(model_dir: str, config: str, methods, early_exit: float) -> dict:
    """Test-split scores of every task for each method (the accuracy side of speed), the
    mean cosine of its window embeddings to torch fp32's, and the windows it read."""
    import torch

    from train.config import load_run_config
    from train.run import evaluate_split, headline_scores, prepare_data

    cfg = load_run_config(config)
    labels = {t["name"]: t["labels"] for t in
              json.loads((Path(model_dir) / "config.json").read_text())["tasks"]}
    cfg.tasks = [t for t in cfg.tasks if t.name in labels]
    _, splits, _ = prepare_data(cfg, labels)
    scores, reference = {}, None
    texts = [e.text for task in splits.values() for e in task["test"]]
    for method in methods:
        clf = load_method(model_dir, method, early_exit)
        results = evaluate_split(clf, splits, "test", 64)  # as served: early exit included
        scores[method] = {name: {k: v for k, v in r.items() if k != "n"}
                          for name, r in headline_scores(results).items()}
        # The backend alone: every method embeds the same windows (torch fp32's reading).
        if reference is None:
            encoded = clf.encode(texts)
            reference = clf.embed_windows(encoded, 64).float()
        rows = clf.embed_windows(encoded, 64).float()
        scores[method]["cosine_to_fp32"] = float(
            torch.nn.functional.cosine_similarity(rows, reference).mean())
        scores[method]["windows_read"] = sum(o["chunks"] for o in clf.predict(texts, batch_size=64))
    return scores


def peak_rss_of(cmd: list[str]) -> tuple[float, float]:
    """Run a command; return (seconds, peak RSS in MiB) sampled every 50 ms."""
    import psutil

    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    handle, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        try:
            peak = max(peak, handle.memory_info().rss)
        except psutil.Error:
            break
        time.sleep(0.05)
    if proc.returncode:
        raise RuntimeError(f"{cmd} exited {proc.returncode}")
    return time.perf_counter() - started, peak / 2**20


def streaming(model_dir: str, work: Path) -> dict:
    """Batch prediction of 10k and 100k JSONL lines (headline-length texts, so that the
    100k run takes minutes): memory must stay flat as the input grows."""
    texts = [t.split("\n")[0] for t in bench_articles(1000)]
    results = {}
    for n in (10_000, 100_000):
        src = work / f"stream_{n}.jsonl"
        with open(src, "w") as handle:
            for i in range(n):
                handle.write(json.dumps({"id": i, "text": texts[i % len(texts)]}) + "\n")
        out = work / f"stream_{n}.out.jsonl"
        seconds, peak = peak_rss_of([sys.executable, "-m", "model.cli", "predict", model_dir,
                                     str(src), "-o", str(out)])
        with open(out) as handle:
            lines = sum(1 for _ in handle)
        results[n] = {"seconds": seconds, "peak_rss_mib": peak, "lines_out": lines,
                      "articles_per_s": n / seconds}
    return results


def service_throughput(model_dir: str, seconds: float = 20.0) -> dict:
    """Requests/s of `article-classifier serve` at 1, 8 and 32 concurrent clients."""
    import http.client
    import socket
    from concurrent.futures import ThreadPoolExecutor

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "model.cli", "serve", model_dir, "--port",
                               str(port)], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    texts = [t[:3000] for t in bench_articles(200)]

    def call(text):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        conn.request("POST", "/predict", json.dumps({"text": text}),
                     {"Content-Type": "application/json"})
        status = conn.getresponse().status
        conn.close()
        return status

    try:
        for _ in range(600):
            try:
                if call("warm up") == 200:
                    break
            except OSError:
                time.sleep(0.2)
        results = {}
        for clients in (1, 8, 32):
            stop = time.perf_counter() + seconds
            counts = []

            def client(k, stop=stop):
                done, errors = 0, 0
                while time.perf_counter() < stop:
                    ok = call(texts[(k * 7 + done) % len(texts)]) == 200
                    done, errors = done + ok, errors + (not ok)
                return done, errors

            with ThreadPoolExecutor(clients) as pool:
                counts = list(pool.map(client, range(clients)))
            total = sum(c[0] for c in counts)
            results[clients] = {"requests_per_s": total / seconds, "requests": total,
                                "errors": sum(c[1] for c in counts)}
        return results
    finally:
        server.terminate()
        server.wait(timeout=30)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="runs/bbc_topic/model")
    parser.add_argument("--config", default="configs/bbc_topic.yaml")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--methods", help="comma list of methods (default: all that apply)")
    parser.add_argument("--score-methods",
                        help="comma list of methods whose test scores are measured "
                             "(default: --methods)")
    parser.add_argument("--early-exit", type=float, default=0.9,
                        help="confidence of the +exit methods where the artifact sets none")
    parser.add_argument("--skip", default="",
                        help="comma list: runs (throughput), streaming, service, scores")
    parser.add_argument("--out", default="bench/results")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(run_method(args.worker, args.model, args.repeats, args.batch_size,
                                    args.early_exit)))
        return 0
    skip = set(filter(None, args.skip.split(",")))
    out = Path(args.out)
    chosen = args.methods.split(",") if args.methods else list(methods())
    runs = {}
    for method in [] if "runs" in skip else chosen:
        proc = subprocess.run([sys.executable, "-m", "bench.infer", "--worker", method,
                               "--model", args.model, "--repeats", str(args.repeats),
                               "--batch-size", str(args.batch_size),
                               "--early-exit", str(args.early_exit)], cwd=ROOT,
                              capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(f"{method} failed:\n{proc.stderr[-3000:]}")
        runs[method] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"{method}: {runs[method]['articles_per_s']:.1f} articles/s", flush=True)
        out.mkdir(parents=True, exist_ok=True)  # kept as they come: a later stage may fail
        (out / "bench_infer.runs.json").write_text(json.dumps(runs, indent=2))
    scored = args.score_methods.split(",") if args.score_methods else chosen
    report = {"runs": runs, "kernels": {m: kernels_used(args.model, m)
                                        for m in dict.fromkeys(chosen + scored)
                                        if split_method(m)[1] != "hf_pipeline"}}
    if "scores" not in skip:
        report["test_scores"] = test_scores(
            args.model, args.config,
            [m for m in scored if split_method(m)[1] != "hf_pipeline"], args.early_exit)
    work = Path(args.out) / "work"
    work.mkdir(parents=True, exist_ok=True)
    if "streaming" not in skip:
        report["streaming"] = streaming(args.model, work)
    if "service" not in skip:
        report["service"] = service_throughput(args.model)
    text = render(report)
    print(text)
    (out / "bench_infer.md").write_text(text + "\n")
    for run in runs.values():
        run.pop("labels", None)
    (out / "bench_infer.json").write_text(json.dumps(report, indent=2, default=str))
    return 0


def render(report: dict) -> str:
    from train.metrics import CPU_FLAGS, environment

    runs = report["runs"]
    lines = []
    if runs:
        first = next(iter(runs.values()))
        lines += [f"Inference on {first['articles']} real articles (full length)", "",
                  "| method | backend | articles/s | vs pipeline | windows read | p50 ms | "
                  "p95 ms | peak RSS MiB | same label as fp32 |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for name, run in runs.items():
            device, backend = split_method(name)[:2]
            prefix = "" if device == "cpu" else f"{device}/"
            # Each device's methods are compared with that device's pipeline and fp32.
            base = runs.get(f"{prefix}hf_pipeline", {}).get("articles_per_s", float("nan"))
            fp32 = next((r for m, r in runs.items() if m.startswith(f"{prefix}torch-fp32")),
                        run)["labels"]
            same = np.mean([a == b for a, b in zip(run["labels"], fp32)])
            agree = "" if backend == "hf_pipeline" else f"{same:.4f}"
            lines.append(f"| {name} | {run.get('backend') or ''} | {run['articles_per_s']:.1f} | "
                         f"{run['articles_per_s'] / base:.2f}x | {run.get('windows_read') or ''} | "
                         f"{run['p50_ms']:.0f} | {run['p95_ms']:.0f} | {run['peak_rss_mib']:.0f} "
                         f"| {agree} |")
    if "test_scores" in report:
        lines += ["", "Test split scores (change against torch fp32 in points), mean cosine "
                  "of window embeddings to torch fp32, windows read:", ""]
        ref = next(iter(report["test_scores"].values()))
        for method, tasks in report["test_scores"].items():
            parts = [f"{task} {k} {v:.4f} ({100 * (v - ref[task][k]):+.2f})"
                     for task, scores in tasks.items() if isinstance(scores, dict)
                     for k, v in scores.items()]
            lines.append(f"- {method}: " + "; ".join(parts)
                         + f"; cosine {tasks['cosine_to_fp32']:.4f}; "
                           f"windows {tasks['windows_read']}")
    lines += ["", "`+exit`: adaptive reading (an article stops after its first window where "
              "every task is decided with the early-exit confidence); `default`: what "
              "`load_classifier` picks itself; `cuda/...`: on the GPU (compared with the "
              "pipeline on the GPU).", "", "Kernels seen:"]
    lines += [f"- {m}: {', '.join(k)}" for m, k in report["kernels"].items()]
    if "streaming" in report or "service" in report:
        lines += ["", "Streaming and the service ran with their defaults (what users get)."]
    if "streaming" in report:
        lines += ["", "| streamed lines | seconds | articles/s | peak RSS MiB | lines out |",
                  "|---|---|---|---|---|"]
        lines += [f"| {n} | {r['seconds']:.0f} | {r['articles_per_s']:.0f} | "
                  f"{r['peak_rss_mib']:.0f} | {r['lines_out']} |"
                  for n, r in report["streaming"].items()]
    if "service" in report:
        lines += ["", "| concurrent clients | requests/s | requests | errors |",
                  "|---|---|---|---|"]
        lines += [f"| {c} | {r['requests_per_s']:.1f} | {r['requests']} | {r['errors']} |"
                  for c, r in report["service"].items()]
    env = environment()
    from model.runtime.devices import native_bf16

    capped = os.environ.get("ONEDNN_MAX_CPU_ISA")
    lines += ["", f"machine: {env['cpu']}, {env['cpu_count']} CPUs, flags "
              f"{' '.join(env['cpu_flags']) or 'none of ' + ', '.join(CPU_FLAGS)}"
              + (f", oneDNN capped at {capped}" if capped else "")
              + f", torch sees native bf16: {native_bf16('cpu')}; torch {env['torch']}; "
              "runs: median of repeats, each method in its own process"]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
