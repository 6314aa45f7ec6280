"""apps/v1 Deployments and ReplicaSets: defaults and validation, as kube-apiserver does
them (pkg/apis/apps/v1/defaults.go, pkg/apis/apps/validation, and the registry
strategies in pkg/registry/apps).

- Defaults: `replicas` 1; a Deployment's `strategy` RollingUpdate with 25% maxSurge and
  25% maxUnavailable, `revisionHistoryLimit` 10, `progressDeadlineSeconds` 600; the pod
  template gets the pod spec defaults a template gets (not what admission adds to pods).
- Validation: a selector is required, may not be empty, must match the template's
  labels and may not change; the template's restartPolicy must be Always; numbers may
  not be negative; maxSurge and maxUnavailable are ints or percentages, not both 0;
  progressDeadlineSeconds must exceed minReadySeconds. The pod template is checked as
  a pod is (`PodStrategy`), its errors under `spec.template`.
- Generation: bumped by spec changes, and for Deployments also by annotation changes
  (they are copied to the ReplicaSets). A status write of a Deployment keeps the
  submitted annotations: that is how the controller records
  `deployment.kubernetes.io/revision` without bumping the generation.
"""

from __future__ import annotations

import abc
import copy
import re
from typing import Any

from devcluster import selectors
from devcluster.resources.fields import (
    Cause,
    check_labels,
    forbidden,
    invalid,
    required,
    unsupported,
)
from devcluster.resources.strategies import PodStrategy, default_pod_template_spec
from devcluster.resources.types import Env, ResourceType, Strategy
from devcluster.store import Obj, bad_request
from devcluster.values import as_dict

ROLLING_UPDATE = "RollingUpdate"
RECREATE = "Recreate"
STRATEGY_TYPES = (RECREATE, ROLLING_UPDATE)
PERCENT = re.compile(r"^[0-9]+%$")
PERCENT_MSG = (
    "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  "
    "or '93%', regex used for validation is '[0-9]+%')"
)
NON_NEGATIVE = "must be greater than or equal to 0"


# --------------------------------------------------------------------------- defaults


def _default_template(spec: Obj) -> None:
    template = spec.get("template")
    if isinstance(template, dict):
        metadata = template.setdefault("metadata", {})
        if isinstance(metadata, dict):  # a template's zero time, as Kubernetes prints it
            metadata.setdefault("creationTimestamp", None)
        pod_spec = template.setdefault("spec", {})
        if isinstance(pod_spec, dict):
            default_pod_template_spec(pod_spec)


def default_deployment_spec(spec: Obj) -> None:
    spec.setdefault("replicas", 1)
    strategy = spec.setdefault("strategy", {})
    if isinstance(strategy, dict):
        strategy.setdefault("type", ROLLING_UPDATE)
        if strategy["type"] == ROLLING_UPDATE:
            rolling = strategy.setdefault("rollingUpdate", {})
            if isinstance(rolling, dict):
                rolling.setdefault("maxUnavailable", "25%")
                rolling.setdefault("maxSurge", "25%")
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    _default_template(spec)


def default_replica_set_spec(spec: Obj) -> None:
    spec.setdefault("replicas", 1)
    _default_template(spec)


# --------------------------------------------------------------------------- validation


def go_labels(labels: Any) -> str:
    """A label map as Go's %#v prints it in a field error."""
    pairs = ",".join(f'"{k}":"{v}"' for k, v in sorted(as_dict(labels).items()))
    return "map[string]string{" + pairs + "}"


def go_selector(selector: Any) -> str:
    """A metav1.LabelSelector as Go's %#v prints it (matchLabels only)."""
    s = as_dict(selector)
    expressions = "nil" if not s.get("matchExpressions") else "{...}"
    return (
        f"v1.LabelSelector{{MatchLabels:{go_labels(s.get('matchLabels'))}, "
        f"MatchExpressions:[]v1.LabelSelectorRequirement({expressions})}}"
    )


def _non_negative(spec: Obj, key: str) -> list[Cause]:
    value = spec.get(key)
    if value is None:
        return []
    if not isinstance(value, int) or isinstance(value, bool):
        return [invalid(f"spec.{key}", value, "must be an integer")]
    return [] if value >= 0 else [invalid(f"spec.{key}", value, NON_NEGATIVE)]


