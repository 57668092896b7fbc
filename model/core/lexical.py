"""The optional lexical component of a task: TF-IDF + logistic regression as plain arrays.

On framing, bag-of-words evidence and the encoder's evidence add up: a task may carry a
lexical model whose probabilities are mixed with the network's, `p = w * lexical + (1 - w)
* network`, with `w` (the task's `lexical_weight`) chosen on validation. It is stored
beside the network without pickle: `lexical.json` holds each task's vocabulary (in column
order) and vectorizer settings, `lexical.safetensors` its idf, coefficients and intercepts.
scikit-learn computes the features at inference exactly as it did in training.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file
from sklearn.feature_extraction.text import TfidfVectorizer

from model.core.tasks import MULTI_LABEL

LEXICAL_CONFIG = "lexical.json"
LEXICAL_WEIGHTS = "lexical.safetensors"
# Vectorizer settings that are not stored: the vocabulary is stored apart, the dtype and
# input kind are fixed, and code (a custom preprocessor, tokenizer or analyzer) cannot be
# stored without pickle, so a vectorizer that uses code is refused.
UNSTORED = ("vocabulary", "dtype", "input", "preprocessor", "tokenizer")


def linear_probabilities(x, coef: np.ndarray, intercept: np.ndarray,
                         task_type: str) -> np.ndarray:
    """Probabilities of a linear model on features `x` (dense or sparse): a sigmoid per
    label for multi-label tasks, a softmax over labels otherwise."""
    logits = np.asarray(x @ coef.T) + intercept
    if task_type == MULTI_LABEL:
        return 1.0 / (1.0 + np.exp(-logits))
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


@dataclass
class LexicalModel:
    """TF-IDF features and one linear model over them, for one task.

    `coef` is labels x vocabulary and `intercept` one value per label; a multi-label task
    reads each label through a sigmoid, a single-label one through a softmax.
    """

    task_type: str
    vocabulary: list[str]
    idf: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray
    settings: dict

    def __post_init__(self):
        n = len(self.vocabulary)
        if self.idf.shape != (n,) or self.coef.ndim != 2 or self.coef.shape[1] != n:
            raise ValueError(f"lexical model: {n} terms, idf {self.idf.shape}, "
                             f"coefficients {self.coef.shape} do not agree")
        if self.intercept.shape != (self.coef.shape[0],):
            raise ValueError("lexical model: one intercept per label is needed")
        self._vectorizer = None

    def vectorizer(self) -> TfidfVectorizer:
        """The fitted vectorizer, rebuilt from the stored vocabulary and idf."""
        if self._vectorizer is None:
            settings = dict(self.settings)
            if "ngram_range" in settings:
                settings["ngram_range"] = tuple(settings["ngram_range"])
            for key in ("min_df", "max_df", "max_features"):
                settings.pop(key, None)  # applied when the vocabulary was chosen
            vectorizer = TfidfVectorizer(vocabulary={t: i for i, t in
                                                     enumerate(self.vocabulary)}, **settings)
            vectorizer.fit([""])  # sets the vocabulary; the idf is replaced just below
            vectorizer.idf_ = self.idf
            self._vectorizer = vectorizer
        return self._vectorizer

    def probabilities(self, texts: list[str]) -> np.ndarray:
        """One row per text, one column per label."""
        return linear_probabilities(self.vectorizer().transform(texts), self.coef,
                                    self.intercept, self.task_type)

    @classmethod
    def from_fitted(cls, task_type: str, vectorizer: TfidfVectorizer, coef: np.ndarray,
                    intercept: np.ndarray) -> LexicalModel:
        """Arrays of a fitted scikit-learn vectorizer and linear model."""
        terms = sorted(vectorizer.vocabulary_, key=vectorizer.vocabulary_.get)
        params = vectorizer.get_params()
        code = [k for k in ("preprocessor", "tokenizer", "analyzer") if callable(params[k])]
        if code:
            raise ValueError(f"lexical model: vectorizer settings {code} are code and "
                             "cannot be stored without pickle")
        settings = {k: v for k, v in params.items() if k not in UNSTORED}
        return cls(task_type, terms, np.asarray(vectorizer.idf_, dtype=np.float32),
                   np.asarray(coef, dtype=np.float32), np.asarray(intercept, dtype=np.float32),
                   settings)


def save_lexical(path: Path, models: dict[str, LexicalModel]) -> None:
    """Write the lexical models of an artifact (nothing when there are none)."""
    if not models:
        return
    tensors, document = {}, {}
    for task, m in models.items():
        tensors.update({f"{task}.idf": m.idf, f"{task}.coef": m.coef,
                        f"{task}.intercept": m.intercept})
        document[task] = {"type": m.task_type, "settings": m.settings,
                          "vocabulary": m.vocabulary}
    save_file(tensors, str(path / LEXICAL_WEIGHTS))
    (path / LEXICAL_CONFIG).write_text(json.dumps(document))


def load_lexical(path: Path) -> dict[str, LexicalModel]:
    """The lexical models stored in an artifact folder, by task (none: an empty dict)."""
    config = path / LEXICAL_CONFIG
    if not config.is_file():
        return {}
    try:
        document = json.loads(config.read_text())
        tensors = load_file(str(path / LEXICAL_WEIGHTS))
        return {task: LexicalModel(entry["type"], entry["vocabulary"],
                                   tensors[f"{task}.idf"], tensors[f"{task}.coef"],
                                   tensors[f"{task}.intercept"], entry["settings"])
                for task, entry in document.items()}
    except (OSError, KeyError, ValueError) as err:
        raise ValueError(f"{path}: unreadable lexical model ({err})") from err
