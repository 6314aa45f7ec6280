"""Hypothesis strategies for VALID ElasticLM manifests, as wire dicts (camelCase).

Every constraint of the API models is respected by construction, never by filtering:
field bounds and patterns, and every cross-field rule (the `cel_rules` of the specs and
of their sub-objects). Optional fields are sometimes present and sometimes absent, so
that both the written values and the defaults are exercised.

    from tests.unit.strategies import services, training_jobs

`training_jobs()` and `services()` give whole manifests (apiVersion, kind, metadata,
spec); `training_job_specs()` and `service_specs()` give the spec alone.

Pattern-checked strings are kept ASCII, so that Python's `re`, the CRD's OpenAPI
patterns and CEL's RE2 all agree on them; free-text fields may hold any text.
"""

from __future__ import annotations

import string
from typing import Any

from hypothesis import strategies as st

API_VERSION = "elasticlm.io/v1alpha1"

Wire = dict[str, Any]

_LOWER = string.ascii_lowercase
_LOWER_ALNUM = string.ascii_lowercase + string.digits
_TEXT = st.text(max_size=24)

# Bounds of the API, repeated here on purpose: a test must not derive its expectations
# from the code under test.
INT64_MAX = 2**63 - 1
INT32_MAX = 2**31 - 1


def _floats(
    low: float, high: float, *, exclude_min: bool = False, exclude_max: bool = False
) -> st.SearchStrategy[float]:
    return st.floats(
        min_value=low,
        max_value=high,
        exclude_min=exclude_min,
        exclude_max=exclude_max,
        allow_nan=False,
        allow_infinity=False,
    )


def _maybe(draw: st.DrawFn, out: Wire, key: str, strategy: st.SearchStrategy[Any]) -> None:
    """Set `out[key]` to a drawn value, or leave the key out (the API's default)."""
    if draw(st.booleans()):
        out[key] = draw(strategy)


def _nonempty_or_maybe(draw: st.DrawFn, obj: Wire) -> bool:
    """Whether to write a sub-object: always when it holds fields, else sometimes ({})."""
    return bool(obj) or draw(st.booleans())


# --- names and paths -------------------------------------------------------------


@st.composite
def dns_labels(draw: st.DrawFn, max_size: int = 63, first: str = _LOWER_ALNUM) -> str:
    """A DNS-1123 label: [a-z0-9]([-a-z0-9]*[a-z0-9])? of at most `max_size` characters."""
    head = draw(st.sampled_from(first))
    if max_size == 1 or not draw(st.booleans()):
        return head
    middle = draw(st.text(_LOWER_ALNUM + "-", max_size=max_size - 2))
    tail = draw(st.sampled_from(_LOWER_ALNUM))
    return head + middle + tail


def resource_names() -> st.SearchStrategy[str]:
    """metadata.name of an ElasticLM resource: a DNS-1035 label of at most 48 characters."""
    return dns_labels(max_size=48, first=_LOWER)


@st.composite
def dns_subdomains(draw: st.DrawFn) -> str:
    """A DNS-1123 subdomain (names of claims, secrets, config maps, service accounts)."""
    labels = draw(st.lists(dns_labels(max_size=20), min_size=1, max_size=3))
    return ".".join(labels)


_SEGMENT_CHARS = string.ascii_letters + string.digits + "._- "


@st.composite
def paths(draw: st.DrawFn) -> str:
    """A relative or absolute path without '..' segments (but maybe 'a..b' or '...')."""
    segments = draw(
        st.lists(
            st.text(_SEGMENT_CHARS, min_size=1, max_size=12).map(
                lambda s: "x" + s if s == ".." else s
            ),
            min_size=1,
            max_size=5,
        )
    )
    return ("/" if draw(st.booleans()) else "") + "/".join(segments)


@st.composite
def storage_locations(draw: st.DrawFn) -> Wire:
    out: Wire = {"path": draw(paths())}
    _maybe(draw, out, "claimName", dns_subdomains())
    return out


# --- worker pods ------------------------------------------------------------------


