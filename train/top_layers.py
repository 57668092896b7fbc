"""Top-layer training (`training.mode: top`): the encoder's top layers and the heads trained
on cached lower-layer states, on a CPU.

Most of a fine-tune's cost on a CPU is running the lower layers again and again. Here they
run once per article (train/embedding_cache.py keeps each window's token states after layer
L = layers - `top.layers`), and only the layers above L and the heads are trained, for a
few epochs, with the Hugging Face Trainer. What keeps 1,000 articles from distorting what
the encoder knows:

- LP-FT (Kumar et al. 2022): the heads start from the frozen probe (train/frozen.py), so
  the first steps do not push random-head gradients into the encoder;
- layer-wise learning-rate decay: each layer below the top learns `layer_decay` times as
  fast as the one above it;
- cross-fitting: the articles are split into `top.folds` folds and the top layers trained
  once per fold on the others; the held-out fold's scores after every epoch choose the
  number of epochs, and they are the out-of-fold probabilities that the lexical weight,
  the calibration and the thresholds are chosen on (as in frozen mode);
- averaging: the served top layers are the mean of the fold models' weights at the chosen
  epoch (all start from the same weights, so their mean is a model too), moved back
  towards the starting weights by WiSE-FT (Wortsman et al. 2022): `alpha x tuned +
  (1 - alpha) x start`, alpha chosen from `top.wise` on the same held-out scores.

The result is an ordinary encoder whose top layers changed, so the artifact, predict, the
service, the int8 engine and evidence read it unchanged.
"""

from __future__ import annotations

import copy
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import Trainer, TrainerCallback, TrainingArguments

from model.core.tasks import MULTI_LABEL, TaskSpec
from train.config import TopConfig


def encoder_layers(encoder: nn.Module) -> nn.ModuleList:
    """The transformer layers of a BERT-like encoder (BERT, XLM-R, MiniLM, e5, bge)."""
    layers = getattr(getattr(encoder, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList) or encoder.config.model_type not in (
            "bert", "xlm-roberta", "roberta"):
        raise ValueError(f"training.mode top trains the top layers of a BERT-like encoder; "
                         f"{encoder.config.model_type!r} encoders are not supported "
                         "(use mode frozen or finetune)")
    return layers


class TopLayers(nn.Module):
    """The layers above `start`, the token pooling and the heads, on cached states.

    Articles travel as flat windows (`chunk_article` names each window's article), as in
    the network; an article's logits are the mean of its windows' (the network's `mean`
    pooling, which frozen heads are fitted for)."""

    def __init__(self, network, start: int):
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(list(encoder_layers(network.encoder)[start:])))
        self.heads = copy.deepcopy(network.heads)
        self.tasks = list(network.tasks)
        self.token_pooling = network.model_config.token_pooling
        self.loss_weights: dict[str, torch.Tensor] = {}

    def embed(self, states, attention_mask) -> torch.Tensor:
        """One vector per window: the top layers on its cached states, pooled."""
        hidden = states
        # Additive mask over padded tokens, as the encoder builds it for its layers.
        bias = (1.0 - attention_mask[:, None, None, :].to(hidden.dtype)) \
            * torch.finfo(hidden.dtype).min
        for layer in self.layers:
            hidden = layer(hidden, attention_mask=bias)
            hidden = hidden[0] if isinstance(hidden, tuple) else hidden
        if self.token_pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return pooled

    def forward(self, states, attention_mask, chunk_article, task_ids=None, targets=None):
        pooled = self.embed(states, attention_mask)
        n_articles = int(chunk_article.max()) + 1
        counts = torch.bincount(chunk_article, minlength=n_articles).clamp(min=1).unsqueeze(-1)
        logits = {}
        with torch.autocast(pooled.device.type, enabled=False):
            # Heads in fp32: a frozen probe's weights carry a folded standardisation,
            # large numbers that cancel, which half precision would blur.
            for task in self.tasks:
                window_logits = self.heads[task.name](pooled.float())
                summed = window_logits.new_zeros((n_articles, window_logits.shape[1]))
                logits[task.name] = summed.index_add(0, chunk_article, window_logits) / counts
        out = {"logits": logits}
        if targets is not None:
            out["loss"] = self.loss(logits, task_ids, targets)
        return out

    def loss(self, logits, task_ids, targets) -> torch.Tensor:
        total = next(iter(logits.values())).new_zeros(())
        for index, task in enumerate(self.tasks):
            rows = task_ids == index
            if task.name not in targets or not rows.any():
                continue
            pred, gold = logits[task.name][rows], targets[task.name][rows]
            weight = self.loss_weights.get(task.name)
            if task.type == MULTI_LABEL:
                total = total + F.binary_cross_entropy_with_logits(pred, gold.float(),
                                                                   pos_weight=weight)
            else:
                total = total + F.cross_entropy(pred, gold.long(), weight=weight)
        return total


