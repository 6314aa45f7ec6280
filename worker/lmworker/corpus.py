"""A synthetic English-like corpus whose entropy is known exactly.

Sentences come from a small probabilistic context-free grammar without recursion:
subjects (animals) and objects (things) with optional adjectives, determiners that agree
in number ("this cat", "some cats", "an old owl", "17 foxes"), verbs that agree with the
subject ("sees"/"see"), prepositional phrases, coordinated clauses and questions. The
vocabulary is small and spelling is deterministic, so a tiny byte-level model quickly
learns most of it; what remains is the entropy of the grammar's choices.

The grammar is unambiguous (a sentence determines every choice that made it), so a
sentence's entropy is the expected sum of its choices' entropies, computed exactly by
`sentence_entropy_nats`, and the entropy rate of the stream of independent sentences,
each ended by "\\n", is that divided by the expected bytes per sentence. A model's
cross-entropy in nats per byte cannot go below `entropy_rate_nats_per_byte()`.

CLI: python -m lmworker.corpus --out PATH [--bytes N | --sentences N] [--seed S]
     python -m lmworker.corpus --out PATH --english   (real English prose instead: the
     Python documentation's prose, which ships with Python; `perplexity.held_out_text`)
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import os
import random
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import torch

from lmworker.files import write_atomically

# (singular, plural)
_ANIMALS = [
    ("cat", "cats"),
    ("dog", "dogs"),
    ("bird", "birds"),
    ("fox", "foxes"),
    ("horse", "horses"),
    ("rabbit", "rabbits"),
    ("mouse", "mice"),
    ("child", "children"),
    ("farmer", "farmers"),
    ("teacher", "teachers"),
    ("owl", "owls"),
    ("eagle", "eagles"),
    ("otter", "otters"),
    ("elephant", "elephants"),
]
_THINGS = [
    ("ball", "balls"),
    ("book", "books"),
    ("box", "boxes"),
    ("letter", "letters"),
    ("key", "keys"),
    ("song", "songs"),
    ("stone", "stones"),
    ("cake", "cakes"),
    ("bottle", "bottles"),
    ("apple", "apples"),
    ("idea", "ideas"),
    ("orange", "oranges"),
    ("umbrella", "umbrellas"),
]
_ADJECTIVES = [
    *("big", "small", "young", "red", "green", "quiet", "happy", "tiny"),
    *("old", "angry", "early", "empty"),
]
# (third person singular, plural and base form)
_TRANSITIVE = [
    ("sees", "see"),
    ("likes", "like"),
    ("finds", "find"),
    ("carries", "carry"),
    ("watches", "watch"),
    ("wants", "want"),
    ("takes", "take"),
    ("drops", "drop"),
]
_INTRANSITIVE = [
    ("sleeps", "sleep"),
    ("runs", "run"),
    ("sings", "sing"),
    ("waits", "wait"),
    ("jumps", "jump"),
    ("smiles", "smile"),
]
_ADVERBS = ["quickly", "slowly", "quietly", "often", "again", "today", "happily"]
_PREPOSITIONS = ["in", "near", "behind", "under", "beside"]
_PLACES = ["park", "river", "garden", "market", "school", "forest", "village"]
_NUMBER_WORDS = ["two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]

# Probability that a noun phrase has an adjective.
_P_ADJ = 0.4

Alternative = tuple[float, tuple[str, ...]]


def _uniform(words: Sequence[str]) -> list[Alternative]:
    return [(1.0, (w,)) for w in words]


def _vowel(word: str) -> bool:
    return word[0] in "aeiou"


def _indefinite(noun: str, nouns: Sequence[str]) -> list[Alternative]:
    """An indefinite article, an optional adjective and a noun: "a" or "an" by the next
    word's first letter, so each alternative fixes which list that word comes from."""
    adj_v = sum(map(_vowel, _ADJECTIVES)) / len(_ADJECTIVES)
    noun_v = sum(map(_vowel, nouns)) / len(nouns)
    return [
        (_P_ADJ * (1 - adj_v), ("a ", "<ADJ_C>", " ", f"<{noun}>")),
        (_P_ADJ * adj_v, ("an ", "<ADJ_V>", " ", f"<{noun}>")),
        ((1 - _P_ADJ) * (1 - noun_v), ("a ", f"<{noun}_C>")),
        ((1 - _P_ADJ) * noun_v, ("an ", f"<{noun}_V>")),
    ]


