"""charts/elasticlm with the real Helm engine (helm-python-sdk: the Helm v4 SDK, offline).

Renders the chart in its modes (default, namespaced, HA, metrics on), lints it, checks
its schema's errors, and holds the rendered objects to what the operator needs: exact
RBAC for the API calls the code makes, the restricted securityContext, arguments the
operator's own CLI accepts, PodMonitors that select the pods the builders make, a
dashboard that plots metrics that exist.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from lmoperator.api import kinds
from lmoperator.api.crd import render_crds
from lmoperator.builders.trainingjob import parse_peers
from lmoperator.cli import _parser, pod_defaults_of
from lmoperator.handlers.children import WATCHED_CHILD_KINDS

helm_python = pytest.importorskip("helm_python", reason="needs helm-python-sdk (the [dev] extra)")

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "elasticlm"
NAMESPACE = "elasticlm-system"

Obj = dict[str, Any]


class _UniqueKeyLoader(yaml.SafeLoader):
    """A duplicate key is an error (kubectl and the API server reject it)."""


def _mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    keys = [loader.construct_object(k, deep=deep) for k, _ in node.value]
    duplicates = {k for k in keys if keys.count(k) > 1}
    if duplicates:
        raise yaml.constructor.ConstructorError(
            None, None, f"duplicate keys {sorted(duplicates)}", node.start_mark
        )
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def render(values: Obj | None = None) -> list[Obj]:
    """Every object the chart renders (hooks included), parsed strictly."""
    chart = helm_python.Chart.load(str(CHART))
    rendered = chart.render(values or {}, name="elasticlm", namespace=NAMESPACE)
    objects = []
    for path, text in sorted(rendered.items()):
        if path.endswith(".yaml"):
            objects += [o for o in yaml.load_all(text, Loader=_UniqueKeyLoader) if o]
    return objects


def of_kind(objects: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[Obj], kind: str, name: str | None = None) -> Obj:
    found = [o for o in of_kind(objects, kind) if name is None or o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def operator_args(objects: list[Obj]) -> list[str]:
    container = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["elasticlm", "operator"]
    return list(container["args"])


def granted(role: Obj) -> dict[tuple[str, str], set[str]]:
    """(apiGroup, resource) -> verbs of a Role or ClusterRole (rules limited to
    resourceNames left out)."""
    verbs: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        if rule.get("resourceNames"):
            continue
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                verbs.setdefault((group, resource), set()).update(rule["verbs"])
    return verbs


MODES: dict[str, Obj] = {
    "default": {},
    "namespaced": {"watchNamespaces": ["team-a", "team-b"]},
    "ha": {"replicaCount": 3},
    "metrics": {
        "metrics": {
            "serviceMonitor": {"enabled": True},
            "podMonitor": {"enabled": True},
            "dashboard": {"enabled": True},
        }
    },
    "defaults": {
        "workerDefaults": {
            "image": {"repository": "registry.example/worker", "tag": "7"},
            "imagePullPolicy": "Always",
            "resources": {"requests": {"cpu": "2", "memory": "4Gi"}},
            "podSecurityContext": {"runAsUser": 2000, "fsGroup": 2000},
        },
        "serverDefaults": {
            "image": {"repository": "registry.example/server", "tag": "7"},
            "resources": {"limits": {"memory": "8Gi"}},
        },
    },
}


@pytest.fixture(scope="module", params=sorted(MODES))
def mode(request: pytest.FixtureRequest) -> tuple[str, list[Obj]]:
    return request.param, render(MODES[request.param])


# ------------------------------------------------------------------ lint and schema


def test_lint_is_clean() -> None:
    for values in MODES.values():
        report = helm_python.lint(str(CHART), values, strict=True, namespace=NAMESPACE)
        problems = [m for m in report["messages"] if m["severity"] >= 2]
        assert problems == [], report
        assert report["errors"] == [], report


@pytest.mark.parametrize(
    ("values", "messages"),
    [
        ({"replicaCount": "two"}, ["at '/replicaCount': got string, want integer"]),
        ({"watchNamespace": ["a"]}, ["additional properties 'watchNamespace' not allowed"]),
        (
            {"watchNamespaces": ["Team_A"]},
            ["at '/watchNamespaces/0': 'Team_A' does not match pattern"],
        ),
        (
            {"workerDefaults": {"image": {"repository": "w", "tag": ""}, "imagePullPolicy": "x"}},
            ["at '/workerDefaults/imagePullPolicy'"],
        ),
        (
            {
                "serverDefaults": {
                    "image": {"repository": "s", "tag": ""},
                    "podSecurityContext": {"runAsUser": 0},
                }
            },
            ["at '/serverDefaults/podSecurityContext/runAsUser'"],
        ),
        ({"rbac": {"create": "yes"}}, ["at '/rbac/create': got string, want boolean"]),
        ({"crds": {"enabled": True, "keep": True, "install": True}}, ["'install' not allowed"]),
    ],
)
def test_bad_values_are_rejected_with_a_message_naming_the_key(
    values: Obj, messages: list[str]
) -> None:
    chart = helm_python.Chart.load(str(CHART))
    with pytest.raises(helm_python.HelmValuesError) as caught:
        chart.validate_schema(values)
    for message in messages:
        assert message in str(caught.value)
    with pytest.raises(helm_python.HelmError):  # and an install or render stops there
        render(values)


def test_a_bad_values_file_is_rejected(tmp_path: Path) -> None:
    bad = tmp_path / "values.yaml"
    bad.write_text("metrics:\n  serviceMonitor:\n    enabled: true\n    intervall: 10s\n")
    values = helm_python.values_from_yaml(bad.read_text())
    with pytest.raises(helm_python.HelmValuesError, match="'intervall' not allowed"):
        helm_python.Chart.load(str(CHART)).validate_schema(values)


def test_every_value_is_documented_by_a_comment_naming_it() -> None:
    text = (CHART / "values.yaml").read_text()
    values = yaml.safe_load(text)

    def keys(node: Any, prefix: str) -> Iterator[str]:
        if isinstance(node, dict):
            for key, value in node.items():
                path = f"{prefix}{key}"
                yield path
                if isinstance(value, dict) and value and key not in _FREE_FORM:
                    yield from keys(value, path + ".")

    documented = set(re.findall(r"^\s*# ([A-Za-z][\w.]*) -- ", text, flags=re.M))
    missing = []
    for path in keys(values, ""):
        # A group is documented by its own comment or by its members' comments.
        if path not in documented and not any(d.startswith(path + ".") for d in documented):
            missing.append(path)
    assert missing == []
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert set(values) <= set(schema["properties"])


_FREE_FORM = {
    "podSecurityContext",
    "securityContext",
    "resources",
    "livenessProbe",
    "readinessProbe",
    "labels",
}


# ------------------------------------------------------------------ every mode


def test_no_wildcard_in_any_rbac_rule(mode: tuple[str, list[Obj]]) -> None:
    _, objects = mode
    roles = of_kind(objects, "ClusterRole") + of_kind(objects, "Role")
    assert roles
    for role in roles:
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
                assert all("*" not in item for item in rule.get(field, [])), (role, rule)


def test_every_pod_template_is_restricted(mode: tuple[str, list[Obj]]) -> None:
    _, objects = mode
    specs = [d["spec"]["template"]["spec"] for d in of_kind(objects, "Deployment")]
    specs += [p["spec"] for p in of_kind(objects, "Pod")]
    assert len(specs) == 2  # the operator and the `helm test` pod
    for spec in specs:
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True
        assert pod.get("runAsUser") != 0
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in spec["containers"]:
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False
            assert security["readOnlyRootFilesystem"] is True
            assert security["capabilities"]["drop"] == ["ALL"]
            assert not security.get("privileged")
            assert container["resources"]["requests"]


def test_every_object_is_labelled_and_namespaced_where_it_should_be(
    mode: tuple[str, list[Obj]],
) -> None:
    name, objects = mode
    cluster_scoped = {"ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}
    for obj in objects:
        meta = obj["metadata"]
        assert meta["labels"]["app.kubernetes.io/instance"] == "elasticlm"
        assert meta["labels"]["app.kubernetes.io/part-of"] == "elasticlm"
        if obj["kind"] in cluster_scoped:
            assert "namespace" not in meta
        elif obj["kind"] in ("Role", "RoleBinding") and name == "namespaced":
            assert meta["namespace"] in ("team-a", "team-b", NAMESPACE)
        else:
            assert meta["namespace"] == NAMESPACE, obj["kind"]


def test_the_operator_cli_accepts_the_rendered_arguments(mode: tuple[str, list[Obj]]) -> None:
    name, objects = mode
    args = operator_args(objects)
    if name == "ha":
        # --leader-elect and --leader-election-namespace belong to the leader election.
        assert "--leader-elect" in args
        args = [a for a in args if not a.startswith("--leader-elect")]
    parsed = _parser("elasticlm").parse_args(["operator", *args])
    assert parsed.liveness == "http://0.0.0.0:8081/healthz"
    assert parsed.metrics_address == "0.0.0.0"
    defaults = pod_defaults_of(parsed)
    assert defaults.worker.image
    assert defaults.server.image


# ------------------------------------------------------------------ the default install


def test_defaults_install_everything_for_every_namespace() -> None:
    objects = render()
    crds = of_kind(objects, "CustomResourceDefinition")
    assert sorted(c["metadata"]["name"] for c in crds) == [
        "lmservices.elasticlm.io",
        "lmtrainingjobs.elasticlm.io",
        "lmtuningjobs.elasticlm.io",
    ]
    for crd in crds:
        assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    deployment = one(objects, "Deployment", "elasticlm-operator")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    args = operator_args(objects)
    assert "--all-namespaces" in args
    assert not any(a.startswith(("--namespace", "--leader-elect")) for a in args)
    assert "--worker-image=ghcr.io/elasticlm/worker:0.1.0" in args
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "elasticlm-operator"
    container = pod["containers"][0]
    # The metrics port's probes: a standby answers them too; the acting replica's
    # /healthz asks kopf's own endpoint (--liveness).
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    env = {e["name"] for e in container["env"]}
    assert {"POD_NAME", "POD_NAMESPACE"} <= env
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 8080, "health": 8081}
    one(objects, "ClusterRoleBinding", "elasticlm-operator")
    assert of_kind(objects, "Role") == []
    service = one(objects, "Service", "elasticlm-operator-metrics")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert one(objects, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    test = one(objects, "Pod")
    assert test["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert (
        "elasticlm-operator-metrics.elasticlm-system.svc"
        in test["spec"]["containers"][0]["command"][2]
    )
    for kind in ("ServiceMonitor", "PodMonitor", "ConfigMap"):
        assert of_kind(objects, kind) == []


def test_the_chart_crds_are_the_generated_crds() -> None:
    objects = render()
    for filename, text in render_crds().items():
        generated = yaml.safe_load(text)
        chart = one(objects, "CustomResourceDefinition", generated["metadata"]["name"])
        assert chart["spec"] == generated["spec"], filename


def test_crds_can_be_left_out_or_left_unkept() -> None:
    assert (
        of_kind(render({"crds": {"enabled": False, "keep": True}}), "CustomResourceDefinition")
        == []
    )
    unkept = of_kind(render({"crds": {"enabled": True, "keep": False}}), "CustomResourceDefinition")
    assert unkept
    assert all("annotations" not in c["metadata"] for c in unkept)


def test_the_operator_is_told_its_own_peer_and_the_scrapers() -> None:
    scraper = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    args = one(
        render({"trainingNetworkPolicy": {"metricsScrapers": [scraper]}}),
        "Deployment",
        "elasticlm-operator",
    )["spec"]["template"]["spec"]["containers"][0]["args"]
    flags = dict(a.split("=", 1) for a in args if a.startswith("--network-policy-"))
    operator = parse_peers(flags["--network-policy-operator"], "operator")
    assert operator == (
        {
            "namespaceSelector": {
                "matchLabels": {"kubernetes.io/metadata.name": "elasticlm-system"}
            },
            "podSelector": {
                "matchLabels": {
                    "app.kubernetes.io/name": "elasticlm",
                    "app.kubernetes.io/instance": "elasticlm",
                    "app.kubernetes.io/component": "operator",
                }
            },
        },
    )
    assert parse_peers(flags["--network-policy-metrics-scrapers"], "scrapers") == (scraper,)
    default_args = one(render(), "Deployment", "elasticlm-operator")["spec"]["template"]["spec"][
        "containers"
    ][0]["args"]
    assert not any(a.startswith("--network-policy-metrics-scrapers") for a in default_args)


def test_cluster_rbac_covers_what_the_operator_calls() -> None:
    objects = render()
    rules = granted(one(objects, "ClusterRole", "elasticlm-operator"))
    for kind in kinds.CUSTOM_KINDS:
        assert {"list", "watch", "patch"} <= rules[(kind.group, kind.plural)]
        assert rules[(kind.group, f"{kind.plural}/status")] == {"patch"}
    assert "delete" in rules[(kinds.TRAINING_JOB.group, kinds.TRAINING_JOB.plural)]
    for kind in WATCHED_CHILD_KINDS:  # kopf's indexes and child events
        assert {"list", "watch", "create"} <= rules[(kind.group, kind.plural)]
    assert rules[("", "pods")] == {"list", "watch", "create", "delete", "patch"}
    assert rules[("apps", "deployments/scale")] == {"patch"}
    assert rules[("elasticlm.io", "lmservices/scale")] == {"patch"}  # the autoscaler
    # The job autoscaler; an LMTuningJob moves workers between its trials.
    assert rules[("elasticlm.io", "lmtrainingjobs/scale")] == {"patch"}
    # An LMTuningJob creates its trials and suspends the ones it stops early.
    assert {"create", "patch"} <= rules[("elasticlm.io", "lmtrainingjobs")]
    assert rules[("", "events")] == {"create"}
    assert rules[("apiextensions.k8s.io", "customresourcedefinitions")] == {"list", "watch"}
    # The autoscaler's history: read by name once, written by patch or create.
    assert rules[("", "configmaps")] == {"get", "create", "patch"}
    # A training job's rendezvous Secret is created, read by name to promote a warm
    # spare, never listed or changed; its NetworkPolicy follows the spec and the peer flags.
    assert rules[("", "secrets")] == {"create", "get"}
    assert rules[("networking.k8s.io", "networkpolicies")] == {
        "list",
        "watch",
        "create",
        "patch",
        "delete",
    }
    # Nothing the operator does not use: no get (but the history's and the rendezvous
    # token's), no update.
    assert not any(
        verbs & {"get", "update", "deletecollection"}
        for resource, verbs in rules.items()
        if resource not in (("", "configmaps"), ("", "secrets"))
    )


def test_aggregated_roles_let_namespace_users_manage_jobs_and_services() -> None:
    objects = render()
    edit = one(objects, "ClusterRole", "elasticlm-edit")
    labels = edit["metadata"]["labels"]
    assert labels["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert labels["rbac.authorization.k8s.io/aggregate-to-admin"] == "true"
    rules = granted(edit)
    assert {"create", "delete", "patch"} <= rules[("elasticlm.io", "lmtrainingjobs")]
    assert {"update", "patch"} <= rules[("elasticlm.io", "lmservices/scale")]
    assert {"create", "delete", "patch"} <= rules[("elasticlm.io", "lmtuningjobs")]
    assert rules[("elasticlm.io", "lmtuningjobs/status")] == {"get"}
    assert ("elasticlm.io", "lmtuningjobs/scale") not in rules  # it has no scale subresource
    view = one(objects, "ClusterRole", "elasticlm-view")
    assert view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert set().union(*granted(view).values()) == {"get", "list", "watch"}
    off = render({"rbac": {"create": True, "aggregateToDefaultRoles": False}})
    assert [r["metadata"]["name"] for r in of_kind(off, "ClusterRole")] == ["elasticlm-operator"]
    none = render({"rbac": {"create": False, "aggregateToDefaultRoles": True}})
    assert of_kind(none, "ClusterRole") == of_kind(none, "Role") == []


# ------------------------------------------------------------------ namespaced mode


def test_namespaced_mode_grants_a_role_per_namespace_and_nothing_cluster_wide() -> None:
    objects = render(MODES["namespaced"])
    args = operator_args(objects)
    assert [a for a in args if a.startswith("--namespace")] == [
        "--namespace=team-a",
        "--namespace=team-b",
    ]
    assert "--all-namespaces" not in args
    roles = of_kind(objects, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    bindings = of_kind(objects, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    for binding in bindings:
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "elasticlm-operator", "namespace": NAMESPACE}
        ]
    cluster_roles = {r["metadata"]["name"] for r in of_kind(objects, "ClusterRole")}
    assert cluster_roles == {"elasticlm-edit", "elasticlm-view"}  # users', not the operator's
    assert of_kind(objects, "ClusterRoleBinding") == []
    cluster = granted(one(render(), "ClusterRole", "elasticlm-operator"))
    for role in roles:
        rules = granted(role)
        assert ("apiextensions.k8s.io", "customresourcedefinitions") not in rules
        assert rules == {k: v for k, v in cluster.items() if k[0] != "apiextensions.k8s.io"}


# ------------------------------------------------------------------ HA


def test_several_replicas_elect_a_leader_and_roll() -> None:
    objects = render(MODES["ha"])
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    args = operator_args(objects)
    assert "--leader-elect" in args
    assert f"--leader-election-namespace={NAMESPACE}" in args
    lease_role = one(objects, "Role", "elasticlm-operator-leader-election")
    assert lease_role["metadata"]["namespace"] == NAMESPACE
    assert lease_role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": ["elasticlm-operator"],
            "verbs": ["get", "update"],
        },
        # The leader's "became leader" / "stopped leading" Events on the Lease.
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    ]
    binding = one(objects, "RoleBinding", "elasticlm-operator-leader-election")
    assert binding["roleRef"]["name"] == "elasticlm-operator-leader-election"
    assert one(objects, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1


# ------------------------------------------------------------------ scheduling and extras


def test_scheduling_secrets_and_extras_reach_the_operator_pod() -> None:
    values = {
        "imagePullSecrets": [{"name": "regcred"}],
        "nodeSelector": {"pool": "system"},
        "tolerations": [{"key": "system", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {}},
        "priorityClassName": "system-cluster-critical",
        "extraArgs": ["--peering", "p"],
        "extraEnv": [{"name": "X", "value": "1"}],
        "logLevel": "debug",
        "podAnnotations": {"a": "b"},
    }
    objects = render(values)
    spec = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    assert spec["nodeSelector"] == {"pool": "system"}
    assert spec["tolerations"][0]["key"] == "system"
    assert spec["affinity"] == {"nodeAffinity": {}}
    assert spec["priorityClassName"] == "system-cluster-critical"
    args = operator_args(objects)
    assert "--verbose" in args
    assert args[-2:] == ["--peering", "p"]
    assert {"name": "X", "value": "1"} in spec["containers"][0]["env"]


def test_pod_defaults_become_operator_flags_it_parses() -> None:
    args = operator_args(render(MODES["defaults"]))
    parsed = _parser("elasticlm").parse_args(["operator", *args])
    defaults = pod_defaults_of(parsed)
    assert defaults.worker.image == "registry.example/worker:7"
    assert defaults.worker.image_pull_policy == "Always"
    assert defaults.worker.resources is not None
    assert defaults.worker.resources.requests == {"cpu": "2", "memory": "4Gi"}
    assert defaults.worker.pod_security_context == {"runAsUser": 2000, "fsGroup": 2000}
    assert defaults.server.image == "registry.example/server:7"
    assert defaults.server.resources is not None
    assert defaults.server.resources.limits == {"memory": "8Gi"}


# ------------------------------------------------------------------ metrics


def test_monitors_select_the_pods_the_operator_builds() -> None:
    from lmoperator.builders.service import ModelSource, server_deployment
    from lmoperator.builders.trainingjob import rdzv_pod, worker_pod
    from tests.unit.operator.helpers import make_job
    from tests.unit.operator.test_service import make_service

    objects = render(MODES["metrics"])
    monitor = one(objects, "ServiceMonitor")
    service = one(objects, "Service")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in service["spec"]["ports"]}

    job = make_job()
    training = one(objects, "PodMonitor", "elasticlm-training")["spec"]
    (expression,) = training["selector"]["matchExpressions"]
    for pod in (worker_pod(job, "uid", 0, "127.0.0.1:1"), rdzv_pod(job, "uid")):
        labels = pod["metadata"]["labels"]
        assert labels[expression["key"]] in expression["values"]
        ports = {p["name"] for c in pod["spec"]["containers"] for p in c.get("ports", [])}
        assert training["podMetricsEndpoints"][0]["port"] in ports
    worker_labels = worker_pod(job, "uid", 0, "127.0.0.1:1")["metadata"]["labels"]
    assert set(training["podTargetLabels"]) <= set(worker_labels)
    assert training["namespaceSelector"] == {"any": True}

    serving = one(objects, "PodMonitor", "elasticlm-serving")["spec"]
    template = server_deployment(make_service(), "uid", ModelSource("hf", "m", "c"), 1)["spec"][
        "template"
    ]
    assert serving["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
    assert set(serving["podTargetLabels"]) <= set(template["metadata"]["labels"])
    ports = {p["name"] for p in template["spec"]["containers"][0]["ports"]}
    assert serving["podMetricsEndpoints"][0]["port"] in ports
    scoped = render({**MODES["metrics"], "watchNamespaces": ["team-a"]})
    for podmonitor in of_kind(scoped, "PodMonitor"):
        assert podmonitor["spec"]["namespaceSelector"] == {"matchNames": ["team-a"]}


def _exported_metric_names() -> set[str]:
    """Every sample name the operator, the workers and the servers can export."""
    from prometheus_client import REGISTRY

    import lmoperator.operator_metrics  # noqa: F401  (registers the operator's metrics)
    from lmworker.metrics import TrainMetrics
    from lmworker.serve.metrics import ServeMetrics

    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_sum", "_count"),
        "gauge": ("",),
        "summary": ("_sum", "_count", ""),
    }
    names = set()
    for registry in (REGISTRY, TrainMetrics().registry, ServeMetrics(4).registry):
        for family in registry.collect():
            for suffix in suffixes.get(family.type, ("",)):
                names.add(family.name + suffix)
    return names


def test_the_dashboard_plots_metrics_that_exist() -> None:
    objects = render(MODES["metrics"])
    config_map = one(objects, "ConfigMap", "elasticlm-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(config_map["data"]["elasticlm.json"])
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    titles = " ".join(p["title"] for p in panels).lower()
    for topic in (
        "progress",
        "world size",
        "rescales",
        "latency",
        "replicas against load",
        "metric problems",
    ):
        assert topic in titles
    exported = _exported_metric_names()
    used = {
        name
        for panel in panels
        for target in panel["targets"]
        for name in re.findall(r"\belasticlm_[a-z_]+\b", target["expr"])
    }
    # Pod labels become target labels as Prometheus spells them (elasticlm_io_job).
    target_labels = {
        re.sub(r"[^a-zA-Z0-9_]", "_", label)
        for monitor in of_kind(objects, "PodMonitor")
        for label in monitor["spec"]["podTargetLabels"]
    }
    assert {"elasticlm_io_job", "elasticlm_io_service"} <= used
    metrics = used - target_labels
    assert metrics
    assert metrics <= exported, sorted(metrics - exported)


# ------------------------------------------------------------------ install.yaml


def _install_manifest_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "install_manifest", ROOT / "charts" / "install_manifest.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_install_yaml_is_the_chart_rendered_with_default_values() -> None:
    module = _install_manifest_module()
    committed = (ROOT / "manifests" / "install.yaml").read_text()
    assert committed == module.install_manifest(), "run `make manifests`"
    objects = [o for o in yaml.safe_load_all(committed) if o]
    assert objects[0] == {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
    assert not any("helm.sh/hook" in (o["metadata"].get("annotations") or {}) for o in objects)
    order = [o["kind"] for o in objects]
    assert order.index("CustomResourceDefinition") < order.index("Deployment")
    assert order.index("ServiceAccount") < order.index("Deployment")
    rendered = [o for o in render() if o["kind"] != "Pod"]
    assert len(objects) == len(rendered) + 1


def test_install_manifest_check_fails_on_drift(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    module = _install_manifest_module()
    target = tmp_path / "install.yaml"
    assert module.main(["--output", str(target)]) == 0
    assert module.main(["--check", "--output", str(target)]) == 0
    target.write_text(target.read_text().replace("replicas: 1", "replicas: 2"))
    assert module.main(["--check", "--output", str(target)]) == 1
    out, err = capsys.readouterr()
    assert "+  replicas: 1" in out
    assert "make manifests" in err


# ------------------------------------------------------------------ the README's quick start


def _readme_blocks(heading: str) -> list[list[str]]:
    """The ```sh blocks of a README section, each as its commands (continuations joined)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, flags=re.DOTALL)
    return [
        [line.strip() for line in block.replace("\\\n", " ").splitlines() if line.strip()]
        for block in blocks
    ]


def _words(command: str) -> list[str]:
    """A shell command's words, with `|` and `&&` as words of their own, comments left out."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars="|&")
    lexer.whitespace_split = True
    return list(lexer)


def _set_values(args: list[str]) -> Obj:
    values: Obj = {}
    for flag, value in itertools.pairwise(args):
        if flag != "--set":
            continue
        key, _, leaf = value.partition("=")
        *parents, last = key.split(".")
        node = values
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = leaf
    return values


def test_the_readme_quick_start_installs_the_images_it_builds_and_the_data_it_needs() -> None:
    """The cluster admin's quick start as written: the images that `make images` tags and
    the commands push are the ones the `helm install` line sets, the release and namespace
    agree, and the data example makes the claims the example job uses, in that image."""
    install, data = _readme_blocks("Install on a cluster")
    commands = [_words(c) for c in install]
    make = next(c for c in commands if c[:2] == ["make", "images"])
    registry = dict(a.split("=", 1) for a in make[2:])["IMAGE_REGISTRY"]
    version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(rf'^version = "{re.escape(version)}"$', pyproject, flags=re.MULTILINE)
    pushed = {
        c[i + 2] for c in commands for i in range(len(c) - 2) if c[i : i + 2] == ["docker", "push"]
    }
    assert pushed == {f"{registry}/operator:{version}", f"{registry}/worker:{version}"}

    helm_install = next(c for c in commands if c[:2] == ["helm", "install"])
    release, chart = helm_install[2:4]
    assert (ROOT / chart).resolve() == CHART
    assert helm_install[helm_install.index("--namespace") + 1] == NAMESPACE
    assert "--create-namespace" in helm_install
    objects = render(_set_values(helm_install))
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == f"{registry}/operator:{version}"
    args = operator_args(objects)
    assert f"--worker-image={registry}/worker:{version}" in args
    assert f"--server-image={registry}/worker:{version}" in args
    helm_test = next(c for c in commands if c[:2] == ["helm", "test"])
    assert helm_test[2] == release
    assert helm_test[helm_test.index("--namespace") + 1] == NAMESPACE

    words = _words(data[0])
    sed = words[: words.index("|")]
    assert sed[0] == "sed"
    _, old, new, _ = sed[1].split("|")
    manifest = (ROOT / sed[2]).read_text(encoding="utf-8").replace(old, new)
    docs = {d["kind"]: d for d in yaml.safe_load_all(manifest) if d and d["kind"] == "Job"}
    claims = {
        d["metadata"]["name"]
        for d in yaml.safe_load_all(manifest)
        if d and d["kind"] == "PersistentVolumeClaim"
    }
    job = yaml.safe_load((ROOT / "manifests" / "examples" / "training-job.yaml").read_text())
    assert claims == {job["spec"]["data"]["claimName"], job["spec"]["checkpoint"]["claimName"]}
    corpus = docs["Job"]["spec"]["template"]["spec"]
    assert corpus["containers"][0]["image"] == f"{registry}/worker:{version}"
    assert (
        corpus["volumes"][0]["persistentVolumeClaim"]["claimName"]
        == (job["spec"]["data"]["claimName"])
    )
    out = corpus["containers"][0]["command"]
    assert out[out.index("--out") + 1] == "/data/" + job["spec"]["data"]["path"]
    assert "kubectl wait job/tiny-lm-corpus --for=condition=Complete" in data[0]
    assert data[1].startswith("kubectl apply -f manifests/examples/training-job.yaml")
