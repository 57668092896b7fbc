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
_NEWLINES = re.compile(r"\r\n?")
_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200b\u3000]+")
_BLANK_LINES = re.compile(r"\n\s*\n+")
MAX_FURNITURE_LINES = 60
# Furniture lines are short ("Comments", "Sign up for our newsletter ..."); a longer line
# that starts with a marker's words is a sentence ("Comment ont-ils pu ...", in French).
MAX_MARKER_CHARS = 100
MIN_KEPT_SHARE = 0.5
# This many headline-like lines in a row before the furniture are a headline list too.
MIN_HEADLINE_LIST = 6
# How running text ends a line (Latin, CJK full-width, Devanagari, Arabic); a line that
# ends otherwise may be a headline.
_SENTENCE_ENDS = (".", ":", ";", ",", "\u3002", "\uff0e", "\uff0c", "\uff1b", "\uff1a",
                  "\uff01", "\uff1f", "\u0964", "\u06d4", "\u060c")

# Lines that mark the start of scraped page furniture at the end of an article.
_BOILERPLATE_MARKERS = re.compile(
    r"^\s*(featured video|latest news|related (news|articles|stories|posts)|read more|"
    r"editorial picks?|top stories|most (read|popular|viewed)|more stories|we use cookies|"
    r"read the whole article|more from|recommended|trending|you may also like|"
    r"receive our daily newsletter|sign up for|subscribe|share this|follow (us|on)|"
    r"advertisement\s*$|comments?\s*(\(\d+\)|\d+)?\s*$|email \*|"
    r"(article )?(posted|reprinted) with permission|"
    r"copyright|©\s*(\d{4}|copyright)|the best of |see all of the best photos|our standards:)",
    re.IGNORECASE,
)


def clean_text(text: str, clean_boilerplate: bool = False) -> str:
    """Normalise Unicode and whitespace, drop control characters, optionally cut the
    trailing page boilerplate that scrapers leave after the article body."""
    return _clean(text, clean_boilerplate, mapped=False)[0]


def clean_text_mapped(text: str, clean_boilerplate: bool = False) -> tuple[str, np.ndarray]:
    """`clean_text` and, for every character of its result, the index in `text` of the
    character it came from (one more entry maps the end of the result), so that
    passages found in the cleaned text can be given as offsets into the user's text."""
    return _clean(text, clean_boilerplate, mapped=True)


def _clean(text: str, clean_boilerplate: bool, mapped: bool):
    """The one cleaning rule, with or without the origin map (which costs a little)."""
    if mapped:
        text, origin = _nfc_mapped(text)
    else:
        text, origin = unicodedata.normalize("NFC", text), None
    for pattern, replacement in ((_NEWLINES, "\n"), (_CONTROL, " "), (_SPACES, " "),
                                 (_BLANK_LINES, "\n\n")):
        if mapped:
            text, origin = _sub_mapped(pattern, replacement, text, origin)
        else:
            text = pattern.sub(replacement, text)
    start = len(text) - len(text.lstrip())
    end = len(text.rstrip())
    if clean_boilerplate:
        end = start + len(strip_boilerplate(text[start:end]))
    return text[start:end], (np.append(origin[start:end], origin[end]) if mapped else None)


def _sub_mapped(pattern: re.Pattern, replacement: str, text: str,
                origin: np.ndarray) -> tuple[str, np.ndarray]:
    """`pattern.sub(replacement, text)`, carrying the origin map: replacement characters
    map to the start of what they replace."""
    pieces, maps, done = [], [], 0
    for match in pattern.finditer(text):
        if match.group() == replacement:
            continue  # already clean (most single spaces and paragraph breaks)
        pieces += [text[done:match.start()], replacement]
        maps += [origin[done:match.start()], np.full(len(replacement), origin[match.start()])]
        done = match.end()
    if not pieces:
        return text, origin
    pieces.append(text[done:])
    maps.append(origin[done:])
    return "".join(pieces), np.concatenate(maps)


