"""devcluster's --state-dir: objects survive a restart (devcluster only)."""

from __future__ import annotations

from pathlib import Path

import kubernetes
import pytest

from tests.crds import install_crds, project_crds
from tests.integration.conformance.helpers import (
    GROUP,
    LMTJ,
    NOT_YET,
    VERSION,
    WatchStream,
    named,
    raw,
    training_job,
)
from tests.integration.harness import E2E, devcluster_process
from tests.kubeclient import api_client, core_api, custom_api
from tests.waiting import wait_for

pytestmark = pytest.mark.skipif(E2E, reason="restarts a devcluster of its own")


def client(info: dict[str, str]) -> kubernetes.client.ApiClient:
    return api_client(info["kubeconfig"])


def test_objects_survive_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with devcluster_process(state) as (_, info), client(info) as api:
        core = core_api(api)
        custom = custom_api(api)
        core.create_namespace({"metadata": {"name": "kept"}})
        cm = core.create_namespaced_config_map(
            "kept", {"metadata": {"name": "cfg", "labels": {"a": "b"}}, "data": {"k": "v"}}
        )
        secret = core.create_namespaced_secret(
            "kept", {"metadata": {"name": "s"}, "stringData": {"t": "x"}}
        )
        install_crds(api, [c for c in project_crds() if c["spec"]["names"]["plural"] == LMTJ])
        job = custom.create_namespaced_custom_object(
            GROUP, VERSION, "kept", LMTJ, training_job("survivor")
        )
        custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, "kept", LMTJ, "survivor", {"status": {"phase": "Running", "step": 9}}
        )
        core.create_namespaced_config_map("kept", {"metadata": {"name": "doomed"}})
        core.delete_namespaced_config_map("doomed", "kept")
        last_rv = int(core.list_namespaced_config_map("kept").metadata.resource_version)

    with devcluster_process(state) as (_, info), client(info) as api:
        core = core_api(api)
        custom = custom_api(api)
        got = core.read_namespaced_config_map("cfg", "kept")
        assert got.metadata.uid == cm.metadata.uid
        assert got.metadata.resource_version == cm.metadata.resource_version
        assert got.metadata.creation_timestamp == cm.metadata.creation_timestamp
        assert got.metadata.labels == {"a": "b"}
        assert got.data == {"k": "v"}
        assert core.read_namespaced_secret("s", "kept").metadata.uid == secret.metadata.uid
        assert "doomed" not in {
            c.metadata.name for c in core.list_namespaced_config_map("kept").items
        }
        assert core.read_namespace("kept").status.phase == "Active"

        def served() -> bool:
            response = raw(api, "GET", f"/apis/{GROUP}/{VERSION}")
            return response.status == 200 and LMTJ in {
                r["name"] for r in response.json()["resources"]
            }

        wait_for(served, 30, "lmtrainingjobs served after the restart", retry_on=NOT_YET)
        survivor = custom.get_namespaced_custom_object(GROUP, VERSION, "kept", LMTJ, "survivor")
        assert survivor["metadata"]["uid"] == job["metadata"]["uid"]
        assert survivor["status"] == {"phase": "Running", "step": 9}

        # the resourceVersion continues upwards
        new = core.create_namespaced_config_map("kept", {"metadata": {"name": "after"}})
        assert int(new.metadata.resource_version) > last_rv
        updated = core.patch_namespaced_config_map("cfg", "kept", {"data": {"k": "w"}})
        assert int(updated.metadata.resource_version) > int(new.metadata.resource_version)


def test_a_watch_from_before_a_restart_is_never_silently_incomplete(tmp_path: Path) -> None:
    """After a restart, a watch from an old resourceVersion either replays what happened
    since or answers 410 Gone (the client relists); it never skips events silently."""
    state = tmp_path / "state"
    with devcluster_process(state) as (_, info), client(info) as api:
        core = core_api(api)
        core.create_namespace({"metadata": {"name": "w"}})
        old_rv = core.create_namespaced_config_map("w", {"metadata": {"name": "a"}})
        old_rv = old_rv.metadata.resource_version
        core.patch_namespaced_config_map("a", "w", {"data": {"x": "1"}})

    with devcluster_process(state) as (_, info), client(info) as api:
        core = core_api(api)
        with WatchStream(
            api, "/api/v1/namespaces/w/configmaps", resourceVersion=old_rv, timeoutSeconds=10
        ) as w:
            core.create_namespaced_config_map("w", {"metadata": {"name": "b"}})
            if w.status == 410:
                return
            assert w.status == 200
            events = w.until(lambda e: e["type"] == "ERROR" or named("b")(e))
        if events[-1]["type"] == "ERROR":
            assert events[-1]["object"]["code"] == 410
        else:
            assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
                ("MODIFIED", "a"),
                ("ADDED", "b"),
            ]
