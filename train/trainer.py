"""Glue between our network and the Hugging Face `Trainer`.

The `Trainer` owns the loop: optimisation, checkpoints, resume, logging, mixed precision,
best-model selection and `torchrun` / `accelerate launch`. We give it a dataset of
tokenised articles, a collator that flattens their windows into one batch, and an
`evaluate` that scores the validation split through the same inference code users run.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, WeightedRandomSampler
from transformers import Trainer, TrainerCallback, TrainingArguments

from model.core.config import ModelConfig
from model.core.tasks import MULTI_LABEL, TaskSpec
from model.core.text import EncodedArticle, pick_training_windows
from model.runtime.classifier import ArticleClassifier
from model.runtime.devices import resolve_device, resolve_precision
from train.config import TrainingConfig
from train.data import multi_hot
from train.metrics import task_metrics


class ArticleDataset(Dataset):
    """Tokenised training articles of every task, each with its task index and target.

    The windows an article shows in a step are drawn from `(seed, epoch, index)` alone,
    not from a generator that advances, so a run resumed from a checkpoint draws what
    the uninterrupted run drew. `EpochCallback` keeps `epoch` current.
    """

    def __init__(self, items: list[tuple[EncodedArticle, int, object]], config: ModelConfig,
                 seed: int):
        self.items = items
        self.config = config
        self.seed = seed
        self.epoch = 0

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        article, task_index, target = self.items[i]
        rng = random.Random(f"{self.seed}:{self.epoch}:{i}")
        keep = pick_training_windows(len(article.windows), self.config.train_max_chunks,
                                     self.config.train_chunk_selection, rng)
        return {"windows": [article.windows[k] for k in keep], "task": task_index,
                "target": target}


class EpochCallback(TrainerCallback):
    """Tells the dataset which epoch begins (also the resumed one after a restart)."""

    def __init__(self, dataset: ArticleDataset):
        self.dataset = dataset

    def on_epoch_begin(self, args, state, control, **kwargs):
        # state.epoch is the fraction of epochs done: 0 at the start, k at the end of
        # epoch k, and restored from the checkpoint on resume.
        self.dataset.epoch = int(state.epoch + 1e-6)


class TaskMixSampler(WeightedRandomSampler):
    """Weighted draws with replacement whose order depends on `(seed, epoch)` only, so a
    resumed run replays the same epoch order."""

    def __init__(self, weights, dataset: ArticleDataset, seed: int):
        super().__init__(weights, num_samples=len(dataset), replacement=True)
        self.dataset = dataset
        self.seed = seed

    def __iter__(self):
        self.generator = torch.Generator().manual_seed(self.seed * 100_003 + self.dataset.epoch)
        return super().__iter__()


class ChunkCollator:
    """Flattens the windows of a batch of articles and pads them to the longest window."""

    def __init__(self, tokenizer, tasks):
        self.tokenizer = tokenizer
        self.tasks = tasks

    def __call__(self, features):
        windows, chunk_article = [], []
        for j, f in enumerate(features):
            windows.extend(f["windows"])
            chunk_article.extend([j] * len(f["windows"]))
        batch = self.tokenizer.pad({"input_ids": windows}, return_tensors="pt")
        task_ids = torch.tensor([f["task"] for f in features], dtype=torch.long)
        targets = {}
        for index, task in enumerate(self.tasks):
            rows = [f["target"] if f["task"] == index else None for f in features]
            if all(r is None for r in rows):
                continue
            if task.type == MULTI_LABEL:
                blank = np.zeros(len(task.labels), dtype=np.float32)
                targets[task.name] = torch.tensor(np.stack([blank if r is None else r
                                                            for r in rows]))
            else:
                targets[task.name] = torch.tensor([-100 if r is None else r for r in rows])
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
                "chunk_article": torch.tensor(chunk_article, dtype=torch.long),
                "task_ids": task_ids, "targets": targets}


class ArticleTrainer(Trainer):
    """`Trainer` whose evaluation runs the real inference path on held-out articles.

    `eval_sets` maps a task name to `(encoded_articles, gold_labels)`; the metric used
    to pick the best checkpoint is the mean over tasks of each task's headline score.
    """

    def __init__(self, *args, eval_sets=None, eval_batch_size=64, task_temperature=1.0,
                 **kwargs):
        super().__init__(*args, **kwargs)
        if isinstance(self.train_dataset, ArticleDataset):
            self.add_callback(EpochCallback(self.train_dataset))
        self.eval_sets = eval_sets or {}
        self.eval_batch_size = eval_batch_size
        self.task_temperature = task_temperature

    def _get_train_sampler(self, train_dataset=None):
        """Mix the tasks' examples by the temperature rule (see TrainingConfig)."""
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        weights = task_sampling_weights([task for _, task, _ in dataset.items],
                                        self.task_temperature)
        if weights is None:
            return super()._get_train_sampler(train_dataset)
        return TaskMixSampler(weights, dataset, self.args.seed)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
        clf = ArticleClassifier(self.model, self.processing_class)
        metrics, scores = {}, []
        for task in self.model.tasks:
            if task.name not in self.eval_sets:
                continue
            encoded, gold = self.eval_sets[task.name]
            probs = clf.probabilities(encoded, self.eval_batch_size)[task.name]
            result = task_metrics(task, gold, probs)
            headline = result["micro_f1"] if task.type == MULTI_LABEL else result["accuracy"]
            scores.append(headline)
            metrics[f"{metric_key_prefix}_{task.name}_score"] = headline
            metrics[f"{metric_key_prefix}_{task.name}_macro_f1"] = result["macro_f1"]
        metrics[f"{metric_key_prefix}_score"] = float(np.mean(scores)) if scores else 0.0
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control,
                                                         metrics)
        return metrics