class Articles(torch.utils.data.Dataset):
    """Training articles of every task: (task index, cached entry, target). Each draw
    takes up to `windows` of the article's windows at random (all of them when it has
    fewer), so epochs see different parts of long articles."""

    def __init__(self, items: list[tuple[int, dict, object]], windows: int, seed: int):
        self.items, self.windows = items, windows
        self.rng = np.random.default_rng(seed)

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        task, entry, target = self.items[i]
        n = len(entry["lengths"])
        chosen = sorted(self.rng.choice(n, size=min(n, self.windows), replace=False))
        return {"task": task, "windows": window_states(entry, chosen), "target": target}


def window_states(entry: dict, chosen) -> list[np.ndarray]:
    starts = np.concatenate([[0], np.cumsum(entry["lengths"])])
    return [entry["states"][starts[w]:starts[w + 1]] for w in chosen]


def collate(tasks: list[TaskSpec], rows: list[dict]) -> dict:
    """Pads the windows of a batch of articles into one tensor (float32; autocast lowers)."""
    windows = [w for row in rows for w in row["windows"]]
    longest = max(len(w) for w in windows)
    states = torch.zeros((len(windows), longest, windows[0].shape[1]))
    mask = torch.zeros((len(windows), longest), dtype=torch.long)
    for i, w in enumerate(windows):
        states[i, :len(w)] = torch.from_numpy(w.astype(np.float32))
        mask[i, :len(w)] = 1
    chunk_article = torch.tensor([a for a, row in enumerate(rows) for _ in row["windows"]])
    task_ids = torch.tensor([row["task"] for row in rows])
    targets = {}
    for index, task in enumerate(tasks):
        mine = [row["target"] for row in rows if row["task"] == index]
        if not mine:
            continue
        # Rows of other tasks get placeholders: the loss reads only this task's rows.
        fill = np.zeros(len(task.labels)) if task.type == MULTI_LABEL else 0
        values = [row["target"] if row["task"] == index else fill for row in rows]
        targets[task.name] = torch.tensor(np.asarray(values))
    return {"states": states, "attention_mask": mask, "chunk_article": chunk_article,
            "task_ids": task_ids, "targets": targets}


def in_batches(entries: list[dict], batch_windows: int = 32):
    """Whole articles, batched by up to `batch_windows` windows, as collated inputs."""
    batch: list[dict] = []
    windows = 0
    for entry in entries + [None]:
        if batch and (entry is None or windows + len(entry["lengths"]) > batch_windows):
            yield collate([], [{"task": 0, "windows": window_states(e, range(len(e["lengths"]))),
                                "target": None} for e in batch])
            batch, windows = [], 0
        if entry is not None:
            batch.append(entry)
            windows += len(entry["lengths"])


@torch.inference_mode()
def article_probabilities(model: TopLayers, entries: list[dict],
                          precision: str) -> dict[str, np.ndarray]:
    """Every task's probabilities for these articles, reading all their cached windows."""
    model.eval()
    out: dict[str, list] = {t.name: [] for t in model.tasks}
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        for inputs in in_batches(entries):
            logits = model(inputs["states"], inputs["attention_mask"], inputs["chunk_article"])
            for task in model.tasks:
                value = logits["logits"][task.name]
                out[task.name].append((torch.sigmoid(value) if task.type == MULTI_LABEL
                                       else value.softmax(-1)).numpy())
    return {name: np.concatenate(parts) for name, parts in out.items()}