def _grammar() -> dict[str, list[Alternative]]:
    """Nonterminals are "<NAME>"; every other string is literal text."""
    animals_sg = [s for s, _ in _ANIMALS]
    things_sg = [s for s, _ in _THINGS]
    g: dict[str, list[Alternative]] = {
        "S": [
            (0.50, ("<CLAUSE>", ".")),
            (0.15, ("<CLAUSE>", " ", "<PREP>", " the ", "<PLACE>", ".")),
            (0.15, ("<CLAUSE>", ", and ", "<CLAUSE>", ".")),
            (0.20, ("<QUESTION>", "?")),
        ],
        "CLAUSE": [
            (0.55, ("<SUBJ_SG>", " ", "<VP_SG>")),
            (0.45, ("<SUBJ_PL>", " ", "<VP_PL>")),
        ],
        "QUESTION": [
            (0.55, ("does ", "<SUBJ_SG>", " ", "<VP_PL>")),
            (0.45, ("do ", "<SUBJ_PL>", " ", "<VP_PL>")),
        ],
        "VP_SG": [
            (0.60, ("<VT_SG>", " ", "<OBJ>")),
            (0.25, ("<VI_SG>",)),
            (0.15, ("<VI_SG>", " ", "<ADV>")),
        ],
        "VP_PL": [
            (0.60, ("<VT_PL>", " ", "<OBJ>")),
            (0.25, ("<VI_PL>",)),
            (0.15, ("<VI_PL>", " ", "<ADV>")),
        ],
        "SUBJ_SG": [
            (0.50, ("the ", "<MOD>", "<ANIMAL_SG>")),
            (0.15, ("this ", "<MOD>", "<ANIMAL_SG>")),
            (0.35, ("<INDEF_ANIMAL>",)),
        ],
        "SUBJ_PL": [
            (0.45, ("the ", "<MOD>", "<ANIMAL_PL>")),
            (0.20, ("some ", "<MOD>", "<ANIMAL_PL>")),
            (0.35, ("<NUM>", " ", "<MOD>", "<ANIMAL_PL>")),
        ],
        "OBJ": [
            (0.40, ("the ", "<MOD>", "<THING_SG>")),
            (0.25, ("<INDEF_THING>",)),
            (0.20, ("the ", "<MOD>", "<THING_PL>")),
            (0.15, ("<NUM>", " ", "<MOD>", "<THING_PL>")),
        ],
        "MOD": [(1 - _P_ADJ, ("",)), (_P_ADJ, ("<ADJ>", " "))],
        "NUM": [(0.7, ("<NUMBER_WORD>",)), (0.15, ("<D29>",)), (0.15, ("<D19>", "<D09>"))],
        "INDEF_ANIMAL": _indefinite("ANIMAL_SG", animals_sg),
        "INDEF_THING": _indefinite("THING_SG", things_sg),
        "ANIMAL_SG": _uniform(animals_sg),
        "ANIMAL_SG_C": _uniform([w for w in animals_sg if not _vowel(w)]),
        "ANIMAL_SG_V": _uniform([w for w in animals_sg if _vowel(w)]),
        "ANIMAL_PL": _uniform([p for _, p in _ANIMALS]),
        "THING_SG": _uniform(things_sg),
        "THING_SG_C": _uniform([w for w in things_sg if not _vowel(w)]),
        "THING_SG_V": _uniform([w for w in things_sg if _vowel(w)]),
        "THING_PL": _uniform([p for _, p in _THINGS]),
        "ADJ": _uniform(_ADJECTIVES),
        "ADJ_C": _uniform([w for w in _ADJECTIVES if not _vowel(w)]),
        "ADJ_V": _uniform([w for w in _ADJECTIVES if _vowel(w)]),
        "VT_SG": _uniform([s for s, _ in _TRANSITIVE]),
        "VT_PL": _uniform([p for _, p in _TRANSITIVE]),
        "VI_SG": _uniform([s for s, _ in _INTRANSITIVE]),
        "VI_PL": _uniform([p for _, p in _INTRANSITIVE]),
        "ADV": _uniform(_ADVERBS),
        "PREP": _uniform(_PREPOSITIONS),
        "PLACE": _uniform(_PLACES),
        "NUMBER_WORD": _uniform(_NUMBER_WORDS),
        "D29": _uniform([str(d) for d in range(2, 10)]),
        "D19": _uniform([str(d) for d in range(1, 10)]),
        "D09": _uniform([str(d) for d in range(10)]),
    }
    return g


@dataclass(frozen=True)
class _Rule:
    cumulative: tuple[float, ...]  # normalised, last exactly 1.0
    log_probs: tuple[float, ...]
    # Each alternative reversed, for pushing on the expansion stack; ints are rule ids.
    reversed_alts: tuple[tuple[str | int, ...], ...]


def _compile(grammar: dict[str, list[Alternative]]) -> tuple[list[_Rule], dict[str, int]]:
    ids = {name: i for i, name in enumerate(grammar)}

    def symbol(s: str) -> str | int:
        return ids[s[1:-1]] if s.startswith("<") else s

    rules = []
    for alts in grammar.values():
        total = sum(w for w, _ in alts)
        probs = [w / total for w, _ in alts]
        cumulative = [sum(probs[: i + 1]) for i in range(len(probs))]
        cumulative[-1] = 1.0
        rules.append(
            _Rule(
                cumulative=tuple(cumulative),
                log_probs=tuple(math.log(p) for p in probs),
                reversed_alts=tuple(
                    tuple(symbol(s) for s in reversed(seq) if s != "") for _, seq in alts
                ),
            )
        )
    return rules, ids


_RULES, _RULE_IDS = _compile(_grammar())
_START = _RULE_IDS["S"]


