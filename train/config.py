"""Run configuration: YAML files in configs/ map one to one onto these dataclasses.

    model:     ModelConfig (saved inside the artifact; see model/core/config.py)
    data:      DataConfig, shared by every task
    tasks:     a list of TaskConfig, each with its own DatasetConfig
    training:  TrainingConfig

`--set section.key=value` overrides any field (`--set tasks.0.dataset.path=x.jsonl`).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import yaml

from model.core.calibration import METHODS as CALIBRATION_METHODS
from model.core.config import ModelConfig, dataclass_from_dict
from model.core.tasks import SINGLE_LABEL, TASK_TYPES


@dataclass
class DatasetConfig:
    """Where one task's labelled articles come from.

    Attributes:
        format: a loader name: bbc, jsonl, csv, text_folders or hf (see train/data.py).
        path: file or folder; relative paths are read from `data.data_dir` first, then
            from the working directory.
        text_field / title_field / label_field / id_field: column names (jsonl, csv, hf).
        labels: the allowed labels in a fixed order; by default, those seen in the data.
        hf_name / hf_config / hf_split: for `hf`, the `datasets.load_dataset` arguments.
        encoding_fallback: decode text files that are not UTF-8 with this instead of
            reporting them as bad records (e.g. latin-1).
        split_field: a column naming each record's split (train / dev|validation / test);
            records then keep it instead of a random split.
        keep_fields: columns carried along with each example (e.g. source, lang).
        languages: for multilingual sets (semeval2023), the languages to keep.
        fold: for sets published with folds (gvfc 0-4, narrative_frames 1-5), which one.
    """

    format: str = "bbc"
    path: str | None = None
    text_field: str = "text"
    title_field: str | None = "title"
    label_field: str = "label"
    id_field: str | None = "id"
    labels: list[str] | None = None
    hf_name: str | None = None
    hf_config: str | None = None
    hf_split: str = "train"
    encoding_fallback: str | None = None
    split_field: str | None = None
    keep_fields: list[str] = field(default_factory=list)
    languages: list[str] | None = None
    fold: int | None = None


@dataclass
class TaskConfig:
    """One head and its data.

    Attributes:
        name: the key of this task in every prediction (e.g. `topic`).
        type: single_label (softmax) or multi_label (sigmoid).
        dataset: where its articles come from.
        class_weights: `balanced` weighs the loss by inverse class frequency (for
            multi-label: positives by negatives/positives); none if null.
        threshold_tuning: multi-label decision thresholds tuned on the validation split,
            `per_label` or one `global` threshold, or `none` (0.5).
        lexical: add a lexical component (TF-IDF + logistic regression) whose
            probabilities are mixed with the network's (train/frozen.py).
        lexical_weight: its share in the mix; null chooses it on held-out articles.
        calibration: how served probabilities are calibrated on held-out articles
            (model/core/calibration.py): `auto` picks among none, temperature, platt and
            isotonic by cross-validated Brier score; or name one of them.
    """

    name: str = "topic"
    type: str = SINGLE_LABEL
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    class_weights: str | None = None
    threshold_tuning: str = "per_label"
    lexical: bool = False
    lexical_weight: float | None = None
    calibration: str = "auto"

    def __post_init__(self):
        if isinstance(self.dataset, dict):
            self.dataset = dataclass_from_dict(DatasetConfig, self.dataset,
                                               f"tasks[{self.name}].dataset")
        if self.type not in TASK_TYPES:
            raise ValueError(f"tasks[{self.name}].type must be one of {TASK_TYPES}")
        if self.class_weights not in (None, "balanced"):
            raise ValueError(f"tasks[{self.name}].class_weights must be balanced or null")
        if self.threshold_tuning not in ("per_label", "global", "none"):
            raise ValueError(f"tasks[{self.name}].threshold_tuning must be per_label, global "
                             "or none")
        if self.lexical_weight is not None and not 0.0 <= self.lexical_weight <= 1.0:
            raise ValueError(f"tasks[{self.name}].lexical_weight must be in [0, 1] or null")
        if self.calibration not in ("auto", *CALIBRATION_METHODS):
            raise ValueError(f"tasks[{self.name}].calibration must be auto or one of "
                             f"{CALIBRATION_METHODS}, got {self.calibration!r}")
        if self.lexical_weight is not None and not self.lexical:
            raise ValueError(f"tasks[{self.name}].lexical_weight needs lexical: true")


@dataclass
class DataConfig:
    """Splitting and cleaning rules shared by all tasks.

    Attributes:
        data_dir: folder that relative dataset paths are read from; defaults to
            $ARTICLE_DATA_DIR, else ../shared/data when it exists.
        max_samples: keep at most this many articles per task (quick runs, tests).
        validation_fraction / test_fraction: held-out shares, stratified by label.
        split_seed: seed of the split (independent of the training seed).
        deduplicate: drop exact duplicate texts before splitting, so no test article
            is also a training article.
        on_bad_record: `skip` (count and report) or `fail` (stop at the first).
        cv_folds / cv_fold: k-fold cross-validation: the test split is fold `cv_fold` of
            `cv_folds` stratified folds, and validation is drawn from the rest.
    """

    data_dir: str | None = None
    max_samples: int | None = None
    validation_fraction: float = 0.15
    test_fraction: float = 0.15
    split_seed: int = 42
    deduplicate: bool = True
    on_bad_record: str = "skip"
    cv_folds: int | None = None
    cv_fold: int = 0

    def __post_init__(self):
        if self.on_bad_record not in ("skip", "fail"):
            raise ValueError("data.on_bad_record must be skip or fail")
        if not (0 < self.validation_fraction < 1 and 0 < self.test_fraction < 1
                and self.validation_fraction + self.test_fraction < 1):
            raise ValueError("data.validation_fraction and data.test_fraction must be in "
                             "(0, 1) and sum to less than 1")
        if self.cv_folds is not None and not 0 <= self.cv_fold < self.cv_folds:
            raise ValueError(f"data.cv_fold must be in [0, {self.cv_folds}), got {self.cv_fold}")

    def resolved_data_dir(self) -> Path | None:
        for candidate in (self.data_dir, os.environ.get("ARTICLE_DATA_DIR"), "../shared/data"):
            if candidate and Path(candidate).is_dir():
                return Path(candidate)
        return None


MODES = ("finetune", "frozen", "top")


@dataclass
class TopConfig:
    """Top-layer training (`training.mode: top`, train/top_layers.py).

    Attributes:
        layers: how many of the encoder's top layers are trained; the states below them
            are computed once and cached.
        epochs: epochs of each cross-fitting run; the best epoch by held-out score is kept.
        batch_size: articles per step.
        learning_rate: of the top layer; each layer below gets `layer_decay` times the
            rate of the one above it.
        head_learning_rate: of the heads (started from the frozen probe).
        warmup_ratio: share of the steps the learning rate warms up over.
        windows: windows of each article read per step, drawn at random.
        folds: cross-fitting folds: the top layers are trained once per fold, and the
            served ones are the mean of the fold models.
        wise: the shares of the tuned weights tried in `alpha x tuned + (1 - alpha) x
            start` (WiSE-FT); the best on held-out articles is served.
    """

    layers: int = 2
    epochs: int = 3
    batch_size: int = 8
    learning_rate: float = 5e-5
    head_learning_rate: float = 1e-4
    layer_decay: float = 0.8
    warmup_ratio: float = 0.1
    windows: int = 2
    folds: int = 3
    wise: list[float] = field(default_factory=lambda: [0.5, 1.0])

    def __post_init__(self):
        for name in ("layers", "epochs", "batch_size", "windows"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"training.top.{name} must be at least 1")
        if self.folds < 2:
            raise ValueError("training.top.folds must be at least 2")
        if not 0 < self.layer_decay <= 1:
            raise ValueError("training.top.layer_decay must be in (0, 1]")
        if not self.wise or any(not 0 < float(a) <= 1 for a in self.wise):
            raise ValueError("training.top.wise must list shares in (0, 1]")
        self.wise = [float(a) for a in self.wise]


@dataclass
class TrainingConfig:
    """Optimisation and output. Passed on to Hugging Face `TrainingArguments`.

    Attributes:
        output_dir: the run folder (checkpoints/, model/, metrics.json, report.md, plots).
        epochs / batch_size / learning_rate / weight_decay / warmup_ratio: as usual;
            `batch_size` counts articles per device.
        eval_batch_size: token windows per forward pass at evaluation.
        seed: seeds weights init, shuffling and window draws.
        precision: `auto` (bf16 where the CPU or GPU runs it natively, else fp32), fp32,
            bf16 or fp16 (GPU only).
        eval_strategy: when to evaluate and checkpoint: `epoch` or `steps`.
        eval_steps: with `steps`, how often.
        save_total_limit: checkpoints kept (the best one is always kept).
        logging_steps: how often the loss is logged.
        threads: CPU threads for torch; null lets torch decide.
        task_temperature: how batches mix the tasks: task t is drawn in proportion to
            n_t ** (1/T), n_t its training examples. 1 = proportional to size (a plain
            shuffle of all examples); larger values move towards equal shares.
        mode: `finetune` trains the encoder with the heads; `frozen` keeps the encoder as
            it is, embeds every window once and fits the heads by logistic regression
            (train/frozen.py): seconds instead of minutes once embedded; `top` does the
            same, then trains the encoder's top layers and the heads on cached lower-layer
            states (train/top_layers.py, settings in `top`).
        top: the settings of `mode: top`.
        embedding_cache: where frozen mode keeps window embeddings (default: the user
            cache, $ARTICLE_CLASSIFIER_CACHE/embeddings).
        check_served: after saving, load the model as `auto` serves it here and, when
            that is a compiled backend (int8 on a CPU), score the test split with it too
            (`test_by_precision`); this also builds the int8 graph once (about 15 s).
        cv_folds: folds of the cross-validation that frozen mode and lexical components
            choose their settings by.
        frozen_c_grid: inverse regularisation strengths tried for frozen heads (features
            standardised).
    """

    output_dir: str = "runs/bbc_topic"
    epochs: float = 3.0
    batch_size: int = 16
    eval_batch_size: int = 64
    learning_rate: float = 1e-4
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    seed: int = 42
    precision: str = "auto"
    eval_strategy: str = "epoch"
    eval_steps: int = 100
    save_total_limit: int = 2
    logging_steps: int = 20
    threads: int | None = None
    task_temperature: float = 1.0
    mode: str = "finetune"
    embedding_cache: str | None = None
    check_served: bool = True
    cv_folds: int = 5
    frozen_c_grid: list[float] = field(default_factory=lambda: [0.001, 0.003, 0.01, 0.03,
                                                                0.1, 0.3])
    top: TopConfig = field(default_factory=TopConfig)

    def __post_init__(self):
        if isinstance(self.top, dict):
            self.top = dataclass_from_dict(TopConfig, self.top, "training.top")
        if self.mode not in MODES:
            raise ValueError(f"training.mode must be one of {MODES}, got {self.mode!r}")
        if self.cv_folds < 2:
            raise ValueError("training.cv_folds must be at least 2")
        if not self.frozen_c_grid or any(float(c) <= 0 for c in self.frozen_c_grid):
            raise ValueError("training.frozen_c_grid must list positive numbers")
        self.frozen_c_grid = [float(c) for c in self.frozen_c_grid]
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise ValueError("training.precision must be auto, fp32, bf16 or fp16")
        if self.eval_strategy not in ("epoch", "steps"):
            raise ValueError("training.eval_strategy must be epoch or steps")


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    tasks: list[TaskConfig] = field(default_factory=lambda: [TaskConfig()])
    training: TrainingConfig = field(default_factory=TrainingConfig)

    def __post_init__(self):
        names = [t.name for t in self.tasks]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"tasks need unique names, got {names}")

    def to_dict(self) -> dict:
        return asdict(self)


def load_run_config(path: str | os.PathLike | None, overrides: list[str] = ()) -> RunConfig:
    """Read a YAML run config, apply `key=value` overrides, and validate it."""
    raw = {}
    if path is not None:
        text = Path(path).read_text()
        raw = yaml.safe_load(text) or {}
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: a run config must be a mapping")
    for item in overrides:
        apply_override(raw, item)
    return run_config_from_dict(raw, str(path or "config"))


def run_config_from_dict(raw: dict, where: str = "config") -> RunConfig:
    unknown = sorted(set(raw) - {f.name for f in fields(RunConfig)})
    if unknown:
        raise ValueError(f"{where}: unknown section(s) {unknown}")
    tasks = raw.get("tasks") or [{}]
    if not isinstance(tasks, list):
        raise ValueError(f"{where}: tasks must be a list")
    return RunConfig(
        model=dataclass_from_dict(ModelConfig, raw.get("model"), "model"),
        data=dataclass_from_dict(DataConfig, raw.get("data"), "data"),
        tasks=[dataclass_from_dict(TaskConfig, t, f"tasks[{i}]") for i, t in enumerate(tasks)],
        training=dataclass_from_dict(TrainingConfig, raw.get("training"), "training"),
    )


def apply_override(raw: dict, item: str) -> None:
    """Apply one `a.b.c=value` override to a nested dict; the value is parsed as YAML."""
    if "=" not in item:
        raise ValueError(f"--set expects key=value, got {item!r}")
    key, value = item.split("=", 1)
    parts = key.strip().split(".")
    node = raw
    for i, part in enumerate(parts[:-1]):
        nxt = parts[i + 1]
        if isinstance(node, list):
            node = node[_list_index(node, part, key)]
            continue
        if part not in node or node[part] is None:
            node[part] = [{}] if nxt.isdigit() else {}
        node = node[part]
    last = parts[-1]
    if isinstance(node, list):
        node[_list_index(node, last, key)] = yaml.safe_load(value)
    else:
        node[last] = yaml.safe_load(value)


def _list_index(node: list, part: str, key: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ValueError(f"--set {key}: {part!r} is not an index of a list of {len(node)}")
    return int(part)
