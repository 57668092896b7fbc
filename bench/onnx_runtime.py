"""Does ONNX Runtime pay off on this CPU? The encoder alone, torch against ONNX Runtime.

    pip install 'article-classifier[onnx]'
    python -m bench.onnx_runtime --model runs/bbc_topic/model

The artifact's encoder (token windows -> mean-pooled window vectors, the part that costs
all the time) is exported to ONNX, fused with ONNX Runtime's transformer optimizer and
quantized to int8 (dynamic, per channel). Every variant encodes the same windows of the
same real articles that `bench.infer` reads (the first --articles of its 1,000), in the
same length-sorted batches; throughput is articles/s (median of --repeats), and agreement
is the cosine of each window vector with torch fp32's. Writes bench/results/bench_onnx.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bench.infer import bench_articles
from model.runtime.loading import load_classifier
from train.metrics import environment


def export(network, folder: Path) -> dict[str, Path]:
    """fp32 ONNX of `embed_chunks`, its fused form, and the fused form in int8."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.optimizer import optimize_model

    class Encoder(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, input_ids, attention_mask):
            return self.net.embed_chunks(input_ids, attention_mask)

    paths = {name: folder / f"{name}.onnx" for name in ("fp32", "fp32_fused", "int8_fused")}
    ids = torch.randint(1000, 2000, (2, 32))
    axes = {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"},
            "embedding": {0: "batch"}}
    torch.onnx.export(Encoder(network).eval(), (ids, torch.ones_like(ids)), str(paths["fp32"]),
                      input_names=["input_ids", "attention_mask"], output_names=["embedding"],
                      dynamic_axes=axes, opset_version=17, dynamo=False)
    cfg = network.encoder.config
    optimize_model(str(paths["fp32"]), model_type="bert", num_heads=cfg.num_attention_heads,
                   hidden_size=cfg.hidden_size).save_model_to_file(str(paths["fp32_fused"]))
    quantize_dynamic(str(paths["fp32_fused"]), str(paths["int8_fused"]),
                     weight_type=QuantType.QInt8, per_channel=True,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    return paths


def timed(encode, batches, repeats: int) -> tuple[list[float], np.ndarray]:
    encode(batches[0])  # warm-up: kernels are chosen on the first call
    runs, out = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        out = np.concatenate([encode(b) for b in batches])
        runs.append(time.perf_counter() - started)
    return runs, out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="runs/bbc_topic/model")
    parser.add_argument("--articles", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", default="bench/results")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    import onnxruntime as ort

    out = Path(args.out)
    (out / "onnx").mkdir(parents=True, exist_ok=True)
    clf = load_classifier(args.model, precision="fp32", device="cpu")
    texts = bench_articles(args.articles)
    # The very batches `ArticleClassifier.logits` feeds the encoder.
    batches = [(b["input_ids"].numpy(), b["attention_mask"].numpy())
               for _, b in clf.window_batches(clf.encode(texts), args.batch_size)]
    paths = export(clf.network, out / "onnx")

    def torch_encoder(bf16: bool):
        def encode(batch):
            with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
                ids, mask = (torch.from_numpy(x) for x in batch)
                return clf.network.embed_chunks(ids, mask).float().numpy()
        return encode

    def ort_encoder(path: Path):
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return lambda b: session.run(None, {"input_ids": b[0], "attention_mask": b[1]})[0]

    variants = {"torch fp32": torch_encoder(False), "torch bf16": torch_encoder(True),
                **{f"onnxruntime {name}": ort_encoder(p) for name, p in paths.items()}}
    results, reference = {}, None
    for name, encode in variants.items():
        runs, vectors = timed(encode, batches, args.repeats)
        reference = vectors if reference is None else reference
        cosine = (vectors * reference).sum(1) / (np.linalg.norm(vectors, axis=1)
                                                 * np.linalg.norm(reference, axis=1))
        results[name] = {"articles_per_s": len(texts) / statistics.median(runs), "runs_s": runs,
                         "cosine_min": float(cosine.min()), "cosine_mean": float(cosine.mean())}
        print(f"{name}: {results[name]['articles_per_s']:.1f} articles/s", flush=True)
    env = environment()
    lines = [f"Encoder only, {sum(len(b[0]) for b in batches)} windows of {len(texts)} articles, "
             f"onnxruntime {ort.__version__}", "",
             "| variant | articles/s | vs torch fp32 | cosine to fp32 (min / mean) |",
             "|---|---|---|---|"]
    base = results["torch fp32"]["articles_per_s"]
    lines += [f"| {n} | {r['articles_per_s']:.1f} | {r['articles_per_s'] / base:.2f}x | "
              f"{r['cosine_min']:.4f} / {r['cosine_mean']:.4f} |" for n, r in results.items()]
    lines.append(f"\nmachine: {env['cpu']}, {env['cpu_count']} CPUs, torch {env['torch']}; "
                 f"median of {args.repeats}")
    report = "\n".join(lines)
    print(report)
    (out / "bench_onnx.md").write_text(report + "\n")
    (out / "bench_onnx.json").write_text(json.dumps({"results": results, "environment": env},
                                                    indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
