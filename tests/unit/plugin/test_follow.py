"""`kubectl lm logs -f` against a scripted API: a worker that joins later is followed,
a replaced pod is followed anew, `--tail` applies to the pods there at the start, and
the command ends once the job has finished and every log is read."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

import pytest

from lmoperator import kube
from lmoperator.api import kinds
from lmoperator.plugin import commands
from lmoperator.plugin.resources import Target

Capsys = pytest.CaptureFixture[str]


def pod(index: int, uid: str, state: str = "running") -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"lm-worker-{index}",
            "uid": uid,
            "labels": {"elasticlm.io/index": str(index)},
        },
        "status": {"containerStatuses": [{"restartCount": 0, "state": {state: {}}}]},
    }


class ScriptedApi:
    """Each poll (a `get` of the job) moves the script one step: the pods that exist
    and the job's phase at that step."""

    def __init__(self, steps: list[tuple[list[dict[str, Any]], str]]) -> None:
        self.steps = steps
        self.at = -1
        self.reads: list[tuple[str, int | None]] = []

    def get(self, kind: kinds.ResourceKind, namespace: str, name: str) -> dict[str, Any] | None:
        self.at = min(self.at + 1, len(self.steps) - 1)
        return {"metadata": {"name": name}, "status": {"phase": self.steps[self.at][1]}}

    def list(
        self, kind: kinds.ResourceKind, namespace: str | None, selector: str = ""
    ) -> list[dict[str, Any]]:
        return self.steps[self.at][0]

    def pod_log(
        self,
        namespace: str,
        name: str,
        *,
        follow: bool = False,
        tail_lines: int | None = None,
        timestamps: bool = False,
    ) -> Iterator[str]:
        assert follow
        self.reads.append((name, tail_lines))
        if name == "lm-worker-9":
            raise kube.KubeError("read", 400, "container is waiting to start")
        yield from [f"{name} line {i}" for i in range(2)]


def follow(api: ScriptedApi, tail: int | None = None) -> int:
    session = commands.Session(cast(kube.Kube, api), "team", "http://cluster")
    target = Target(kinds.TRAINING_JOB, "lm")
    return commands.Follower(session, target, "sel", tail, timestamps=False).run()


@pytest.fixture(autouse=True)
def quick_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(commands, "FOLLOW_POLL_SECONDS", 0.02)


def test_a_joining_worker_and_a_replaced_one_are_followed_until_the_job_ends(
    capsys: Capsys,
) -> None:
    two = [pod(0, "a"), pod(1, "b")]
    three = [*two, pod(2, "c", state="waiting")]  # created, not started yet
    started = [*two, pod(2, "c")]
    replaced = [pod(0, "a"), pod(1, "b2"), pod(2, "c")]  # worker 1 failed, recreated
    api = ScriptedApi(
        [(two, "Running"), (three, "Scaling"), (started, "Scaling"), (replaced, "Succeeded")]
    )
    assert follow(api, tail=5) == commands.EXIT_OK
    lines = capsys.readouterr().out.splitlines()
    assert sorted(lines) == sorted(
        [f"[rank {i}] lm-worker-{i} line {n}" for i in (0, 1, 2) for n in (0, 1)]
        + ["[rank 1] lm-worker-1 line 0", "[rank 1] lm-worker-1 line 1"]
    )
    # --tail for the pods of the start; later ones are read whole; each log once.
    assert api.reads == [
        ("lm-worker-0", 5),
        ("lm-worker-1", 5),
        ("lm-worker-2", None),
        ("lm-worker-1", None),
    ]


def test_it_ends_when_the_job_is_deleted(capsys: Capsys) -> None:
    class Deleted(ScriptedApi):
        def get(self, kind: kinds.ResourceKind, namespace: str, name: str) -> None:
            self.at = 0
            return None

    assert follow(Deleted([([], "Running")])) == commands.EXIT_OK
    assert capsys.readouterr().err == "lmtj/lm was deleted\n"


def test_a_pod_that_cannot_be_read_yet_is_skipped_quietly(capsys: Capsys) -> None:
    api = ScriptedApi([([pod(9, "z")], "Running"), ([pod(9, "z")], "Failed")])
    assert follow(api) == commands.EXIT_OK
    assert capsys.readouterr().out == ""