def _int_or_percent(value: Any, path: str) -> list[Cause]:
    if isinstance(value, str):
        return [] if PERCENT.match(value) else [invalid(path, value, PERCENT_MSG)]
    if isinstance(value, int) and not isinstance(value, bool):
        return [] if value >= 0 else [invalid(path, value, NON_NEGATIVE)]
    return [invalid(path, value, "must be an integer or a percentage")]


def _is_zero(value: Any) -> bool:
    return value in (0, "0%") or (isinstance(value, str) and value.rstrip("%") == "0")


def _strategy_causes(strategy: Obj) -> list[Cause]:
    kind = strategy.get("type")
    rolling = strategy.get("rollingUpdate")
    if kind == RECREATE:
        if rolling is not None:
            return [
                forbidden(
                    "spec.strategy.rollingUpdate",
                    "may not be specified when strategy `type` is 'Recreate'",
                )
            ]
        return []
    if kind != ROLLING_UPDATE:
        return [unsupported("spec.strategy.type", kind, STRATEGY_TYPES)]
    path = "spec.strategy.rollingUpdate"
    if not isinstance(rolling, dict):
        return [required(path, "this should be defaulted and never be nil")]
    unavailable, surge = rolling.get("maxUnavailable"), rolling.get("maxSurge")
    causes = _int_or_percent(unavailable, f"{path}.maxUnavailable")
    causes += _int_or_percent(surge, f"{path}.maxSurge")
    if _is_zero(unavailable) and _is_zero(surge):
        causes.append(
            invalid(f"{path}.maxUnavailable", unavailable, "may not be 0 when `maxSurge` is 0")
        )
    if isinstance(unavailable, str) and PERCENT.match(unavailable) and int(unavailable[:-1]) > 100:
        causes.append(
            invalid(f"{path}.maxUnavailable", unavailable, "must not be greater than 100%")
        )
    return causes


def _selector_causes(spec: Obj, kind: str) -> tuple[list[Cause], selectors.LabelSelector | None]:
    selector = spec.get("selector")
    if selector is None:
        return [required("spec.selector")], None
    if not isinstance(selector, dict):
        return [invalid("spec.selector", selector, "invalid label selector")], None
    match_labels = as_dict(selector.get("matchLabels"))
    if not all(isinstance(v, str) for v in match_labels.values()):
        return [invalid("spec.selector", selector, "invalid label selector")], None
    causes = check_labels(match_labels, "spec.selector.matchLabels")
    if not selector.get("matchLabels") and not selector.get("matchExpressions"):
        causes.append(
            Cause(
                "spec.selector",
                "FieldValueInvalid",
                f"Invalid value: {go_selector(selector)}: empty selector is invalid for {kind}",
            )
        )
    try:
        parsed = selectors.label_selector_from_dict(selector)
    except selectors.SelectorError as exc:
        causes.append(invalid("spec.selector", selector, f"invalid label selector: {exc}"))
        return causes, None
    return causes, parsed


def _template_causes(
    env: Env, rt: ResourceType, spec: Obj, selector: selectors.LabelSelector | None
) -> list[Cause]:
    template = spec.get("template")
    if not isinstance(template, dict):
        return [required("spec.template")]
    labels = as_dict(as_dict(template.get("metadata")).get("labels"))
    if not all(isinstance(v, str) for v in labels.values()):
        raise bad_request(
            f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: json: '
            "cannot unmarshal into Go struct field ObjectMeta.spec.template.metadata.labels "
            "of type string"
        )
    causes = check_labels(labels, "spec.template.metadata.labels")
    if selector is not None and not selector.empty() and not selector.matches(labels):
        causes.append(
            Cause(
                "spec.template.metadata.labels",
                "FieldValueInvalid",
                f"Invalid value: {go_labels(labels)}: `selector` does not match template `labels`",
            )
        )
    pod_spec = as_dict(template.get("spec"))
    pod = {"metadata": {"name": "template"}, "spec": pod_spec}
    for cause in PodStrategy().validate(env, rt, pod, None):
        causes.append(Cause("spec.template." + cause.field, cause.reason, cause.body))
    if pod_spec.get("restartPolicy", "Always") != "Always" and not any(
        c.field == "spec.template.spec.restartPolicy" for c in causes
    ):
        causes.append(
            unsupported("spec.template.spec.restartPolicy", pod_spec["restartPolicy"], ("Always",))
        )
    if pod_spec.get("activeDeadlineSeconds") is not None:
        causes.append(
            forbidden(
                "spec.template.spec.activeDeadlineSeconds",
                "activeDeadlineSeconds in ReplicaSet is not Supported",
            )
        )
    return causes


