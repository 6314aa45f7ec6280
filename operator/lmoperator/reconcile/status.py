"""Status writes: the patch between two statuses, and when progress may wait.

A running job's step, loss and throughput move all the time. Writing each move would
mean a PATCH per job per scrape, so a patch that only carries such progress fields is
deferred until `PROGRESS_WRITE_SECONDS` have passed since the last write of the
object; any other change (phase, conditions, replicas, history) is written at once and
carries the progress with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# With the training metrics loop's 5 s interval this keeps status.step within about 5 s of
# the workers' own figure (see handlers/trainingjob.py) at one PATCH per scrape at most.
PROGRESS_WRITE_SECONDS = 4.0


def status_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON merge patch turning status `old` into `new` (null removes a field)."""
    patch: dict[str, Any] = {k: v for k, v in new.items() if old.get(k) != v}
    patch.update({k: None for k in old if k not in new})
    return patch


def should_write(
    patch: Mapping[str, Any],
    progress_fields: frozenset[str],
    seconds_since_last_write: float | None,
) -> bool:
    """Whether to write `patch` now. None for `seconds_since_last_write`: never written."""
    if not patch:
        return False
    if any(key not in progress_fields for key in patch):
        return True
    return seconds_since_last_write is None or seconds_since_last_write >= PROGRESS_WRITE_SECONDS
