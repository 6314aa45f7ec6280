"""Tokenizers: raw bytes, or byte-level BPE trained with the `tokenizers` library.

Both save as Hugging Face files (tokenizer.json, tokenizer_config.json,
special_tokens_map.json) that `transformers.AutoTokenizer` loads and that give the same
ids, so an exported model is usable as is. The byte tokenizer is written as a byte-level
BPE model without merges whose vocabulary maps each byte's ByteLevel character to the
byte's value: ids 0-255 are the bytes of the UTF-8 text, 256 is the end-of-text token.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from tokenizers import AddedToken, decoders, models, pre_tokenizers, trainers
from tokenizers import Tokenizer as HFTokenizer

from lmworker.files import write_atomically

EOS_TOKEN = "<|endoftext|>"
TOKENIZER_FILE = "tokenizer.json"
# Our own key in tokenizer_config.json; transformers ignores unknown keys.
KIND_KEY = "elasticlm_tokenizer"
# Lines are encoded in batches of this many when encoding a whole corpus.
_ENCODE_BATCH_LINES = 4096


class Tokenizer(ABC):
    """Text to token ids and back, plus saving in the Hugging Face format."""

    kind: str  # "Bytes" | "BPE"

    @abstractmethod
    def encode(self, text: str) -> list[int]: ...

    @abstractmethod
    def decode(self, ids: Iterable[int]) -> str:
        """Text of the ids; the end-of-text token is left out."""

    @property
    @abstractmethod
    def vocab_size(self) -> int: ...

    @property
    @abstractmethod
    def eos_id(self) -> int: ...

    @abstractmethod
    def to_hf(self) -> HFTokenizer:
        """The equivalent `tokenizers.Tokenizer`, which is what gets saved."""

    def encode_corpus(self, text: str) -> torch.Tensor:
        """All of a (large) text as one int64 tensor of ids."""
        return torch.tensor(self.encode(text), dtype=torch.int64)

    def save(self, directory: str | os.PathLike[str]) -> None:
        """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        self.to_hf().save(str(out / TOKENIZER_FILE))
        config = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": EOS_TOKEN,
            "eos_token": EOS_TOKEN,
            # Byte-level text decodes exactly; transformers' space clean-up would alter it.
            "clean_up_tokenization_spaces": False,
            KIND_KEY: self.kind,
        }
        _write_json(out / "tokenizer_config.json", config)
        _write_json(
            out / "special_tokens_map.json", {"bos_token": EOS_TOKEN, "eos_token": EOS_TOKEN}
        )


class ByteTokenizer(Tokenizer):
    """UTF-8 bytes as ids 0-255, and end-of-text as 256.

    Text is encoded literally: the string "<|endoftext|>" becomes its 13 bytes here, while
    the saved Hugging Face tokenizer maps it to id 256, as it does for any special token.
    """

    kind = "Bytes"

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Iterable[int]) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")

    @property
    def vocab_size(self) -> int:
        return 257

    @property
    def eos_id(self) -> int:
        return 256

    def encode_corpus(self, text: str) -> torch.Tensor:
        data = bytearray(text.encode("utf-8"))
        if not data:
            return torch.zeros(0, dtype=torch.int64)
        return torch.frombuffer(data, dtype=torch.uint8).to(torch.int64)

    def to_hf(self) -> HFTokenizer:
        vocab = {char: byte for byte, char in _bytes_to_unicode().items()}
        hf = HFTokenizer(models.BPE(vocab=vocab, merges=[]))
        # No regex split, no prefix space: every byte becomes exactly its ByteLevel character.
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        hf.decoder = decoders.ByteLevel()
        hf.add_special_tokens([AddedToken(EOS_TOKEN, special=True)])
        return hf