def _selector_unchanged(spec: Obj, old: Obj | None) -> list[Cause]:
    if old is None:
        return []
    before = as_dict(old.get("spec")).get("selector")
    after = spec.get("selector")
    if after == before:
        return []
    return [
        Cause(
            "spec.selector",
            "FieldValueInvalid",
            f"Invalid value: {go_selector(after)}: field is immutable",
        )
    ]


class _WorkloadStrategy(Strategy, abc.ABC):
    """What Deployments and ReplicaSets share: a selector over a pod template."""

    kind = ""

    @abc.abstractmethod
    def default_spec(self, spec: Obj) -> None:
        """Fill the kind's spec defaults in place."""

    def initial_status(self) -> Obj:
        return {}

    def prepare_create(self, env: Env, rt: ResourceType, obj: Obj) -> None:
        spec = obj.setdefault("spec", {})
        if isinstance(spec, dict):
            self.default_spec(spec)
        obj["status"] = self.initial_status()

    def prepare_update(self, env: Env, rt: ResourceType, new: Obj, old: Obj) -> None:
        spec = new.get("spec")
        if isinstance(spec, dict):
            self.default_spec(spec)

    def validate(self, env: Env, rt: ResourceType, obj: Obj, old: Obj | None) -> list[Cause]:
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            return [required("spec")]
        causes, selector = _selector_causes(spec, self.kind)
        causes += _non_negative(spec, "replicas")
        causes += _non_negative(spec, "minReadySeconds")
        causes += _template_causes(env, rt, spec, selector)
        return causes + _selector_unchanged(spec, old)


class DeploymentStrategy(_WorkloadStrategy):
    kind = "deployment"

    def default_spec(self, spec: Obj) -> None:
        default_deployment_spec(spec)

    def prepare_update(self, env: Env, rt: ResourceType, new: Obj, old: Obj) -> None:
        super().prepare_update(env, rt, new, old)
        # Annotations are copied to the ReplicaSets, so they count as a change of intent.
        m, om = new["metadata"], old["metadata"]
        if new.get("spec") == old.get("spec") and as_dict(m.get("annotations")) != as_dict(
            om.get("annotations")
        ):
            m["generation"] = int(om.get("generation") or 0) + 1

    def prepare_status_update(self, env: Env, rt: ResourceType, new: Obj, submitted: Obj) -> None:
        annotations = as_dict(submitted["metadata"]).get("annotations")
        if annotations:
            new["metadata"]["annotations"] = copy.deepcopy(annotations)
        else:
            new["metadata"].pop("annotations", None)

    def validate(self, env: Env, rt: ResourceType, obj: Obj, old: Obj | None) -> list[Cause]:
        causes = super().validate(env, rt, obj, old)
        spec = as_dict(obj.get("spec"))
        causes += _non_negative(spec, "revisionHistoryLimit")
        causes += _non_negative(spec, "progressDeadlineSeconds")
        strategy = spec.get("strategy")
        if isinstance(strategy, dict):
            causes += _strategy_causes(strategy)
        deadline, min_ready = spec.get("progressDeadlineSeconds"), spec.get("minReadySeconds", 0)
        if isinstance(deadline, int) and isinstance(min_ready, int) and deadline <= min_ready:
            causes.append(
                invalid(
                    "spec.progressDeadlineSeconds", deadline, "must be greater than minReadySeconds"
                )
            )
        return causes


class ReplicaSetStrategy(_WorkloadStrategy):
    kind = "replicaset"

    def default_spec(self, spec: Obj) -> None:
        default_replica_set_spec(spec)

    def initial_status(self) -> Obj:
        return {"replicas": 0}
