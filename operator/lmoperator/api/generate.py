"""Every file generated from the API models, written and checked for drift in one place."""

from __future__ import annotations

import difflib
from pathlib import Path

from lmoperator.api.crd import render_crds
from lmoperator.api.reference import render_reference


def generated_files(crd_dir: Path, reference: Path) -> dict[Path, str]:
    """Path -> expected text of each generated file."""
    files = {crd_dir / name: text for name, text in render_crds().items()}
    files[reference] = render_reference()
    return files


def write_generated(crd_dir: Path, reference: Path) -> list[Path]:
    written = []
    for path, text in generated_files(crd_dir, reference).items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written


def generated_drift(crd_dir: Path, reference: Path) -> list[str]:
    """A unified diff for each generated file that differs from what the models produce."""
    drift = []
    for path, expected in generated_files(crd_dir, reference).items():
        actual = path.read_text() if path.exists() else ""
        if actual != expected:
            diff = difflib.unified_diff(
                actual.splitlines(keepends=True),
                expected.splitlines(keepends=True),
                fromfile=str(path),
                tofile=f"{path} (generated)",
            )
            drift.append("".join(diff) or f"--- {path}\n(missing)\n")
    return drift
