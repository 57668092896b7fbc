"""Property-based tests (hypothesis) of the text and record paths."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from model.core.text import chunk_articles, clean_text
from model.inputs.records import iter_articles

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def tokenizer(tiny_encoder):
    return AutoTokenizer.from_pretrained(tiny_encoder)


@SETTINGS
@given(st.text())
def test_clean_text_is_idempotent_and_drops_controls(text):
    once = clean_text(text)
    assert clean_text(once) == once
    assert not any(ord(c) < 32 and c not in "\n\t" for c in once)
    assert once == once.strip()
    # The furniture cutter only ever drops a tail (cutting again may find more to cut).
    assert once.startswith(clean_text(text, clean_boilerplate=True))


@SETTINGS
@given(st.lists(st.text(min_size=0, max_size=3000), min_size=1, max_size=5),
       st.integers(16, 64), st.integers(1, 6))
def test_windows_respect_limits_and_count_every_token(tokenizer, texts, length, max_chunks):
    stride = length // 4
    encoded = chunk_articles(tokenizer, texts, length, stride, max_chunks)
    assert len(encoded) == len(texts)
    for text, art in zip(texts, encoded):
        assert 1 <= len(art.windows) <= max_chunks
        assert all(len(w) <= length for w in art.windows)
        assert art.n_tokens == len(tokenizer(text, add_special_tokens=False)["input_ids"])
        assert art.truncated == (art.n_windows_total > max_chunks)


record = st.one_of(
    st.fixed_dictionaries({"id": st.text(max_size=5), "text": st.text(max_size=50)}),
    st.fixed_dictionaries({"text": st.one_of(st.none(), st.integers(), st.text(max_size=20)),
                           "title": st.one_of(st.none(), st.text(max_size=20))}),
    st.binary(max_size=40).map(lambda b: b.replace(b"\n", b" ")),
)


@SETTINGS
@given(st.lists(record, min_size=1, max_size=30))
def test_every_jsonl_line_gives_one_record_or_one_error(tmp_path_factory, lines):
    path = tmp_path_factory.mktemp("prop") / "in.jsonl"
    raw = [x if isinstance(x, bytes) else json.dumps(x).encode() for x in lines]
    path.write_bytes(b"\n".join(raw) + b"\n")
    records = list(iter_articles(path))
    assert len(records) == sum(1 for r in raw if r.strip())
    for r in records:
        assert (r.text is None) == (r.error is not None)
        if r.text is not None:
            assert isinstance(r.text, str) and r.text.strip()