@torch.inference_mode()
def states_to_embeddings(network, entries: list[dict], start: int,
                       precision: str) -> np.ndarray:
    """Each article's mean window embedding by `network`'s (trained) encoder, from the
    states after layer `start` cached in `entries`."""
    model = TopLayers(network, start).eval()
    out = []
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        for inputs in in_batches(entries):
            windows = model.embed(inputs["states"], inputs["attention_mask"]).float()
            article = inputs["chunk_article"]
            counts = torch.bincount(article).clamp(min=1).unsqueeze(-1)
            summed = windows.new_zeros((len(counts), windows.shape[1]))
            out.append((summed.index_add(0, article, windows) / counts).numpy())
    return np.concatenate(out)


class Snapshots(TrainerCallback):
    """After every epoch: the held-out articles' probabilities and a copy of the weights."""

    def __init__(self, held: list[dict], precision: str):
        self.held, self.precision = held, precision
        self.epochs: list[tuple[dict, dict]] = []

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
        probs = article_probabilities(model, self.held, self.precision) if self.held else {}
        model.train()
        self.epochs.append((probs, weights))


def optimizer_for(model: TopLayers, top: TopConfig, weight_decay: float):
    """AdamW with layer-wise learning-rate decay: the heads at `head_learning_rate`, the top
    layer at `learning_rate`, each layer below at `layer_decay` times the one above."""
    groups = [{"params": list(model.heads.parameters()), "lr": top.head_learning_rate}]
    n = len(model.layers)
    for depth, layer in enumerate(model.layers):
        groups.append({"params": list(layer.parameters()),
                       "lr": top.learning_rate * top.layer_decay ** (n - 1 - depth)})
    return torch.optim.AdamW(groups, weight_decay=weight_decay)


def train_fold(start_model: TopLayers, items: list, held: list[dict], top: TopConfig,
               training, precision: str, seed: int) -> Snapshots:
    """Train a copy of `start_model` on `items`; returns its per-epoch snapshots."""
    model = copy.deepcopy(start_model)
    model.train()
    snapshots = Snapshots(held, precision)
    with tempfile.TemporaryDirectory() as scratch:
        args = TrainingArguments(
            output_dir=scratch, num_train_epochs=top.epochs,
            per_device_train_batch_size=top.batch_size,
            warmup_steps=top.warmup_ratio,  # a float below 1 is a share of all steps
            weight_decay=training.weight_decay, lr_scheduler_type="linear",
            save_strategy="no", eval_strategy="no", logging_strategy="no", report_to=[],
            bf16=precision == "bf16", use_cpu=not torch.cuda.is_available(), seed=seed,
            remove_unused_columns=False, dataloader_num_workers=0, disable_tqdm=True)
        trainer = Trainer(model=model, args=args, train_dataset=Articles(items, top.windows, seed),
                          data_collator=lambda rows: collate(model.tasks, rows),
                          optimizers=(optimizer_for(model, top, training.weight_decay), None),
                          callbacks=[snapshots])
        trainer.train()
    return snapshots


def average(weights: list[dict], start: dict, alpha: float) -> dict:
    """The mean of `weights`, moved towards `start`: alpha x mean + (1 - alpha) x start."""
    out = {}
    for key, value in start.items():
        if not torch.is_floating_point(value):
            out[key] = value
            continue
        mean = torch.stack([w[key].float() for w in weights]).mean(0)
        out[key] = (alpha * mean + (1 - alpha) * value.float()).to(value.dtype)
    return out


