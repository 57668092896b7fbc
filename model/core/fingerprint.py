"""The fingerprint of an encoder held in memory: what two caches key on (the int8 graph,
model/runtime/backends.py; the frozen training embeddings, train/embedding_cache.py), so
that both agree on when two encoders compute the same thing."""

from __future__ import annotations

import hashlib
import json

import torch

# Config entries that say where an encoder came from or which library wrote it, not what
# it computes: the same encoder read from two folders has one fingerprint.
PROVENANCE = frozenset({"_name_or_path", "transformers_version", "architectures",
                        "torch_dtype", "dtype"})


def encoder_config(encoder: torch.nn.Module) -> dict:
    """The encoder's config entries that shape its output (activation, layer-norm epsilon,
    position embeddings...: a config change alters the output without changing a weight)."""
    config = json.loads(encoder.config.to_json_string(use_diff=False))
    return {k: v for k, v in sorted(config.items())
            if not k.startswith("_") and k not in PROVENANCE}


def encoder_fingerprint(encoder: torch.nn.Module, below: int | None = None) -> str:
    """A sha256 of `encoder`'s config (`encoder_config`) and every parameter and buffer:
    name, dtype, shape and raw bytes (an encoder held in bf16 computes other vectors than
    the same values in fp32), in name order. With `below`, only what the states after
    layer `below` depend on: the layers from `below` up are left out."""
    digest = hashlib.sha256(json.dumps(encoder_config(encoder), sort_keys=True,
                                       default=str).encode())
    tensors = dict(encoder.named_parameters())
    tensors.update(encoder.named_buffers())  # position ids and the like count too
    for name in sorted(tensors):
        if below is not None and _layer_index(name) is not None and _layer_index(name) >= below:
            continue
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(json.dumps([name, str(tensor.dtype), list(tensor.shape)]).encode())
        # Raw bytes through a uint8 view: numpy has no bfloat16.
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _layer_index(name: str) -> int | None:
    """The transformer layer a BERT-like parameter belongs to (`encoder.layer.3.` -> 3)."""
    parts = name.split(".")
    for i, part in enumerate(parts[:-1]):
        if part == "layer" and parts[i + 1].isdigit():
            return int(parts[i + 1])
    return None
