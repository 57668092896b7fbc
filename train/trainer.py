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
from transformers import Trainer, TrainingArguments

from model.config import MULTI_LABEL, ModelConfig
from model.inference import ArticleClassifier, native_bf16
from model.text import EncodedArticle, pick_training_windows

from .config import TrainingConfig
from .metrics import task_metrics


class ArticleDataset(Dataset):
    """Tokenised training articles of every task, each with its task index and target."""

    def __init__(self, items: list[tuple[EncodedArticle, int, object]], config: ModelConfig,
                 seed: int):
        self.items = items
        self.config = config
        self.rng = random.Random(seed)

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        article, task_index, target = self.items[i]
        keep = pick_training_windows(len(article.windows), self.config.train_max_chunks,
                                     self.config.train_chunk_selection, self.rng)
        return {"windows": [article.windows[k] for k in keep], "task": task_index,
                "target": target}


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
        generator = torch.Generator().manual_seed(self.args.seed)
        return WeightedRandomSampler(weights, num_samples=len(dataset), replacement=True,
                                     generator=generator)

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


def choose_precision(requested: str) -> str:
    """`auto` means bf16 where the hardware runs it natively (CUDA bf16, AVX512-BF16 or AMX
    on the CPU), since it was measured about 1.5x faster there; fp32 elsewhere."""
    if requested != "auto":
        return requested
    return "bf16" if native_bf16() else "fp32"


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
