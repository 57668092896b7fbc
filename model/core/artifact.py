"""Save and load a model artifact: one folder that answers every task on its own.

Layout:
    config.json        format version, ModelConfig, the encoder's own config, the tasks
                       (labels, thresholds) and the evaluation metrics
    model.safetensors  all weights, encoder and heads (never pickle)
    tokenizer files    as written by the tokenizer's `save_pretrained`
    calibration.safetensors  token windows of training articles that the int8 backend
                       is calibrated on (model/runtime/backends.py)
    domain.safetensors the training articles' embeddings that say how typical a new
                       article is (model/core/domain.py); older artifacts have none
    README.md          the model card

Folders are written under a temporary name beside their place and swapped in
(model/storage/folders.py), so a crash never leaves a half-written artifact behind and a
failed save never loses the artifact it was replacing.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model
from transformers import AutoConfig, AutoModel, AutoTokenizer
from transformers.utils import logging as hf_logging

from model.core.config import ModelConfig, dataclass_from_dict, resolve_encoder
from model.core.domain import DomainReference, load_domain, save_domain
from model.core.lexical import load_lexical, save_lexical
from model.core.network import ArticleClassifierNetwork
from model.core.tasks import TaskSpec
from model.storage.folders import replace_folder

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CALIBRATION_NAME = "calibration.safetensors"
# 2: ModelConfig.text_prefix, TaskSpec.lexical_weight and the lexical.* files.
# 3: TaskSpec.calibration and TaskSpec.heldout, and domain.safetensors (older artifacts
# load without them: served uncalibrated, no domain entry).
FORMAT_VERSION = 3
PICKLE_WEIGHTS = ("pytorch_model.bin", "model.bin", "model.pt", "model.pth")


class ArtifactError(RuntimeError):
    """An artifact folder that cannot be loaded, with the reason."""


def load_encoder(name: str):
    """A pretrained encoder and its tokenizer from a model id or a local folder."""
    source = resolve_encoder(name)
    verbosity = hf_logging.get_verbosity()
    # The load report would list the checkpoint's unused pooler weights as "UNEXPECTED".
    hf_logging.set_verbosity_error()
    try:
        encoder = _without_pooler(AutoModel.from_pretrained, source)
    finally:
        hf_logging.set_verbosity(verbosity)
    return encoder, AutoTokenizer.from_pretrained(source)


def _without_pooler(make, *args):
    """BERT-like models carry a pooler we never use; leaving it out keeps every parameter
    in the loss, which distributed training requires."""
    try:
        return make(*args, add_pooling_layer=False)
    except TypeError:
        return make(*args)


def build_network(config: ModelConfig, tasks: list[TaskSpec]):
    """A fresh network on top of the pretrained encoder named in `config`, and its tokenizer."""
    encoder, tokenizer = load_encoder(config.encoder)
    return ArticleClassifierNetwork(encoder, tasks, config), tokenizer


def save_artifact(path: str | os.PathLike, network: ArticleClassifierNetwork, tokenizer,
                  metrics: dict | None = None, card_extra: str = "",
                  lexical: dict | None = None,
                  calibration: list[list[int]] | None = None,
                  domain: DomainReference | None = None) -> Path:
    """Write `network`, `tokenizer`, the tasks' `lexical` models (if any), the int8
    `calibration` windows (token ids, model/runtime/backends.py) and the `domain` reference
    (model/core/domain.py) as an artifact folder at `path` (atomically)."""
    path = Path(path)
    # Written beside `path` and swapped in: a failure, even of the final rename, leaves an
    # existing artifact as it was (model/storage/folders.py).
    with replace_folder(path) as tmp:
        document = {
            "format_version": FORMAT_VERSION,
            "model": asdict(network.model_config),
            "encoder_config": network.encoder.config.to_dict(),
            "tasks": [asdict(t) for t in network.tasks],
            "metrics": metrics or {},
        }
        (tmp / CONFIG_NAME).write_text(json.dumps(document, indent=2, default=str))
        save_model(network, str(tmp / WEIGHTS_NAME))
        tokenizer.save_pretrained(str(tmp))
        save_lexical(tmp, lexical or {})
        save_calibration(tmp, calibration or [])
        save_domain(tmp, domain)
        (tmp / "README.md").write_text(model_card(network, metrics or {}, card_extra))
    return path


def record_metrics(path: str | os.PathLike, network: ArticleClassifierNetwork,
                   metrics: dict) -> None:
    """Replace the metrics of a saved artifact (config.json and its model card): for
    scores measured on the saved model itself, such as those of the backend it serves."""
    path = Path(path)
    document = read_artifact_config(path)
    document["metrics"] = metrics
    for name, text in ((CONFIG_NAME, json.dumps(document, indent=2, default=str)),
                       ("README.md", model_card(network, metrics))):
        tmp = path / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(path / name)


def read_artifact_config(path: str | os.PathLike) -> dict:
    """The artifact's config.json, checked for a known format version."""
    path = Path(path)
    config_file = path / CONFIG_NAME
    if not path.is_dir():
        raise ArtifactError(f"{path}: no such model folder")
    if not config_file.is_file():
        raise ArtifactError(f"{path}: not a model artifact (no {CONFIG_NAME})")
    try:
        document = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ArtifactError(f"{config_file}: unreadable JSON ({err})") from err
    version = document.get("format_version")
    if not isinstance(version, int) or "tasks" not in document:
        raise ArtifactError(f"{config_file}: not an article-classifier config")
    if version > FORMAT_VERSION:
        raise ArtifactError(f"{config_file}: format version {version} is newer than this "
                            f"library reads ({FORMAT_VERSION}); upgrade article-classifier")
    return document


