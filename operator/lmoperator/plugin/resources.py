"""Naming ElasticLM's kinds on the command line, as kubectl names resources.

Every kind of `lmoperator.api.kinds.CUSTOM_KINDS` answers to its short names, its
singular and plural (`lmtj`, `lmtrainingjob`, `lmtrainingjobs`), the same qualified by
the group (`lmtrainingjobs.elasticlm.io`) and its Kind (`LMTrainingJob`), in any case.
A kind added to the registry is known here at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from lmoperator.api import kinds


class UsageError(Exception):
    """The command line names something that cannot be: says what and how to fix it."""


def kind_names(kind: kinds.ResourceKind) -> tuple[str, ...]:
    """Every name a kind answers to, lowercase, short names first."""
    names = [*kind.short_names, kind.singular, kind.plural]
    return tuple(dict.fromkeys([*names, *(f"{n}.{kind.group}" for n in names[-2:])]))


def known_kinds_text() -> str:
    return "; ".join(
        f"{kind.short_name} ({kind.singular}, {kind.plural})" for kind in kinds.CUSTOM_KINDS
    )


def find_kind(token: str) -> kinds.ResourceKind | None:
    wanted = token.lower()
    for kind in kinds.CUSTOM_KINDS:
        if wanted in kind_names(kind):
            return kind
    return None


def resolve_kind(token: str) -> kinds.ResourceKind:
    kind = find_kind(token)
    if kind is None:
        raise UsageError(
            f'unknown kind "{token}": kubectl lm knows {known_kinds_text()}; '
            "for other kinds use kubectl itself"
        )
    return kind


@dataclass(frozen=True)
class Target:
    """One object named on the command line."""

    kind: kinds.ResourceKind
    name: str

    @property
    def label(self) -> str:
        """`lmtj/NAME`: how the plugin's output names it (and how it may be typed)."""
        return f"{self.kind.short_name}/{self.name}"


def parse_target(words: list[str], usage: str) -> Target:
    """`KIND/NAME` or `KIND NAME` (exactly one object)."""
    if len(words) == 1 and "/" in words[0]:
        kind_text, _, name = words[0].partition("/")
    elif len(words) == 2 and "/" not in words[0]:
        kind_text, name = words
    else:
        shown = " ".join(words) or "nothing"
        raise UsageError(f"expected {usage}, got {shown}")
    if not name:
        raise UsageError(f'"{words[0]}" names no object: write {kind_text}/NAME')
    return Target(resolve_kind(kind_text), name)


@dataclass(frozen=True)
class Selection:
    """What `get` lists: some kinds, optionally only some names."""

    kinds: tuple[kinds.ResourceKind, ...]
    names: tuple[str, ...] = ()


def parse_selection(words: list[str]) -> Selection:
    """`get`'s arguments, as kubectl reads them: nothing (every kind), `KIND [NAME...]`,
    `KIND/NAME...`, a comma list of kinds (`lmtj,lms`) or, as nothing else could be
    meant, `NAME...` (objects of any of our kinds with these names)."""
    if not words:
        return Selection(kinds.CUSTOM_KINDS)
    if all("/" in w for w in words):
        targets = [parse_target([w], "KIND/NAME") for w in words]
        chosen = tuple(dict.fromkeys(t.kind for t in targets))
        if len(chosen) > 1:
            raise UsageError(
                "name objects of one kind at a time (" + ", ".join(words) + "), "
                "or leave the names out to list every kind"
            )
        return Selection(chosen, tuple(t.name for t in targets))
    if any("/" in w for w in words):
        raise UsageError("write either KIND NAME... or KIND/NAME..., not both")
    first, *names = words
    if "," in first:
        if names:
            raise UsageError(f"name objects of one kind at a time, not of {first}")
        return Selection(tuple(dict.fromkeys(resolve_kind(k) for k in first.split(",") if k)))
    kind = find_kind(first)
    if kind is not None:
        return Selection((kind,), tuple(names))
    return Selection(kinds.CUSTOM_KINDS, tuple(words))
