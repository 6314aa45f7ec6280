"""Types shared by LMTrainingJob and LMService: storage, worker pods, conditions."""

from __future__ import annotations

import enum
import re
from datetime import datetime
from typing import Annotated, Any

from pydantic import ConfigDict, Field
from pydantic.config import JsonDict

from lmoperator.api.base import (
    CONDITION_REASON_PATTERN,
    CONFIG_KEY_PATTERN,
    DNS_SUBDOMAIN_PATTERN,
    ENV_NAME_PATTERN,
    ApiModel,
    CelRule,
    Quantity,
    unique_by,
)

# Names of our resources become prefixes of child names (`<job>-worker-<i>`,
# `<job>-rdzv`) that must stay valid DNS-1035 labels of at most 63 characters.
MAX_RESOURCE_NAME_LENGTH = 48
RESOURCE_NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"


def _name_problem(name: str | None, max_length: int, why: str) -> str | None:
    if name is None:
        return None
    if len(name) > max_length:
        return f"metadata.name ({name}) must be at most {max_length} characters so that {why}"
    # fullmatch: unlike RE2's, Python's `$` also matches before a trailing newline.
    if not re.fullmatch(RESOURCE_NAME_PATTERN[1:-1], name):
        return (
            f"metadata.name ({name}) must start with a lowercase letter and contain only "
            "lowercase letters, digits and '-'"
        )
    return None


def resource_name_rules(max_length: int, why: str) -> list[CelRule]:
    """The metadata.name rules of a kind whose children's names derive from its own."""
    return [
        CelRule(
            name="metadata-name-length",
            rule=f"!has(self.metadata.name) || self.metadata.name.size() <= {max_length}",
            message_expression=(
                f"'metadata.name (' + self.metadata.name + ') must be at most {max_length} "
                f"characters so that {why}'"
            ),
            message=f"metadata.name must be at most {max_length} characters",
            check=lambda m: (
                _name_problem(m.name, max_length, why)
                if m.name is not None and len(m.name) > max_length
                else None
            ),
        ),
        CelRule(
            name="metadata-name-dns1035",
            rule=(
                "!has(self.metadata.name) || self.metadata.name.size() > "
                f"{max_length} || self.metadata.name.matches('{RESOURCE_NAME_PATTERN}')"
            ),
            message_expression=(
                "'metadata.name (' + self.metadata.name + ') must start with a lowercase "
                "letter and contain only lowercase letters, digits and \\'-\\''"
            ),
            message="metadata.name must be a DNS-1035 label",
            check=lambda m: (
                _name_problem(m.name, max_length, why)
                if m.name is not None and len(m.name) <= max_length
                else None
            ),
        ),
    ]


RESOURCE_NAME_RULES = resource_name_rules(
    MAX_RESOURCE_NAME_LENGTH, "the names of its pods and services stay valid"
)


class ObjectMeta(ApiModel):
    """The part of metav1.ObjectMeta that ElasticLM reads; the rest is kept as is."""

    model_config = ConfigDict(extra="allow")

    name: str | None = None
    generate_name: str | None = None
    namespace: str | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None

    # The API server evaluates these at the root of the CRD schema, where `self` is
    # the whole resource; in Python the same checks run here, on the metadata.
    cel_rules = RESOURCE_NAME_RULES


def dotdot_problem(path: str) -> str | None:
    if re.search(r"(^|/)\.\.(/|\Z)", path):
        return f"must not contain '..' segments (got '{path}')"
    return None


class StorageLocation(ApiModel):
    """A file or directory the workers read or write.

    With `claimName`, the PersistentVolumeClaim is mounted into every worker and
    `path` is taken inside it; use a ReadWriteMany claim when workers run on several
    nodes. Without it, `path` is a path inside the worker container.
    """

    claim_name: str | None = Field(
        None,
        max_length=253,
        pattern=DNS_SUBDOMAIN_PATTERN,
        description="Name of a PersistentVolumeClaim in the resource's namespace to mount.",
    )
    path: str = Field(
        min_length=1,
        max_length=4096,
        description="Path of the file or directory: inside the claim when claimName is set, "
        "else inside the container.",
    )

    cel_rules = [
        CelRule(
            name="path-no-dotdot",
            rule="!self.path.matches('(^|/)\\\\.\\\\.(/|$)')",
            message_expression="'must not contain \\'..\\' segments (got \\'' + self.path + '\\')'",
            message="must not contain '..' segments",
            check=lambda s: dotdot_problem(s.path),
            field_path=".path",
        )
    ]


class SecretKeySelector(ApiModel):
    """A key of a Secret in the resource's namespace."""

    name: str = Field(max_length=253, pattern=DNS_SUBDOMAIN_PATTERN, description="Secret name.")
    key: str = Field(
        max_length=253,
        pattern=CONFIG_KEY_PATTERN,
        description="Key within the Secret.",
    )
    optional: bool | None = Field(None, description="Whether the Secret or key may be missing.")


class ConfigMapKeySelector(ApiModel):
    """A key of a ConfigMap in the resource's namespace."""

    name: str = Field(max_length=253, pattern=DNS_SUBDOMAIN_PATTERN, description="ConfigMap name.")
    key: str = Field(
        max_length=253,
        pattern=CONFIG_KEY_PATTERN,
        description="Key within the ConfigMap.",
    )
    optional: bool | None = Field(None, description="Whether the ConfigMap or key may be missing.")


class FieldSelector(ApiModel):
    """A field of the pod, as in the Downward API."""

    field_path: str = Field(
        max_length=253,
        description="Path of the field, e.g. metadata.name or status.podIP.",
    )


