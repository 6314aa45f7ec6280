"""LMTuningJob end to end on devcluster: trials of the tiny model as real LMTrainingJobs,
early stopping, an operator killed mid-search, and a mistyped path refused at apply."""

from __future__ import annotations

import copy
import json
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest

from lmoperator.api import LMTuningJob, parse_resource
from lmoperator.api.kinds import TRAINING_JOB, TUNING_JOB
from lmoperator.api.tuningjob import TrialState
from lmoperator.localstack import LocalStack, local_stack
from lmoperator.tuning.search import Observation, suggest
from lmworker.corpus import write_corpus
from tests.integration.harness import E2E, kubectl_lm
from tests.kubeclient import core_api, custom_api
from tests.waiting import wait_for

pytestmark = [
    pytest.mark.skipif(E2E, reason="needs devcluster: pods read local claim dirs"),
    pytest.mark.timeout(600),
]

GROUP, VERSION = TUNING_JOB.group, TUNING_JOB.version
DATA_CLAIM, CKPT_CLAIM = "data", "checkpoints"
NAME = "lr"
# The tiny model on bytes learns nothing in 40 steps at 1e-5 and a lot at 3e-3.
BAD, GOOD = "0.00001", "0.003"
LEARNING_RATES = [BAD, "0.001", GOOD]


def manifest(seed: int, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "LMTuningJob",
        "metadata": {"name": NAME},
        "spec": {
            "trialTemplate": {
                "replicas": 1,
                "model": {"preset": "tiny"},
                "data": {
                    "claimName": DATA_CLAIM,
                    "path": "corpus.txt",
                    "tokenizer": {"type": "Bytes"},
                    "validationFraction": 0.05,
                },
                "training": {
                    "steps": 40,
                    "globalBatchSize": 8,
                    "microBatchSize": 4,
                    "learningRate": 0.001,
                    "warmupSteps": 2,
                    "seed": 3,
                },
                "checkpoint": {"claimName": CKPT_CLAIM, "path": NAME, "intervalSteps": 10},
                "worker": {
                    "resources": {"requests": {"cpu": "500m"}},
                    # Steps of at least 0.6 s (1024 tokens at 1700 tokens/s), so a trial's
                    # validation points, 6 s apart, are each seen by a 5 s metrics scrape:
                    # on an idle machine a 40-step trial of the tiny model ends in a few
                    # seconds, before the median rule could compare it at any step.
                    "env": [{"name": "ELASTICLM_SYNTHETIC_SCALING", "value": "t1=1700,alpha=0"}],
                },
            },
            "parameters": [
                {
                    "name": "learningRate",
                    "path": "training.learningRate",
                    "type": "Categorical",
                    "values": LEARNING_RATES,
                }
            ],
            "algorithm": {"name": "Grid", "seed": seed},
            "budget": {"maxTrials": 3, "parallelTrials": 1, "maxFailedTrials": 0},
            "earlyStopping": {"policy": "Median", "minSteps": 10, "minCompletedTrials": 1},
        },
    }
    body["spec"].update(spec)
    return body


def grid_order(seed: int) -> list[str]:
    """The learning rates in the order the search will try them (the pure core's answer)."""
    job = parse_resource(manifest(seed))
    assert isinstance(job, LMTuningJob)
    done: list[Observation] = []
    for number in range(3):
        params = suggest(job.spec, done)
        done.append(Observation(number, params, TrialState.SUCCEEDED, 1.0))
    return [str(t.params["learningRate"]) for t in done]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with local_stack(tmp_path_factory.mktemp("tuning") / "devcluster") as s:
        yield s


class Search:
    def __init__(self, stack: LocalStack) -> None:
        self.stack = stack
        self.ns = f"tune-{uuid.uuid4().hex[:8]}"
        self.core = core_api(stack.api)
        self.custom = custom_api(stack.api)
        self.core.create_namespace({"metadata": {"name": self.ns}})
        write_corpus(stack.claim_dir(self.ns, DATA_CLAIM) / "corpus.txt", n_bytes=300_000, seed=7)

    def create(self, body: dict[str, Any]) -> None:
        self.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.ns, TUNING_JOB.plural, body
        )

    def status(self) -> dict[str, Any]:
        obj = self.custom.get_namespaced_custom_object(
            GROUP, VERSION, self.ns, TUNING_JOB.plural, NAME
        )
        return dict(obj.get("status") or {})

    def trials(self) -> list[dict[str, Any]]:
        listed = self.custom.list_namespaced_custom_object(
            TRAINING_JOB.group, TRAINING_JOB.version, self.ns, TRAINING_JOB.plural
        )
        return list(listed["items"])

    def wait(self, what: str, done: Any, timeout: float = 200) -> dict[str, Any]:
        last: dict[str, Any] = {}

        def reached() -> tuple[dict[str, Any]] | None:
            nonlocal last
            last = self.status()
            return (last,) if done(last) else None

        (status,) = wait_for(
            reached,
            timeout,
            lambda: f"{what}; last status {last}\n{self.diagnostics()}",
            interval=0.5,
        )
        return status

    def diagnostics(self) -> str:
        phases = [
            (t["metadata"]["name"], (t.get("status") or {}).get("phase")) for t in self.trials()
        ]
        lines = [f"trials: {phases}"]
        log = self.stack.operator_log
        if log.exists():
            lines.append("operator log tail:\n" + "\n".join(log.read_text().splitlines()[-30:]))
        return "\n".join(lines)