@st.composite
def quantities(draw: st.DrawFn) -> int | str:
    """A Kubernetes quantity: 2, "500m", "4Gi", "1.5", ".5", "1e3"."""
    if draw(st.booleans()):
        return draw(st.integers(0, 10**12))
    whole, fraction = draw(st.integers(0, 100_000)), draw(st.integers(0, 999))
    number = draw(st.sampled_from([f"{whole}", f"{whole}.{fraction}", f"{whole}.", f".{fraction}"]))
    suffix = draw(
        st.sampled_from(
            [
                *["", "n", "u", "m", "k", "M", "G", "T", "P", "E"],
                *["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"],
                *["e3", "E6", "e-2", "E+1"],
            ]
        )
    )
    return number + suffix


_RESOURCE_NAMES = ["cpu", "memory", "ephemeral-storage", "nvidia.com/gpu", "hugepages-2Mi"]


@st.composite
def resource_requirements(draw: st.DrawFn) -> Wire:
    out: Wire = {}
    amounts = st.dictionaries(st.sampled_from(_RESOURCE_NAMES), quantities(), max_size=3)
    _maybe(draw, out, "requests", amounts)
    _maybe(draw, out, "limits", amounts)
    return out


_SELECTOR_KEYS = st.text(string.ascii_letters + string.digits + "-._", min_size=1, max_size=253)


@st.composite
def _key_selectors(draw: st.DrawFn) -> Wire:
    out: Wire = {"name": draw(dns_subdomains()), "key": draw(_SELECTOR_KEYS)}
    _maybe(draw, out, "optional", st.booleans())
    return out


@st.composite
def env_var_sources(draw: st.DrawFn) -> Wire:
    """`valueFrom` with exactly one source."""
    source = draw(st.sampled_from(["secretKeyRef", "configMapKeyRef", "fieldRef"]))
    if source == "fieldRef":
        field = draw(st.sampled_from(["metadata.name", "metadata.namespace", "status.podIP"]))
        return {"fieldRef": {"fieldPath": field}}
    return {source: draw(_key_selectors())}


_ENV_NAMES = st.builds(
    lambda head, rest: head + rest,
    st.sampled_from(string.ascii_letters + "-._"),
    st.text(string.ascii_letters + string.digits + "-._", max_size=30),
)


@st.composite
def env_vars(draw: st.DrawFn, name: str) -> Wire:
    """An env var with a literal value, a valueFrom, or neither (an empty value)."""
    out: Wire = {"name": name}
    how = draw(st.sampled_from(["value", "valueFrom", "neither"]))
    if how == "value":
        out["value"] = draw(_TEXT)
    elif how == "valueFrom":
        out["valueFrom"] = draw(env_var_sources())
    return out


@st.composite
def env_lists(draw: st.DrawFn) -> list[Wire]:
    """Env vars with unique names (the CRD declares `env` a list-map keyed by name)."""
    names = draw(st.lists(_ENV_NAMES, max_size=4, unique=True))
    return [draw(env_vars(name)) for name in names]


@st.composite
def tolerations(draw: st.DrawFn) -> Wire:
    out: Wire = {}
    _maybe(draw, out, "key", st.text(string.ascii_letters + "./-_", max_size=40))
    _maybe(draw, out, "operator", st.sampled_from(["Exists", "Equal"]))
    if out.get("operator") != "Exists":
        _maybe(draw, out, "value", st.text(string.ascii_letters + "-_.", max_size=63))
    _maybe(draw, out, "effect", st.sampled_from(["NoSchedule", "PreferNoSchedule", "NoExecute"]))
    _maybe(draw, out, "tolerationSeconds", st.integers(0, INT32_MAX))
    return out


def json_values() -> st.SearchStrategy[Any]:
    """Any JSON value (nulls included: a strategic merge patch deletes with them)."""
    leaves = (
        st.none()
        | st.booleans()
        | st.integers(-(2**53), 2**53)
        | _floats(-1e12, 1e12)
        | st.text(max_size=10)
    )
    return st.recursive(
        leaves,
        lambda children: (
            st.lists(children, max_size=3)
            | st.dictionaries(st.text(max_size=8), children, max_size=3)
        ),
        max_leaves=8,
    )


@st.composite
def pod_templates(draw: st.DrawFn) -> Wire:
    """A free-form pod template patch ({metadata, spec} and anything else)."""
    out: Wire = {}
    objects = st.dictionaries(st.text(min_size=1, max_size=12), json_values(), max_size=3)
    _maybe(draw, out, "metadata", objects)
    _maybe(draw, out, "spec", objects)
    return out


