"""Generated token ids to text, piece by piece, cut at the first stop string.

Decoding each token on its own breaks characters whose UTF-8 bytes span tokens (a byte
tokenizer splits every non-ASCII character) and, for SentencePiece tokenizers, the
spaces that a token's neighbours decide. As TGI and vLLM do, `IncrementalDetokenizer`
decodes a short window of ids and hands out only what that window adds, holding text
back while it ends in an incomplete character (U+FFFD).

`StopStrings` holds back the tail of the text that could still grow into a stop string,
and cuts the text where one appears; the stop string itself is never sent (OpenAI's
behaviour).

Pure: the tokenizer comes in as a decode function.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

REPLACEMENT = "\ufffd"


class IncrementalDetokenizer:
    def __init__(self, decode: Callable[[list[int]], str], context: Sequence[int] = ()) -> None:
        """`context`: the prompt's last few ids, so the first new token decodes as it
        would in the middle of text (SentencePiece drops a leading space otherwise)."""
        self._decode = decode
        self._ids = list(context)
        self._prefix = 0  # the window starts here
        self._read = len(self._ids)  # ids up to here have been handed out as text

    def push(self, token_id: int) -> str:
        """The new text that `token_id` completes ("" while a character is incomplete)."""
        self._ids.append(token_id)
        before = self._decode(self._ids[self._prefix : self._read])
        after = self._decode(self._ids[self._prefix :])
        if len(after) > len(before) and not after.endswith(REPLACEMENT):
            self._prefix, self._read = self._read, len(self._ids)
            return after[len(before) :]
        return ""

    def flush(self) -> str:
        """At the end: whatever is still held back, incomplete characters and all."""
        before = self._decode(self._ids[self._prefix : self._read])
        after = self._decode(self._ids[self._prefix :])
        self._prefix = self._read = len(self._ids)
        return after[len(before) :] if len(after) > len(before) else ""


def held_back_length(text: str, stops: Sequence[str]) -> int:
    """Length of the longest end of `text` that is the start of some stop string."""
    longest = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:k]):
                longest = k
                break
    return longest


def cut_at_stop(text: str, stops: Sequence[str]) -> int | None:
    """Where the earliest stop string in `text` begins, or None."""
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(found) if found else None


class StopStrings:
    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = [s for s in stops if s]
        self._held = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """Text that is safe to send; sets `stopped` once a stop string appeared."""
        if self.stopped:
            return ""
        text = self._held + text
        cut = cut_at_stop(text, self._stops)
        if cut is not None:
            self._held = ""
            self.stopped = True
            return text[:cut]
        keep = held_back_length(text, self._stops)
        self._held = text[len(text) - keep :] if keep else ""
        return text[: len(text) - keep]

    def flush(self) -> str:
        """At the end of generation: the held-back tail, which never became a stop."""
        held, self._held = self._held, ""
        return "" if self.stopped else held


class TextStream:
    """Token ids in, text out: detokenized, stop strings applied."""

    def __init__(
        self,
        decode: Callable[[list[int]], str],
        stops: Sequence[str] = (),
        context: Sequence[int] = (),
    ) -> None:
        self._detokenizer = IncrementalDetokenizer(decode, context)
        self._stops = StopStrings(stops)

    @property
    def stopped(self) -> bool:
        return self._stops.stopped

    def push(self, token_id: int) -> str:
        return self._stops.feed(self._detokenizer.push(token_id))

    def finish(self) -> str:
        """The rest of the text once generation ended (not after a stop string)."""
        tail = self._stops.feed(self._detokenizer.flush())
        return tail + self._stops.flush()
