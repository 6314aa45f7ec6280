"""apps/v1 Deployments and ReplicaSets through the in-process API server: discovery,
defaults, validation, generation, status and scale subresources, patches, tables."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from devcluster.apiserver.app import WORKLOADS_KEY
from tests.unit.devcluster.test_apiserver_support import TABLE, Api, api_client
from tests.waiting import wait_for_async

JSON = dict[str, Any]
DEPLOYS = "/apis/apps/v1/namespaces/default/deployments"
SETS = "/apis/apps/v1/namespaces/default/replicasets"


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async for client in api_client(tmp_path):
        yield client


def deployment(name: str = "web", **spec: Any) -> JSON:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "main", "image": "python:3.12"}]},
            },
            **spec,
        },
    }


def replica_set(name: str = "solo", **spec: Any) -> JSON:
    body = deployment(name, **spec)
    body["kind"] = "ReplicaSet"
    return body


def messages(reply: Any) -> str:
    assert reply.status == 422, reply
    assert reply["reason"] == "Invalid"
    return str(reply["message"])


async def test_discovery(api: Api) -> None:
    groups = await api.get("/apis")
    assert "apps" in [g["name"] for g in groups["groups"]]
    resources = {r["name"]: r for r in (await api.get("/apis/apps/v1"))["resources"]}
    assert resources["deployments"]["shortNames"] == ["deploy"]
    assert resources["replicasets"]["shortNames"] == ["rs"]
    assert resources["deployments"]["categories"] == ["all"]
    assert resources["deployments"]["kind"] == "Deployment"
    for name in ("deployments", "replicasets"):
        scale = resources[f"{name}/scale"]
        assert (scale["group"], scale["version"], scale["kind"]) == ("autoscaling", "v1", "Scale")
        assert resources[f"{name}/status"]["verbs"] == ["get", "patch", "update"]
    document = await api.get("/openapi/v3/apis/apps/v1")
    schema = document["components"]["schemas"]["io.k8s.api.apps.v1.Deployment"]
    assert schema["x-kubernetes-group-version-kind"] == [
        {"group": "apps", "version": "v1", "kind": "Deployment"}
    ]
    assert (
        "strategy"
        in document["components"]["schemas"]["io.k8s.api.apps.v1.DeploymentSpec"]["properties"]
    )


async def test_defaults(api: Api) -> None:
    created = await api.post(DEPLOYS, deployment())
    assert created.status == 201, created
    spec = created["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"},
    }
    assert (spec["revisionHistoryLimit"], spec["progressDeadlineSeconds"]) == (10, 600)
    assert "minReadySeconds" not in spec  # 0, omitted
    pod_spec = spec["template"]["spec"]
    assert pod_spec["restartPolicy"] == "Always"
    assert pod_spec["terminationGracePeriodSeconds"] == 30
    assert pod_spec["containers"][0]["terminationMessagePolicy"] == "File"
    assert "serviceAccountName" not in pod_spec  # admission adds it to pods, not templates
    assert created["metadata"]["generation"] == 1
    recreate = await api.post(DEPLOYS, deployment("re", strategy={"type": "Recreate"}))
    assert recreate["spec"]["strategy"] == {"type": "Recreate"}
    rs = await api.post(SETS, replica_set())
    assert rs["spec"]["replicas"] == 1
    assert rs["status"] == {"replicas": 0}


ROLLING = "spec.strategy.rollingUpdate"
EMPTY_SELECTOR = (
    "spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{}, "
    "MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: empty selector is invalid for "
    "deployment"
)
OTHER_TEMPLATE = {
    "metadata": {"labels": {"app": "other"}},
    "spec": {"containers": [{"name": "m", "image": "i"}]},
}


def rolling(**fields: Any) -> JSON:
    return {"strategy": {"type": "RollingUpdate", "rollingUpdate": fields}}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"template": OTHER_TEMPLATE},
            'Deployment.apps "web" is invalid: spec.template.metadata.labels: Invalid value: '
            'map[string]string{"app":"other"}: `selector` does not match template `labels`',
        ),
        ({"selector": {}}, EMPTY_SELECTOR),
        ({"selector": None}, "spec.selector: Required value"),
        ({"replicas": -1}, "spec.replicas: Invalid value: -1: must be greater than or equal to 0"),
        (
            rolling(maxSurge=0, maxUnavailable="0%"),
            f'{ROLLING}.maxUnavailable: Invalid value: "0%": may not be 0 when `maxSurge` is 0',
        ),
        (
            rolling(maxUnavailable="150%"),
            f'{ROLLING}.maxUnavailable: Invalid value: "150%": must not be greater than 100%',
        ),
        (rolling(maxSurge="x"), f'{ROLLING}.maxSurge: Invalid value: "x": a valid percent string'),
        (
            {"strategy": {"type": "Recreate", "rollingUpdate": {"maxSurge": 1}}},
            f"{ROLLING}: Forbidden: may not be specified when strategy `type` is 'Recreate'",
        ),
        (
            {"strategy": {"type": "Blue"}},
            'spec.strategy.type: Unsupported value: "Blue": supported values: "Recreate", '
            '"RollingUpdate"',
        ),
        (
            {"minReadySeconds": 10, "progressDeadlineSeconds": 10},
            "spec.progressDeadlineSeconds: Invalid value: 10: must be greater than minReadySeconds",
        ),
    ],
)
async def test_validation(api: Api, change: JSON, expected: str) -> None:
    body = deployment()
    body["spec"].update(change)
    assert expected in messages(await api.post(DEPLOYS, body))


async def test_template_rules(api: Api) -> None:
    body = deployment()
    body["spec"]["template"]["spec"]["restartPolicy"] = "Never"
    assert (
        'spec.template.spec.restartPolicy: Unsupported value: "Never": supported values: '
        '"Always"' in messages(await api.post(DEPLOYS, body))
    )
    body = deployment()
    body["spec"]["template"]["spec"]["containers"][0].pop("image")
    assert "spec.template.spec.containers[0].image: Required value" in messages(
        await api.post(DEPLOYS, body)
    )


async def test_selector_is_immutable(api: Api) -> None:
    created = await api.post(DEPLOYS, deployment())
    changed = copy.deepcopy(created.body)
    del changed["metadata"]["resourceVersion"]  # unconditional: the controller writes too
    changed["spec"]["selector"] = {"matchLabels": {"app": "web", "tier": "x"}}
    changed["spec"]["template"]["metadata"]["labels"]["tier"] = "x"
    reply = await api.put(f"{DEPLOYS}/web", changed)
    assert "spec.selector: Invalid value: " in messages(reply)
    assert "field is immutable" in messages(reply)


async def test_generation_and_status(api: Api) -> None:
    await api.app[WORKLOADS_KEY].stop()  # the controller would write status too
    await api.post(DEPLOYS, deployment(paused=True))
    path = f"{DEPLOYS}/web"
    labelled = await api.patch(path, {"metadata": {"labels": {"team": "a"}}})
    assert labelled["metadata"]["generation"] == 1
    # annotations are copied to the ReplicaSets: they count as a change
    annotated = await api.patch(path, {"metadata": {"annotations": {"note": "x"}}})
    assert annotated["metadata"]["generation"] == 2
    scaled = await api.patch(path, {"spec": {"replicas": 3}})
    assert scaled["metadata"]["generation"] == 3
    # a status write changes no generation and may carry annotations (the revision)
    status = {"metadata": {"annotations": {"note": "x", "r": "1"}}, "status": {"replicas": 9}}
    written = await api.patch(f"{path}/status", status)
    assert written.status == 200, written
    assert written["metadata"]["generation"] == 3
    assert written["metadata"]["annotations"]["r"] == "1"
    assert written["status"]["replicas"] == 9
    # while a spec write cannot set status
    spec_write = await api.patch(path, {"status": {"replicas": 1}})
    assert spec_write["status"]["replicas"] == 9


async def test_scale_subresource(api: Api) -> None:
    body = deployment(paused=True)
    body["spec"]["selector"]["matchExpressions"] = [
        {"key": "tier", "operator": "In", "values": ["a", "b"]}
    ]
    body["spec"]["template"]["metadata"]["labels"]["tier"] = "a"
    await api.post(DEPLOYS, body)
    path = f"{DEPLOYS}/web/scale"
    scale = await api.get(path)
    assert (scale["apiVersion"], scale["kind"]) == ("autoscaling/v1", "Scale")
    assert scale["spec"] == {"replicas": 1}
    assert scale["status"]["selector"] == "app=web,tier in (a,b)"
    scale.body["spec"]["replicas"] = 4
    del scale.body["metadata"]["resourceVersion"]  # unconditional: the controller writes too
    put = await api.put(path, scale.body)
    assert put["spec"]["replicas"] == 4
    patched = await api.patch(path, {"spec": {"replicas": 2}})
    assert patched["spec"]["replicas"] == 2
    assert (await api.get(f"{DEPLOYS}/web"))["spec"]["replicas"] == 2
    refused = await api.patch(path, {"spec": {"replicas": -1}})
    assert refused.status == 422
    assert refused["message"].startswith('Scale.autoscaling "web" is invalid: spec.replicas')
    rs_scale = await api.get(f"{SETS}/missing/scale")
    assert rs_scale.status == 404


async def test_strategic_merge_patch_merges_containers_by_name(api: Api) -> None:
    body = deployment(paused=True)
    body["spec"]["template"]["spec"]["containers"].append({"name": "side", "image": "busybox"})
    await api.post(DEPLOYS, body)
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "side", "image": "alpine"}]}}}}
    patched = await api.patch(f"{DEPLOYS}/web", patch, kind="strategic")
    assert patched.status == 200, patched
    images = {c["name"]: c["image"] for c in patched["spec"]["template"]["spec"]["containers"]}
    assert images == {"main": "python:3.12", "side": "alpine"}


async def test_tables(api: Api) -> None:
    await api.post(DEPLOYS, deployment(replicas=0))
    await api.post(SETS, replica_set(replicas=0))
    table = await api.get(DEPLOYS, headers={"Accept": TABLE})
    names = [c["name"] for c in table["columnDefinitions"]]
    assert names == [
        "Name", "Ready", "Up-to-date", "Available", "Age", "Containers", "Images", "Selector",
    ]  # fmt: skip
    row = table["rows"][0]["cells"]
    assert row[:4] == ["web", "0/0", 0, 0]
    assert row[5:] == ["main", "python:3.12", "app=web"]
    table = await api.get(SETS, headers={"Accept": TABLE})
    assert [c["name"] for c in table["columnDefinitions"]][:5] == [
        "Name", "Desired", "Current", "Ready", "Age",
    ]  # fmt: skip
    assert table["rows"][0]["cells"][:4] == ["solo", 0, 0, 0]


async def test_deleting_a_deployment_takes_its_replica_sets_and_pods(tmp_path: Path) -> None:
    async for api in api_client(tmp_path, simulate=True):  # pods go at once
        await delete_deployment(api)


async def delete_deployment(api: Api) -> None:
    await api.post(DEPLOYS, deployment(replicas=2))

    async def count(path: str) -> int:
        return len((await api.get(path))["items"])

    await wait_for_async(lambda: count("/api/v1/namespaces/default/pods"), what="two pods")
    reply = await api.delete(f"{DEPLOYS}/web")
    assert reply.status == 200, reply
    assert reply["kind"] == "Status"  # as kube-apiserver answers for Deployments

    async def all_gone() -> bool:
        return await count(SETS) == 0 and await count("/api/v1/namespaces/default/pods") == 0

    await wait_for_async(all_gone, what="the ReplicaSet and pods to be collected")