@st.composite
def workers(draw: st.DrawFn) -> Wire:
    out: Wire = {}
    _maybe(
        draw,
        out,
        "image",
        st.sampled_from(["ghcr.io/elasticlm/worker:0.1.0", "localhost:5000/w@sha256:abc"])
        | st.text(max_size=60),
    )
    _maybe(draw, out, "imagePullPolicy", st.sampled_from(["Always", "IfNotPresent", "Never"]))
    _maybe(draw, out, "resources", resource_requirements())
    _maybe(draw, out, "env", env_lists())
    _maybe(
        draw,
        out,
        "nodeSelector",
        st.dictionaries(st.text(min_size=1, max_size=20), st.text(max_size=20), max_size=3),
    )
    _maybe(draw, out, "tolerations", st.lists(tolerations(), max_size=3))
    _maybe(draw, out, "serviceAccountName", dns_subdomains())
    _maybe(draw, out, "podTemplate", pod_templates())
    return out


@st.composite
def metadata(draw: st.DrawFn) -> Wire:
    out: Wire = {"name": draw(resource_names())}
    _maybe(draw, out, "namespace", dns_labels())
    simple = st.dictionaries(
        st.text(string.ascii_letters + string.digits + "-._/", min_size=1, max_size=30),
        st.text(max_size=30),
        max_size=3,
    )
    _maybe(draw, out, "labels", simple)
    _maybe(draw, out, "annotations", simple)
    return out


# --- LMTrainingJob ----------------------------------------------------------------