def load_artifact(path: str | os.PathLike, allow_pickle: bool = False):
    """Load an artifact folder. Returns `(network, tokenizer, document)`.

    Nothing is fetched from the network: the encoder is rebuilt from the config saved in
    the folder and filled from `model.safetensors`.
    """
    path = Path(path)
    document = read_artifact_config(path)
    model = dict(document["model"])
    if document["format_version"] < 2:
        # Format 1 had no prefix: keep it that way, whatever a registry entry says now.
        model.setdefault("text_prefix", "")
    config = dataclass_from_dict(ModelConfig, model, "model config")
    try:
        tasks = [TaskSpec(**t) for t in document["tasks"]]
    except (TypeError, ValueError) as err:  # a hand-edited or damaged config.json
        raise ArtifactError(f"{Path(path) / CONFIG_NAME}: {err}") from err
    encoder_config = dict(document["encoder_config"])
    encoder = _without_pooler(AutoModel.from_config,
                              AutoConfig.for_model(encoder_config.pop("model_type"),
                                                   **encoder_config))
    network = ArticleClassifierNetwork(encoder, tasks, config)
    _load_weights(network, path, allow_pickle)
    network.eval()
    return network, load_tokenizer(path), document


def load_tokenizer(path: str | os.PathLike):
    """The tokenizer saved in an artifact folder.

    transformers (5.x) looks for a Mistral tokenizer by reading the `config.json` beside the
    tokenizer files; an artifact's config.json is this project's, with no `model_type`, so a
    fast tokenizer without its own class (the XLM-R one of multilingual-e5-small) was taken
    for a Mistral one and a warning of "incorrect regex pattern" printed. Nothing was wrong:
    the token ids equal those of `tokenizers.Tokenizer.from_file` on the same tokenizer.json
    in all six SemEval languages, while the proposed "fix" would change them. So the check is
    declined explicitly."""
    return AutoTokenizer.from_pretrained(str(path), fix_mistral_regex=False)


def load_lexical_models(path: str | os.PathLike, tasks: list[TaskSpec]) -> dict:
    """The lexical models of an artifact, checked against the tasks that use them."""
    try:
        models = load_lexical(Path(path))
    except ValueError as err:
        raise ArtifactError(str(err)) from err
    for task in tasks:
        if task.lexical_weight is None:
            continue
        model = models.get(task.name)
        if model is None:
            raise ArtifactError(f"{path}: task {task.name!r} mixes in a lexical model, but "
                                "none is stored (lexical.safetensors)")
        if model.task_type != task.type or model.coef.shape[0] != len(task.labels):
            raise ArtifactError(f"{path}: the lexical model of task {task.name!r} "
                                f"({model.task_type}, {model.coef.shape[0]} labels) does not "
                                f"fit the task ({task.type}, {len(task.labels)} labels)")
    return models


def load_domain_reference(path: str | os.PathLike) -> DomainReference | None:
    """The artifact's domain reference (model/core/domain.py), or None for an artifact
    saved before it was stored (its predictions carry no `domain`)."""
    try:
        return load_domain(Path(path))
    except ValueError as err:
        raise ArtifactError(str(err)) from err


