"""`elasticlm demo` (what `make demo` runs), on a shorter copy of the example job."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.integration.harness import E2E

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(E2E, reason="the demo runs its own devcluster")


@pytest.mark.timeout(600)  # a whole demo: training, two rescales, the export
def test_demo_trains_rescales_2_3_2_finishes_and_serves(tmp_path: Path) -> None:
    examples = tmp_path / "examples"
    examples.mkdir()
    job = yaml.safe_load((ROOT / "manifests/examples/training-job.yaml").read_text())
    # The example's own 300 steps: on a fast machine both rescales still land mid-run.
    job["spec"]["training"]["steps"] = 300
    (examples / "training-job.yaml").write_text(yaml.safe_dump(job))
    (examples / "service.yaml").write_text((ROOT / "manifests/examples/service.yaml").read_text())
    result = subprocess.run(
        [
            sys.executable,
            "-P",
            "-m",
            "lmoperator",
            "demo",
            "--examples",
            str(examples),
            "--state-dir",
            str(tmp_path / "state"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "scaling 2 -> 3 workers" in out
    assert "training at world size 3" in out
    assert "scaling 3 -> 2 workers" in out
    assert "training at world size 2" in out
    assert "Succeeded at step 300" in out
    assert "redone" in out
    export = tmp_path / "state/devcluster/claims/default/tiny-lm-checkpoints/tiny-lm/export"
    assert (export / "model.safetensors").is_file()
    # Then the example LMService serves the exported model, answers, and scales.
    assert "created LMService tiny-lm" in out
    assert "completion of 'the '" in out
    assert "served, scaled to 2 and back to 1" in out
