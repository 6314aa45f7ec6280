"""Pod and Service manifests built from the typed LMTrainingJob."""

from __future__ import annotations

from typing import Any

import pytest

from lmoperator.api.common import ResourceRequirements
from lmoperator.builders.merge import merge_pod
from lmoperator.builders.pods import InvalidPodError
from lmoperator.builders.trainingjob import (
    DEFAULT_WORKER_IMAGE,
    InvalidPeerError,
    cpu_threads,
    parse_peers,
    rdzv_pod,
    rdzv_service,
    validate_worker_pod,
    worker_config,
    worker_pod,
)
from lmworker.config import WorkerConfig, default_intermediate_size
from tests.unit.operator.helpers import make_job

UID = "0000-uid"
ADDR = "127.96.0.7:29400"


def env_of(pod: dict[str, Any]) -> dict[str, Any]:
    return {
        e["name"]: e.get("value", e.get("valueFrom")) for e in pod["spec"]["containers"][0]["env"]
    }


def test_children_names_labels_and_owner() -> None:
    job = make_job()
    service = rdzv_service(job, UID)
    rdzv = rdzv_pod(job, UID)
    worker = worker_pod(job, UID, 1, ADDR)
    assert service["metadata"]["name"] == rdzv["metadata"]["name"] == "tiny-lm-rdzv"
    assert worker["metadata"]["name"] == "tiny-lm-worker-1"
    assert worker["metadata"]["namespace"] == "ns"
    assert rdzv["metadata"]["labels"] == {
        "elasticlm.io/job": "tiny-lm",
        "elasticlm.io/role": "rdzv",
    }
    assert worker["metadata"]["labels"] == {
        "elasticlm.io/job": "tiny-lm",
        "elasticlm.io/role": "worker",
        "elasticlm.io/index": "1",
    }
    for child in (service, rdzv, worker):
        assert child["metadata"]["ownerReferences"] == [
            {
                "apiVersion": "elasticlm.io/v1alpha1",
                "kind": "LMTrainingJob",
                "name": "tiny-lm",
                "uid": UID,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["selector"] == rdzv["metadata"]["labels"]
    assert service["spec"]["ports"] == [{"name": "rdzv", "port": 29400, "targetPort": 29400}]


def test_rdzv_pod() -> None:
    pod = rdzv_pod(make_job(), UID)
    (container,) = pod["spec"]["containers"]
    assert container["command"] == [
        "python", "-m", "lmworker.rendezvous", "--host", "$(POD_IP)", "--port", "29400",
        "--min-nodes", "1", "--max-nodes", "3",
    ]  # fmt: skip
    assert env_of(pod)["POD_IP"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert pod["spec"]["restartPolicy"] == "Always"
    assert container["readinessProbe"]["tcpSocket"] == {"port": 29400}
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {
        "rdzv": 29400,
        "metrics": 9400,
    }


def test_worker_pod_defaults_are_restricted() -> None:
    pod = worker_pod(make_job(), UID, 0, ADDR)
    spec = pod["spec"]
    (container,) = spec["containers"]
    assert spec["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "runAsGroup": 1000,
        "fsGroup": 1000,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert spec["restartPolicy"] == "Never"
    assert spec["terminationGracePeriodSeconds"] == 60
    assert container["name"] == "worker"
    assert container["command"] == ["python", "-m", "lmworker.train"]
    assert container["image"] == DEFAULT_WORKER_IMAGE
    assert container["terminationMessagePath"] == "/dev/termination-log"
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert container["readinessProbe"] == {
        "httpGet": {"path": "/ready", "port": 9400},
        "periodSeconds": 1,
    }
    # A frozen worker (its HTTP thread cannot run) is killed after a minute, not kept.
    assert container["startupProbe"] == {
        "httpGet": {"path": "/healthz", "port": 9400},
        "periodSeconds": 1,
        "failureThreshold": 600,
    }
    assert container["livenessProbe"] == {
        "httpGet": {"path": "/healthz", "port": 9400},
        "periodSeconds": 10,
        "timeoutSeconds": 10,
        "failureThreshold": 6,
    }
    assert container["ports"] == [{"name": "metrics", "containerPort": 9400}]
    assert container["resources"] == {
        "requests": {"cpu": "500m", "memory": "1Gi"},
        "limits": {"memory": "2Gi"},
    }
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["data"] == {"name": "data", "mountPath": "/data", "readOnly": True}
    assert mounts["checkpoints"]["mountPath"] == "/checkpoints"
    assert mounts["tmp"]["mountPath"] == "/tmp"
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"] == {
        "claimName": "tiny-lm-data",
        "readOnly": True,
    }
    assert volumes["checkpoints"]["persistentVolumeClaim"] == {"claimName": "tiny-lm-checkpoints"}
    assert volumes["tmp"] == {"name": "tmp", "emptyDir": {}}


def test_worker_env_contract_round_trips() -> None:
    job = make_job(replicas=3, worker={"env": [{"name": "EXTRA", "value": "1"}]})
    env = env_of(worker_pod(job, UID, 2, ADDR))
    assert env["POD_IP"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["ELASTICLM_RDZV_ADDR"] == ADDR
    assert env["ELASTICLM_INDEX"] == "2"
    assert env["ELASTICLM_EXPECTED_REPLICAS"] == "3"
    assert env["PROMETHEUS_DISABLE_CREATED_SERIES"] == "True"
    assert env["TMPDIR"] == "/tmp"
    assert env["ELASTICLM_TERMINATION_LOG"] == "/dev/termination-log"
    assert env["ELASTICLM_THREADS"] == "1"  # from the 500m CPU request
    assert env["EXTRA"] == "1"
    config = WorkerConfig.from_json(env["ELASTICLM_CONFIG"])
    assert config == worker_config(job)
    assert config.job == "tiny-lm"
    assert config.namespace == "ns"
    assert config.data_path == "/data/corpus.txt"
    assert config.checkpoint_dir == "/checkpoints/tiny-lm"
    assert (config.checkpoint_interval_steps, config.checkpoint_keep) == (50, 2)
    assert config.model.vocab_size == 257  # Bytes
    assert (config.model.layers, config.model.hidden_size, config.model.heads) == (2, 128, 4)
    assert config.model.intermediate_size == default_intermediate_size(128)
    assert config.training.warmup_steps == 20
    assert (config.min_replicas, config.max_replicas) == (1, 3)


def test_worker_config_defaults_and_paths_without_claims() -> None:
    job = make_job(
        model={"preset": None, "size": {"layers": 3, "hiddenSize": 64, "heads": 4}},
        data={"claimName": None, "path": "/srv/text", "tokenizer": {"type": "BPE"}},
        checkpoint=None,
        training={"warmupSteps": None, "steps": 1000},
    )
    config = worker_config(job)
    assert config.data_path == "/srv/text"
    assert config.checkpoint_dir is None
    assert config.model.vocab_size == 4096
    assert config.model.kv_heads == 4
    assert config.model.intermediate_size == default_intermediate_size(64)
    assert config.training.warmup_steps == 50  # 5% of steps
    pod = worker_pod(job, UID, 0, ADDR)
    assert [v["name"] for v in pod["spec"]["volumes"]] == ["tmp", "rdzv-auth"]


def test_hf_model_is_mounted() -> None:
    job = make_job(model={"preset": None, "hf": {"claimName": "models", "path": "llama"}})
    assert worker_config(job).init_from_hf == "/init-model/llama"
    assert worker_config(job).training.sequence_length is None  # the model's context
    shorter = make_job(
        model={"preset": None, "hf": {"claimName": "models", "path": "llama"}},
        training={"sequenceLength": 128, "precision": "auto"},
    )
    assert worker_config(shorter).training.sequence_length == 128
    assert worker_config(shorter).training.precision == "auto"
    pod = worker_pod(job, UID, 0, ADDR)
    mounts = {m["name"]: m for m in pod["spec"]["containers"][0]["volumeMounts"]}
    assert mounts["init-model"] == {
        "name": "init-model",
        "mountPath": "/init-model",
        "readOnly": True,
    }


def test_scheduling_and_worker_settings() -> None:
    job = make_job(
        worker={
            "image": "example.com/w:1",
            "imagePullPolicy": "IfNotPresent",
            "nodeSelector": {"pool": "gpu"},
            "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "serviceAccountName": "trainer",
        },
        runPolicy={
            "scheduling": {"schedulerName": "volcano", "priorityClassName": "high", "queue": "q1"}
        },
    )
    for pod in (worker_pod(job, UID, 0, ADDR), rdzv_pod(job, UID)):
        spec = pod["spec"]
        assert spec["schedulerName"] == "volcano"
        assert spec["priorityClassName"] == "high"
        assert pod["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "q1"
        assert spec["nodeSelector"] == {"pool": "gpu"}
        assert spec["tolerations"] == [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]
        assert spec["serviceAccountName"] == "trainer"
        assert spec["containers"][0]["image"] == "example.com/w:1"
        assert spec["containers"][0]["imagePullPolicy"] == "IfNotPresent"


def test_pod_template_is_strategically_merged() -> None:
    template = {
        "metadata": {"labels": {"team": "nlp"}, "annotations": {"a": "b"}},
        "spec": {
            "containers": [
                {
                    "name": "worker",
                    "env": [{"name": "TMPDIR", "value": "/scratch"}],
                    "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
                    "securityContext": {"readOnlyRootFilesystem": False},
                },
                {"name": "sidecar", "image": "busybox", "command": ["sleep", "inf"]},
            ],
            "volumes": [{"name": "scratch", "emptyDir": {"medium": "Memory"}}],
            "terminationGracePeriodSeconds": 120,
        },
    }
    pod = worker_pod(make_job(worker={"podTemplate": template}), UID, 0, ADDR)
    assert pod["metadata"]["labels"]["team"] == "nlp"
    assert pod["metadata"]["labels"]["elasticlm.io/role"] == "worker"
    assert pod["metadata"]["annotations"] == {"a": "b"}
    worker, sidecar = pod["spec"]["containers"]
    assert worker["command"] == ["python", "-m", "lmworker.train"]
    assert env_of(pod)["TMPDIR"] == "/scratch"
    assert "ELASTICLM_CONFIG" in env_of(pod)
    assert [m["name"] for m in worker["volumeMounts"]][-1] == "scratch"
    # Only the field the template names changes; the other defaults stay.
    assert worker["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": False,
        "capabilities": {"drop": ["ALL"]},
    }
    assert sidecar["name"] == "sidecar"
    assert {v["name"] for v in pod["spec"]["volumes"]} >= {"tmp", "scratch", "data"}
    assert pod["spec"]["terminationGracePeriodSeconds"] == 120


def test_merge_null_deletes_and_patch_delete_removes_items() -> None:
    pod: dict[str, Any] = {
        "metadata": {"labels": {"a": "1"}},
        "spec": {
            "nodeSelector": {"x": "y"},
            "containers": [{"name": "c", "env": [{"name": "A", "value": "1"}]}],
        },
    }
    template = {
        "spec": {
            "nodeSelector": None,
            "containers": [{"name": "c", "env": [{"name": "A", "$patch": "delete"}]}],
        }
    }
    merged = merge_pod(pod, template)
    assert "nodeSelector" not in merged["spec"]
    assert merged["spec"]["containers"] == [{"name": "c", "env": []}]
    assert pod["spec"]["nodeSelector"] == {"x": "y"}  # the input is untouched


W = "spec.worker.podTemplate.spec.containers[worker]"


@pytest.mark.parametrize(
    ("template", "message"),
    [
        (
            {"spec": {"containers": [{"name": "worker", "securityContext": {"privileged": True}}]}},
            f"{W}.securityContext.privileged: privileged containers are not allowed",
        ),
        (
            {"spec": {"hostNetwork": True}},
            "spec.worker.podTemplate.spec.hostNetwork: sharing the node's namespaces",
        ),
        ({"spec": {"hostPID": True}}, "spec.worker.podTemplate.spec.hostPID:"),
        (
            {"spec": {"containers": [{"name": "worker", "command": ["bash"]}]}},
            f"{W}.command: the worker's command is set by the operator",
        ),
        ({"spec": {"containers": [{"name": "worker", "args": ["--x"]}]}}, f"{W}.args:"),
        (
            {"spec": {"securityContext": {"runAsUser": 0}}},
            "spec.worker.podTemplate.spec.securityContext.runAsUser: running as root",
        ),
        (
            {"spec": {"initContainers": [{"name": "init", "securityContext": {"runAsUser": 0}}]}},
            "spec.worker.podTemplate.spec.initContainers[init].securityContext.runAsUser",
        ),
        ({"spec": {"restartPolicy": "Always"}}, "spec.worker.podTemplate.spec.restartPolicy"),
        (
            {"metadata": {"labels": {"elasticlm.io/job": "other"}}},
            "spec.worker.podTemplate.metadata.labels.elasticlm.io/job",
        ),
        (
            {"spec": {"containers": [{"name": "worker", "$patch": "delete"}]}},
            f"{W}: the worker container must not be removed",
        ),
        (
            {"spec": {"volumes": [{"name": "host", "hostPath": {"path": "/"}}]}},
            "spec.worker.podTemplate.spec.volumes[host].hostPath",
        ),
        (
            {
                "spec": {
                    "containers": [
                        {"name": "worker", "env": [{"name": "ELASTICLM_INDEX", "value": "9"}]}
                    ]
                }
            },
            f"{W}.env[ELASTICLM_INDEX]",
        ),
    ],
)
def test_forbidden_pod_template_fields(template: dict[str, Any], message: str) -> None:
    job = make_job(worker={"podTemplate": template})
    with pytest.raises(InvalidPodError) as caught:
        worker_pod(job, UID, 0, ADDR)
    assert any(p.startswith(message) for p in caught.value.problems), caught.value.problems
    assert validate_worker_pod(job) == caught.value.problems


def test_reserved_env_in_worker_env_is_refused() -> None:
    job = make_job(worker={"env": [{"name": "ELASTICLM_CONFIG", "value": "{}"}]})
    assert validate_worker_pod(job) == [
        "spec.worker.env[0].name: ELASTICLM_CONFIG is set by the operator; remove it"
    ]


def test_valid_job_has_no_problems() -> None:
    assert validate_worker_pod(make_job()) == []


@pytest.mark.parametrize(
    ("requests", "limits", "threads"),
    [
        ({"cpu": "500m"}, None, 1),
        ({"cpu": 2}, None, 2),
        ({"cpu": "1.5"}, {"cpu": 8}, 2),
        (None, {"cpu": "2500m"}, 3),
        ({"memory": "1Gi"}, None, None),
        ({"cpu": "1e3"}, None, None),
    ],
)
def test_cpu_threads(
    requests: dict[str, Any] | None, limits: dict[str, Any] | None, threads: int | None
) -> None:
    resources = ResourceRequirements.model_validate({"requests": requests, "limits": limits})
    assert cpu_threads(resources) == threads
    assert cpu_threads(None) is None


def test_user_threads_setting_wins() -> None:
    job = make_job(worker={"env": [{"name": "ELASTICLM_THREADS", "value": "4"}]})
    threads = [e for e in worker_pod(job, UID, 0, ADDR)["spec"]["containers"][0]["env"]
               if e["name"] == "ELASTICLM_THREADS"]  # fmt: skip
    assert threads == [{"name": "ELASTICLM_THREADS", "value": "4"}]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "--flag: not JSON"),
        ("[]", ""),
        ('[{"podSelektor": {}}]', r"--flag\[0\]: unknown field\(s\) podSelektor"),
        ('[{"podSelector": {"app": "x"}}]', "matchLabels and matchExpressions only"),
        ('[{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]', "cannot be combined"),
        ('[{"ipBlock": {}}]', "needs a cidr"),
        ("[{}]", "is an object with podSelector"),
    ],
)
def test_network_peers_name_the_flag_and_the_fix(text: str, message: str) -> None:
    if not message:
        assert parse_peers(text, "--flag") == ()
        return
    with pytest.raises(InvalidPeerError, match=message):
        parse_peers(text, "--flag")


def test_job_pods_mount_the_rendezvous_secret_read_only() -> None:
    job = make_job()
    for pod in (worker_pod(job, UID, 0, ADDR), rdzv_pod(job, UID)):
        (container,) = pod["spec"]["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["ELASTICLM_RDZV_SECRET_FILE"] == "/var/run/elasticlm/rdzv/token"
        (volume,) = [v for v in pod["spec"]["volumes"] if v["name"] == "rdzv-auth"]
        assert volume["secret"] == {"secretName": "tiny-lm-rdzv-auth", "defaultMode": 0o440}
        (mount,) = [m for m in container["volumeMounts"] if m["name"] == "rdzv-auth"]
        assert mount == {
            "name": "rdzv-auth",
            "mountPath": "/var/run/elasticlm/rdzv",
            "readOnly": True,
        }
    bad = make_job(worker={"env": [{"name": "ELASTICLM_RDZV_SECRET_FILE", "value": "/x"}]})
    assert any("is set by the operator" in p for p in validate_worker_pod(bad))


def test_processes_per_pod_reach_the_worker_and_share_the_cpus() -> None:
    job = make_job(
        replicas=2,
        worker={"processesPerPod": 2, "resources": {"requests": {"cpu": 4}}},
        training={"globalBatchSize": 32, "microBatchSize": 4},
    )
    env = {
        e["name"]: e.get("value")
        for e in worker_pod(job, UID, 0, ADDR)["spec"]["containers"][0]["env"]
    }
    assert WorkerConfig.from_json(env["ELASTICLM_CONFIG"]).processes_per_pod == 2
    assert env["ELASTICLM_THREADS"] == "2"  # 4 CPUs for 2 processes
    assert env["ELASTICLM_EXPECTED_REPLICAS"] == "2"  # the rendezvous counts pods


@pytest.mark.parametrize("name", ["LOCAL_RANK", "LOCAL_WORLD_SIZE", "ELASTICLM_POD_GROUP"])
def test_the_pod_processes_identity_is_reserved(name: str) -> None:
    job = make_job(worker={"env": [{"name": name, "value": "1"}]})
    assert validate_worker_pod(job) == [
        f"spec.worker.env[0].name: {name} is set by the operator; remove it"
    ]