def _load_weights(network, path: Path, allow_pickle: bool) -> None:
    weights = path / WEIGHTS_NAME
    if weights.is_file():
        try:
            missing, unexpected = load_model(network, str(weights), strict=False)
        except (SafetensorError, OSError, RuntimeError) as err:
            raise ArtifactError(f"{weights}: corrupted or incompatible weights ({err})") from err
        if missing or unexpected:
            raise ArtifactError(f"{weights}: weights do not match the config "
                                f"(missing {sorted(missing)[:5]}, "
                                f"unexpected {sorted(unexpected)[:5]})")
        return
    pickled = [path / name for name in PICKLE_WEIGHTS if (path / name).is_file()]
    if not pickled:
        raise ArtifactError(f"{path}: no {WEIGHTS_NAME} in the model folder")
    if not allow_pickle:
        raise ArtifactError(f"{pickled[0]}: pickle weights are refused because loading them "
                            "can run arbitrary code; convert to safetensors, or pass "
                            "allow_pickle=True (--allow-pickle) if you trust the file")
    import torch

    state = torch.load(pickled[0], map_location="cpu", weights_only=False)
    network.load_state_dict(state)


def model_card(network: ArticleClassifierNetwork, metrics: dict, extra: str = "") -> str:
    """A short model card: what the model does, how to use it, how well it did."""
    cfg = network.model_config
    lines = ["# Article classifier", "",
             f"Encoder: `{cfg.encoder}`; windows of {cfg.max_length} tokens (stride "
             f"{cfg.stride}, up to {cfg.max_chunks} per article), pooled by `{cfg.pooling}`.",
             "", "## Tasks", ""]
    for task in network.tasks:
        mixed = ("" if task.lexical_weight is None else
                 f"; mixed with a TF-IDF lexical model, weight {task.lexical_weight}")
        lines.append(f"- `{task.name}` ({task.type}{mixed}): {', '.join(task.labels)}")
    lines += ["", "## Use", "", "```python", "from model import load_classifier",
              "clf = load_classifier('PATH/TO/THIS/FOLDER')", "clf.predict('Article text ...')",
              "```", "", "```bash", "article-classifier predict PATH/TO/THIS/FOLDER "
              "articles.jsonl --output predictions.jsonl", "```", ""]
    if metrics:
        lines += ["## Evaluation", ""]
        if "test_precision" in metrics:
            paths = ", ".join(metrics.get("test_by_precision", {})) or metrics["test_precision"]
            lines += [f"`test.*` was measured in {metrics['test_precision']} on "
                      f"{metrics.get('test_device', 'cpu')}; `test_by_precision.*` repeats "
                      f"the headline scores for each path measured ({paths}). "
                      "On a CPU `auto` serves the int8 OpenVINO backend (`openvino-int8`), "
                      "else torch in bf16 where the device runs it natively, fp32 on other "
                      "CPUs and fp16 on older GPUs.", ""]
        for key, value in _flat_numbers(metrics):
            lines.append(f"- {key}: {value:.4f}" if isinstance(value, float)
                         else f"- {key}: {value}")
        lines.append("")
    if extra:
        lines += [extra, ""]
    return "\n".join(lines)


def _flat_numbers(metrics: dict, prefix: str = ""):
    """Headline numbers of a metrics dict (per-class tables are left to report.md)."""
    for key, value in metrics.items():
        if isinstance(value, dict) and key not in ("per_class", "per_label"):
            yield from _flat_numbers(value, f"{prefix}{key}.")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            yield f"{prefix}{key}", value


def save_calibration(folder: str | os.PathLike, windows: list[list[int]]) -> None:
    """Write `windows` as `calibration.safetensors`: padded token ids and lengths."""
    from safetensors.numpy import save_file

    if not windows:
        return
    lengths = np.array([len(w) for w in windows], dtype=np.int32)
    ids = np.zeros((len(windows), int(lengths.max())), dtype=np.int32)
    for row, window in zip(ids, windows):
        row[:len(window)] = window
    save_file({"input_ids": ids, "lengths": lengths}, str(Path(folder) / CALIBRATION_NAME))


def load_calibration(folder: str | os.PathLike) -> list[list[int]] | None:
    """The artifact's calibration windows, or None where it has none."""
    from safetensors.numpy import load_file

    path = Path(folder) / CALIBRATION_NAME
    if not path.is_file():
        return None
    data = load_file(str(path))
    return [row[:n].tolist() for row, n in zip(data["input_ids"], data["lengths"])]
