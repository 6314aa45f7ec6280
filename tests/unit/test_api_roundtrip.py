"""Valid manifests parse, and survive the trip model -> JSON -> model unchanged."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given

from lmoperator.api import (
    API_VERSION,
    LMService,
    LMServiceSpec,
    LMTrainingJob,
    LMTrainingJobSpec,
    parse_resource,
)
from lmoperator.api.common import EnvVar, EnvVarSource, SecretKeySelector, WorkerSpec
from lmoperator.api.service import (
    AutoscalingMetric,
    MetricsSource,
    MetricType,
    ScaleDownRules,
    ScaleUpRules,
    ServiceAutoscaling,
    ServiceModel,
    ServingSpec,
    TrainingJobRef,
)
from lmoperator.api.trainingjob import (
    AutoscalingPolicy,
    CheckpointSpec,
    CleanPodPolicy,
    DataSpec,
    ModelPreset,
    Precision,
    RestartPolicy,
    RunPolicy,
    SyncMode,
    TokenizerType,
    TrainingSpec,
)
from tests.unit.strategies import services, training_jobs


def _contains(expected: Any, actual: Any, path: str = "") -> None:
    """Every key and value of `expected` is in `actual` (which may hold more: defaults)."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{path}: {actual!r} is not an object"
        for key, value in expected.items():
            assert key in actual, f"{path}.{key}: dropped by to_wire()"
            _contains(value, actual[key], f"{path}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list), f"{path}: {actual!r} is not a list"
        assert len(expected) == len(actual), f"{path}: {len(expected)} != {len(actual)} items"
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            _contains(e, a, f"{path}[{i}]")
    else:
        # 4 and 4.0 are the same JSON number; "2" and 2 are not the same quantity.
        assert type(expected) is type(actual) or {type(expected), type(actual)} == {int, float}
        assert expected == actual, f"{path}: {expected!r} became {actual!r}"


def _check_roundtrip(doc: dict[str, Any], model: type[LMTrainingJob] | type[LMService]) -> None:
    parsed = parse_resource(doc)
    assert type(parsed) is model

    wire = parsed.to_wire()
    _contains(doc, wire)  # nothing written is dropped, renamed or changed

    # JSON proper: finite numbers only, as the API server stores it.
    reread = json.loads(json.dumps(wire, allow_nan=False))
    reparsed = parse_resource(reread)
    assert reparsed == parsed
    assert reparsed.to_wire() == wire  # to_wire() is a fixed point


@given(training_jobs())
def test_training_job_roundtrip(doc: dict[str, Any]) -> None:
    _check_roundtrip(doc, LMTrainingJob)


@given(services())
def test_service_roundtrip(doc: dict[str, Any]) -> None:
    _check_roundtrip(doc, LMService)


def test_training_job_defaults_are_filled() -> None:
    job = parse_resource(
        {
            "apiVersion": API_VERSION,
            "kind": "LMTrainingJob",
            "metadata": {"name": "minimal"},
            "spec": {"data": {"path": "corpus.txt"}},
        }
    )
    assert isinstance(job, LMTrainingJob)
    spec = job.spec
    assert spec.replicas == 1
    assert (spec.elastic.min_replicas, spec.elastic.max_replicas) == (1, None)
    assert spec.elastic.max_restarts == 3
    assert spec.autoscaling.policy is AutoscalingPolicy.NONE
    assert spec.autoscaling.min_efficiency == 0.7
    assert (spec.autoscaling.interval_seconds, spec.autoscaling.cooldown_seconds) == (30, 120)
    assert spec.model.preset is ModelPreset.TINY
    assert spec.model.size is None
    assert spec.model.hf is None
    assert spec.data.claim_name is None
    assert spec.data.tokenizer.type is TokenizerType.BPE
    assert spec.data.tokenizer.vocab_size is None
    assert spec.data.validation_fraction == 0.01
    assert spec.training == TrainingSpec(
        steps=1000,
        global_batch_size=32,
        micro_batch_size=4,
        learning_rate=3e-4,
        warmup_steps=None,
        weight_decay=0.1,
        grad_clip=1.0,
        precision=Precision.FP32,
        sync=SyncMode.DDP,
        local_sgd_sync_steps=8,
        seed=0,
    )
    assert spec.checkpoint is None
    assert spec.worker.image is None
    assert spec.worker.env is None
    assert spec.run_policy.restart_policy is RestartPolicy.ON_FAILURE
    assert spec.run_policy.backoff_limit == 6
    assert spec.run_policy.suspend is False
    assert spec.run_policy.clean_pod_policy is CleanPodPolicy.RUNNING
    assert spec.run_policy.scheduling.gang is False

    wire = job.to_wire()
    assert wire["spec"]["model"] == {"preset": "tiny"}
    assert wire["spec"]["training"]["globalBatchSize"] == 32
    assert "checkpoint" not in wire["spec"]  # unset optionals are left out, not null
    assert "maxReplicas" not in wire["spec"]["elastic"]


def test_checkpoint_defaults_are_filled() -> None:
    checkpoint = CheckpointSpec.model_validate({"path": "runs"})
    assert checkpoint.to_wire() == {"path": "runs", "intervalSteps": 100, "async": False, "keep": 3}


def test_service_defaults_are_filled() -> None:
    svc = parse_resource(
        {
            "apiVersion": API_VERSION,
            "kind": "LMService",
            "metadata": {"name": "minimal"},
            "spec": {"model": {"fromTrainingJob": {"name": "tiny-lm"}}},
        }
    )
    assert isinstance(svc, LMService)
    spec = svc.spec
    assert spec.replicas == 1
    assert spec.autoscaling is None
    assert spec.compression is None
    assert spec.serving.port == 8000
    assert (spec.serving.max_batch_size, spec.serving.max_queue) == (8, 64)
    assert (spec.serving.max_batch_delay_ms, spec.serving.max_new_tokens) == (10, 256)
    assert spec.serving.auth_secret_ref is None


def test_service_autoscaling_defaults_are_filled() -> None:
    autoscaling = ServiceAutoscaling.model_validate({"maxReplicas": 3})
    assert autoscaling.min_replicas == 1
    assert autoscaling.metrics == [AutoscalingMetric(type=MetricType.IN_FLIGHT_REQUESTS, target=4)]
    assert autoscaling.scale_up == ScaleUpRules(max_rate=1000, stabilization_seconds=0)
    assert autoscaling.scale_down == ScaleDownRules(max_rate=2, stabilization_seconds=300)
    assert (autoscaling.stable_window_seconds, autoscaling.panic_window_seconds) == (60, 6)
    assert (autoscaling.panic_threshold, autoscaling.tolerance) == (2.0, 0.1)
    assert autoscaling.source is MetricsSource.PODS
    assert autoscaling.predictive is None
    assert autoscaling.schedules is None


def test_snake_case_names_and_camel_case_aliases_both_populate() -> None:
    by_alias = LMTrainingJobSpec.model_validate(
        {
            "data": {"claimName": "data", "path": "corpus.txt", "validationFraction": 0.1},
            "training": {"globalBatchSize": 64, "microBatchSize": 8, "warmupSteps": 10},
            "checkpoint": {"path": "ckpt", "intervalSteps": 10, "async": True},
            "runPolicy": {"restartPolicy": "Never", "ttlSecondsAfterFinished": 60},
        }
    )
    by_name = LMTrainingJobSpec.model_validate(
        {
            "data": {"claim_name": "data", "path": "corpus.txt", "validation_fraction": 0.1},
            "training": {"global_batch_size": 64, "micro_batch_size": 8, "warmup_steps": 10},
            "checkpoint": {"path": "ckpt", "interval_steps": 10, "async_": True},
            "run_policy": {"restart_policy": "Never", "ttl_seconds_after_finished": 60},
        }
    )
    by_keyword = LMTrainingJobSpec(
        data=DataSpec(claim_name="data", path="corpus.txt", validation_fraction=0.1),
        training=TrainingSpec(global_batch_size=64, micro_batch_size=8, warmup_steps=10),
        checkpoint=CheckpointSpec(path="ckpt", interval_steps=10, async_=True),
        run_policy=RunPolicy(restart_policy=RestartPolicy.NEVER, ttl_seconds_after_finished=60),
    )
    assert by_alias == by_name == by_keyword
    assert by_alias.checkpoint is not None
    assert by_alias.checkpoint.async_ is True
    assert by_alias.run_policy.restart_policy is RestartPolicy.NEVER

    wire = by_keyword.to_wire()
    assert wire["checkpoint"]["async"] is True  # the alias, not the Python name
    assert wire["runPolicy"]["ttlSecondsAfterFinished"] == 60
    assert "run_policy" not in wire


def test_service_snake_case_and_camel_case_both_populate() -> None:
    by_alias = LMServiceSpec.model_validate(
        {
            "model": {"fromTrainingJob": {"name": "tiny-lm", "step": 100}},
            "serving": {"maxBatchSize": 4, "authSecretRef": {"name": "token", "key": "t"}},
            "worker": {
                "env": [
                    {"name": "A", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
                ]
            },
        }
    )
    by_keyword = LMServiceSpec(
        model=ServiceModel(from_training_job=TrainingJobRef(name="tiny-lm", step=100)),
        serving=ServingSpec(
            max_batch_size=4, auth_secret_ref=SecretKeySelector(name="token", key="t")
        ),
        worker=WorkerSpec(
            env=[
                EnvVar(
                    name="A",
                    value_from=EnvVarSource(secret_key_ref=SecretKeySelector(name="s", key="k")),
                )
            ]
        ),
    )
    assert by_alias == by_keyword
    assert by_keyword.to_wire()["model"] == {"fromTrainingJob": {"name": "tiny-lm", "step": 100}}
