"""Atomic, optionally asynchronous checkpoints with torch.distributed.checkpoint (DCP).

Data-parallel state is replicated on every rank, so rank 0 of the current round writes
it alone (`no_dist=True`): no collective is in flight while the group re-forms, and a
checkpoint loads at any world size. A checkpoint is written into a hidden temporary
directory and renamed to `step-XXXXXXXX` only once complete, so a worker killed
mid-write never leaves a checkpoint that looks loadable. Each checkpoint also records
the store epoch and round that wrote it, so a stray writer can be told apart.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp

log = logging.getLogger("lmworker.checkpoint")

_NAME = re.compile(r"^step-(\d{8,})$")
META = "elasticlm.json"


@dataclass(frozen=True)
class CheckpointInfo:
    step: int
    path: Path
    time: float


@contextmanager
def _single_process() -> Iterator[None]:
    """DCP warns on every single-process save or load; here that is the design."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def complete_checkpoints(root: Path) -> list[CheckpointInfo]:
    """Loadable checkpoints, oldest first. Temporary directories never match."""
    out: list[CheckpointInfo] = []
    if not root.is_dir():
        return out
    for d in root.iterdir():
        m = _NAME.match(d.name)
        if m and (d / ".metadata").is_file() and (d / META).is_file():
            out.append(CheckpointInfo(int(m.group(1)), d, (d / META).stat().st_mtime))
    return sorted(out, key=lambda c: c.step)


def latest_checkpoint(root: Path) -> CheckpointInfo | None:
    found = complete_checkpoints(root)
    return found[-1] if found else None


def _snapshot(state: Any) -> Any:
    """A copy that training can no longer change (tensors cloned)."""
    if isinstance(state, torch.Tensor):
        return state.detach().to("cpu", copy=True)
    if isinstance(state, dict):
        return {k: _snapshot(v) for k, v in state.items()}
    if isinstance(state, list):
        return [_snapshot(v) for v in state]
    if isinstance(state, tuple):
        return tuple(_snapshot(v) for v in state)
    return state


class Checkpointer:
    """Writes and prunes checkpoints under `root`; one write in flight at a time."""

    def __init__(self, root: str, keep: int, asynchronous: bool) -> None:
        self.root = Path(root)
        self.keep = keep
        self.asynchronous = asynchronous
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.last: CheckpointInfo | None = latest_checkpoint(self.root)
        self.last_seconds = 0.0

    def save(self, step: int, state: dict[str, Any], meta: dict[str, Any]) -> None:
        """Save `state` as checkpoint `step` (in the background when asynchronous)."""
        self.wait()
        final = self.root / f"step-{step:08d}"
        if final.exists():
            return  # already written (e.g. the final save right after an interval save)
        started = time.monotonic()
        if self.asynchronous:
            snapshot = _snapshot(state)
            self._thread = threading.Thread(
                target=self._write_guarded,
                args=(step, snapshot, meta, started),
                name=f"checkpoint-{step}",
                daemon=True,
            )
            self._thread.start()
        else:
            self._write(step, state, meta, started)

    def _write_guarded(
        self, step: int, state: dict[str, Any], meta: dict[str, Any], t: float
    ) -> None:
        try:
            self._write(step, state, meta, t)
        except BaseException as exc:
            self._error = exc

    def _write(
        self, step: int, state: dict[str, Any], meta: dict[str, Any], started: float
    ) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".tmp-step-{step:08d}-{uuid.uuid4().hex[:8]}"
        with _single_process():
            dcp.save(state, storage_writer=dcp.FileSystemWriter(str(tmp)), no_dist=True)
        (tmp / META).write_text(json.dumps({**meta, "step": step, "time": time.time()}))
        final = self.root / f"step-{step:08d}"
        try:
            os.rename(tmp, final)  # atomic: the checkpoint appears complete or not at all
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)  # another writer finished it first
            return
        self.last = CheckpointInfo(step, final, time.time())
        self.last_seconds = time.monotonic() - started
        log.info("checkpoint step %d written in %.2fs", step, self.last_seconds)
        self._prune()

    def _prune(self) -> None:
        done = complete_checkpoints(self.root)
        for old in done[: max(0, len(done) - self.keep)]:
            shutil.rmtree(old.path, ignore_errors=True)
        # Leftovers of writers killed mid-write, once clearly abandoned.
        for d in self.root.glob(".tmp-step-*"):
            try:
                if time.time() - d.stat().st_mtime > 600:
                    shutil.rmtree(d, ignore_errors=True)
            except FileNotFoundError:
                pass

    def wait(self) -> None:
        """Block until the background write (if any) finished; re-raise its error."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            err, self._error = self._error, None
            raise RuntimeError(f"checkpoint write failed: {err}") from err


def load(path: Path, template: dict[str, Any]) -> dict[str, Any]:
    """Load checkpoint `path` into `template` (a state dict of the right shapes)."""
    with _single_process():
        dcp.load(template, storage_reader=dcp.FileSystemReader(str(path)), no_dist=True)
    return template


def read_meta(path: Path) -> dict[str, Any]:
    meta: dict[str, Any] = json.loads((path / META).read_text())
    return meta
