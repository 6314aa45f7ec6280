"""The synthetic corpus: determinism, entropy figures, the CLI."""

import itertools
import json
import math
import random
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lmworker import corpus

WORKER_DIR = Path(corpus.__file__).resolve().parents[1]


def test_generation_is_deterministic_by_seed() -> None:
    a = corpus.generate_corpus(n_sentences=200, seed=1)
    assert a == corpus.generate_corpus(n_sentences=200, seed=1)
    assert a != corpus.generate_corpus(n_sentences=200, seed=2)
    assert a.count("\n") == 200
    assert a.endswith(".\n") or a.endswith("?\n")
    assert a.isascii()


def test_n_bytes_gives_whole_sentences_of_at_least_that_size() -> None:
    text = corpus.generate_corpus(n_bytes=10_000, seed=0)
    assert 10_000 <= len(text) < 10_000 + 200
    assert text.endswith("\n")
    with pytest.raises(ValueError, match="exactly one"):
        corpus.generate_corpus(n_bytes=10, n_sentences=10)


def test_sentences_look_like_english_with_agreement() -> None:
    lines = corpus.generate_corpus(n_sentences=2000, seed=5).splitlines()
    assert all(line[0].isupper() or line[0].isdigit() for line in lines)
    assert any(line.startswith("An ") for line in lines)
    for line in lines:
        words = line.rstrip(".?").replace(",", "").split()
        for det, noun in itertools.pairwise(words):
            if det.lower() == "a":
                assert noun[0] not in "aeiou", line
            if det.lower() == "an":
                assert noun[0] in "aeiou", line


def test_unigram_entropy_of_known_distributions() -> None:
    assert corpus.unigram_entropy_nats([5, 5, 5]) == 0.0
    assert corpus.unigram_entropy_nats([0, 1, 2, 3] * 10) == pytest.approx(math.log(4))
    ids = [0] * 50 + [1] * 25 + [2] * 25
    expected = -(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))
    assert corpus.unigram_entropy_nats(ids) == pytest.approx(expected)
    assert corpus.unigram_entropy_nats(torch.tensor(ids)) == pytest.approx(expected)
    assert corpus.unigram_entropy_nats(bytes(ids)) == pytest.approx(expected)
    with pytest.raises(ValueError, match="empty"):
        corpus.unigram_entropy_nats([])


def test_exact_entropy_agrees_with_monte_carlo() -> None:
    rng = random.Random(11)
    samples = [corpus.sample_sentence(rng) for _ in range(20_000)]
    neg_log_p = [-lp for _, lp in samples]
    mean = statistics.fmean(neg_log_p)
    stderr = statistics.stdev(neg_log_p) / math.sqrt(len(samples))
    assert abs(mean - corpus.sentence_entropy_nats()) < 4 * stderr
    mean_len = statistics.fmean(len(s) + 1 for s, _ in samples)
    assert mean_len == pytest.approx(corpus.mean_sentence_bytes(), rel=0.01)
    # The grammar is unambiguous: one string, one derivation (hence one probability).
    seen: dict[str, float] = {}
    for text, lp in samples:
        assert seen.setdefault(text, lp) == pytest.approx(lp)


def test_entropy_rate_is_far_below_the_byte_unigram_entropy() -> None:
    text = corpus.generate_corpus(n_bytes=200_000, seed=0)
    unigram = corpus.unigram_entropy_nats(text.encode())
    rate = corpus.entropy_rate_nats_per_byte()
    assert 0.2 < rate < 1.0
    assert unigram > 2.5
    assert rate < unigram / 3


def test_cli_writes_the_file_atomically_and_prints_json(tmp_path: Path) -> None:
    out = tmp_path / "data" / "nested" / "train.txt"
    result = subprocess.run(
        [sys.executable, "-m", "lmworker.corpus", "--out", str(out), "--bytes", "5000"],
        cwd=WORKER_DIR,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    summary = json.loads(result.stdout)
    data = out.read_bytes()
    assert summary["path"] == str(out)
    assert summary["bytes"] == len(data) >= 5000
    assert summary["sentences"] == data.count(b"\n")
    assert summary["unigram_entropy_nats_per_byte"] == pytest.approx(
        corpus.unigram_entropy_nats(data)
    )
    assert summary["entropy_rate_nats_per_byte"] == pytest.approx(
        corpus.entropy_rate_nats_per_byte()
    )
    assert [p.name for p in out.parent.iterdir()] == ["train.txt"]  # no temporary left


def test_cli_by_sentences_is_seeded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "s.txt"
    assert corpus.main(["--out", str(out), "--sentences", "30", "--seed", "9"]) == 0
    assert json.loads(capsys.readouterr().out)["sentences"] == 30
    assert out.read_text() == corpus.generate_corpus(n_sentences=30, seed=9)


def test_cli_english_writes_the_held_out_prose(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lmworker.perplexity import held_out_text

    out = tmp_path / "english.txt"
    assert corpus.main(["--out", str(out), "--english"]) == 0
    assert json.loads(capsys.readouterr().out)["source"] == "pydoc_data.topics"
    assert out.read_text(encoding="utf-8") == held_out_text()
    with pytest.raises(SystemExit):
        corpus.main(["--out", str(out), "--english", "--bytes", "10"])