@pytest.fixture
def search(stack: LocalStack) -> Iterator[Search]:
    s = Search(stack)
    yield s
    s.core.delete_namespace(s.ns)


def test_search_finds_the_learning_rate_stops_the_bad_trial_and_survives_a_restart(
    search: Search,
) -> None:
    # A seed whose grid order tries the bad learning rate after a good one, so that the
    # median of the completed trials can stop it.
    seed = next(s for s in range(50) if grid_order(s)[0] != BAD and grid_order(s)[1] == BAD)
    order = grid_order(seed)
    search.create(manifest(seed))
    first = f"{NAME}-t0"
    search.wait(
        "the first trial training",
        lambda s: any(t["name"] == first and t.get("history") for t in s.get("trials") or []),
    )
    uids = {t["metadata"]["name"]: t["metadata"]["uid"] for t in search.trials()}
    search.stack.stop_operator(kill=True)
    search.stack.start_operator()
    status = search.wait(
        "phase Succeeded", lambda s: s.get("phase") in ("Succeeded", "Failed"), timeout=400
    )
    assert status["phase"] == "Succeeded", search.diagnostics()
    trials = {t["name"]: t for t in status["trials"]}
    # No duplicates: exactly the three deterministic names, each job created once.
    assert sorted(trials) == [f"{NAME}-t0", f"{NAME}-t1", f"{NAME}-t2"]
    jobs = {t["metadata"]["name"]: t["metadata"]["uid"] for t in search.trials()}
    assert sorted(jobs) == sorted(trials)
    assert all(jobs[name] == uid for name, uid in uids.items())
    assert [trials[f"{NAME}-t{i}"]["parameters"]["learningRate"] for i in range(3)] == order
    # The clearly bad trial was stopped before its end, by the median rule.
    bad = trials[f"{NAME}-t1"]
    assert bad["state"] == "EarlyStopped", bad
    assert bad["reason"].startswith("Median:")
    assert max(p["step"] for p in bad["history"]) < 40
    # The best region: not the learning rate that learns nothing.
    best = status["bestTrial"]
    assert best["parameters"]["learningRate"] in ("0.001", GOOD)
    assert trials[best["name"]]["state"] == "Succeeded"
    page = kubectl_lm(search.stack.kubeconfig, search.ns, "describe", f"lmtune/{NAME}").stdout
    assert "Trials:" in page
    assert "EarlyStopped" in page


def test_a_mistyped_parameter_path_is_refused_at_apply_naming_it(search: Search) -> None:
    body = copy.deepcopy(manifest(0))
    body["spec"]["parameters"][0]["path"] = "training.learnigRate"
    with pytest.raises(kubernetes.client.ApiException) as refused:
        search.create(body)
    assert refused.value.status == 422
    assert "spec.parameters[0].path" in str(refused.value.body)
    assert "'training.learnigRate' is not a tunable field" in str(refused.value.body)
    assert search.trials() == []
    # kubectl says the same.
    result = subprocess.run(
        [
            "kubectl",
            f"--kubeconfig={search.stack.kubeconfig}",
            "-n",
            search.ns,
            "create",
            "-f",
            "-",
        ],
        input=json.dumps(body),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "training.learnigRate" in result.stderr


def test_the_example_shares_its_workers_between_running_trials(search: Search) -> None:
    """manifests/examples/tuning-job.yaml as written, cut to two trials: Bayesian over a
    Float (log) and an Int parameter, the trials sharing maxReplicas through their scale
    subresource."""
    import yaml

    from tests.unit.tuning.helpers import EXAMPLE

    body: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    body["metadata"]["name"] = NAME
    spec = body["spec"]
    spec["budget"].update(maxTrials=2, parallelTrials=2, maxReplicas=3)
    spec["trialTemplate"]["data"]["claimName"] = DATA_CLAIM
    spec["trialTemplate"]["checkpoint"]["claimName"] = CKPT_CLAIM
    spec["trialTemplate"]["training"]["steps"] = 40
    # Paced steps (0.6 s for one worker, half that for two), so the trial with two
    # workers ends first however fast the machine, and the other is still running to
    # take the freed worker.
    spec["trialTemplate"].setdefault("worker", {}).setdefault("env", []).append(
        {"name": "ELASTICLM_SYNTHETIC_SCALING", "value": "t1=1700,alpha=0"}
    )
    search.create(body)
    status = search.wait(
        "phase Succeeded", lambda s: s.get("phase") in ("Succeeded", "Failed"), timeout=300
    )
    assert status["phase"] == "Succeeded", search.diagnostics()
    jobs = {t["metadata"]["name"]: t for t in search.trials()}
    assert sorted(jobs) == [f"{NAME}-t0", f"{NAME}-t1"]
    # 3 workers shared by 2 trials of 1..2: one starts with 2, the other with 1, and the
    # one left running when the other ends takes the freed worker through its scale
    # subresource, a recorded decision.
    moves = status.get("reallocations") or []
    assert [(m["from"], m["to"]) for m in moves] == [(1, 2)], status
    assert jobs[moves[0]["trial"]]["spec"]["replicas"] == 2
    for name, job in jobs.items():
        assert job["spec"]["checkpoint"]["path"] == f"tiny-lm-search/{name}"
        assert job["status"]["validationHistory"], job["status"]
    assert status["bestTrial"]["name"] in jobs