def sample_sentence(rng: random.Random) -> tuple[str, float]:
    """One sentence (without its newline) and its log-probability in nats."""
    parts: list[str] = []
    log_p = 0.0
    stack: list[str | int] = [_START]
    rules = _RULES
    while stack:
        sym = stack.pop()
        if isinstance(sym, str):
            parts.append(sym)
            continue
        rule = rules[sym]
        i = bisect.bisect_right(rule.cumulative, rng.random())
        log_p += rule.log_probs[i]
        stack.extend(rule.reversed_alts[i])
    text = "".join(parts)
    return text[0].upper() + text[1:], log_p


def generate_corpus(
    *, n_sentences: int | None = None, n_bytes: int | None = None, seed: int = 0
) -> str:
    """Sentences, one per line, each ending in "\\n"; the same seed gives the same text.

    Give exactly one of `n_sentences` or `n_bytes`; with `n_bytes` whole sentences are
    added until the text has at least that many bytes (it is ASCII: bytes == chars).
    """
    if (n_sentences is None) == (n_bytes is None):
        raise ValueError("give exactly one of n_sentences or n_bytes")
    rng = random.Random(seed)
    lines: list[str] = []
    if n_sentences is not None:
        for _ in range(n_sentences):
            lines.append(sample_sentence(rng)[0])
    else:
        assert n_bytes is not None
        size = 0
        while size < n_bytes:
            line = sample_sentence(rng)[0]
            lines.append(line)
            size += len(line) + 1
    return "".join(line + "\n" for line in lines)


@cache
def _expectations(rule_id: int) -> tuple[float, float]:
    """(entropy in nats, expected length in bytes) of the text a nonterminal derives."""
    rule = _RULES[rule_id]
    entropy = 0.0
    length = 0.0
    for log_p, alt in zip(rule.log_probs, rule.reversed_alts, strict=True):
        p = math.exp(log_p)
        entropy -= p * log_p
        for sym in alt:
            if isinstance(sym, str):
                length += p * len(sym)
            else:
                sub_entropy, sub_length = _expectations(sym)
                entropy += p * sub_entropy
                length += p * sub_length
    return entropy, length


def sentence_entropy_nats() -> float:
    """Exact entropy of one sentence, in nats."""
    return _expectations(_START)[0]


def mean_sentence_bytes() -> float:
    """Exact expected length of a line, newline included."""
    return _expectations(_START)[1] + 1.0


def entropy_rate_nats_per_byte() -> float:
    """Exact entropy rate of the corpus stream: sentence entropy / expected line length."""
    return sentence_entropy_nats() / mean_sentence_bytes()


def unigram_entropy_nats(ids: Sequence[int] | bytes | torch.Tensor) -> float:
    """Empirical unigram entropy of a token stream in nats per token.

    It is the loss of the best model that ignores context, the baseline a
    cross-entropy loss in nats should beat.
    """
    if isinstance(ids, bytes | bytearray):
        ids = torch.frombuffer(bytearray(ids), dtype=torch.uint8) if ids else torch.zeros(0)
    if isinstance(ids, torch.Tensor):
        counts = [int(c) for c in torch.bincount(ids.flatten().long()) if c]
    else:
        counts = list(Counter(ids).values())
    total = sum(counts)
    if total == 0:
        raise ValueError("the unigram entropy of an empty stream is undefined")
    return -sum(c / total * math.log(c / total) for c in counts)


def write_corpus(
    path: str | os.PathLike[str],
    *,
    n_sentences: int | None = None,
    n_bytes: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Write a corpus atomically (parents created) and return a summary of it."""
    text = generate_corpus(n_sentences=n_sentences, n_bytes=n_bytes, seed=seed)
    data = text.encode("ascii")
    target = write_atomically(path, data)
    return {
        "path": str(target),
        "bytes": len(data),
        "sentences": text.count("\n"),
        "unigram_entropy_nats_per_byte": unigram_entropy_nats(data),
        "entropy_rate_nats_per_byte": entropy_rate_nats_per_byte(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lmworker.corpus", description="Write a synthetic training corpus."
    )
    parser.add_argument("--out", required=True, help="the text file to write")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--bytes", type=int, help="at least this many bytes (default 1000000)")
    size.add_argument("--sentences", type=int, help="exactly this many sentences")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--english",
        action="store_true",
        help="write real English prose (the Python documentation's, ~260 kB) instead",
    )
    args = parser.parse_args(argv)
    if args.english:
        if args.bytes is not None or args.sentences is not None:
            parser.error("--english writes the whole text: leave out --bytes and --sentences")
        from lmworker.perplexity import held_out_text

        data = held_out_text().encode("utf-8")
        target = write_atomically(args.out, data)
        print(json.dumps({"path": str(target), "bytes": len(data), "source": "pydoc_data.topics"}))
        return 0
    n_bytes = args.bytes
    if args.bytes is None and args.sentences is None:
        n_bytes = 1_000_000
    summary = write_corpus(args.out, n_sentences=args.sentences, n_bytes=n_bytes, seed=args.seed)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
