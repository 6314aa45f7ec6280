"""`kubectl lm logs`: the log lines of several pods as one stream (pure).

Each line is prefixed with where it came from (`[rank 0] ...` for a training job's
workers, `[NAME-server-...] ...` for an LMService's pods). Without `-f` the pods' logs
are merged in time order by the timestamp each line starts with (the workers and the
servers log one; a line without one, such as a traceback's, keeps its place after the
line before it), and every pod's own order is kept. With `-f` lines are printed as they
arrive.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Sequence
from dataclasses import dataclass

# 2026-12-04 13:54:39,123 (Python logging), 2026-12-04T13:54:39.123456Z (RFC 3339), ...
_LEADING_TIME = re.compile(r"^(\d{4}-\d\d-\d\d)[ T](\d\d:\d\d:\d\d)(?:[.,](\d{1,9}))?")
# What the API puts before each line with timestamps=true (RFC 3339 with nanoseconds).
_SERVER_TIME = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)) ")


@dataclass(frozen=True)
class Source:
    """One pod's log: its label in the output and where it sorts among equals."""

    label: str
    order: tuple[int, str]

    def prefix(self, line: str) -> str:
        return f"[{self.label}] {line}"


def worker_source(pod_name: str, index: str | None) -> Source:
    """A training job's worker: `rank N` from its index label (the worker's rank whenever
    all workers are members of the round), else its pod name."""
    if index is not None and index.isdigit():
        return Source(f"rank {int(index)}", (int(index), pod_name))
    return Source(pod_name, (1 << 30, pod_name))


def pod_source(pod_name: str) -> Source:
    return Source(pod_name, (0, pod_name))


def leading_time(line: str) -> str | None:
    """A sortable key of the timestamp a line starts with, or None."""
    match = _LEADING_TIME.match(line)
    if match is None:
        return None
    day, clock, fraction = match.groups()
    return f"{day} {clock}.{(fraction or '').ljust(9, '0')}"


def split_server_time(line: str) -> tuple[str, str]:
    """(the API's timestamp, the line) of a line read with timestamps=true."""
    match = _SERVER_TIME.match(line)
    if match is None:
        return "", line
    return match.group(1), line[match.end() :]


def merge(logs: Sequence[tuple[Source, Sequence[str]]]) -> list[str]:
    """Every pod's lines, prefixed, in time order (see the module's docstring)."""
    keyed: list[list[tuple[str, str]]] = []
    for _, lines in logs:
        current = ""  # lines before the first timestamp sort first
        keys = []
        for line in lines:
            _, body = split_server_time(line)
            current = leading_time(body) or current
            keys.append((current, line))
        keyed.append(keys)
    heap = [
        (keys[0][0], source.order, i, 0)
        for i, ((source, _), keys) in enumerate(zip(logs, keyed, strict=True))
        if keys
    ]
    heapq.heapify(heap)
    out = []
    while heap:
        _, order, i, j = heapq.heappop(heap)
        out.append(logs[i][0].prefix(keyed[i][j][1]))
        if j + 1 < len(keyed[i]):
            heapq.heappush(heap, (keyed[i][j + 1][0], order, i, j + 1))
    return out
