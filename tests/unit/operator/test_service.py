"""The LMService manifests (builders/service.py) and its pure reconciler, rule by rule."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pytest

from lmoperator.api import InvalidResourceError, LMService, kinds, parse_resource
from lmoperator.builders.service import (
    AUTH_MOUNT,
    DELETION_COST_ANNOTATION,
    MODEL_SOURCE_ANNOTATION,
    TEMPLATE_HASH_ANNOTATION,
    ModelSource,
    builtin_command,
    deletion_costs,
    endpoint,
    runtime_problems,
    server_deployment,
    server_pdb,
    server_service,
    validate_server_pod,
)
from lmoperator.reconcile.children import (
    CreateObject,
    ObservedObject,
    ObservedPod,
    ObservedService,
    PatchObject,
    merge_patch,
    observe_object,
)
from lmoperator.reconcile.service import (
    NotReady,
    Observed,
    Unresolved,
    model_source,
    reconcile,
    service_ref,
)

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
REF = service_ref("chat", "ns", "svc-uid", generation=2)
HF = ModelSource("hf", "models/smollm2", "models", origin="model.hf")


def make_service(**spec: Any) -> LMService:
    doc: dict[str, Any] = {
        "apiVersion": "elasticlm.io/v1alpha1",
        "kind": "LMService",
        "metadata": {"name": "chat", "namespace": "ns"},
        "spec": {"model": {"hf": {"claimName": "models", "path": "models/smollm2"}}, **spec},
    }
    service = parse_resource(doc)
    assert isinstance(service, LMService)
    return service


def job_body(phase: str = "Running", last_step: int | None = 40, **spec: Any) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase, "step": 50}
    if last_step is not None:
        status["lastCheckpoint"] = {"step": last_step, "time": "2026-01-01T11:59:00Z"}
    return {
        "metadata": {"name": "tiny-lm", "namespace": "ns"},
        "spec": {"checkpoint": {"claimName": "ckpt", "path": "runs/tiny"}, **spec},
        "status": status,
    }


def observed_deployment(manifest: Mapping[str, Any], **status: Any) -> ObservedObject:
    body = {**manifest, "metadata": {**manifest["metadata"], "uid": "dep-uid"}, "status": status}
    return observe_object(body)


def server_pod(name: str, ready: bool = True) -> ObservedPod:
    return ObservedPod(name, f"{name}-uid", "server", None, "Running", ready, ip="127.0.0.1")


def container(manifest: Mapping[str, Any]) -> dict[str, Any]:
    return dict(manifest["spec"]["template"]["spec"]["containers"][0])


# --------------------------------------------------------------------------------------
# Manifests


def test_deployment_rolls_one_extra_pod_and_never_goes_below_the_count() -> None:
    d = server_deployment(make_service(replicas=3), "svc-uid", HF, 3)
    assert d["metadata"]["name"] == "chat-server"
    assert d["spec"]["replicas"] == 3
    assert d["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    owner = d["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("LMService", "svc-uid", True)
    labels = d["spec"]["template"]["metadata"]["labels"]
    assert d["spec"]["selector"]["matchLabels"] == labels


def test_server_pod_is_restricted_probed_and_drains() -> None:
    d = server_deployment(make_service(), "svc-uid", HF, 1)
    pod = d["spec"]["template"]["spec"]
    c = container(d)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    startup = c["startupProbe"]
    # Loading a model may take minutes: the kubelet must not restart it meanwhile.
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["lifecycle"]["preStop"]["sleep"]["seconds"] > 0
    assert pod["terminationGracePeriodSeconds"] > c["lifecycle"]["preStop"]["sleep"]["seconds"]
    mount = next(m for m in c["volumeMounts"] if m["name"] == "model")
    assert mount["mountPath"] == "/model"  # writable: the perplexity baseline is cached there


def test_builtin_command_is_an_argument_list_with_every_setting() -> None:
    service = make_service(
        precision="fp32",
        compression={"quantization": "int8", "maxPerplexityIncrease": 0.02},
        serving={"maxBatchSize": 16, "maxQueue": 100, "port": 8080},
    )
    command = builtin_command(service, HF)
    assert command[:3] == ["python", "-m", "lmworker.serve"]
    pairs = dict(zip(command[3::2], command[4::2], strict=True))
    assert pairs["--model-dir"] == "/model/models/smollm2"
    assert pairs["--served-model-name"] == "chat"
    assert pairs["--max-batch-size"] == "16"
    assert pairs["--max-queue"] == "100"
    assert pairs["--port"] == "8080"
    assert pairs["--precision"] == "fp32"
    assert pairs["--quantization"] == "int8"
    assert pairs["--max-perplexity-increase"] == "0.02"


def test_checkpoint_source_passes_the_step() -> None:
    source = ModelSource("checkpoint", "runs/tiny", "ckpt", step=40)
    command = builtin_command(make_service(), source)
    pairs = dict(zip(command[3::2], command[4::2], strict=True))
    assert pairs["--checkpoint"] == "/model/runs/tiny"
    assert pairs["--step"] == "40"


def test_auth_token_is_a_mounted_file_never_an_argument_value() -> None:
    service = make_service(serving={"authSecretRef": {"name": "api", "key": "token"}})
    d = server_deployment(service, "svc-uid", HF, 1)
    c = container(d)
    assert "--auth-token-file" in c["command"]
    volume = next(v for v in d["spec"]["template"]["spec"]["volumes"] if v["name"] == "auth")
    assert volume["secret"]["secretName"] == "api"
    assert any(m["mountPath"] == AUTH_MOUNT for m in c["volumeMounts"])


def test_vllm_maps_the_same_settings_and_takes_the_token_from_the_secret() -> None:
    service = make_service(
        runtime="VLLM",
        precision="bf16",
        serving={"authSecretRef": {"name": "api", "key": "token"}, "maxBatchSize": 32},
    )
    d = server_deployment(service, "svc-uid", HF, 1)
    c = container(d)
    assert c["command"][:3] == ["python3", "-m", "vllm.entrypoints.openai.api_server"]
    pairs = dict(zip(c["command"][3::2], c["command"][4::2], strict=False))
    assert pairs["--model"] == "/model/models/smollm2"
    assert pairs["--max-num-seqs"] == "32"
    assert pairs["--dtype"] == "bfloat16"
    key = next(e for e in c["env"] if e["name"] == "VLLM_API_KEY")
    assert key["valueFrom"]["secretKeyRef"] == {"name": "api", "key": "token"}
    assert c["readinessProbe"]["httpGet"]["path"] == "/health"


def test_vllm_refuses_compression_and_training_checkpoints() -> None:
    service = make_service(runtime="VLLM", compression={"quantization": "int8"})
    checkpoint = ModelSource("checkpoint", "runs/tiny", "ckpt")
    problems = runtime_problems(service, checkpoint)
    assert any(p.startswith("spec.compression: runtime VLLM") for p in problems)
    assert any(p.startswith("spec.model: runtime VLLM needs a Hugging Face") for p in problems)
    assert runtime_problems(make_service(compression={"quantization": "int8"}), checkpoint) == []


def test_pod_template_may_not_replace_the_server_command() -> None:
    service = make_service(
        worker={"podTemplate": {"spec": {"containers": [{"name": "server", "command": ["sh"]}]}}}
    )
    problems = validate_server_pod(service)
    assert len(problems) == 1
    assert "command" in problems[0]


def test_service_and_pdb() -> None:
    s = server_service(make_service(), "svc-uid")
    assert s["metadata"]["name"] == "chat"
    assert s["spec"]["ports"][0]["port"] == 80
    assert s["spec"]["ports"][0]["targetPort"] == 8000
    pdb = server_pdb(make_service(), "svc-uid")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert endpoint("chat", "ns") == "http://chat.ns.svc/v1"


def test_deletion_costs_rank_by_load_and_unknown_pods_go_last() -> None:
    costs = deletion_costs({"a": 5, "b": 0}, ["a", "b", "c"])
    assert costs == {"a": 5, "b": 0, "c": 5}


def test_merge_patch_nulls_removed_keys_and_replaces_lists() -> None:
    old = {"a": {"b": 1, "c": 2}, "l": [1, 2], "gone": 1}
    new = {"a": {"b": 1, "c": 3}, "l": [1], "new": {"x": 1}}
    assert merge_patch(old, new) == {"a": {"c": 3}, "l": [1], "new": {"x": 1}, "gone": None}


# --------------------------------------------------------------------------------------
# Where the model is


def from_job(**ref: Any) -> LMService:
    doc: dict[str, Any] = {
        "apiVersion": "elasticlm.io/v1alpha1",
        "kind": "LMService",
        "metadata": {"name": "chat", "namespace": "ns"},
        "spec": {"model": {"fromTrainingJob": {"name": "tiny-lm", **ref}}},
    }
    service = parse_resource(doc)
    assert isinstance(service, LMService)
    return service


def test_running_job_serves_its_newest_checkpoint() -> None:
    source = model_source(from_job(), job_body())
    assert source == ModelSource(
        "checkpoint",
        "runs/tiny",
        "ckpt",
        None,
        "LMTrainingJob tiny-lm, newest checkpoint (step 40)",
    )


def test_finished_job_serves_its_export() -> None:
    source = model_source(from_job(), job_body(phase="Succeeded"))
    assert isinstance(source, ModelSource)
    assert (source.format, source.path) == ("hf", "runs/tiny/export")


def test_a_chosen_step_is_served_even_after_the_job_finished() -> None:
    source = model_source(from_job(step=20), job_body(phase="Succeeded"))
    assert isinstance(source, ModelSource)
    assert (source.format, source.step) == ("checkpoint", 20)


@pytest.mark.parametrize(
    ("job", "reason", "says"),
    [
        (None, "TrainingJobNotFound", "LMTrainingJob tiny-lm was not found in namespace ns"),
        (job_body(last_step=None), "NoCheckpointYet", "has no complete checkpoint yet"),
        (
            {"metadata": {"name": "tiny-lm"}, "spec": {}, "status": {}},
            "NoCheckpointLocation",
            "has no spec.checkpoint",
        ),
    ],
)
def test_unservable_jobs_say_why(job: dict[str, Any] | None, reason: str, says: str) -> None:
    source = model_source(from_job(), job)
    assert isinstance(source, Unresolved)
    assert source.reason == reason
    assert says in source.message


# --------------------------------------------------------------------------------------
# Passes


def test_first_pass_creates_service_pdb_and_deployment() -> None:
    plan = reconcile(REF, make_service(replicas=2), {}, Observed(), NOW)
    created = [(a.kind, a.name) for a in plan.actions if isinstance(a, CreateObject)]
    assert created == [
        (kinds.K8S_SERVICE, "chat"),
        (kinds.POD_DISRUPTION_BUDGET, "chat-server"),
        (kinds.DEPLOYMENT, "chat-server"),
    ]
    assert plan.status["phase"] == "Loading"
    assert plan.status["endpoint"] == "http://chat.ns.svc/v1"
    assert plan.status["selector"] == "elasticlm.io/service=chat,elasticlm.io/role=server"


def steady(service: LMService, replicas: int, **observed: Any) -> Observed:
    manifest = server_deployment(service, "svc-uid", HF, replicas)
    return Observed(
        deployment=observed_deployment(manifest, readyReplicas=replicas, updatedReplicas=replicas),
        service=ObservedService("chat", "10.0.0.1"),
        pdb=ObservedObject("PodDisruptionBudget", "chat-server", "pdb-uid", "server"),
        **observed,
    )


def test_steady_service_is_ready_and_does_nothing() -> None:
    service = make_service(replicas=2)
    pods = [server_pod("a"), server_pod("b")]
    plan = reconcile(REF, service, {}, steady(service, 2, pods=pods), NOW)
    assert plan.actions == []
    assert plan.status["phase"] == "Ready"
    assert plan.status["readyReplicas"] == 2
    ready = next(c for c in plan.status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"


def test_a_changed_setting_patches_the_template() -> None:
    service = make_service(replicas=1)
    observed = steady(service, 1, pods=[server_pod("a")])
    changed = make_service(replicas=1, compression={"quantization": "int8"})
    plan = reconcile(REF, changed, {}, observed, NOW)
    (patch,) = [a for a in plan.actions if isinstance(a, PatchObject)]
    assert patch.kind == kinds.DEPLOYMENT
    assert MODEL_SOURCE_ANNOTATION in patch.patch["metadata"]["annotations"]
    new_hash = patch.patch["metadata"]["annotations"][TEMPLATE_HASH_ANNOTATION]
    assert new_hash != observed.deployment.annotations[TEMPLATE_HASH_ANNOTATION]  # type: ignore[union-attr]
    assert "--quantization" in patch.patch["spec"]["template"]["spec"]["containers"][0]["command"]


def test_scale_down_ranks_pods_by_load_before_shrinking() -> None:
    service = make_service(replicas=3)
    observed = steady(
        service,
        3,
        pods=[server_pod("a"), server_pod("b"), server_pod("c")],
        in_flight={"a": 7, "b": 0, "c": 2},
    )
    plan = reconcile(REF, make_service(replicas=1), {}, observed, NOW)
    patches = [a for a in plan.actions if isinstance(a, PatchObject)]
    costs = {
        p.name: p.patch["metadata"]["annotations"][DELETION_COST_ANNOTATION]
        for p in patches
        if p.kind == kinds.POD
    }
    assert costs == {"a": "7", "b": "0", "c": "2"}
    last = patches[-1]
    assert (last.kind, last.subresource, last.patch) == (
        kinds.DEPLOYMENT,
        "scale",
        {"spec": {"replicas": 1}},
    )
    assert plan.scaled == "down"


def test_someone_elses_replica_count_on_the_deployment_is_restored() -> None:
    service = make_service(replicas=2)
    observed = steady(service, 5, pods=[server_pod("a"), server_pod("b")])
    plan = reconcile(REF, service, {}, observed, NOW)
    scale = [a for a in plan.actions if isinstance(a, PatchObject) and a.kind == kinds.DEPLOYMENT]
    assert scale[-1].patch == {"spec": {"replicas": 2}}


def test_a_refused_new_pod_stalls_the_rollout_with_the_servers_message() -> None:
    service = make_service(replicas=1)
    message = "perplexity rose 7.3% (12.1 -> 13.0) above maxPerplexityIncrease 5%"
    observed = steady(
        service,
        1,
        pods=[server_pod("old"), server_pod("new", ready=False)],
        not_ready={"new": NotReady("refused", message)},
    )
    plan = reconcile(REF, service, {}, observed, NOW)
    assert plan.status["phase"] == "Degraded"
    degraded = next(c for c in plan.status["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "RolloutStalled"
    assert message in degraded["message"]
    assert "1 older pod(s) keep serving" in degraded["message"]
    assert any(e.reason == "RolloutStalled" for e in plan.events)


def test_service_of_a_job_without_checkpoint_waits_pending() -> None:
    plan = reconcile(REF, from_job(), {}, Observed(training_job=job_body(last_step=None)), NOW)
    assert not any(isinstance(a, CreateObject) and a.kind == kinds.DEPLOYMENT for a in plan.actions)
    assert plan.status["phase"] == "Pending"
    loaded = next(c for c in plan.status["conditions"] if c["type"] == "ModelLoaded")
    assert loaded["reason"] == "NoCheckpointYet"


def test_invalid_service_fails_with_the_problems() -> None:
    invalid = InvalidResourceError("LMService", ["spec.replicas: must be >= 0"])
    plan = reconcile(REF, invalid, {}, Observed(), NOW)
    assert plan.status["phase"] == "Failed"
    assert plan.actions == []
    ready = next(c for c in plan.status["conditions"] if c["type"] == "Ready")
    assert "spec.replicas" in ready["message"]


def test_scaled_to_zero_is_pending() -> None:
    service = make_service(replicas=0)
    plan = reconcile(REF, service, {}, steady(service, 0), NOW)
    assert plan.status["phase"] == "Pending"
    ready = next(c for c in plan.status["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "ScaledToZero"


def test_autoscaling_with_pod_metrics_raises_no_warning() -> None:
    service = make_service(autoscaling={"maxReplicas": 3})
    plan = reconcile(REF, service, {}, Observed(), NOW)
    assert not [e for e in plan.events if e.type == "Warning"]


def test_every_autoscaling_setting_is_acted_on_without_a_warning() -> None:
    # Source Prometheus, every metric type and the predictive term (its history kept in
    # a ConfigMap) are all built: nothing to announce as not implemented.
    service = make_service(
        autoscaling={
            "maxReplicas": 3,
            "metrics": [
                {"type": "InFlightRequests", "target": 4},
                {"type": "RequestsPerSecond", "target": 2},
                {"type": "TokensPerSecond", "target": 100},
                {"type": "LatencyP95", "target": 0.5},
            ],
            "source": "Prometheus",
            "prometheus": {"url": "http://prometheus:9090"},
            "predictive": {"enabled": True},
        }
    )
    plan = reconcile(REF, service, {}, Observed(), NOW)
    assert not [e for e in plan.events if e.type == "Warning"]
