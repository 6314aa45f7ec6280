"""The exit watchdog: a worker whose runtime returned but which does not exit.

Each case runs a real process that arms the watchdog and then blocks, as a hung exit
would; the watchdog must end it, say so in the termination message, keep a report that
was already written (exit 0) and fail one that was not, with every thread's stack in
the log.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lmworker.config import TERMINATION_LOG_ENV
from lmworker.train import EXIT_WATCHDOG

HANG = textwrap.dedent(
    """
    import sys, threading
    from lmworker.train import ExitWatchdog, write_termination_message

    watchdog = ExitWatchdog(1)
    watchdog.arm()
    info = {"completed": True, "step": 7, "loss": 1.5}
    if sys.argv[1] == "reported" and write_termination_message(info):
        watchdog.reported(info)
    def stuck_in_exit():
        threading.Event().wait()
    stuck_in_exit()
    """
)


def hang(tmp_path: Path, mode: str) -> tuple[int, dict[str, object], str]:
    message = tmp_path / "termination-log"
    env = {**os.environ, TERMINATION_LOG_ENV: str(message)}
    proc = subprocess.run(
        [sys.executable, "-c", HANG, mode], env=env, capture_output=True, text=True, timeout=60
    )
    body = json.loads(message.read_text()) if message.exists() else {}
    return proc.returncode, body, proc.stderr


@pytest.mark.timeout(90)
def test_a_worker_that_reported_still_succeeds(tmp_path: Path) -> None:
    code, body, log = hang(tmp_path, "reported")
    assert code == 0
    assert body["completed"] is True
    assert (body["step"], body["loss"]) == (7, 1.5)
    assert "exit watchdog" in str(body["exitWatchdog"])
    assert "stuck_in_exit" in log  # faulthandler's dump of the blocked thread
    assert "exit watchdog" in log


@pytest.mark.timeout(90)
def test_a_worker_that_had_not_reported_fails_with_its_stacks(tmp_path: Path) -> None:
    code, body, log = hang(tmp_path, "silent")
    assert code == EXIT_WATCHDOG
    assert body["completed"] is False
    assert "exit watchdog" in str(body["error"])
    assert "stuck_in_exit" in log
