"""The cluster admin's pod defaults (`elasticlm operator --worker-*/--server-*`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from lmoperator.api import LMService, LMTrainingJob
from lmoperator.api.common import PullPolicy, ResourceRequirements
from lmoperator.builders.defaults import (
    Defaults,
    InvalidDefaultError,
    PodDefaults,
    parse_pod_security_context,
    parse_resources,
    with_defaults,
)
from lmoperator.builders.service import ModelSource, server_deployment
from lmoperator.builders.trainingjob import DEFAULT_WORKER_IMAGE, rdzv_pod, worker_pod
from lmoperator.handlers import common
from lmoperator.handlers.service import parse_service
from lmoperator.handlers.trainingjob import parse_job
from tests.unit.operator.helpers import job_doc, make_job
from tests.unit.operator.test_service import make_service

HF = ModelSource("hf", "models/smollm2", "models", origin="model.hf")
ADDR = "127.96.0.7:29400"

WORKER = PodDefaults(
    image="registry.example/worker:2",
    image_pull_policy=PullPolicy.ALWAYS,
    resources=ResourceRequirements(requests={"cpu": "4", "memory": "8Gi"}),
    pod_security_context={"runAsUser": 2000, "runAsGroup": 2000, "fsGroup": 2000},
)
SERVER = PodDefaults(
    image="registry.example/server:2",
    resources=ResourceRequirements(limits={"memory": "2Gi"}),
)
DEFAULTS = Defaults(worker=WORKER, server=SERVER)


def main_container(pod: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = pod["spec"]["containers"][0]
    return container


def test_no_defaults_leave_the_resource_as_it_is() -> None:
    job = bare_job()
    assert with_defaults(job, Defaults()) is job


def bare_job() -> LMTrainingJob:
    """The example job without its own worker resources."""
    return make_job(worker={"resources": None})


def test_worker_defaults_fill_the_workers_and_the_store() -> None:
    job = with_defaults(bare_job(), DEFAULTS)
    worker = worker_pod(job, "uid", 0, ADDR)
    container = main_container(worker)
    assert container["image"] == "registry.example/worker:2"
    assert container["imagePullPolicy"] == "Always"
    assert container["resources"] == {"requests": {"cpu": "4", "memory": "8Gi"}}
    # The CPU request sets the worker's torch threads, as a spec's own resources do.
    assert {"name": "ELASTICLM_THREADS", "value": "4"} in container["env"]
    security = worker["spec"]["securityContext"]
    assert security["runAsUser"] == security["runAsGroup"] == security["fsGroup"] == 2000
    # The rest of the restricted profile stays.
    assert security["runAsNonRoot"] is True
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    store = rdzv_pod(job, "uid")
    assert main_container(store)["image"] == "registry.example/worker:2"
    assert store["spec"]["securityContext"]["runAsUser"] == 2000


def test_the_spec_wins_over_the_defaults() -> None:
    job = make_job(
        worker={
            "image": "mine:1",
            "resources": {"requests": {"cpu": "1"}, "limits": None},
            "podTemplate": {"spec": {"securityContext": {"runAsUser": 3000}}},
        }
    )
    worker = worker_pod(with_defaults(job, DEFAULTS), "uid", 0, ADDR)
    container = main_container(worker)
    assert container["image"] == "mine:1"
    assert container["resources"] == {"requests": {"cpu": "1", "memory": "1Gi"}}
    assert worker["spec"]["securityContext"]["runAsUser"] == 3000
    # What the template leaves out still comes from the defaults.
    assert worker["spec"]["securityContext"]["fsGroup"] == 2000


def test_server_defaults_are_the_servers_own() -> None:
    service = with_defaults(make_service(), DEFAULTS)
    deployment = server_deployment(service, "uid", HF, 1)
    pod = deployment["spec"]["template"]
    container = main_container(pod)
    assert container["image"] == "registry.example/server:2"
    assert container["resources"] == {"limits": {"memory": "2Gi"}}
    assert "imagePullPolicy" not in container
    assert pod["spec"]["securityContext"]["runAsUser"] == 1000  # the built-in default


@pytest.fixture
def admin_defaults() -> Iterator[None]:
    common.set_pod_defaults(DEFAULTS)
    yield
    common.set_pod_defaults(Defaults())


def test_the_handlers_parse_with_the_operators_defaults(admin_defaults: None) -> None:
    job = parse_job(job_doc())
    assert isinstance(job, LMTrainingJob)
    assert job.spec.worker.image == "registry.example/worker:2"
    assert job.spec.worker.resources is not None
    assert job.spec.worker.resources.requests == {"cpu": "500m", "memory": "1Gi"}  # its own
    service_doc = {
        "apiVersion": "elasticlm.io/v1alpha1",
        "kind": "LMService",
        "metadata": {"name": "chat", "namespace": "ns"},
        "spec": {"model": {"hf": {"claimName": "models", "path": "models/smollm2"}}},
    }
    service = parse_service(service_doc)
    assert isinstance(service, LMService)
    assert service.spec.worker.image == "registry.example/server:2"
    common.set_pod_defaults(Defaults())
    again = parse_job(job_doc())
    assert isinstance(again, LMTrainingJob)
    assert again.spec.worker.image is None
    assert main_container(worker_pod(again, "uid", 0, ADDR))["image"] == DEFAULT_WORKER_IMAGE


def test_resources_parse_from_json() -> None:
    parsed = parse_resources('{"requests": {"cpu": 2}, "limits": {"memory": "1Gi"}}', "--x")
    assert parsed.requests == {"cpu": 2}
    assert parsed.limits == {"memory": "1Gi"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("cpu=1", "--x: not valid JSON"),
        ("[1]", "--x: must be a JSON object, got list"),
        ('{"requests": {"cpu": "lots"}}', "--x: requests.cpu"),
        ('{"request": {"cpu": "1"}}', "--x: request"),
    ],
)
def test_bad_resources_name_the_flag(text: str, message: str) -> None:
    with pytest.raises(InvalidDefaultError, match="^" + message.replace(".", r"\.")):
        parse_resources(text, "--x")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"runAsNonRoot": false}', "runAsNonRoot must stay true"),
        ('{"runAsUser": 0}', "runAsUser 0 (root) is not allowed"),
        ('{"fsGroup": "1000"}', "fsGroup must be a non-negative integer"),
        ('{"seccompProfile": {"type": "Unconfined"}}', "seccompProfile.type must be"),
        ('{"privileged": true}', "unknown field(s) privileged"),
    ],
)
def test_a_pod_security_context_must_stay_restricted(text: str, message: str) -> None:
    with pytest.raises(InvalidDefaultError) as caught:
        parse_pod_security_context(text, "--y")
    assert str(caught.value).startswith("--y: ")
    assert message in str(caught.value)


def test_a_restricted_pod_security_context_is_accepted() -> None:
    text = '{"runAsUser": 5000, "fsGroup": 5000, "seccompProfile": {"type": "RuntimeDefault"}}'
    assert parse_pod_security_context(text, "--y")["runAsUser"] == 5000
