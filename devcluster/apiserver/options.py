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
    #: The manager of a write without `fieldManager`: the User-Agent's first product.
    user_agent_manager: str = ""
    #: `force=true` on an apply: take the fields other managers own.
    force: bool = False
    warnings: list[str] = field(default_factory=list)
    system: bool = False


@dataclass
class DeleteOptions:
    propagation: str | None = None
    grace_period: int | None = None
    precondition_uid: str | None = None
    precondition_rv: str | None = None
    dry_run: bool = False
