"""How typical an article is of what the model was trained on: `DomainReference`.

A model knows the articles it was trained on and nothing else: the BBC topic model knows
five topics of British news from 2004-05, and still answers with one of them for a
Chinese agency's report of a phone call between two presidents. Each prediction therefore
says how typical its article is, and flags the articles that are unlike all of them.

The measure is geometric and needs no labels: an article's embedding (the mean of the
embeddings of the windows the classifier read, L2-normalised) and its mean cosine
distance to its `k` nearest training articles. The same distance of held-out training
articles, sorted, turns it into a percentile: `typicality` is the share of held-out
training articles that lie farther from the training set than this article (100: as
central as the most typical; 0: farther than all of them). An article is flagged out of
domain below `100 - flag_percentile`: with the default 99, one in a hundred articles like
the training ones is flagged (measured on BBC's test split in BENCHMARKS.md,
"Out-of-domain flag"), and the AUROC there says how many foreign articles pass.
Typicality also decides how much of a task's lexical model is mixed in
(`DomainReference.lexical_trust`): a weight chosen on training articles is not trusted on
articles unlike them.

Stored as `domain.safetensors` in the artifact folder (arrays, plus a few numbers as
safetensors metadata; never pickle). Pure numpy: serving, training and benchmarks share it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

DOMAIN_NAME = "domain.safetensors"
DOMAIN_FORMAT = 1


class Typicality(NamedTuple):
    """Per article: its typicality (0-100, higher: more typical) and whether it is in domain."""

    percentile: np.ndarray
    in_domain: np.ndarray

    def entry(self, i: int) -> dict:
        """Article `i`'s `domain` entry of a prediction line."""
        return {"typicality": round(float(self.percentile[i]), 1),
                "in_domain": bool(self.in_domain[i])}


def article_embeddings(window_rows: np.ndarray, counts: list[int]) -> np.ndarray:
    """One row per article: the mean of its windows' rows (`window_rows` holds them article
    by article, `counts[i]` rows for article i), as the frozen heads and the reference
    see an article."""
    rows = np.asarray(window_rows, dtype=np.float32)
    if sum(counts) != len(rows):
        raise ValueError(f"{len(rows)} window embeddings for {sum(counts)} windows")
    if not counts:
        return np.zeros((0, rows.shape[1] if rows.ndim == 2 else 0), dtype=np.float32)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    return np.add.reduceat(rows, starts, axis=0) / np.asarray(counts, dtype=np.float32)[:, None]


def normalise(embeddings: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero), in float32."""
    rows = np.asarray(embeddings, dtype=np.float32)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.maximum(norms, 1e-12)


@dataclass
class DomainReference:
    """Training articles as unit embeddings, and where held-out ones lie among them.

    Attributes:
        embeddings: the training articles' L2-normalised embeddings (articles x hidden),
            stored in float16 (a few MB for a few thousand articles of 384 dimensions).
        k: how many nearest training articles an article's distance averages over.
        reference_distances: the kNN mean cosine distances of held-out training articles
            (each to the others), sorted ascending: what `typicality` ranks against.
        flag_percentile: in (0, 100]; an article farther than this percentile of
            `reference_distances` (typicality below `100 - flag_percentile`) is out of domain.
        lexical_full_trust: the typicality from which a task's lexical model is mixed in
            at its full weight; below it, in proportion to typicality, and not at all out
            of domain (`lexical_trust`).
    """

    embeddings: np.ndarray
    k: int
    reference_distances: np.ndarray
    flag_percentile: float = 99.0
    lexical_full_trust: float = 25.0

    def __post_init__(self):
        if self.embeddings.ndim != 2 or len(self.embeddings) < 2:
            raise ValueError(f"domain reference: need at least two training embeddings, "
                             f"got an array of shape {self.embeddings.shape}")
        if not 1 <= self.k < len(self.embeddings):
            raise ValueError(f"domain reference: k must be in [1, {len(self.embeddings) - 1}] "
                             f"for {len(self.embeddings)} training articles, got {self.k}")
        if self.reference_distances.ndim != 1 or not len(self.reference_distances):
            raise ValueError("domain reference: no held-out distances to rank against")
        if not 0.0 < self.flag_percentile <= 100.0:
            raise ValueError(f"domain reference: flag_percentile must be in (0, 100], "
                             f"got {self.flag_percentile}")
        if not 0.0 <= self.lexical_full_trust <= 100.0:
            raise ValueError(f"domain reference: lexical_full_trust must be in [0, 100], "
                             f"got {self.lexical_full_trust}")
        self.embeddings = normalise(self.embeddings).astype(np.float16)
        self.reference_distances = np.sort(np.asarray(self.reference_distances,
                                                      dtype=np.float32))
        self._rows = normalise(self.embeddings)  # searched in fp32

    @property
    def hidden_size(self) -> int:
        return self.embeddings.shape[1]

    def distances(self, embeddings: np.ndarray) -> np.ndarray:
        """Each row's mean cosine distance to its `k` nearest training articles."""
        if embeddings.shape[1] != self.hidden_size:
            raise ValueError(f"domain reference: embeddings of {embeddings.shape[1]} "
                             f"dimensions, the reference has {self.hidden_size}")
        return knn_distances(embeddings, self._rows, self.k)

    def typicality(self, embeddings: np.ndarray) -> Typicality:
        """Per row of `embeddings` (articles x hidden, any scale): the share of held-out
        training articles, in percent, that lie farther from the training set, and
        whether that is at least `100 - flag_percentile` (in domain)."""
        distances = self.distances(embeddings)
        n = len(self.reference_distances)
        farther = n - np.searchsorted(self.reference_distances, distances, side="right")
        # In counts, not floats: "at least 1% of them farther" must not hinge on rounding.
        in_domain = farther * 100.0 >= (100.0 - self.flag_percentile) * n
        return Typicality((100.0 * farther / n).astype(np.float32), in_domain)

    def lexical_trust(self, typicality: Typicality) -> np.ndarray:
        """Per article, the share of a task's lexical weight it is served with: all of it
        from typicality `lexical_full_trust` on, none out of domain, in proportion between.

        Why: the weight was chosen on the training articles, where TF-IDF knows the
        vocabulary as well as the network knows the meaning. The less typical an article,
        the more its TF-IDF features are a few stray words (a "security" and an
        "economic" in a report of a presidents' phone call) while the encoder still reads
        what it is about, so there the lexical model must not overrule the network.
        BENCHMARKS.md ("Out-of-domain flag") measures the ramp: no answer changed on
        BBC's test split (86 of its 319 articles are under typicality 25), and the
        lexical part deciding against the network on 0-4% of foreign articles instead
        of 8-25%."""
        if self.lexical_full_trust == 0.0:
            return typicality.in_domain.astype(np.float32)
        trust = np.clip(typicality.percentile / self.lexical_full_trust, 0.0, 1.0)
        return np.where(typicality.in_domain, trust, 0.0).astype(np.float32)


