"""kubectl against the cluster, with the oldest and the newest installed kubectl (1.27
and 1.33) chosen explicitly: apply, get (tables, -o yaml, -w), describe, scale, logs,
delete, explain."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from tests.integration.conformance.helpers import (
    CRDS_DIR,
    EXAMPLES_DIR,
    GROUP,
    LMTJ,
    POD_TIMEOUT,
    VERSION,
    LineReader,
    gone,
    python_pod,
    training_job,
    wait_default_service_account,
    wait_pod_phase,
)
from tests.integration.harness import Cluster, kubectl_binary
from tests.kubeclient import CoreApi, CustomApi

pytestmark = pytest.mark.usefixtures("elasticlm_crds")


@pytest.fixture(params=[27, 33], ids=["kubectl1.27", "kubectl1.33"])
def minor(request: pytest.FixtureRequest) -> int:
    if kubectl_binary(request.param) is None:
        pytest.skip(f"kubectl 1.{request.param} is not installed next to the kubectl dispatcher")
    return int(request.param)


def header(table: str) -> list[str]:
    return re.split(r"\s{2,}", table.splitlines()[0].strip())


def row(table: str, name: str) -> list[str]:
    for line in table.splitlines()[1:]:
        cells = re.split(r"\s{2,}", line.strip())
        if cells[0] == name or cells[0].endswith("/" + name):
            return cells
    raise AssertionError(f"no row {name} in\n{table}")


def make_job(custom: CustomApi, namespace: str, name: str = "tiny-lm") -> dict[str, Any]:
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, LMTJ, training_job(name))
    job: dict[str, Any] = custom.patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        namespace,
        LMTJ,
        name,
        {
            "status": {
                "phase": "Running",
                "replicas": 2,
                "readyReplicas": 2,
                "worldSize": 2,
                "step": 17,
                "loss": 2.5,
                "tokensPerSecond": 1234.5,
                "selector": f"elasticlm.io/job={name}",
            }
        },
    )
    return job


def test_apply_crds_and_examples(cluster: Cluster, namespace: str, minor: int) -> None:
    out = cluster.kubectl("apply", "-f", str(CRDS_DIR), minor=minor).stdout
    assert "customresourcedefinition.apiextensions.k8s.io/lmtrainingjobs.elasticlm.io" in out
    assert "customresourcedefinition.apiextensions.k8s.io/lmservices.elasticlm.io" in out

    out = cluster.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES_DIR), minor=minor).stdout
    assert "lmtrainingjob.elasticlm.io/tiny-lm created" in out
    assert "lmservice.elasticlm.io/tiny-lm created" in out
    again = cluster.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES_DIR), minor=minor)
    assert "lmtrainingjob.elasticlm.io/tiny-lm unchanged" in again.stdout
    assert "lmservice.elasticlm.io/tiny-lm unchanged" in again.stdout

    changed = yaml.safe_load((EXAMPLES_DIR / "training-job.yaml").read_text())
    changed["spec"]["replicas"] = 3
    out = cluster.kubectl(
        "apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(changed), minor=minor
    ).stdout
    assert "lmtrainingjob.elasticlm.io/tiny-lm configured" in out
    replicas = cluster.kubectl(
        "get", "lmtj", "tiny-lm", "-n", namespace, "-o", "jsonpath={.spec.replicas}", minor=minor
    ).stdout
    assert replicas == "3"


def test_apply_reports_schema_errors(cluster: Cluster, namespace: str, minor: int) -> None:
    bad = training_job("bad", replicas=5)
    bad["spec"]["data"]["tokenizer"]["type"] = "Words"
    result = cluster.kubectl(
        "apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(bad), minor=minor, check=False
    )
    assert result.returncode != 0
    assert 'The LMTrainingJob "bad" is invalid' in result.stderr, result.stderr
    assert "spec.data.tokenizer.type" in result.stderr
    assert "Unsupported value" in result.stderr


def test_get_table_with_printer_columns(
    cluster: Cluster, custom: CustomApi, namespace: str, minor: int
) -> None:
    make_job(custom, namespace)
    table = cluster.kubectl("get", "lmtj", "-n", namespace, minor=minor).stdout
    assert header(table) == ["NAME", "PHASE", "REPLICAS", "READY", "WORLD", "STEP", "AGE"]
    cells = row(table, "tiny-lm")
    assert cells[:6] == ["tiny-lm", "Running", "2", "2", "2", "17"]
    assert re.fullmatch(r"\d+[smhd]", cells[6]), cells

    wide = cluster.kubectl("get", "lmtrainingjobs", "-n", namespace, "-o", "wide", minor=minor)
    assert header(wide.stdout) == [
        "NAME", "PHASE", "REPLICAS", "READY", "WORLD", "STEP", "LOSS", "TOKENS/S", "AGE",
    ]  # fmt: skip
    assert row(wide.stdout, "tiny-lm")[6:8] == ["2.5", "1234.5"]

    cluster.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES_DIR / "service.yaml"), minor=minor)
    services = cluster.kubectl("get", "lms", "-n", namespace, minor=minor).stdout
    assert header(services) == ["NAME", "PHASE", "REPLICAS", "READY", "ENDPOINT", "AGE"]


def test_get_by_category_short_name_and_label(
    cluster: Cluster, custom: CustomApi, namespace: str, minor: int
) -> None:
    make_job(custom, namespace)
    cluster.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES_DIR / "service.yaml"), minor=minor)
    names = cluster.kubectl("get", "elasticlm", "-n", namespace, "-o", "name", minor=minor)
    assert sorted(names.stdout.split()) == [
        "lmservice.elasticlm.io/tiny-lm",
        "lmtrainingjob.elasticlm.io/tiny-lm",
    ]
    both = cluster.kubectl("get", "lmtj,lms", "-n", namespace, "-o", "name", minor=minor)
    assert sorted(both.stdout.split()) == sorted(names.stdout.split())
    cluster.kubectl("label", "lmtj", "tiny-lm", "team=research", "-n", namespace, minor=minor)
    labelled = cluster.kubectl(
        "get", "lmtj", "-l", "team=research", "-n", namespace, "-o", "name", minor=minor
    )
    assert labelled.stdout.split() == ["lmtrainingjob.elasticlm.io/tiny-lm"]
    none = cluster.kubectl("get", "lmtj", "-l", "team=other", "-n", namespace, minor=minor)
    assert "No resources found" in none.stderr


def test_get_yaml_and_jsonpath(
    cluster: Cluster, custom: CustomApi, namespace: str, minor: int
) -> None:
    job = make_job(custom, namespace)
    out = cluster.kubectl("get", "lmtj", "tiny-lm", "-n", namespace, "-o", "yaml", minor=minor)
    got = yaml.safe_load(out.stdout)
    assert got["kind"] == "LMTrainingJob"
    assert got["apiVersion"] == f"{GROUP}/{VERSION}"
    assert got["metadata"]["uid"] == job["metadata"]["uid"]
    assert got["spec"] == job["spec"]
    assert got["status"]["step"] == 17
    listed = yaml.safe_load(
        cluster.kubectl("get", "lmtj", "-n", namespace, "-o", "yaml", minor=minor).stdout
    )
    assert listed["kind"] == "List"
    assert [i["metadata"]["name"] for i in listed["items"]] == ["tiny-lm"]
    step = cluster.kubectl(
        "get", "lmtj/tiny-lm", "-n", namespace, "-o", "jsonpath={.status.step}", minor=minor
    )
    assert step.stdout == "17"


def test_get_watch(cluster: Cluster, custom: CustomApi, namespace: str, minor: int) -> None:
    make_job(custom, namespace)
    binary = kubectl_binary(minor)
    assert binary is not None
    command = [
        binary,
        f"--kubeconfig={cluster.kubeconfig}",
        f"--cache-dir={cluster.cache_dir}",
        "get",
        "lmtj",
        "-n",
        namespace,
        "-w",
    ]
    with LineReader(command) as watch:
        watch.wait_line(lambda line: line.split()[:1] == ["NAME"], 30, "the table header")
        watch.wait_line(lambda line: line.startswith("tiny-lm"), 30, "the first row")
        custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, LMTJ, "tiny-lm", {"status": {"step": 4242}}
        )
        line = watch.wait_line(lambda line: "4242" in line, 30, "the changed row")
        assert line.split()[:6] == ["tiny-lm", "Running", "2", "2", "2", "4242"]
        custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, LMTJ, training_job("second")
        )
        watch.wait_line(lambda line: line.startswith("second"), 30, "the new object's row")


def test_describe(cluster: Cluster, custom: CustomApi, namespace: str, minor: int) -> None:
    make_job(custom, namespace)
    out = cluster.kubectl("describe", "lmtj", "tiny-lm", "-n", namespace, minor=minor).stdout
    assert re.search(r"^Name:\s+tiny-lm$", out, re.M), out
    assert re.search(rf"^Namespace:\s+{namespace}$", out, re.M), out
    assert re.search(rf"^API Version:\s+{GROUP}/{VERSION}$", out, re.M), out
    assert re.search(r"^Kind:\s+LMTrainingJob$", out, re.M), out
    assert re.search(r"^Spec:$", out, re.M), out
    assert re.search(r"^\s+Replicas:\s+2$", out, re.M), out
    assert re.search(r"^\s+Phase:\s+Running$", out, re.M), out
    assert re.search(r"^Events:", out, re.M), out


def test_scale(cluster: Cluster, custom: CustomApi, namespace: str, minor: int) -> None:
    make_job(custom, namespace)
    out = cluster.kubectl(
        "scale", "lmtj/tiny-lm", "--replicas=3", "-n", namespace, minor=minor
    ).stdout
    assert "lmtrainingjob.elasticlm.io/tiny-lm scaled" in out
    job = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, LMTJ, "tiny-lm")
    assert job["spec"]["replicas"] == 3
    out = cluster.kubectl(
        "scale", "lmtrainingjob", "tiny-lm", "--current-replicas=3", "--replicas=1",
        "-n", namespace, minor=minor,
    ).stdout  # fmt: skip
    assert "scaled" in out
    refused = cluster.kubectl(
        "scale", "lmtj/tiny-lm", "--replicas=9", "-n", namespace, minor=minor, check=False
    )
    assert refused.returncode != 0
    assert "spec.elastic.maxReplicas (3) must be >= spec.replicas (9)" in refused.stderr


def test_logs(cluster: Cluster, core: CoreApi, namespace: str, minor: int) -> None:
    wait_default_service_account(core, namespace)
    code = "import time\nfor i in range(3):\n    print('line', i)\n    time.sleep(0.3)\n"
    core.create_namespaced_pod(namespace, python_pod("talker", code))
    wait_pod_phase(core, "talker", namespace, "Running", "Succeeded")  # not ContainerCreating
    out = cluster.kubectl(
        "logs", "-f", "talker", "-n", namespace, minor=minor, timeout=POD_TIMEOUT
    ).stdout
    assert out.splitlines() == ["line 0", "line 1", "line 2"]
    wait_pod_phase(core, "talker", namespace, "Succeeded")
    logs = cluster.kubectl("logs", "pod/talker", "-c", "main", "-n", namespace, minor=minor)
    assert logs.stdout.splitlines() == ["line 0", "line 1", "line 2"]
    tail = cluster.kubectl("logs", "talker", "--tail=1", "-n", namespace, minor=minor)
    assert tail.stdout.splitlines() == ["line 2"]


def test_wait_and_pod_table(cluster: Cluster, core: CoreApi, namespace: str, minor: int) -> None:
    wait_default_service_account(core, namespace)
    core.create_namespaced_pod(
        namespace, python_pod("sleeper", "import time; time.sleep(600)", grace=1)
    )
    cluster.kubectl(
        "wait", "--for=condition=Ready", "pod/sleeper", "-n", namespace,
        f"--timeout={int(POD_TIMEOUT)}s", minor=minor, timeout=POD_TIMEOUT + 10,
    )  # fmt: skip
    table = cluster.kubectl("get", "pods", "-n", namespace, minor=minor).stdout
    assert header(table) == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert row(table, "sleeper")[1:4] == ["1/1", "Running", "0"]
    wide = cluster.kubectl("get", "pods", "-n", namespace, "-o", "wide", minor=minor).stdout
    assert "IP" in header(wide)
    ip = row(wide, "sleeper")[header(wide).index("IP")]
    assert ip == core.read_namespaced_pod("sleeper", namespace).status.pod_ip
    running = cluster.kubectl(
        "get", "pods", "--field-selector=status.phase=Running", "-o", "name", "-n", namespace,
        minor=minor,
    )  # fmt: skip
    assert running.stdout.split() == ["pod/sleeper"]
    everything = cluster.kubectl("get", "all", "-n", namespace, "-o", "name", minor=minor)
    assert "pod/sleeper" in everything.stdout.split()  # pods are in the category "all"
    described = cluster.kubectl("describe", "pod", "sleeper", "-n", namespace, minor=minor)
    assert re.search(r"^Status:\s+Running$", described.stdout, re.M), described.stdout
    assert re.search(r"^IP:\s+" + re.escape(ip) + "$", described.stdout, re.M)
    assert re.search(r"^\s+Ready:\s+True$", described.stdout, re.M)
    # the kubelet's events: Scheduled, Pulled, Created, Started...
    assert re.search(r"Normal\s+Started\s+", described.stdout), described.stdout


def test_delete(cluster: Cluster, custom: CustomApi, namespace: str, minor: int) -> None:
    make_job(custom, namespace)
    out = cluster.kubectl("delete", "lmtj", "tiny-lm", "-n", namespace, minor=minor).stdout
    assert 'lmtrainingjob.elasticlm.io "tiny-lm" deleted' in out
    assert gone(
        lambda: custom.get_namespaced_custom_object(GROUP, VERSION, namespace, LMTJ, "tiny-lm")
    )
    missing = cluster.kubectl("get", "lmtj", "tiny-lm", "-n", namespace, minor=minor, check=False)
    assert missing.returncode == 1
    assert (
        'Error from server (NotFound): lmtrainingjobs.elasticlm.io "tiny-lm" not found'
        in missing.stderr
    )


def test_core_objects(cluster: Cluster, namespace: str, minor: int) -> None:
    def kubectl(*args: str) -> str:
        return cluster.kubectl(*args, "-n", namespace, minor=minor).stdout

    assert "configmap/cfg created" in kubectl("create", "configmap", "cfg", "--from-literal=a=1")
    assert "configmap/cfg labeled" in kubectl("label", "configmap", "cfg", "team=x")
    # kubectl up to 1.2x prints "annotate", later ones "annotated"
    assert "configmap/cfg annotate" in kubectl("annotate", "cm", "cfg", "note=hello")
    assert "configmap/cfg patched" in kubectl(
        "patch", "cm", "cfg", "--type=merge", "-p", '{"data":{"b":"2"}}'
    )
    assert "configmap/cfg patched" in kubectl(
        "patch", "cm", "cfg", "--type=json", "-p", '[{"op":"remove","path":"/data/a"}]'
    )
    got = yaml.safe_load(kubectl("get", "cm", "-l", "team=x", "-o", "yaml"))
    assert [i["data"] for i in got["items"]] == [{"b": "2"}]
    assert got["items"][0]["metadata"]["annotations"]["note"] == "hello"
    assert "secret/token created" in kubectl("create", "secret", "generic", "token",
                                             "--from-literal=t=s3cret")  # fmt: skip
    assert kubectl("get", "secret", "token", "-o", "jsonpath={.data.t}") == "czNjcmV0"
    assert "serviceaccount/robot created" in kubectl("create", "serviceaccount", "robot")
    assert "service/web created" in kubectl("create", "service", "clusterip", "web",
                                            "--tcp=80:8080")  # fmt: skip
    svc = kubectl("get", "svc", "web")
    assert header(svc)[:4] == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP"]
    assert row(svc, "web")[1] == "ClusterIP"
    assert 'configmap "cfg" deleted' in kubectl("delete", "cm", "cfg")


def test_explain(cluster: Cluster, minor: int) -> None:
    out = cluster.kubectl("explain", "lmtj", minor=minor).stdout
    assert re.search(r"KIND:\s+LMTrainingJob", out), out
    assert re.search(rf"(VERSION|GROUP):\s+({GROUP}/)?({VERSION}|{GROUP})", out), out
    assert "A distributed, elastic training job for a language model." in out
    out = cluster.kubectl("explain", "lmtrainingjobs.spec.elastic", minor=minor).stdout
    assert "maxReplicas" in out
    assert "minReplicas" in out
    assert "Most workers the job may grow to" in out
    out = cluster.kubectl("explain", "lmtj.spec.replicas", minor=minor).stdout
    assert re.search(r"FIELD:\s+replicas", out), out
    assert "<integer>" in out


def test_explain_core_kinds(cluster: Cluster, minor: int) -> None:
    out = cluster.kubectl("explain", "pods.spec.containers.env", minor=minor).stdout
    assert re.search(r"FIELD:\s+env", out), out
    assert "valueFrom" in out
    out = cluster.kubectl("explain", "services.spec.clusterIP", minor=minor).stdout
    assert "<string>" in out