class BPETokenizer(Tokenizer):
    """Byte-level BPE (GPT-2 style) with an end-of-text special token."""

    kind = "BPE"

    def __init__(self, hf: HFTokenizer) -> None:
        eos = hf.token_to_id(EOS_TOKEN)
        if eos is None:
            raise ValueError(f"the tokenizer has no {EOS_TOKEN!r} token to end texts with")
        self.hf = hf
        self._eos_id: int = eos

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int) -> BPETokenizer:
        """Learn merges from `texts`; training is deterministic for the same texts.

        `vocab_size` is an upper bound: a corpus with few distinct words runs out of
        merges sooner.
        """
        if vocab_size < 257:
            raise ValueError(f"a byte-level BPE vocabulary needs >= 257 entries, got {vocab_size}")
        hf = HFTokenizer(models.BPE())
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        hf.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=[EOS_TOKEN],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        hf.train_from_iterator(texts, trainer=trainer)
        return cls(hf)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> BPETokenizer:
        return cls(HFTokenizer.from_file(str(path)))

    def encode(self, text: str) -> list[int]:
        return list(self.hf.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Iterable[int]) -> str:
        return str(self.hf.decode(list(ids), skip_special_tokens=True))

    @property
    def vocab_size(self) -> int:
        return int(self.hf.get_vocab_size(with_added_tokens=True))

    @property
    def eos_id(self) -> int:
        return self._eos_id

    def encode_corpus(self, text: str) -> torch.Tensor:
        """Encodes line by line (in parallel batches): a line end is always a token boundary."""
        ids: list[int] = []
        for batch in _line_batches(text):
            for encoding in self.hf.encode_batch(batch, add_special_tokens=False):
                ids.extend(encoding.ids)
        return torch.tensor(ids, dtype=torch.int64)

    def to_hf(self) -> HFTokenizer:
        return self.hf


def load_tokenizer(path: str | os.PathLike[str]) -> Tokenizer:
    """Load a tokenizer directory (as `Tokenizer.save` writes) or a tokenizer.json file."""
    p = Path(path)
    file = p / TOKENIZER_FILE if p.is_dir() else p
    if not file.is_file():
        raise FileNotFoundError(f"no tokenizer at {file}: expected a Hugging Face tokenizer.json")
    kind = None
    config_file = file.parent / "tokenizer_config.json"
    if config_file.is_file():
        kind = json.loads(config_file.read_text()).get(KIND_KEY)
    if kind == "Bytes" or (kind is None and _is_byte_tokenizer(json.loads(file.read_text()))):
        return ByteTokenizer()
    return BPETokenizer.from_file(file)


def build_tokenizer(
    kind: str,
    texts: Iterable[str] | None = None,
    vocab_size: int = 4096,
    path: str | os.PathLike[str] | None = None,
) -> Tokenizer:
    """The job's tokenizer: loaded from `path` when it exists, else built (and saved there).

    Bytes needs no texts; BPE is trained on `texts` with at most `vocab_size` entries.
    Saving is atomic, so concurrent workers building the same tokenizer do not clash.
    """
    if kind not in ("Bytes", "BPE"):
        raise ValueError(f"tokenizer must be Bytes or BPE, got {kind!r}")
    if path is not None and Path(path).exists():
        tok = load_tokenizer(path)
        if tok.kind != kind:
            raise ValueError(
                f"the tokenizer at {path} is {tok.kind}, but the job asks for {kind}; "
                "set the tokenizer kind to match or point tokenizerPath elsewhere"
            )
        return tok
    if kind == "Bytes":
        tok = ByteTokenizer()
    else:
        if texts is None:
            raise ValueError("training a BPE tokenizer needs texts")
        tok = BPETokenizer.train(texts, vocab_size)
    if path is not None:
        save_atomically(tok, path)
    return tok


def save_atomically(tok: Tokenizer, directory: str | os.PathLike[str]) -> None:
    """Save into a temporary sibling directory, then rename it onto `directory`.

    When `directory` already exists (another worker won the race), it is left as is.
    """
    target = Path(directory)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        tok.save(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _line_batches(text: str) -> Iterator[list[str]]:
    lines = text.splitlines(keepends=True)
    for i in range(0, len(lines), _ENCODE_BATCH_LINES):
        yield lines[i : i + _ENCODE_BATCH_LINES]


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table, which the ByteLevel pre-tokenizer uses."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _is_byte_tokenizer(data: dict[str, Any]) -> bool:
    model = data.get("model", {})
    vocab = model.get("vocab", {})
    added = data.get("added_tokens", [])
    return bool(
        model.get("type") == "BPE"
        and not model.get("merges")
        and len(vocab) == 256
        and all(vocab.get(c) == b for b, c in _bytes_to_unicode().items())
        and any(t.get("content") == EOS_TOKEN and t.get("id") == 256 for t in added)
    )


def _write_json(path: Path, data: dict[str, Any]) -> None:
    write_atomically(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
