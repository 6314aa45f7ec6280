"""The chart on a real cluster: tests/e2e/kind/run.sh under pytest (opt-in).

Runs only with ELASTICLM_E2E=1 and docker, kind, kubectl and helm on PATH. The script
creates a kind cluster, builds and loads both images, installs the chart, runs
`helm test`, trains the example LMTrainingJob to success and serves it with the example
LMService until it is Ready; it deletes the cluster afterwards.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent / "run.sh"
TOOLS = ("docker", "kind", "kubectl", "helm")

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        os.environ.get("ELASTICLM_E2E") != "1", reason="opt-in: set ELASTICLM_E2E=1"
    ),
]


@pytest.mark.timeout(3600)
def test_helm_install_trains_and_serves_the_examples_on_kind() -> None:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} on PATH")
    result = subprocess.run(["bash", str(SCRIPT)], check=False, timeout=3500)
    assert result.returncode == 0, f"{SCRIPT} exited {result.returncode} (its output is above)"
