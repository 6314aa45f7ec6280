"""Incremental detokenizing and stop strings."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lmworker.serve.text import (
    IncrementalDetokenizer,
    StopStrings,
    TextStream,
    cut_at_stop,
    held_back_length,
)
from lmworker.tokenizer import ByteTokenizer

BYTES = ByteTokenizer().to_hf()


def decode(ids: list[int]) -> str:
    return str(BYTES.decode(ids, skip_special_tokens=True))


def encode(text: str) -> list[int]:
    return list(BYTES.encode(text, add_special_tokens=False).ids)


def test_a_character_split_over_tokens_comes_out_whole() -> None:
    d = IncrementalDetokenizer(decode)
    pieces = [d.push(t) for t in encode("aé€😀")]
    # é is 2 bytes, € 3, 😀 4: nothing is sent until each character is complete.
    assert pieces == ["a", "", "é", "", "", "€", "", "", "", "😀"]
    assert d.flush() == ""


def test_an_incomplete_character_at_the_end_is_flushed_as_a_replacement() -> None:
    d = IncrementalDetokenizer(decode)
    assert [d.push(t) for t in encode("a€")[:-1]] == ["a", "", ""]
    assert d.flush() == "\ufffd"


@given(st.text(max_size=40))
def test_pieces_add_up_to_the_text(text: str) -> None:
    d = IncrementalDetokenizer(decode, context=encode("ctx"))
    out = "".join(d.push(t) for t in encode(text)) + d.flush()
    assert out == text


def test_stop_helpers() -> None:
    assert cut_at_stop("abc STOP def", ["STOP", "c S"]) == 2
    assert cut_at_stop("abc", ["x"]) is None
    assert held_back_length("hello ST", ["STOP"]) == 2
    assert held_back_length("hello S", ["STOP", "Sx"]) == 1
    assert held_back_length("hello", ["STOP"]) == 0


def test_a_stop_string_across_pieces_is_cut_and_never_sent() -> None:
    s = StopStrings(["</end>"])
    assert s.feed("hello </") == "hello "
    assert s.feed("en") == ""
    assert s.feed("d> more") == ""
    assert s.stopped
    assert s.feed("later") == ""
    assert s.flush() == ""


def test_held_back_text_that_never_became_a_stop_is_sent() -> None:
    s = StopStrings(["STOP"])
    assert s.feed("a ST") == "a "
    assert s.feed("ART") == "START"
    assert s.feed("ST") == ""
    assert s.flush() == "ST"
    assert not s.stopped


@pytest.mark.parametrize(
    ("text", "stops", "expected"),
    [
        ("one\ntwo", ["\n"], "one"),
        ("abcabc", ["ca", "bc"], "a"),
        ("no stop here", ["zz"], "no stop here"),
        ("", ["x"], ""),
    ],
)
def test_text_stream(text: str, stops: list[str], expected: str) -> None:
    stream = TextStream(decode, stops)
    out = ""
    for token in encode(text):
        out += stream.push(token)
        if stream.stopped:
            break
    if not stream.stopped:
        out += stream.finish()
    assert out == expected