def knn_distances(queries: np.ndarray, rows: np.ndarray, k: int,
                  exclude_self: bool = False) -> np.ndarray:
    """Each query's mean cosine distance to its `k` nearest `rows`. `exclude_self`: the
    queries are the rows themselves, in order (leave one out: an article is not its own
    neighbour)."""
    queries, rows = normalise(queries), normalise(rows)
    out = np.empty(len(queries), dtype=np.float32)
    for start in range(0, len(queries), 1024):  # bounded memory for large batches
        sims = queries[start:start + 1024] @ rows.T
        if exclude_self:
            diagonal = np.arange(len(sims))
            sims[diagonal, diagonal + start] = -np.inf
        nearest = np.partition(-sims, k - 1, axis=1)[:, :k]
        out[start:start + len(sims)] = 1.0 + nearest.mean(axis=1)  # 1 - mean similarity
    return out


def save_domain(folder: str | Path, reference: DomainReference | None) -> None:
    """Write `reference` as `domain.safetensors` in `folder` (nothing when None)."""
    from safetensors.numpy import save_file

    if reference is None:
        return
    metadata = {"format": str(DOMAIN_FORMAT), "k": str(reference.k),
                "flag_percentile": json.dumps(reference.flag_percentile),
                "lexical_full_trust": json.dumps(reference.lexical_full_trust)}
    save_file({"embeddings": np.ascontiguousarray(reference.embeddings),
               "reference_distances": np.ascontiguousarray(reference.reference_distances)},
              str(Path(folder) / DOMAIN_NAME), metadata=metadata)


def load_domain(folder: str | Path) -> DomainReference | None:
    """The artifact's domain reference, or None where it has none (an older artifact)."""
    from safetensors import SafetensorError, safe_open

    path = Path(folder) / DOMAIN_NAME
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="np") as handle:
            metadata = handle.metadata() or {}
            arrays = {name: handle.get_tensor(name) for name in handle.keys()}
        if int(metadata.get("format", 0)) > DOMAIN_FORMAT:
            raise ValueError(f"format {metadata['format']} is newer than this library reads "
                             f"({DOMAIN_FORMAT})")
        return DomainReference(arrays["embeddings"], int(metadata["k"]),
                               arrays["reference_distances"],
                               float(json.loads(metadata["flag_percentile"])),
                               float(json.loads(metadata["lexical_full_trust"])))
    except (SafetensorError, OSError, KeyError, ValueError, TypeError) as err:
        raise ValueError(f"{path}: unreadable domain reference ({err})") from err
