"""The methods `bench.infer` compares, by name, and how each is loaded."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np

# `[device/]backend-precision[+exit][:N]`: what runs the encoder, in which precision, `+exit`
# for adaptive reading (the artifact's `model.early_exit`, else --early-exit), and `:N` to
# read at most N windows of an article (`load_classifier(max_chunks=N)`).
# `torch-int8-dynamic` is PyTorch's dynamic int8 quantization, which earlier versions
# served: kept here as a baseline only. `default` is what `load_classifier` picks itself.
CPU_METHODS = ("hf_pipeline", "torch-fp32", "torch-bf16", "torch-int8-dynamic",
               "ctranslate2-int8", "openvino-int8", "default", "default:4")
GPU_METHODS = ("cuda/hf_pipeline", "cuda/torch-fp32", "cuda/torch-bf16", "cuda/torch-fp16")


def methods() -> tuple[str, ...]:
    """The CPU methods (bf16 only where the CPU runs it natively, CTranslate2 where it is
    installed: `pip install -e '.[bench]'`), and the GPU ones where torch sees a CUDA GPU."""
    import torch

    from model.runtime.devices import native_bf16

    cpu = tuple(m for m in CPU_METHODS if ("bf16" not in m or native_bf16("cpu")) and (
        "ctranslate2" not in m or importlib.util.find_spec("ctranslate2")))
    if not torch.cuda.is_available():
        return cpu
    return cpu + tuple(m for m in GPU_METHODS if "bf16" not in m or native_bf16("cuda"))


def split_method(method: str) -> tuple[str, str, str, bool, int | None]:
    """`(device, backend, precision, early exit, max_chunks)` of a method name."""
    device, _, rest = method.rpartition("/")
    rest, _, chunks = rest.partition(":")
    rest, plus, _ = rest.partition("+exit")
    backend, _, precision = rest.partition("-")
    return device or "cpu", backend, precision, bool(plus), int(chunks) if chunks else None


def load_method(model_dir: str, method: str, early_exit: float):
    """The classifier a method names."""
    from model.runtime.loading import load_classifier

    device, backend, precision, exit_, max_chunks = split_method(method)
    if backend == "default":
        return load_classifier(model_dir, quiet=True, max_chunks=max_chunks)
    dynamic = precision == "int8-dynamic"
    base = "torch" if backend == "ctranslate2" else backend
    clf = load_classifier(model_dir, backend=base, quiet=True, device=device, max_chunks=max_chunks,
                          precision="fp32" if base != backend or dynamic else precision or "auto",
                          early_exit="config" if exit_ else None)
    if exit_ and clf.early_exit is None:  # the artifact sets none: the benchmark's own
        clf = clf.with_settings(early_exit=early_exit)
    if backend == "ctranslate2":
        runtime = CTranslate2Encoder(clf)
    elif dynamic:
        runtime = DynamicInt8Encoder(clf.network)
    else:
        return clf
    # The baselines run the encoder through the classifier's own hook for that.
    from model.runtime.classifier import ArticleClassifier

    return ArticleClassifier(clf.network, clf.tokenizer, clf.metadata, clf.lexical,
                             clf.settings, clf.artifact, quiet=True, encoder_runtime=runtime)


class DynamicInt8Encoder:
    """PyTorch's dynamic int8 quantization of the encoder's Linear layers (one activation
    scale per batch, so scores depend on the batch): what earlier versions served."""

    name = "torch-int8-dynamic"

    def __init__(self, network):
        import copy

        import torch

        # A quantized copy: the network (and its fp32 encoder) stays as it was.
        self.encoder = torch.ao.quantization.quantize_dynamic(
            copy.deepcopy(network.encoder), {torch.nn.Linear}, dtype=torch.qint8)

    def token_states(self, input_ids, attention_mask):
        return self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


class CTranslate2Encoder:
    """CTranslate2's int8 encoder in the place of the network's (BERT-family encoders
    only): padding is dropped before the per-token layers, then put back for pooling."""

    name = "ctranslate2-int8"

    def __init__(self, clf):
        import tempfile

        import ctranslate2

        folder = Path(tempfile.mkdtemp(prefix="ct2-"))
        clf.network.encoder.save_pretrained(folder / "hf")
        clf.tokenizer.save_pretrained(folder / "hf")
        ctranslate2.converters.TransformersConverter(str(folder / "hf")).convert(
            str(folder / "ct2"), quantization="int8")
        import torch

        self.model = ctranslate2.Encoder(str(folder / "ct2"), device="cpu", compute_type="int8",
                                         intra_threads=torch.get_num_threads())

    def token_states(self, input_ids, attention_mask):
        import torch

        lengths = attention_mask.sum(1).tolist()
        ids = [row[:n] for row, n in zip(input_ids.tolist(), lengths)]
        states = torch.as_tensor(np.asarray(self.model.forward_batch(ids).last_hidden_state))
        out = states.new_zeros((*input_ids.shape, states.shape[-1]))
        out[:, :states.shape[1]] = states[:, :input_ids.shape[1]]
        return out


def hf_pipeline(model_dir: str, device: str = "cpu"):
    """`pipeline("text-classification")` on a single-head model of the same encoder:
    the artifact's encoder weights in a BertForSequenceClassification-style model, read
    as the pipeline reads (truncated to the encoder's 512 positions, 16 texts a batch)."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, pipeline

    doc = json.loads((Path(model_dir) / "config.json").read_text())
    task = doc["tasks"][0]
    enc = {k: v for k, v in doc["encoder_config"].items() if k not in ("id2label", "label2id")}
    config = AutoConfig.for_model(enc.pop("model_type"), **enc,
                                  id2label=dict(enumerate(task["labels"])))
    model = AutoModelForSequenceClassification.from_config(config).eval()
    prefix = model.base_model_prefix
    weights = {k.replace("encoder.", f"{prefix}.", 1): v for k, v in
               load_file(str(Path(model_dir) / "model.safetensors")).items()
               if k.startswith("encoder.")}
    model.load_state_dict(weights, strict=False)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    classify = pipeline("text-classification", model=model, tokenizer=tokenizer,
                        device=0 if device == "cuda" else -1)

    def predict_many(items):
        return [r["label"] for r in classify(items, truncation=True, max_length=512,
                                             batch_size=16)]

    return predict_many, lambda item: classify(item, truncation=True, max_length=512)