def _nfc_mapped(text: str) -> tuple[str, np.ndarray]:
    """NFC normalisation with an origin map (see `clean_text_mapped`). Composition never
    crosses white space, so each run of non-space characters is normalised on its own;
    within a run that changes, each cluster (a base character and its marks) maps to its
    base, and in the rare run where clusters compose with each other (Hangul written as
    separate jamo, some Indic vowel signs) positions are spread over that run alone."""
    if unicodedata.is_normalized("NFC", text):
        return text, np.arange(len(text) + 1)
    pieces, maps, done = [], [], 0
    for run in re.finditer(r"\S+", text):
        piece, begin = run.group(), run.start()
        if piece.isascii() or unicodedata.is_normalized("NFC", piece):
            continue  # kept as it is, with the text around it, below
        pieces.append(text[done:begin])
        maps.append(np.arange(done, begin))
        done = run.end()
        whole = unicodedata.normalize("NFC", piece)
        starts = [i for i, ch in enumerate(piece) if i == 0 or not unicodedata.combining(ch)]
        parts = [unicodedata.normalize("NFC", piece[a:b])
                 for a, b in zip(starts, starts[1:] + [len(piece)])]
        if "".join(parts) == whole:
            # A cluster that keeps its length maps one to one; one that composes, to its base.
            maps += [begin + (np.arange(a, a + len(part)) if len(part) == b - a
                              else np.full(len(part), a))
                     for a, b, part in zip(starts, starts[1:] + [len(piece)], parts)]
        else:
            maps.append(begin + np.floor(np.arange(len(whole)) * len(piece)
                                         / len(whole)).astype(np.int64))
        pieces.append(whole)
    pieces.append(text[done:])
    maps.append(np.arange(done, len(text)))
    return "".join(pieces), np.append(np.concatenate(maps).astype(np.int64), len(text))


def strip_boilerplate(text: str) -> str:
    """Cut the page furniture scrapers leave after an article body.

    The cut is found at the first marker line ("Latest News", "Subscribe", "©", ...; a
    short line, not a sentence that happens to start so) in the text's last third, where
    such blocks live, so a "read more" inside the story is never taken for one.
    Furniture often begins higher, with lists of other headlines under their own
    headings ("Featured Video", "Editorial Pick"): from the cut, the rule walks up over
    headline-like lines (short, not closed like a sentence) and moves the cut to any
    marker it meets there; with no marker in the last third it walks up from the end the
    same way, since a long headline list can fill the last third by itself. A run of
    MIN_HEADLINE_LIST or more headline-like lines above the furniture goes too, whatever
    its heading says. A few short lines of the story (a byline, a sign-off) only go if a
    marker stands above them. A cut that would take more than half of the text is no
    cut (a poll or sign-up box in the middle of a story); the next marker is tried."""
    lines = text.split("\n")
    ends = np.cumsum([len(line) + 1 for line in lines])  # where each line's successor starts
    first = int(len(lines) * 2 / 3)
    for marker in [i for i in range(first, len(lines)) if _is_marker(lines[i])] + [len(lines)]:
        cut = _walk_up(lines, marker)
        kept = int(ends[cut - 1]) if cut else 0
        if (cut < len(lines) and kept >= MIN_KEPT_SHARE * len(text)
                and sum(map(_prose, lines[cut:])) < 2):
            return text[:kept].strip() or text
    return text


def _prose(line: str) -> bool:
    """A paragraph of running text: long and closed like a sentence. Two of them after a
    cut mean the story goes on (an advert, a photo credit or a poll box inside it)."""
    line = _unclosed(line)
    return len(line) >= 200 and line.endswith((".", "!", "?", "\u3002", "\uff01", "\uff1f"))


def _walk_up(lines: list[str], cut: int) -> int:
    """The line the furniture starts at, walking up from line `cut` (see above)."""
    i, run, top = cut - 1, 0, cut
    # At most MAX_FURNITURE_LINES up: headline blocks are a few dozen lines, and a text
    # of short lines (a list, verse, a language this rule misreads) must keep its body.
    stop = max(0, cut - MAX_FURNITURE_LINES)
    while i > stop and (_is_marker(lines[i]) or _headline_like(lines[i])):
        if _is_marker(lines[i]):
            cut, run = i, 0  # the list rule counts only lines above the highest marker
        elif lines[i].strip():
            run += 1
        top = i
        i -= 1
    # A list of headlines under a heading no marker names, but not the story's own list
    # (introduced by a colon, or bulleted).
    above = lines[top - 1].strip() if top > 0 else ""
    bulleted = any(line.lstrip().startswith(("-", "\u2022", "*", "\u2013"))
                   for line in lines[top:cut])
    if run >= MIN_HEADLINE_LIST and cut < len(lines) and not above.endswith(":") \
            and not bulleted:
        cut = top
    return cut


