"""Text preprocessing shared by training and inference, and article chunking.

Everything here is driven by the artifact's `ModelConfig`, so a model cleans and splits
text at inference exactly as it did while training.
"""

from __future__ import annotations

import random
import re
import unicodedata
from dataclasses import dataclass

import numpy as np

# C0/C1 control characters other than tab and newline: they carry no meaning in an
# article and some tokenizers map them to [UNK].
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200b\u3000]+")
_BLANK_LINES = re.compile(r"\n\s*\n+")

# Lines that mark the start of scraped page furniture at the end of an article.
_BOILERPLATE_MARKERS = re.compile(
    r"^\s*(featured video|latest news|related (news|articles|stories|posts)|read more|"
    r"read the whole article|more from|recommended|trending|you may also like|"
    r"receive our daily newsletter|sign up for|subscribe|share this|follow (us|on)|"
    r"advertisement|comments?\b|email \*|(article )?(posted|reprinted) with permission|"
    r"copyright|©|the best of |see all of the best photos|our standards:)",
    re.IGNORECASE,
)


def clean_text(text: str, clean_boilerplate: bool = False) -> str:
    """Normalise Unicode and whitespace, drop control characters, optionally cut the
    trailing page boilerplate that scrapers leave after the article body."""
    text = unicodedata.normalize("NFC", text)
    text = _CONTROL.sub(" ", text.replace("\r\n", "\n").replace("\r", "\n"))
    text = _SPACES.sub(" ", text)
    text = _BLANK_LINES.sub("\n\n", text).strip()
    if clean_boilerplate:
        text = strip_boilerplate(text)
    return text


def strip_boilerplate(text: str) -> str:
    """Cut the text at the first boilerplate marker line found in its last third, where
    navigation and newsletter blocks live; the article body before it is kept whole."""
    lines = text.split("\n")
    start = int(len(lines) * 2 / 3)
    for i in range(start, len(lines)):
        if _BOILERPLATE_MARKERS.match(lines[i]):
            kept = "\n".join(lines[:i]).strip()
            return kept or text
    return text


def join_title(title: str | None, text: str) -> str:
    """Articles given as title + body are read as one text, headline first."""
    if title and title.strip() and not text.lstrip().startswith(title.strip()):
        return f"{title.strip()}\n\n{text}"
    return text


@dataclass
class EncodedArticle:
    """An article as token windows.

    `windows` holds token ids with special tokens; `n_tokens` counts the article's own
    tokens, all of them, and `n_windows_total` the windows the whole article needs, so a
    caller can tell when `windows` holds fewer (the article was longer than allowed).
    """

    windows: list[list[int]]
    n_tokens: int
    n_windows_total: int
    text: str = ""  # the cleaned text the windows were cut from (read by lexical models)

    @property
    def truncated(self) -> bool:
        return len(self.windows) < self.n_windows_total


def chunk_articles(tokenizer, texts: list[str], max_length: int, stride: int,
                   max_chunks: int, prefix: str = "") -> list[EncodedArticle]:
    """Tokenise whole articles into overlapping windows of `max_length` tokens.

    The fast tokenizer does the windowing itself (`return_overflowing_tokens`), so windows
    respect word pieces and special tokens. An article needing more than `max_chunks`
    windows keeps that many, spread evenly from its first window to its last. A `prefix`
    (e5 encoders read passages as "passage: ...") starts every window, right after the
    first special token, and leaves that much less room for the article.
    """
    prefix_ids = prefix_token_ids(tokenizer, prefix)
    # The prefix goes after the first special token ([CLS] / <s>), where the encoder saw it.
    at = 1 if tokenizer.num_special_tokens_to_add(pair=False) else 0
    if max_length - len(prefix_ids) - stride < 8:
        raise ValueError(f"prefix {prefix!r} leaves too little of a {max_length}-token window")
    enc = tokenizer(texts, max_length=max_length - len(prefix_ids), stride=stride,
                    truncation=True,
                    return_overflowing_tokens=True, return_attention_mask=False,
                    return_token_type_ids=False)
    per_article: list[list[list[int]]] = [[] for _ in texts]
    for window, article in zip(enc["input_ids"], enc["overflow_to_sample_mapping"]):
        per_article[article].append(window[:at] + prefix_ids + window[at:] if prefix_ids
                                    else window)
    n_special = tokenizer.num_special_tokens_to_add(pair=False)
    encoded = []
    for windows in per_article:
        n_tokens = (sum(len(w) - n_special - len(prefix_ids) for w in windows)
                    - stride * (len(windows) - 1))
        keep = spread_indices(len(windows), max_chunks)
        encoded.append(EncodedArticle([windows[i] for i in keep], max(n_tokens, 0),
                                      len(windows), texts[len(encoded)]))
    return encoded


def prefix_token_ids(tokenizer, prefix: str) -> list[int]:
    """The ids `prefix` contributes at the start of a text, as `tokenizer(prefix + text)`
    would give them. Tokenised alone, a prefix ending in a space can gain a token of its
    own (SentencePiece reads "passage: " as "▁passage", ":", "▁"), so the ids come from
    the prefix followed by a word, minus that word's ids."""
    if not prefix:
        return []
    word = "x"
    full = tokenizer(prefix + word, add_special_tokens=False)["input_ids"]
    tail = tokenizer(word, add_special_tokens=False)["input_ids"]
    if full[len(full) - len(tail):] == tail:
        return full[:len(full) - len(tail)]
    return tokenizer(prefix.rstrip(), add_special_tokens=False)["input_ids"]


def spread_indices(n: int, k: int) -> list[int]:
    """`k` indices out of `range(n)` spread evenly, first and last included."""
    if n <= k:
        return list(range(n))
    return sorted(set(np.linspace(0, n - 1, k).round().astype(int).tolist()))


def pick_training_windows(n: int, k: int, how: str, rng: random.Random) -> list[int]:
    """Window indices for one training step: the first `k`, or a random run of `k`."""
    if n <= k:
        return list(range(n))
    start = 0 if how == "first" else rng.randrange(n - k + 1)
    return list(range(start, start + k))
