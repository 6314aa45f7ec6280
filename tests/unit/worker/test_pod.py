"""A worker pod of several training processes: identity, environment and outcome."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmworker.config import EXIT_PERMANENT, TERMINATION_LOG_ENV
from lmworker.config import POD_GROUP_ENV as GROUP_ENV
from lmworker.pod import (
    LocalIdentityError,
    child_env,
    local_identity,
    pod_exit_code,
    pod_report,
)


def test_a_single_process_pod_is_its_own_group() -> None:
    assert local_identity({}) == (0, 1, "")
    # torchrun sets LOCAL_RANK alone; a pod of one process ignores any group.
    assert local_identity({"LOCAL_RANK": "0", GROUP_ENV: "x"}) == (0, 1, "")


def test_local_identity_of_a_pod_process() -> None:
    env = {"LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2", GROUP_ENV: "abc"}
    assert local_identity(env) == (1, 2, "abc")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"LOCAL_RANK": "2", "LOCAL_WORLD_SIZE": "2", GROUP_ENV: "g"}, "LOCAL_RANK=2 must lie"),
        ({"LOCAL_RANK": "x", "LOCAL_WORLD_SIZE": "2", GROUP_ENV: "g"}, "must be integers"),
        ({"LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2"}, "ELASTICLM_POD_GROUP is not set"),
    ],
)
def test_bad_local_identity_is_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(LocalIdentityError, match=message):
        local_identity(env)


def test_child_env_gives_each_process_its_rank_port_and_report_file(tmp_path: Path) -> None:
    base = {"ELASTICLM_METRICS_PORT": "9400", TERMINATION_LOG_ENV: "/dev/termination-log"}
    envs = [child_env(base, k, 2, "g", tmp_path / f"{k}.json") for k in range(2)]
    assert [e["LOCAL_RANK"] for e in envs] == ["0", "1"]
    assert {e["LOCAL_WORLD_SIZE"] for e in envs} == {"2"}
    assert {e[GROUP_ENV] for e in envs} == {"g"}
    # Local rank 0 keeps the pod's port: the operator scrapes and probes it.
    assert [e["ELASTICLM_METRICS_PORT"] for e in envs] == ["9400", "9401"]
    assert [e[TERMINATION_LOG_ENV] for e in envs] == [
        str(tmp_path / "0.json"),
        str(tmp_path / "1.json"),
    ]
    assert base[TERMINATION_LOG_ENV] == "/dev/termination-log"  # not modified


def test_pod_succeeds_only_when_every_process_did() -> None:
    done = {"completed": True, "step": 10}
    assert pod_exit_code([0, 0]) == 0
    assert pod_report([0, 0], [done, done]) == done


def test_a_crash_fails_the_pod_with_the_first_failure_named() -> None:
    # Local rank 1 crashed first; local rank 0 was then stopped with SIGKILL.
    codes = [-9, 1]
    assert pod_exit_code(codes, first=1) == 1
    report = pod_report(codes, [None, None], first=1)
    assert report["localRank"] == 1
    assert "local rank 1 exited with 1" in report["error"]
    assert pod_exit_code([-9, 0]) == 137
    assert "killed by signal 9" in pod_report([-9, 0], [None, None])["error"]


def test_a_permanent_failure_stays_permanent() -> None:
    bad = {"completed": False, "permanent": True, "error": "no data at /data/x"}
    codes = [-9, EXIT_PERMANENT]
    assert pod_exit_code(codes, first=0) == EXIT_PERMANENT
    assert pod_report(codes, [None, bad], first=0) == {**bad, "localRank": 1}
