"""Fine-tuning (`training.mode: finetune`): the encoder and the heads trained together with
the Hugging Face Trainer (train/trainer.py), then each task's lexical component fitted on
the training split with its weight chosen on the validation split.
"""

from __future__ import annotations

import sys
from pathlib import Path

from model.core.tasks import TaskSpec
from model.core.text import clean_text
from model.runtime.classifier import ArticleClassifier
from train.config import RunConfig
from train.linear import fit_lexical, label_matrix, make_folds
from train.trainer import (
    ArticleDataset,
    ArticleTrainer,
    ChunkCollator,
    balanced_weights,
    choose_precision,
    last_complete_checkpoint,
    targets_for,
    training_arguments,
)
from train.tuning import best_mixture


def finetune(clf: ArticleClassifier, cfg: RunConfig, specs: list[TaskSpec], splits: dict,
             out_dir: Path, resume: bool) -> tuple[str | None, str | None]:
    """Fine-tune the encoder and heads with the Hugging Face Trainer. Returns the training
    precision and the checkpoint resumed from; the precision is None in the worker
    processes of distributed training."""
    network, tokenizer = clf.network, clf.tokenizer
    for task, spec in zip(cfg.tasks, specs):
        if task.class_weights == "balanced":
            network.set_loss_weights(spec.name, balanced_weights(spec, splits[spec.name]["train"]))
    items, eval_sets = [], {}
    for index, spec in enumerate(specs):
        train_examples = splits[spec.name]["train"]
        encoded = clf.encode([e.text for e in train_examples])
        items += list(zip(encoded, [index] * len(encoded), targets_for(spec, train_examples)))
        val = splits[spec.name]["validation"]
        eval_sets[spec.name] = (clf.encode([e.text for e in val]), [e.label for e in val])

    precision = choose_precision(cfg.training.precision)
    trainer = ArticleTrainer(
        model=network,
        args=training_arguments(cfg.training, str(out_dir / "checkpoints"), precision,
                                len(specs)),
        train_dataset=ArticleDataset(items, cfg.model, cfg.training.seed),
        eval_dataset=list(eval_sets),  # evaluation reads eval_sets; this enables eval_strategy
        data_collator=ChunkCollator(tokenizer, specs),
        processing_class=tokenizer,
        eval_sets=eval_sets,
        eval_batch_size=cfg.training.eval_batch_size,
        task_temperature=cfg.training.task_temperature,
    )
    checkpoint = last_complete_checkpoint(out_dir / "checkpoints") if resume else None
    if resume and checkpoint is None:
        print("no checkpoint to resume from; starting from the beginning", file=sys.stderr)
    trainer.train(resume_from_checkpoint=checkpoint)
    return (precision if trainer.is_world_process_zero() else None), checkpoint


def lexical_for_finetuned(clf: ArticleClassifier, cfg: RunConfig, specs: list[TaskSpec],
                          splits: dict, batch_size: int) -> tuple[dict, dict]:
    """Lexical components of a fine-tuned model: fitted on the training split, their
    weight chosen on the validation split against the network's validation probabilities
    (`clf` has no lexical models yet). Returns a report and the models by task."""
    report, lexical = {}, {}
    for task_cfg, spec in zip(cfg.tasks, specs):
        if not task_cfg.lexical:
            continue
        train, validation = splits[spec.name]["train"], splits[spec.name]["validation"]
        if not validation:
            raise ValueError(f"task {spec.name}: a lexical component needs a validation "
                             "split to choose its weight")
        texts = [clean_text(e.text, cfg.model.clean_boilerplate) for e in train]
        y = label_matrix(spec, train)
        folds = make_folds(spec, y, cfg.training.cv_folds, cfg.training.seed)
        model, _, info = fit_lexical(spec, texts, y, folds, task_cfg.class_weights == "balanced")
        encoded = clf.encode([e.text for e in validation])
        saved, spec.lexical_weight = spec.lexical_weight, None
        network = clf.probabilities(encoded, batch_size)[spec.name]
        lexical_probs = model.probabilities([a.text for a in encoded])
        y_val = label_matrix(spec, validation)
        weight, score = ((task_cfg.lexical_weight, None) if task_cfg.lexical_weight is not None
                         else best_mixture(spec, y_val, network, lexical_probs))
        spec.lexical_weight = weight if weight is not None else saved
        lexical[spec.name] = model
        report[spec.name] = {**info, "lexical_weight": weight, "validation_score": score}
    return report, lexical
