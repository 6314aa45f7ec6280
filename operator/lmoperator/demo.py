"""`elasticlm demo`: train the example job on devcluster, rescale it 2 → 3 → 2, finish,
then serve the trained model with the example LMService, ask it for a few completions
and scale the servers 1 → 2 → 1 (by hand, or, when the example LMService has
`spec.autoscaling`, by raising its floor and letting the autoscaler take it back).

Everything runs on this machine: devcluster (the embedded Kubernetes stand-in), the
operator, a rendezvous pod, the worker pods and the server pods as local processes.
"""

from __future__ import annotations

import json
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes
import yaml

from lmoperator.api.kinds import GROUP, SERVICE, TRAINING_JOB, VERSION
from lmoperator.localstack import LocalStack, local_stack

PLURAL = TRAINING_JOB.plural
CORPUS_BYTES = 2_000_000
PROMPTS = ("the ", "and then ", "it was ")


class DemoError(RuntimeError):
    pass


class Demo:
    def __init__(self, stack: LocalStack, job: dict[str, Any], out: Callable[[str], None]) -> None:
        self.stack = stack
        self.job = job
        self.name = str(job["metadata"]["name"])
        self.namespace = str(job["metadata"].get("namespace") or "default")
        self.custom: Any = kubernetes.client.CustomObjectsApi(stack.api)
        self.out = out
        self.started = time.monotonic()
        self.last_line = ""
        self.last_print = 0.0
        self.steps_seen: list[int] = []

    def say(self, text: str) -> None:
        self.out(f"[{time.monotonic() - self.started:6.1f}s] {text}")

    def status(self) -> dict[str, Any]:
        obj = self.custom.get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, self.name
        )
        status: dict[str, Any] = obj.get("status") or {}
        return status

    def progress(self, status: dict[str, Any]) -> None:
        steps = self.job["spec"].get("training", {}).get("steps", "?")
        if status.get("step") is not None:
            self.steps_seen.append(int(status["step"]))
        loss = f"{status['loss']:.3f}" if status.get("loss") is not None else "-"
        line = (
            f"{status.get('phase', 'Pending'):<10} step {status.get('step', 0):>4}/{steps}"
            f"  loss {loss}"
            f"  world size {status.get('worldSize', 0)}"
            f"  {status.get('tokensPerSecond', 0):,.0f} tokens/s"
        )
        now = time.monotonic()
        if line != self.last_line and now - self.last_print >= 3:
            self.say(line)
            self.last_line, self.last_print = line, now

    def wait(
        self, what: str, done: Callable[[dict[str, Any]], bool], timeout: float
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            status = self.status()
            self.progress(status)
            if done(status):
                return status
            if status.get("phase") == "Failed":
                raise DemoError(f"the job failed: {failure_message(status)}")
            if time.monotonic() > deadline:
                raise DemoError(f"timed out after {timeout:g}s waiting for {what}")
            time.sleep(0.5)

    def scale(self, replicas: int) -> None:
        before = self.status().get("worldSize", 0)
        self.say(
            f"scaling {before} -> {replicas} workers "
            f"(as `kubectl scale lmtj/{self.name} --replicas={replicas}`)"
        )
        asked = time.monotonic()
        self.custom.patch_namespaced_custom_object_scale(
            GROUP, VERSION, self.namespace, PLURAL, self.name, {"spec": {"replicas": replicas}}
        )
        seen_before = len(self.steps_seen)
        highest_before = max(self.steps_seen, default=0)
        self.wait(f"world size {replicas}", lambda s: s.get("worldSize") == replicas, timeout=180)
        after = self.steps_seen[seen_before:] or [highest_before]
        redone = max(0, highest_before - min(after))
        self.say(
            f"training at world size {replicas} {time.monotonic() - asked:.1f}s after the "
            f"request, at step {after[-1]}; "
            + (f"{redone} step(s) redone" if redone else "no step was redone")
        )

    def run(self) -> dict[str, Any]:
        spec = self.job["spec"]
        steps = int(spec.get("training", {}).get("steps", 1000))
        self.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, self.job
        )
        self.say(f"created LMTrainingJob {self.name} with {spec.get('replicas', 1)} workers")
        self.wait("the first steps", lambda s: (s.get("step") or 0) >= 1, timeout=300)
        self.wait("a third of the steps", lambda s: (s.get("step") or 0) >= steps // 3, 600)
        self.scale(3)
        # Leave a good part of the run at world size 2 after the scale-down.
        target = max((self.status().get("step") or 0) + 5, (steps * 3) // 5)
        self.wait(f"step {target}", lambda s: (s.get("step") or 0) >= target, timeout=600)
        self.scale(2)
        final = self.wait("completion", lambda s: s.get("phase") == "Succeeded", timeout=900)
        self.say(f"Succeeded at step {final.get('step')}, final loss {final.get('loss'):.3f}")
        return final


class ServingDemo:
    """The example LMService: serve the model the demo trained, ask it, scale it."""

    def __init__(self, stack: LocalStack, service: dict[str, Any], demo: Demo) -> None:
        self.stack = stack
        self.service = service
        self.name = str(service["metadata"]["name"])
        self.namespace = str(service["metadata"].get("namespace") or "default")
        self.custom: Any = kubernetes.client.CustomObjectsApi(stack.api)
        self.core: Any = kubernetes.client.CoreV1Api(stack.api)
        self.say = demo.say
        self.last = ""

    def status(self) -> dict[str, Any]:
        obj = self.custom.get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, SERVICE.plural, self.name
        )
        return dict(obj.get("status") or {})

    def wait(
        self, what: str, done: Callable[[dict[str, Any]], bool], timeout: float
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            status = self.status()
            ready: dict[str, Any] = next(
                (c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {}
            )
            line = (
                f"{status.get('phase', 'Pending'):<8} replicas {status.get('replicas', 0)}"
                f"  ready {status.get('readyReplicas', 0)}  {ready.get('message', '')}"
            )
            if line != self.last:
                self.say(line)
                self.last = line
            if done(status):
                return status
            if status.get("phase") == "Failed":
                raise DemoError(f"the service failed: {ready.get('message')}")
            if time.monotonic() > deadline:
                raise DemoError(f"timed out after {timeout:g}s waiting for {what}")
            time.sleep(0.5)

    def complete(self, base: str, prompt: str) -> str:
        body = {"model": self.name, "prompt": prompt, "max_tokens": 24, "temperature": 0}
        request = urllib.request.Request(
            f"{base}/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.loads(response.read())
        return str(answer["choices"][0]["text"])

    def scale(self, replicas: int) -> None:
        if "autoscaling" in (self.service.get("spec") or {}):
            self._move_floor(replicas)
        else:
            self.say(f"scaling the servers to {replicas} (as `kubectl scale lms/{self.name} ...`)")
            self.custom.patch_namespaced_custom_object_scale(
                GROUP,
                VERSION,
                self.namespace,
                SERVICE.plural,
                self.name,
                {"spec": {"replicas": replicas}},
            )
        self.wait(
            f"{replicas} ready servers",
            lambda s: s.get("replicas") == replicas and s.get("readyReplicas") == replicas,
            timeout=300,
        )

    def _move_floor(self, replicas: int) -> None:
        """The autoscaler owns spec.replicas (a kubectl scale would be taken back at its
        next decision), so move its floor: up, with spec.replicas; down, and the
        autoscaler, seeing no load, scales down itself."""
        current = int(self.status().get("replicas") or 0)
        spec: dict[str, Any] = {"autoscaling": {"minReplicas": replicas}}
        if replicas > current:
            spec["replicas"] = replicas
            self.say(f"raising spec.autoscaling.minReplicas (and spec.replicas) to {replicas}")
        else:
            self.say(
                f"lowering spec.autoscaling.minReplicas to {replicas}: with no load, the "
                f"autoscaler scales the servers down to {replicas} itself"
            )
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, SERVICE.plural, self.name, {"spec": spec}
        )

    def run(self) -> None:
        self.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, SERVICE.plural, self.service
        )
        self.say(f"created LMService {self.name}: serving the trained model")
        status = self.wait("a ready server", lambda s: s.get("phase") == "Ready", timeout=300)
        model = status.get("model") or {}
        self.say(
            f"serving {model.get('checkpoint')} in {model.get('precision')} at "
            f"{status.get('endpoint')}"
        )
        svc = self.core.read_namespaced_service(self.name, self.namespace)
        base = f"http://{svc.spec.cluster_ip}:80/v1"  # devcluster has no DNS
        for prompt in PROMPTS:
            self.say(f"completion of {prompt!r}: {self.complete(base, prompt)!r}")
        self.scale(2)
        self.scale(1)
        self.say("served, scaled to 2 and back to 1")
        history = self.status().get("scalingHistory") or []
        for h in history[-3:]:
            self.say(f"  scaling: {h.get('from')} -> {h.get('to')} ({h.get('reason')})")


def failure_message(status: dict[str, Any]) -> str:
    for c in status.get("conditions") or []:
        if c.get("type") == "Failed" and c.get("status") == "True":
            return f"{c.get('reason')}: {c.get('message')}"
    return "no reason given"


def run_demo(examples: Path, state_dir: Path | None, out: Callable[[str], None]) -> int:
    from lmworker.corpus import entropy_rate_nats_per_byte, write_corpus

    job = yaml.safe_load((examples / "training-job.yaml").read_text())
    base = state_dir or Path(tempfile.mkdtemp(prefix="elasticlm-demo-"))
    out(f"state (logs, volumes, checkpoints): {base}")
    with local_stack(base / "devcluster", namespaces=["default"]) as stack:
        data = job["spec"]["data"]
        corpus = stack.claim_dir("default", data["claimName"]) / data["path"]
        summary = write_corpus(corpus, n_bytes=CORPUS_BYTES, seed=1)
        out(
            f"wrote a {summary['bytes']:,}-byte synthetic corpus to the claim "
            f"{data['claimName']}: unigram entropy {summary['unigram_entropy_nats_per_byte']:.2f}"
            f" nats/byte, true entropy rate {entropy_rate_nats_per_byte():.2f}"
        )
        demo = Demo(stack, job, out)
        try:
            final = demo.run()
        except DemoError as exc:
            out(f"error: {exc}")
            out(f"operator log: {stack.operator_log}; pod logs under {stack.state_dir}/pods")
            return 1
        ckpt = job["spec"].get("checkpoint")
        if ckpt:
            where = stack.claim_dir("default", ckpt["claimName"]) / ckpt["path"]
            out(f"checkpoints and the Hugging Face export: {where}")
        history = final.get("scalingHistory") or []
        for h in history:
            out(f"  scaling: {h.get('from')} -> {h.get('to')} ({h.get('reason')})")
        service = yaml.safe_load((examples / "service.yaml").read_text())
        try:
            ServingDemo(stack, service, demo).run()
        except DemoError as exc:
            out(f"error: {exc}")
            out(f"operator log: {stack.operator_log}; pod logs under {stack.state_dir}/pods")
            return 1
    return 0
