"""Containers in private mount namespaces: which mounts are bind-mounted, and a real run
where this machine allows it (Linux, root)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from devcluster.kubelet.mountns_runner import (
    MOUNTNS_SCRIPT,
    mount_namespace_problem,
    wrap_in_mount_namespace,
)


def test_mounts_that_would_hide_devcluster_are_left_out(tmp_path: Path) -> None:
    state = tmp_path / "state"
    argv, notes = wrap_in_mount_namespace(
        [sys.executable, "-c", "pass"],
        [
            (str(state / "a"), str(tmp_path), False),  # would hide the state directory
            (str(state / "b"), "/", False),
            (str(state / "c"), "/var/run/secrets/kubernetes.io/serviceaccount", True),
        ],
        str(tmp_path),
        [str(state)],
        str(tmp_path / "root"),
    )
    assert argv[:3] == [sys.executable, "-I", MOUNTNS_SCRIPT]
    spec = json.loads(argv[3])
    assert spec["root"] == str(tmp_path / "root")
    assert spec["mounts"] == [
        {
            "source": str(state / "c"),
            "target": "/var/run/secrets/kubernetes.io/serviceaccount",
            "readOnly": True,
        }
    ]
    assert argv[4:] == ["--", sys.executable, "-c", "pass"]
    assert len(notes) == 2
    assert notes[0].startswith(f"volume mount {tmp_path} is not bind-mounted (it would hide")


def test_programs_that_cannot_run_are_not_wrapped(tmp_path: Path) -> None:
    argv = ["no-such-program", "x"]
    wrapped = wrap_in_mount_namespace(argv, [("/a", "/b", False)], str(tmp_path), [], "/r")
    assert wrapped == (argv, [])


NO_MOUNT_NAMESPACES = mount_namespace_problem()


@pytest.mark.skipif(NO_MOUNT_NAMESPACES is not None, reason=str(NO_MOUNT_NAMESPACES))
def test_volumes_appear_at_their_paths_only_inside(tmp_path: Path) -> None:
    source = tmp_path / "volume"
    source.mkdir()
    (source / "token").write_text("secret")
    outside = tmp_path / "outside"
    outside.mkdir()
    target = outside / "deep" / "serviceaccount"  # missing: made in a shadow, not here
    readonly_target = tmp_path / "ro"
    readonly_target.mkdir()  # existing: mounted over directly
    code = (
        "import os, sys\n"
        f"print(open({str(target / 'token')!r}).read())\n"
        "try:\n"
        f"    open({str(readonly_target / 'x')!r}, 'w')\n"
        "except OSError as e:\n"
        "    print('read-only', e.errno)\n"
    )
    argv, notes = wrap_in_mount_namespace(
        [sys.executable, "-c", code],
        [(str(source), str(target), False), (str(source), str(readonly_target), True)],
        str(tmp_path),
        [],
        str(tmp_path / "root"),
    )
    assert notes == []
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["secret", "read-only 30"]  # EROFS
    assert list(outside.iterdir()) == []  # nothing was made on the machine
    assert list(readonly_target.iterdir()) == []
    assert list((tmp_path / "root").iterdir()) == []
