"""The network: one transformer encoder, one head per task, and their losses.

An article is read as one or more token windows ("chunks"). The encoder embeds every
chunk; the chunks of one article are then pooled into one prediction per task. All the
chunks of a batch travel flat, with `chunk_article[i]` naming the article of chunk `i`,
so articles of any length share one forward pass.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.core.config import ModelConfig
from model.core.tasks import MULTI_LABEL, TaskSpec


class ArticleClassifierNetwork(nn.Module):
    """Encoder + heads. Returns per-task article logits, and the loss when targets are given.

    Args:
        encoder: a Hugging Face `AutoModel` (any encoder with `last_hidden_state`).
        tasks: the heads to build, in a fixed order (`task_ids` index into it).
        config: pooling and dropout settings.
    """

    def __init__(self, encoder: nn.Module, tasks: list[TaskSpec], config: ModelConfig):
        super().__init__()
        self.encoder = encoder
        self.tasks = list(tasks)
        self.model_config = config
        hidden = encoder.config.hidden_size
        self.dropout = nn.Dropout(config.dropout)
        self.heads = nn.ModuleDict({t.name: nn.Linear(hidden, len(t.labels)) for t in tasks})
        if config.pooling == "attention":
            self.chunk_attention = nn.ModuleDict({t.name: nn.Linear(hidden, 1) for t in tasks})
        # Loss weights are a training choice, so they are not saved with the weights.
        self._loss_weights: dict[str, torch.Tensor] = {}

    def set_loss_weights(self, task: str, weights: torch.Tensor | None) -> None:
        """Class weights (single-label) or positive weights (multi-label) for `task`."""
        if weights is None:
            self._loss_weights.pop(task, None)
        else:
            self._loss_weights[task] = weights.float()

    def embed_chunks(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        """One vector per chunk: mean of the token states (as all-MiniLM was trained) or [CLS]."""
        states = self.token_states(input_ids, attention_mask, token_type_ids)
        return self.pool_tokens(states, attention_mask)

    def token_states(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        """The encoder's last hidden state of every token of every chunk."""
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        return self.encoder(**kwargs).last_hidden_state

    def pool_tokens(self, states: torch.Tensor, attention_mask) -> torch.Tensor:
        """Token states to one chunk vector, by the model's `token_pooling`."""
        if self.model_config.token_pooling == "cls":
            return states[:, 0]
        mask = attention_mask.unsqueeze(-1).to(states.dtype)
        return (states * mask).sum(1) / mask.sum(1).clamp(min=1.0)

    def score_articles(self, chunk_embeddings: torch.Tensor, chunk_article: torch.Tensor,
                       n_articles: int, pooling: str | None = None) -> dict[str, torch.Tensor]:
        """Pool chunk embeddings into per-task article logits, by `pooling` (`mean` or
        `max`, when serving reads another way than trained) or the model's own."""
        pooling = pooling or self.model_config.pooling
        emb = self.dropout(chunk_embeddings)
        logits = {}
        for task in self.tasks:
            head = self.heads[task.name]
            if pooling == "attention":
                scores = self.chunk_attention[task.name](emb).squeeze(-1).float()
                weights = _group_softmax(scores, chunk_article, n_articles)
                pooled = _group_reduce(emb.float() * weights.unsqueeze(-1), chunk_article,
                                       n_articles, "sum")
                logits[task.name] = head(pooled.to(emb.dtype)).float()
            else:
                reduce = "mean" if pooling == "mean" else "amax"
                logits[task.name] = _group_reduce(head(emb).float(), chunk_article,
                                                  n_articles, reduce)
        return logits

    def forward(self, input_ids, attention_mask, chunk_article, token_type_ids=None,
                task_ids=None, targets: dict[str, torch.Tensor] | None = None):
        """Article logits for every task; with `targets`, also the summed task losses.

        `task_ids[j]` is the index (into `self.tasks`) of the task article `j` is labelled
        for; each head's loss sees only the articles of its own task.
        """
        n_articles = int(chunk_article.max().item()) + 1 if chunk_article.numel() else 0
        emb = self.embed_chunks(input_ids, attention_mask, token_type_ids)
        logits = self.score_articles(emb, chunk_article, n_articles)
        out = {"logits": logits}
        if targets is not None:
            out["loss"] = self.loss(logits, task_ids, targets)
        return out

    def loss(self, logits: dict[str, torch.Tensor], task_ids: torch.Tensor,
             targets: dict[str, torch.Tensor]) -> torch.Tensor:
        total = logits[self.tasks[0].name].new_zeros(())
        for index, task in enumerate(self.tasks):
            rows = task_ids == index
            if task.name not in targets or not rows.any():
                continue
            pred, gold = logits[task.name][rows], targets[task.name][rows]
            weight = self._loss_weights.get(task.name)
            weight = weight.to(pred.device) if weight is not None else None
            if task.type == MULTI_LABEL:
                total = total + F.binary_cross_entropy_with_logits(pred, gold.float(),
                                                                   pos_weight=weight)
            else:
                total = total + F.cross_entropy(pred, gold.long(), weight=weight)
        return total


def _group_reduce(values: torch.Tensor, groups: torch.Tensor, n_groups: int,
                  reduce: str) -> torch.Tensor:
    """Reduce rows of `values` that share a group id (`mean`, `amax` or `sum`)."""
    index = groups.unsqueeze(-1).expand_as(values)
    out = values.new_zeros((n_groups, values.shape[-1]))
    return out.scatter_reduce(0, index, values, reduce=reduce, include_self=False)


def _group_softmax(scores: torch.Tensor, groups: torch.Tensor, n_groups: int) -> torch.Tensor:
    """Softmax of `scores` within each group."""
    peak = _group_reduce(scores.unsqueeze(-1), groups, n_groups, "amax").squeeze(-1)
    exp = torch.exp(scores - peak[groups])
    total = _group_reduce(exp.unsqueeze(-1), groups, n_groups, "sum").squeeze(-1)
    return exp / total[groups]