@st.composite
def model_sizes(draw: st.DrawFn) -> Wire:
    """An architecture whose heads split the width into an even head dimension."""
    heads = draw(st.integers(1, 64))
    # hidden = heads * head_dim with head_dim even, 8 <= hidden <= 65536.
    half_dim = draw(st.integers(max(1, -(-8 // (2 * heads))), min(256, 65536 // (2 * heads))))
    out: Wire = {
        "layers": draw(st.integers(1, 256)),
        "hiddenSize": heads * 2 * half_dim,
        "heads": heads,
    }
    divisors = [d for d in range(1, heads + 1) if heads % d == 0]
    _maybe(draw, out, "kvHeads", st.sampled_from(divisors))
    _maybe(draw, out, "intermediateSize", st.integers(8, 262144))
    _maybe(draw, out, "contextLength", st.integers(8, 131072))
    return out


@st.composite
def training_models(draw: st.DrawFn) -> Wire:
    """Exactly one of preset, size, hf."""
    source = draw(st.sampled_from(["preset", "size", "hf"]))
    if source == "preset":
        return {"preset": draw(st.sampled_from(["tiny", "small", "base"]))}
    if source == "size":
        return {"size": draw(model_sizes())}
    return {"hf": draw(storage_locations())}


@st.composite
def tokenizers(draw: st.DrawFn) -> Wire:
    out: Wire = {}
    _maybe(draw, out, "type", st.sampled_from(["Bytes", "BPE"]))
    if out.get("type", "BPE") == "BPE":  # vocabSize applies to BPE (the default) only
        _maybe(draw, out, "vocabSize", st.integers(260, 262144))
    _maybe(draw, out, "path", paths())
    return out


@st.composite
def data_specs(draw: st.DrawFn) -> Wire:
    out = draw(storage_locations())
    _maybe(draw, out, "tokenizer", tokenizers())
    _maybe(draw, out, "validationFraction", _floats(0, 0.5, exclude_max=True))
    return out


DEFAULT_GLOBAL_BATCH = 32
DEFAULT_MICRO_BATCH = 4
DEFAULT_STEPS = 1000
MAX_GLOBAL_BATCH = 1_048_576


@st.composite
def training_specs(draw: st.DrawFn, max_world_size: int) -> Wire:
    """Training settings whose global batch holds a micro-batch per worker."""
    out: Wire = {}
    micro = draw(st.integers(1, 256)) if draw(st.booleans()) else DEFAULT_MICRO_BATCH
    if micro != DEFAULT_MICRO_BATCH or draw(st.booleans()):
        out["microBatchSize"] = micro
    default_fits = (
        DEFAULT_GLOBAL_BATCH % micro == 0 and DEFAULT_GLOBAL_BATCH // micro >= max_world_size
    )
    if not default_fits or draw(st.booleans()):
        most = MAX_GLOBAL_BATCH // micro
        out["globalBatchSize"] = micro * draw(
            st.integers(max_world_size, min(most, 4 * max_world_size + 8))
        )
    steps = draw(st.integers(1, 100_000_000)) if draw(st.booleans()) else DEFAULT_STEPS
    if steps != DEFAULT_STEPS or draw(st.booleans()):
        out["steps"] = steps
    _maybe(draw, out, "warmupSteps", st.integers(0, steps - 1))
    _maybe(draw, out, "learningRate", _floats(0, 10, exclude_min=True))
    _maybe(draw, out, "weightDecay", _floats(0, 10))
    _maybe(draw, out, "gradClip", _floats(0, 1e6))
    _maybe(draw, out, "precision", st.sampled_from(["fp32", "bf16", "fp16"]))
    _maybe(draw, out, "sync", st.sampled_from(["DDP", "LocalSGD"]))
    _maybe(draw, out, "localSgdSyncSteps", st.integers(1, 10000))
    _maybe(draw, out, "seed", st.integers(0, INT32_MAX))
    return out


@st.composite
def checkpoint_specs(draw: st.DrawFn) -> Wire:
    out = draw(storage_locations())
    _maybe(draw, out, "intervalSteps", st.integers(1, INT32_MAX))
    _maybe(draw, out, "async", st.booleans())
    _maybe(draw, out, "keep", st.integers(1, 1000))
    return out


@st.composite
def scheduling_policies(draw: st.DrawFn) -> Wire:
    out: Wire = {}
    _maybe(draw, out, "schedulerName", st.sampled_from(["volcano", "default-scheduler"]) | _TEXT)
    _maybe(draw, out, "priorityClassName", dns_labels())
    _maybe(draw, out, "queue", _TEXT)
    _maybe(draw, out, "gang", st.booleans())
    return out


@st.composite
def run_policies(draw: st.DrawFn) -> Wire:
    out: Wire = {}
    _maybe(draw, out, "restartPolicy", st.sampled_from(["OnFailure", "Never", "ExitCode"]))
    _maybe(draw, out, "backoffLimit", st.integers(0, 1000))
    _maybe(draw, out, "activeDeadlineSeconds", st.integers(1, INT32_MAX))
    _maybe(draw, out, "ttlSecondsAfterFinished", st.integers(0, INT32_MAX))
    _maybe(draw, out, "suspend", st.booleans())
    _maybe(draw, out, "cleanPodPolicy", st.sampled_from(["All", "Running", "None"]))
    _maybe(draw, out, "scheduling", scheduling_policies())
    return out


@st.composite
def training_job_specs(draw: st.DrawFn) -> Wire:
    """A valid LMTrainingJob spec."""
    spec: Wire = {}
    elastic: Wire = {}
    min_replicas = draw(st.integers(1, 16)) if draw(st.booleans()) else 1
    if min_replicas != 1 or draw(st.booleans()):
        elastic["minReplicas"] = min_replicas
    replicas = 1  # the default, valid only while minReplicas is 1
    if min_replicas > 1 or draw(st.booleans()):
        spec["replicas"] = replicas = draw(st.integers(min_replicas, min_replicas + 16))
    max_replicas: int | None = None
    if draw(st.booleans()):
        max_replicas = draw(
            st.sampled_from([replicas, 4096]) | st.integers(replicas, replicas + 32)
        )
        elastic["maxReplicas"] = max_replicas
    _maybe(draw, elastic, "maxRestarts", st.integers(0, 1000))
    if _nonempty_or_maybe(draw, elastic):
        spec["elastic"] = elastic

    autoscaling: Wire = {}
    policies = ["None"]
    if max_replicas is not None and max_replicas > min_replicas:
        policies += ["Throughput", "Goodput"]  # they need room to scale
    _maybe(draw, autoscaling, "policy", st.sampled_from(policies))
    _maybe(draw, autoscaling, "minEfficiency", _floats(0, 1, exclude_min=True))
    _maybe(draw, autoscaling, "intervalSeconds", st.integers(5, 86400))
    _maybe(draw, autoscaling, "cooldownSeconds", st.integers(0, 86400))
    if _nonempty_or_maybe(draw, autoscaling):
        spec["autoscaling"] = autoscaling

    _maybe(draw, spec, "model", training_models())
    spec["data"] = draw(data_specs())
    largest = max_replicas if max_replicas is not None else replicas
    training = draw(training_specs(largest))
    if _nonempty_or_maybe(draw, training):
        spec["training"] = training
    _maybe(draw, spec, "checkpoint", checkpoint_specs())
    _maybe(draw, spec, "worker", workers())
    _maybe(draw, spec, "runPolicy", run_policies())
    return spec


@st.composite
def training_jobs(draw: st.DrawFn) -> Wire:
    """A valid LMTrainingJob manifest."""
    return {
        "apiVersion": API_VERSION,
        "kind": "LMTrainingJob",
        "metadata": draw(metadata()),
        "spec": draw(training_job_specs()),
    }


# --- LMService --------------------------------------------------------------------


@st.composite
def service_models(draw: st.DrawFn) -> Wire:
    """Exactly one of fromTrainingJob, checkpoint, hf."""
    source = draw(st.sampled_from(["fromTrainingJob", "checkpoint", "hf"]))
    if source == "fromTrainingJob":
        ref: Wire = {"name": draw(dns_labels())}
        _maybe(draw, ref, "step", st.integers(0, INT32_MAX))
        return {"fromTrainingJob": ref}
    return {source: draw(storage_locations())}


@st.composite
def compressions(draw: st.DrawFn) -> Wire:
    out: Wire = {}
    _maybe(draw, out, "quantization", st.sampled_from(["none", "int8"]))
    if draw(st.booleans()):
        pruning: Wire = {"amount": draw(_floats(0, 1, exclude_max=True))}
        _maybe(draw, pruning, "method", st.sampled_from(["Magnitude", "Structured"]))
        out["pruning"] = pruning
    _maybe(draw, out, "maxPerplexityIncrease", _floats(0, 10))
    return out


DEFAULT_MAX_BATCH = 8
DEFAULT_MAX_QUEUE = 64


@st.composite
def serving_specs(draw: st.DrawFn) -> Wire:
    """Serving settings whose queue holds at least one batch."""
    out: Wire = {}
    _maybe(draw, out, "port", st.integers(1024, 65535))
    batch = draw(st.integers(1, 4096)) if draw(st.booleans()) else DEFAULT_MAX_BATCH
    if batch != DEFAULT_MAX_BATCH or draw(st.booleans()):
        out["maxBatchSize"] = batch
    if batch > DEFAULT_MAX_QUEUE or draw(st.booleans()):
        out["maxQueue"] = draw(st.integers(batch, 1_000_000))
    _maybe(draw, out, "maxBatchDelayMs", st.integers(0, 10000))
    _maybe(draw, out, "maxNewTokens", st.integers(1, 1_000_000))
    _maybe(draw, out, "authSecretRef", _key_selectors())
    return out


_METRIC_TYPES = [
    "InFlightRequests",
    "QueueDepth",
    "RequestsPerSecond",
    "TokensPerSecond",
    "LatencyP95",
]


@st.composite
def autoscaling_metrics(draw: st.DrawFn, metric_type: str) -> Wire:
    out: Wire = {"type": metric_type, "target": draw(_floats(0, 1e9, exclude_min=True))}
    _maybe(draw, out, "query", st.just("sum(rate(lm_requests_total[1m]))") | _TEXT)
    return out


@st.composite
def scaling_rules(draw: st.DrawFn) -> Wire:
    return {
        "maxRate": draw(_floats(1, 1000, exclude_min=True)),
        "stabilizationSeconds": draw(st.integers(0, 3600)),
    }


@st.composite
def predictive_scalings(draw: st.DrawFn) -> Wire:
    out: Wire = {}
    _maybe(draw, out, "enabled", st.booleans())
    _maybe(draw, out, "lookbackSeconds", st.integers(60, 604800))
    _maybe(draw, out, "horizonSeconds", st.integers(0, 3600))
    return out


_CRON_FIELDS = ["*", "0", "5", "30", "*/5", "1-5", "8", "MON", "1,15", "?"]


@st.composite
def crons(draw: st.DrawFn) -> str:
    """Five whitespace-free fields separated by one or more spaces."""
    fields = draw(st.lists(st.sampled_from(_CRON_FIELDS), min_size=5, max_size=5))
    seps = draw(st.lists(st.sampled_from([" ", "  "]), min_size=4, max_size=4))
    return fields[0] + "".join(sep + field for sep, field in zip(seps, fields[1:], strict=True))


@st.composite
def scaling_schedules(draw: st.DrawFn, name: str, max_replicas: int) -> Wire:
    out: Wire = {
        "name": name,
        "cron": draw(crons()),
        "durationSeconds": draw(st.integers(60, 604800)),
        "minReplicas": draw(st.integers(1, max_replicas)),
    }
    _maybe(draw, out, "timeZone", st.sampled_from(["UTC", "Europe/Paris", "America/New_York"]))
    return out


@st.composite
def service_autoscalings(draw: st.DrawFn) -> Wire:
    """Autoscaling with minReplicas <= maxReplicas, unique metric types and schedule names."""
    out: Wire = {}
    min_replicas = draw(st.integers(1, 64)) if draw(st.booleans()) else 1
    if min_replicas != 1 or draw(st.booleans()):
        out["minReplicas"] = min_replicas
    out["maxReplicas"] = max_replicas = draw(
        st.sampled_from([min_replicas, 10000]) | st.integers(min_replicas, min_replicas + 64)
    )
    if draw(st.booleans()):
        types = draw(st.lists(st.sampled_from(_METRIC_TYPES), min_size=1, max_size=5, unique=True))
        out["metrics"] = [draw(autoscaling_metrics(t)) for t in types]
    _maybe(draw, out, "stableWindowSeconds", st.integers(6, 3600))
    _maybe(draw, out, "panicWindowSeconds", st.integers(1, 3600))
    _maybe(draw, out, "panicThreshold", _floats(1, 100, exclude_min=True))
    _maybe(draw, out, "tolerance", _floats(0, 1, exclude_max=True))
    _maybe(draw, out, "scaleUp", scaling_rules())
    _maybe(draw, out, "scaleDown", scaling_rules())
    _maybe(draw, out, "predictive", predictive_scalings())
    if draw(st.booleans()):
        names = draw(st.lists(dns_labels(max_size=20), min_size=1, max_size=3, unique=True))
        out["schedules"] = [draw(scaling_schedules(n, max_replicas)) for n in names]
    _maybe(draw, out, "source", st.sampled_from(["Pods", "Prometheus"]))
    # Prometheus needs its URL; with Pods the URL may be there, unused.
    if out.get("source") == "Prometheus" or draw(st.booleans()):
        out["prometheus"] = {
            "url": draw(
                st.sampled_from(["http://prometheus.monitoring:9090", "https://prom.example/"])
                | st.builds(lambda s: "http://" + s, st.text(max_size=20))
            )
        }
    return out


@st.composite
def service_specs(draw: st.DrawFn) -> Wire:
    """A valid LMService spec."""
    spec: Wire = {"model": draw(service_models())}
    autoscaling = draw(st.none() | service_autoscalings())
    if autoscaling is None:
        _maybe(draw, spec, "replicas", st.integers(0, 10000))
    else:
        low, high = autoscaling.get("minReplicas", 1), autoscaling["maxReplicas"]
        if low > 1 or draw(st.booleans()):  # the default replicas, 1, must lie in range
            spec["replicas"] = draw(st.integers(low, high))
        spec["autoscaling"] = autoscaling
    _maybe(draw, spec, "precision", st.sampled_from(["auto", "fp32", "bf16", "fp16"]))
    _maybe(draw, spec, "compression", compressions())
    if (spec.get("compression") or {}).get("quantization") == "int8":
        spec.pop("precision", None)  # int8 computes in fp32: only auto (the default) or fp32
        _maybe(draw, spec, "precision", st.sampled_from(["auto", "fp32"]))
    _maybe(draw, spec, "runtime", st.sampled_from(["Builtin", "VLLM"]))
    _maybe(draw, spec, "serving", serving_specs())
    _maybe(draw, spec, "worker", workers())
    return spec


@st.composite
def services(draw: st.DrawFn) -> Wire:
    """A valid LMService manifest."""
    return {
        "apiVersion": API_VERSION,
        "kind": "LMService",
        "metadata": draw(metadata()),
        "spec": draw(service_specs()),
    }


def resources() -> st.SearchStrategy[Wire]:
    """A valid manifest of either kind."""
    return training_jobs() | services()


__all__ = [
    "API_VERSION",
    "resource_names",
    "resources",
    "service_specs",
    "services",
    "training_job_specs",
    "training_jobs",
]
