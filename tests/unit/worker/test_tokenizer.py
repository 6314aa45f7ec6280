"""Byte and BPE tokenizers, and their Hugging Face files."""

from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from lmworker.corpus import generate_corpus
from lmworker.tokenizer import (
    BPETokenizer,
    ByteTokenizer,
    build_tokenizer,
    load_tokenizer,
)

TEXT = "Hello, wörld! 日本語 ✓\n  tabs\tand\r\nnewlines\n"
ASCII = "The small fox sees 17 boxes, and the owls sleep.\nDo the cats run?\n"


@pytest.fixture(scope="module")
def corpus() -> str:
    return generate_corpus(n_bytes=200_000, seed=3)


@pytest.fixture(scope="module")
def bpe(corpus: str) -> BPETokenizer:
    return BPETokenizer.train(corpus.splitlines(keepends=True), vocab_size=400)


def test_byte_tokenizer_round_trips_utf8() -> None:
    tok = ByteTokenizer()
    ids = tok.encode(TEXT)
    assert ids == list(TEXT.encode("utf-8"))
    assert tok.decode(ids) == TEXT
    assert tok.decode([*ids, tok.eos_id]) == TEXT
    assert (tok.vocab_size, tok.eos_id) == (257, 256)
    assert tok.encode_corpus(TEXT).tolist() == ids
    assert tok.encode_corpus("").numel() == 0


def test_byte_tokenizer_files_load_in_transformers_with_the_same_ids(tmp_path: Path) -> None:
    tok = ByteTokenizer()
    tok.save(tmp_path)
    for hf in (
        AutoTokenizer.from_pretrained(tmp_path),
        PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tokenizer.json")),  # type: ignore[no-untyped-call]
    ):
        for text in (ASCII, TEXT):
            ids = hf(text, add_special_tokens=False)["input_ids"]
            assert ids == tok.encode(text)
            assert hf.decode(ids) == text
    auto = AutoTokenizer.from_pretrained(tmp_path)
    assert auto.eos_token_id == 256
    assert len(auto) == 257
    assert isinstance(load_tokenizer(tmp_path), ByteTokenizer)
    assert isinstance(load_tokenizer(tmp_path / "tokenizer.json"), ByteTokenizer)


def test_bpe_trains_to_the_requested_size_and_round_trips(bpe: BPETokenizer, corpus: str) -> None:
    assert bpe.vocab_size == 400
    assert bpe.eos_id is not None
    sample = corpus[:5000]
    ids = bpe.encode(sample)
    assert len(ids) < len(sample) / 2  # merges learnt the words
    assert bpe.decode(ids) == sample
    assert bpe.decode(bpe.encode(TEXT)) == TEXT  # unseen characters fall back to bytes
    assert bpe.encode_corpus(sample).tolist() == ids


def test_bpe_training_is_deterministic(bpe: BPETokenizer, corpus: str) -> None:
    again = BPETokenizer.train(corpus.splitlines(keepends=True), vocab_size=400)
    assert again.hf.to_str() == bpe.hf.to_str()


def test_bpe_files_load_in_transformers_and_back(bpe: BPETokenizer, tmp_path: Path) -> None:
    bpe.save(tmp_path)
    hf = AutoTokenizer.from_pretrained(tmp_path)
    assert hf(ASCII, add_special_tokens=False)["input_ids"] == bpe.encode(ASCII)
    assert hf.eos_token_id == bpe.eos_id
    loaded = load_tokenizer(tmp_path)
    assert isinstance(loaded, BPETokenizer)
    assert loaded.encode(ASCII) == bpe.encode(ASCII)


def test_build_tokenizer_saves_then_loads(tmp_path: Path, corpus: str) -> None:
    path = tmp_path / "tok"
    lines = corpus.splitlines(keepends=True)
    built = build_tokenizer("BPE", lines, 300, path)
    assert (path / "tokenizer.json").is_file()
    loaded = build_tokenizer("BPE", None, 300, path)
    assert loaded.encode(ASCII) == built.encode(ASCII)
    with pytest.raises(ValueError, match="is BPE"):
        build_tokenizer("Bytes", None, 300, path)
    assert isinstance(build_tokenizer("Bytes"), ByteTokenizer)
    with pytest.raises(ValueError, match="Bytes or BPE"):
        build_tokenizer("Words")


def test_encode_corpus_is_fast_enough_for_megabytes(bpe: BPETokenizer) -> None:
    big = generate_corpus(n_bytes=2_000_000, seed=4)
    ids = ByteTokenizer().encode_corpus(big)
    assert ids.dtype == torch.int64
    assert ids.numel() == len(big)
    assert bpe.decode(bpe.encode_corpus(big[:100_000]).tolist()) == big[:100_000]