def _is_marker(line: str) -> bool:
    return len(line.strip()) <= MAX_MARKER_CHARS and bool(_BOILERPLATE_MARKERS.match(line))


def _headline_like(line: str) -> bool:
    """Short, and not closed like a sentence of running text (quotes aside: headlines
    often end in a quoted word, and questions and exclamations are headlines too)."""
    line = _unclosed(line)
    if line.endswith(("...", "\u2026")):  # a headline cut short to fit a list
        return len(line) <= 150
    return not line or (len(line) <= 150 and not line.endswith(_SENTENCE_ENDS))


def _unclosed(line: str) -> str:
    """A line without surrounding space and the quotes or brackets that close it, so that
    how it ends can be read."""
    return line.strip().rstrip("\"'\u2019\u201d\u00bb)]\u300d\u300f")


def join_title(title: str | None, text: str) -> str:
    """Articles given as title + body are read as one text, headline first."""
    return title_prefix(title, text) + text


def title_prefix(title: str | None, text: str) -> str:
    """What `join_title` puts before `text`: the stripped title and a blank line, or
    nothing when there is no title or the text already opens with it."""
    if title and title.strip() and not text.lstrip().startswith(title.strip()):
        return f"{title.strip()}\n\n"
    return ""


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
    # With `spans=True`: per window, each token's [start, end) in `text` (-1 for special
    # and prefix tokens), so evidence can be traced back to characters.
    spans: list[np.ndarray] | None = None
    # Index in the caller's text of each character of `text` (`clean_text_mapped`).
    origin: np.ndarray | None = None

    @property
    def truncated(self) -> bool:
        return len(self.windows) < self.n_windows_total


def chunk_articles(tokenizer, texts: list[str], max_length: int, stride: int,
                   max_chunks: int, prefix: str = "", spans: bool = False
                   ) -> list[EncodedArticle]:
    """Tokenise whole articles into overlapping windows of `max_length` tokens.

    The fast tokenizer does the windowing itself (`return_overflowing_tokens`), so windows
    respect word pieces and special tokens. An article needing more than `max_chunks`
    windows keeps that many, spread evenly from its first window to its last. A `prefix`
    (e5 encoders read passages as "passage: ...") starts every window, right after the
    first special token, and leaves that much less room for the article. `spans` keeps
    each token's character span (`EncodedArticle.spans`).
    """
    prefix_ids = prefix_token_ids(tokenizer, prefix)
    # The prefix goes after the first special token ([CLS] / <s>), where the encoder saw it.
    at = 1 if tokenizer.num_special_tokens_to_add(pair=False) else 0
    if max_length - len(prefix_ids) - stride < 8:
        raise ValueError(f"prefix {prefix!r} leaves too little of a {max_length}-token window")
    enc = tokenizer(texts, max_length=max_length - len(prefix_ids), stride=stride,
                    truncation=True,
                    return_overflowing_tokens=True, return_attention_mask=False,
                    return_token_type_ids=False, return_offsets_mapping=spans,
                    return_special_tokens_mask=spans)
    per_article: list[list[list[int]]] = [[] for _ in texts]
    per_article_spans: list[list[np.ndarray]] = [[] for _ in texts]
    for w, (window, article) in enumerate(zip(enc["input_ids"],
                                              enc["overflow_to_sample_mapping"])):
        per_article[article].append(window[:at] + prefix_ids + window[at:] if prefix_ids
                                    else window)
        if spans:
            where = np.array(enc["offset_mapping"][w], dtype=np.int64).reshape(-1, 2)
            where[np.array(enc["special_tokens_mask"][w], dtype=bool)] = -1
            where = np.concatenate([where[:at], np.full((len(prefix_ids), 2), -1), where[at:]])
            per_article_spans[article].append(where)
    n_special = tokenizer.num_special_tokens_to_add(pair=False)
    encoded = []
    for windows in per_article:
        n_tokens = (sum(len(w) - n_special - len(prefix_ids) for w in windows)
                    - stride * (len(windows) - 1))
        keep = spread_indices(len(windows), max_chunks)
        kept_spans = [per_article_spans[len(encoded)][i] for i in keep] if spans else None
        encoded.append(EncodedArticle([windows[i] for i in keep], max(n_tokens, 0),
                                      len(windows), texts[len(encoded)], kept_spans))
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
