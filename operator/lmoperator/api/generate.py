"""Every file generated from the API models, written and checked for drift in one place."""

from __future__ import annotations

import difflib
from pathlib import Path

from lmoperator.api.crd import render_chart_crds, render_crds
from lmoperator.api.reference import render_reference

# Where the chart keeps its templated copy of the CRDs.
CHART_CRD_DIR = Path("templates") / "crds"


def generated_files(crd_dir: Path, reference: Path, chart: Path | None = None) -> dict[Path, str]:
    """Path -> expected text of each generated file (the chart's CRD templates too when
    `chart` is its directory)."""
    files = {crd_dir / name: text for name, text in render_crds().items()}
    files[reference] = render_reference()
    if chart is not None:
        files.update({chart / CHART_CRD_DIR / n: t for n, t in render_chart_crds().items()})
    return files


def write_generated(crd_dir: Path, reference: Path, chart: Path | None = None) -> list[Path]:
    written = []
    for path, text in generated_files(crd_dir, reference, chart).items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written


def generated_drift(crd_dir: Path, reference: Path, chart: Path | None = None) -> list[str]:
    """A unified diff for each generated file that differs from what the models produce."""
    drift = []
    for path, expected in generated_files(crd_dir, reference, chart).items():
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
