"""docs/troubleshooting.md explains every reason the operator can give.

The reasons are collected from the operator's source, not from a list kept by hand:
every `conditions.set(...)` and `conditions.clear(...)` in `reconcile/` and `handlers/`
(the condition reasons) and every `.event(...)` of a plan there (the Event reasons).
A reason written as a literal, a module constant (`REASON_*`, also imported ones), a
local variable, a conditional expression, a parameter (followed to every call of its
function) or the `reason` field of a dataclass (followed to every construction)
is found; any other form fails the test, naming the call, so that a new way of writing
a reason extends this collector instead of slipping past it.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import lmoperator
from lmoperator.api import kinds

OPERATOR = Path(lmoperator.__file__).parent
DOC = Path(__file__).resolve().parents[2] / "docs" / "troubleshooting.md"
# Which kind's section documents the reasons of each module: reconcile/trainingjob.py
# and handlers/trainingjob.py are LMTrainingJob's, and so on for every kind of ours;
# reasons set in a shared module belong in a section "Shared conditions".
KIND_OF_MODULE = {k.kind.lower().removeprefix("lm"): k.kind for k in kinds.CUSTOM_KINDS}
SHARED = "Shared"


class UnresolvableError(Exception):
    pass


@dataclass
class Module:
    path: Path
    tree: ast.Module
    parents: dict[ast.AST, ast.AST] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for node in ast.walk(self.tree):
            for child in ast.iter_child_nodes(node):
                self.parents[child] = node

    @property
    def dotted(self) -> str:
        return "lmoperator." + ".".join(self.path.relative_to(OPERATOR).with_suffix("").parts)

    def scope(self, node: ast.AST) -> ast.FunctionDef | None:
        while node in self.parents:
            node = self.parents[node]
            if isinstance(node, ast.FunctionDef):
                return node
        return None

    def where(self, node: ast.AST) -> str:
        return f"{self.path.relative_to(OPERATOR)}:{getattr(node, 'lineno', '?')}"


_MODULES: dict[str, Module] = {}


def module(dotted: str) -> Module:
    if dotted not in _MODULES:
        path = OPERATOR.joinpath(*dotted.split(".")[1:]).with_suffix(".py")
        _MODULES[dotted] = Module(path, ast.parse(path.read_text()))
    return _MODULES[dotted]


def module_constant(mod: Module, name: str) -> set[str] | None:
    """A module-level string constant, also one imported from another of our modules."""
    for node in mod.tree.body:
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == name for t in node.targets)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            return {node.value.value}
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lmoperator."):
            for alias in node.names:
                if (alias.asname or alias.name) == name:
                    return module_constant(module(node.module or ""), alias.name)
    return None


def calls_of(mod: Module, function: str) -> Iterator[ast.Call]:
    for node in ast.walk(mod.tree):
        if isinstance(node, ast.Call):
            func = node.func
            if (isinstance(func, ast.Name) and func.id == function) or (
                isinstance(func, ast.Attribute) and func.attr == function
            ):
                yield node


def argument(call: ast.Call, index: int, name: str) -> ast.expr | None:
    if index < len(call.args):
        return call.args[index]
    return next((k.value for k in call.keywords if k.arg == name), None)


def resolve(
    mod: Module, expr: ast.expr, seen: frozenset[tuple[str, int]] = frozenset()
) -> set[str]:
    """Every string `expr` can be, or UnresolvableError."""
    if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
        return {expr.value}
    if isinstance(expr, ast.IfExp):
        return resolve(mod, expr.body, seen) | resolve(mod, expr.orelse, seen)
    scope = mod.scope(expr)
    if isinstance(expr, ast.Name):
        if scope is not None:
            params = [a.arg for a in scope.args.args]
            if expr.id in params:
                return resolve_parameter(mod, scope, params, expr.id, seen)
            assigned = [
                node.value
                for node in ast.walk(scope)
                if isinstance(node, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == expr.id for t in node.targets)
            ]
            if assigned:
                return set().union(*(resolve(mod, value, seen) for value in assigned))
        constant = module_constant(mod, expr.id)
        if constant is not None:
            return constant
    if isinstance(expr, ast.Attribute):
        return resolve_field(mod, expr.attr, seen, expr)
    raise UnresolvableError(f"{mod.where(expr)}: {ast.unparse(expr)}")


def resolve_parameter(
    mod: Module,
    function: ast.FunctionDef,
    params: list[str],
    name: str,
    seen: frozenset[tuple[str, int]],
) -> set[str]:
    key = (function.name, params.index(name))
    if key in seen:
        return set()  # a call of the function from inside itself adds nothing new
    found: set[str] = set()
    for call in calls_of(mod, function.name):
        index = params.index(name)
        if params[:1] in (["self"], ["cls"]) and isinstance(call.func, ast.Attribute):
            index -= 1
        arg = argument(call, index, name)
        if arg is not None:
            found |= resolve(mod, arg, seen | {key})
    if not found and not seen:
        raise UnresolvableError(f"{mod.where(function)}: no call of {function.name} passes {name}")
    return found


def resolve_field(
    mod: Module, attr: str, seen: frozenset[tuple[str, int]], at: ast.expr
) -> set[str]:
    """`x.reason`: the values every construction of a class with that field passes."""
    found: set[str] = set()
    for node in mod.tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        fields = [
            s.target.id
            for s in node.body
            if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)
        ]
        if attr in fields:
            for call in calls_of(mod, node.name):
                arg = argument(call, fields.index(attr), attr)
                if arg is not None:
                    found |= resolve(mod, arg, seen)
    if not found:
        raise UnresolvableError(f"{mod.where(at)}: {ast.unparse(at)}")
    return found


def is_conditions(receiver: ast.expr) -> bool:
    return (isinstance(receiver, ast.Name) and receiver.id == "conditions") or (
        isinstance(receiver, ast.Attribute) and receiver.attr == "conditions"
    )


def is_plan(receiver: ast.expr) -> bool:
    """A handler's `plan.event(...)` (not kopf's `@kopf.on.event(...)`)."""
    return isinstance(receiver, ast.Name) and receiver.id == "plan"


def reasons_in(package: str) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(condition reasons, event reasons) by kind, of the modules of one package."""
    conditions: dict[str, set[str]] = {}
    events: dict[str, set[str]] = {}
    for path in sorted((OPERATOR / package).glob("*.py")):
        mod = module(f"lmoperator.{package}.{path.stem}")
        kind = KIND_OF_MODULE.get(path.stem, SHARED)
        for node in ast.walk(mod.tree):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            func = node.func
            if func.attr in ("set", "clear") and is_conditions(func.value):
                arg = argument(node, 2 if func.attr == "set" else 1, "reason")
                assert arg is not None, mod.where(node)
                conditions.setdefault(kind, set()).update(resolve(mod, arg))
            elif func.attr == "event" and (package == "reconcile" or is_plan(func.value)):
                arg = argument(node, 0, "reason")
                assert arg is not None, mod.where(node)
                events.setdefault(kind, set()).update(resolve(mod, arg))
    return conditions, events