def tune_top_layers(network, tasks: list[dict], top: TopConfig, training, precision: str,
                    score) -> tuple[dict[str, np.ndarray], dict]:
    """Cross-fit the top layers on every task's articles and write the averaged, WiSE-FT
    weights into `network` (whose heads hold the frozen probe).

    `tasks[i]` holds the cached `entries`, the `targets` and the cross-fitting `folds` of
    `network.tasks[i]`; `score(task_index, probs)` scores held-out probabilities under the
    served rule. Returns each task's out-of-fold probabilities at the chosen epoch and
    alpha, and a report."""
    layers = encoder_layers(network.encoder)
    start = len(layers) - top.layers
    start_model = TopLayers(network, start)
    for index, task in enumerate(tasks):
        if task.get("loss_weights") is not None:
            start_model.loss_weights[network.tasks[index].name] = task["loss_weights"]
    start_weights = {k: v.detach().clone() for k, v in start_model.state_dict().items()}
    began = time.perf_counter()
    runs = []  # per fold: (held article rows per task, snapshots)
    for fold in range(top.folds):
        items, held, rows = [], [], []
        for index, task in enumerate(tasks):
            fit, out = task["folds"][fold]
            items += [(index, task["entries"][i], task["targets"][i]) for i in fit]
            held += [task["entries"][i] for i in out]
            rows.append((index, out))
        snapshots = train_fold(start_model, items, held, top, training, precision,
                               training.seed + fold)
        runs.append((rows, snapshots))
        say(f"top layers: fold {fold + 1}/{top.folds} trained "
            f"({time.perf_counter() - began:.0f} s)")

    def oof(probs_of_run) -> dict[int, np.ndarray]:
        """Each task's out-of-fold probabilities from per-run held-out probabilities."""
        out = {i: np.zeros((len(t["targets"]), len(network.tasks[i].labels)))
               for i, t in enumerate(tasks)}
        for (rows, _), probs in zip(runs, probs_of_run):
            offset = 0
            for index, held in rows:
                name = network.tasks[index].name
                out[index][held] = probs[name][offset:offset + len(held)]
                offset += len(held)
        return out

    def total(probs: dict[int, np.ndarray]) -> float:
        return float(np.mean([score(i, p) for i, p in probs.items()]))

    by_epoch = [oof([snap.epochs[e][0] for _, snap in runs]) for e in range(top.epochs)]
    epoch_scores = [total(p) for p in by_epoch]
    best_epoch = int(np.argmax(epoch_scores))
    candidates = {}
    for alpha in sorted(top.wise):
        if alpha == 1.0:
            candidates[alpha] = by_epoch[best_epoch]
            continue
        per_run = []  # each fold model moved towards the start, scored on its held-out fold
        for _, snap in runs:
            trial = copy.deepcopy(start_model)
            trial.load_state_dict(average([snap.epochs[best_epoch][1]], start_weights, alpha))
            per_run.append(article_probabilities(trial, snap.held, precision))
        candidates[alpha] = oof(per_run)
    alpha_scores = {alpha: total(probs) for alpha, probs in candidates.items()}
    alpha = max(alpha_scores, key=alpha_scores.get)  # ties: the smaller move
    probs = candidates[alpha]
    served = copy.deepcopy(start_model)
    served.load_state_dict(average([snap.epochs[best_epoch][1] for _, snap in runs],
                                   start_weights, alpha))
    with torch.no_grad():
        for i, layer in enumerate(served.layers):
            layers[start + i].load_state_dict(layer.state_dict())
        for name, head in served.heads.items():
            network.heads[name].load_state_dict(head.state_dict())
    report = {"layers": top.layers, "from_layer": start, "folds": top.folds,
              "epoch_scores": [round(s, 4) for s in epoch_scores], "epochs": best_epoch + 1,
              "wise_scores": {str(a): round(s, 4) for a, s in alpha_scores.items()},
              "wise_alpha": alpha, "seconds": round(time.perf_counter() - began, 1)}
    say(f"top layers: {top.layers} trained, out-of-fold score by epoch {report['epoch_scores']}"
        f", by alpha {report['wise_scores']}: epoch {best_epoch + 1}, alpha {alpha}")
    return {network.tasks[i].name: p for i, p in probs.items()}, report


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)

