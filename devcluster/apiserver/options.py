"""Per-request options: `Ctx` (dry run, field validation, warnings) and
`DeleteOptions`.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Ctx:
    """Per-request options and the warnings a request collects."""

    dry_run: bool = False
    field_validation: str = "Warn"
    field_manager: str | None = None
    warnings: list[str] = field(default_factory=list)
    system: bool = False


@dataclass
class DeleteOptions:
    propagation: str | None = None
    grace_period: int | None = None
    precondition_uid: str | None = None
    precondition_rv: str | None = None
    dry_run: bool = False