def code_reasons() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    conditions: dict[str, set[str]] = {}
    events: dict[str, set[str]] = {}
    for package in ("reconcile", "handlers"):
        c, e = reasons_in(package)
        for kind, found in c.items():
            conditions.setdefault(kind, set()).update(found)
        for kind, found in e.items():
            events.setdefault(kind, set()).update(found)
    return conditions, events


def doc_reasons() -> dict[str, set[str]]:
    """Section heading -> the reasons in the first column of its tables."""
    sections: dict[str, set[str]] = {}
    heading = ""
    for line in DOC.read_text().splitlines():
        if line.startswith("## "):
            heading = line[3:].strip()
        match = re.match(r"^\| `([A-Za-z]+)` \|", line)
        if match:
            sections.setdefault(heading, set()).add(match.group(1))
    return sections


def test_the_collector_finds_the_reasons_it_must() -> None:
    """Reasons set in each way the collector follows (a literal, a constant, a
    parameter, a local variable, a dataclass field), so it cannot pass by finding none."""
    conditions, events = code_reasons()
    assert {"JobCreated", "Invalid", "BackoffLimitExceeded", "ScalingUp"} <= conditions[
        "LMTrainingJob"
    ]
    assert {"TrainingJobNotFound", "NoCheckpointYet", "RolloutStalled"} <= conditions["LMService"]
    assert {"NotImplemented", "WorkerFailed", "Resumed"} <= events["LMTrainingJob"]
    assert {"Scaled", "TemplateUpdated", "Autoscaled", "ManualScale"} <= events["LMService"]
    assert {"TooFewReports", "MetricsAvailable"} <= conditions["LMService"]


def test_an_unfamiliar_way_of_writing_a_reason_fails_loudly() -> None:
    mod = module("lmoperator.reconcile.conditions")
    call = ast.parse("conditions.set('Ready', True, make_reason())").body[0]
    assert isinstance(call, ast.Expr)
    assert isinstance(call.value, ast.Call)
    with pytest.raises(UnresolvableError):
        resolve(mod, call.value.args[2])


@pytest.mark.parametrize("kind", [*(k.kind for k in kinds.CUSTOM_KINDS), SHARED])
def test_every_condition_reason_is_explained(kind: str) -> None:
    conditions, _ = code_reasons()
    documented = doc_reasons().get(f"{kind} conditions", set())
    missing = sorted(conditions.get(kind, set()) - documented)
    assert not missing, (
        f"docs/troubleshooting.md, section '{kind} conditions', does not explain: {missing}"
    )
    stale = sorted(documented - conditions.get(kind, set()))
    assert not stale, (
        f"docs/troubleshooting.md explains reasons the operator no longer sets: {stale}"
    )


def test_every_event_reason_is_explained() -> None:
    _, events = code_reasons()
    found = set().union(*events.values())
    documented = doc_reasons().get("Events", set())
    missing = sorted(found - documented)
    assert not missing, f"docs/troubleshooting.md, section 'Events', does not explain: {missing}"
    stale = sorted(documented - found)
    assert not stale, (
        f"docs/troubleshooting.md explains events the operator no longer posts: {stale}"
    )


if __name__ == "__main__":  # print what the code sets, to write the doc from
    found_conditions, found_events = code_reasons()
    for kind, reasons in sorted(found_conditions.items()):
        print("conditions", kind, sorted(reasons))
    for kind, reasons in sorted(found_events.items()):
        print("events", kind, sorted(reasons))