class EnvVarSource(ApiModel):
    """Where an environment variable's value comes from; exactly one source."""

    secret_key_ref: SecretKeySelector | None = None
    config_map_key_ref: ConfigMapKeySelector | None = None
    field_ref: FieldSelector | None = None

    cel_rules = [
        CelRule(
            name="env-value-from-one-source",
            rule="(has(self.secretKeyRef) ? 1 : 0) + (has(self.configMapKeyRef) ? 1 : 0)"
            " + (has(self.fieldRef) ? 1 : 0) == 1",
            message_expression="'must set exactly one of secretKeyRef, configMapKeyRef, fieldRef'",
            message="must set exactly one of secretKeyRef, configMapKeyRef, fieldRef",
            check=lambda s: (
                None
                if [s.secret_key_ref, s.config_map_key_ref, s.field_ref].count(None) == 2
                else "must set exactly one of secretKeyRef, configMapKeyRef, fieldRef"
            ),
        )
    ]


class EnvVar(ApiModel):
    """An environment variable of the worker container."""

    name: str = Field(
        min_length=1,
        max_length=256,
        pattern=ENV_NAME_PATTERN,
        description="Variable name.",
    )
    value: str | None = Field(None, max_length=32768, description="Literal value.")
    value_from: EnvVarSource | None = Field(None, description="Value read from elsewhere.")

    cel_rules = [
        CelRule(
            name="env-value-or-value-from",
            rule="!(has(self.value) && has(self.valueFrom))",
            message_expression="'set value or valueFrom, not both'",
            message="set value or valueFrom, not both",
            check=lambda e: (
                "set value or valueFrom, not both"
                if e.value is not None and e.value_from is not None
                else None
            ),
        )
    ]


class TolerationOperator(enum.StrEnum):
    EXISTS = "Exists"
    EQUAL = "Equal"


class TaintEffect(enum.StrEnum):
    NO_SCHEDULE = "NoSchedule"
    PREFER_NO_SCHEDULE = "PreferNoSchedule"
    NO_EXECUTE = "NoExecute"


class Toleration(ApiModel):
    """A core/v1 Toleration."""

    key: str | None = Field(None, max_length=316, description="Taint key; empty matches all keys.")
    operator: TolerationOperator | None = Field(None, description="Exists or Equal (default).")
    value: str | None = Field(None, max_length=63, description="Taint value for Equal.")
    effect: TaintEffect | None = Field(None, description="Taint effect; empty matches all.")
    toleration_seconds: int | None = Field(
        None, ge=0, description="How long a NoExecute taint is tolerated."
    )


class ResourceRequirements(ApiModel):
    """CPU, memory and accelerator requests and limits of the worker container."""

    requests: dict[str, Quantity] | None = Field(
        None, description="Minimum resources, e.g. {cpu: 2, memory: 4Gi}."
    )
    limits: dict[str, Quantity] | None = Field(
        None, description="Maximum resources, e.g. {nvidia.com/gpu: 1}."
    )


class PullPolicy(enum.StrEnum):
    ALWAYS = "Always"
    IF_NOT_PRESENT = "IfNotPresent"
    NEVER = "Never"


class WorkerSpec(ApiModel):
    """How the operator builds each worker pod."""

    image: str | None = Field(
        None,
        max_length=1024,
        description="Container image; defaults to the worker image of the operator's release.",
    )
    image_pull_policy: PullPolicy | None = Field(None, description="Image pull policy.")
    resources: ResourceRequirements | None = Field(None, description="Container resources.")
    env: Annotated[list[EnvVar] | None, unique_by("name")] = Field(
        None,
        max_length=128,
        description="Extra environment variables; names must be unique.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    node_selector: dict[str, str] | None = Field(None, description="Node labels to schedule on.")
    tolerations: list[Toleration] | None = Field(
        None, max_length=64, description="Taints the pods tolerate."
    )
    service_account_name: str | None = Field(
        None,
        max_length=253,
        pattern=DNS_SUBDOMAIN_PATTERN,
        description="Service account of the pods; defaults to the namespace's default.",
    )
    pod_template: dict[str, Any] | None = Field(
        None,
        description="A pod template ({metadata, spec}) merged into the generated pods with "
        "strategic-merge-patch semantics, for anything not covered above. Security "
        "settings of the generated pods are kept unless overridden here explicitly; the "
        "pod-level securityContext also applies to a training job's rendezvous store.",
    )


class ConditionStatus(enum.StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(ApiModel):
    """A metav1.Condition."""

    type: str = Field(max_length=316, description="Condition type, e.g. Running.")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    observed_generation: int | None = Field(
        None, ge=0, description="The .metadata.generation the condition was set for."
    )
    last_transition_time: datetime = Field(description="When the status last changed.")
    reason: str = Field(
        min_length=1,
        max_length=1024,
        pattern=CONDITION_REASON_PATTERN,
        description="CamelCase reason.",
    )
    message: str = Field("", max_length=32768, description="Human-readable details.")


CONDITIONS_SCHEMA_EXTRA: JsonDict = {
    "x-kubernetes-list-type": "map",
    "x-kubernetes-list-map-keys": ["type"],
}


class ScalingDecision(ApiModel):
    """One scaling decision, manual or automatic, and the figures behind it."""

    time: datetime = Field(description="When the decision was taken.")
    from_: int = Field(alias="from", ge=0, description="Replicas before.")
    to: int = Field(ge=0, description="Replicas after.")
    reason: str = Field(max_length=1024, description="Why, in words.")
    metrics: dict[str, float] | None = Field(
        None, description="The metric values the decision was based on."
    )


MAX_SCALING_HISTORY = 20
