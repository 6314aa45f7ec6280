"""The operator's layering, beyond what .importlinter checks."""

from __future__ import annotations

import ast
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

import lmoperator

OPERATOR = Path(lmoperator.__file__).parent
HEAVY = ("torch", "devcluster", "tokenizers", "safetensors", "celpy", "re2")


@pytest.mark.parametrize(
    "module", ["lmoperator.main", "lmoperator.cli", "lmoperator.plugin.commands"]
)
def test_the_operator_imports_no_torch_and_no_devcluster(module: str) -> None:
    """The operator image installs the base package only: none of these is there."""
    code = (
        f"import sys, {module}\n"
        f"print(' '.join(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))))"
    )
    found = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    ).stdout.split()
    assert found == [], f"importing {module} imported {found}"


def test_the_kubectl_plugin_imports_no_torch_devcluster_or_kopf() -> None:
    """`kubectl-lm` runs from the base install, and starts fast: what its console script
    imports (the entry point named in the package's metadata) leaves these out."""
    (entry,) = [e for e in entry_points(group="console_scripts") if e.name == "kubectl-lm"]
    module, _, function = entry.value.partition(":")
    heavy = (*HEAVY, "kopf")
    code = (
        f"import sys, {module}\n"
        f"assert callable({module}.{function})\n"
        f"print(' '.join(sorted({{m.split('.')[0] for m in sys.modules}} & set({heavy!r}))))"
    )
    found = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    ).stdout.split()
    assert found == [], f"the kubectl-lm entry point {entry.value} imported {found}"


CLOCKS = {("datetime", "now"), ("datetime", "utcnow"), ("time", "time"), ("time", "monotonic")}


@pytest.mark.parametrize("package", ["reconcile", "builders", "autoscale"])
def test_the_pure_core_reads_no_clock(package: str) -> None:
    """`now` is an argument of every decision, so tests pick the time."""
    calls = []
    for path in sorted((OPERATOR / package).glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and (node.value.id, node.attr) in CLOCKS
            ):
                calls.append(f"{path.name}:{node.lineno} {node.value.id}.{node.attr}")
    assert calls == []