def last_complete_checkpoint(folder: Path) -> str | None:
    """The newest checkpoint that was written to the end.

    The Trainer writes a checkpoint's files one by one and its trainer_state.json last;
    a process killed in between leaves a folder without it (or with it cut short), which
    must not be resumed from.
    """
    if not folder.is_dir():
        return None
    found = []
    for path in folder.glob("checkpoint-*"):
        step = path.name.split("-")[-1]
        if step.isdigit() and (path / "model.safetensors").is_file():
            try:
                json.loads((path / "trainer_state.json").read_text())
            except (OSError, ValueError):
                continue
            found.append((int(step), path))
    return str(max(found)[1]) if found else None


def task_sampling_weights(task_of_example: list[int], temperature: float):
    """Per-example weights that give task t a share proportional to n_t ** (1 / T).

    T = 1 keeps every task at its natural share (a plain shuffle: returns None); larger
    T moves the shares towards equal, so a small task is not drowned by a large one.
    """
    counts = np.bincount(task_of_example)
    if temperature == 1.0 or len(counts) < 2:
        return None
    share = counts.astype(float) ** (1.0 / temperature)
    share /= share.sum()
    return torch.tensor([share[t] / counts[t] for t in task_of_example], dtype=torch.double)


def choose_precision(requested: str, device: str | torch.device | None = None) -> str:
    """The training precision on `device` (default: where the `Trainer` trains, a CUDA GPU
    where there is one): `auto` is the rule inference uses (`auto_precision`: bf16 where
    it is native, else fp16 on a GPU and fp32 on a CPU)."""
    device = torch.device(device) if device is not None else resolve_device("auto")
    return resolve_precision(requested, device)


def data_parallel_problem(n_gpus: int, world_size: int, config: str) -> str | None:
    """Why a launch cannot train, or None.

    One process that sees several GPUs makes the `Trainer` wrap the model in
    `nn.DataParallel`, which splits the per-window and the per-article tensors of a
    batch independently, so windows would be pooled into the wrong articles.
    """
    if n_gpus <= 1 or world_size > 1:
        return None
    return (f"this process sees {n_gpus} GPUs; one process over several GPUs would run "
            "nn.DataParallel, which cannot split article batches correctly. Train on all "
            f"of them with `torchrun --nproc_per_node {n_gpus} -m train --config {config}`, "
            f"or on one with `CUDA_VISIBLE_DEVICES=0 python -m train --config {config}` "
            "(adding your --set and --resume options)")


def training_arguments(cfg: TrainingConfig, output_dir: str, precision: str,
                       n_tasks: int = 1) -> TrainingArguments:
    """Map our TrainingConfig onto `TrainingArguments`."""
    return TrainingArguments(
        # With several tasks a batch may hold no example of some head, whose parameters
        # then get no gradient; DistributedDataParallel must be told to expect that.
        ddp_find_unused_parameters=n_tasks > 1,
        output_dir=output_dir,
        num_train_epochs=cfg.epochs,
        per_device_train_batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        weight_decay=cfg.weight_decay,
        warmup_steps=cfg.warmup_ratio,  # a float below 1 is a share of all steps
        seed=cfg.seed,
        data_seed=cfg.seed,
        # Without a GPU the Trainer refuses bf16 unless told that the CPU is meant.
        use_cpu=not (torch.cuda.is_available() or torch.backends.mps.is_available()),
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        eval_strategy=cfg.eval_strategy,
        save_strategy=cfg.eval_strategy,
        eval_steps=cfg.eval_steps,
        save_steps=cfg.eval_steps,
        save_total_limit=cfg.save_total_limit,
        load_best_model_at_end=True,
        metric_for_best_model="score",
        greater_is_better=True,
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        report_to="none",
        disable_tqdm=False,
    )


def targets_for(spec: TaskSpec, examples) -> list:
    if spec.type == MULTI_LABEL:
        return list(multi_hot([e.label for e in examples], spec.labels))
    index = {name: i for i, name in enumerate(spec.labels)}
    return [index[e.label] for e in examples]


def balanced_weights(spec: TaskSpec, examples) -> torch.Tensor:
    """Inverse-frequency class weights, or negatives/positives per label for multi-label."""
    y = np.asarray(targets_for(spec, examples))
    if spec.type == MULTI_LABEL:
        positives = y.sum(axis=0).clip(min=1)
        return torch.tensor((len(y) - positives) / positives)
    counts = np.bincount(y, minlength=len(spec.labels)).clip(min=1)
    return torch.tensor(len(y) / (len(spec.labels) * counts))
