"""`python -m lmworker.train`: one data-parallel worker of an LMTrainingJob.

Two runtimes share the same trainer:

- elastic (the default, what the operator runs): the worker stays alive across
  membership changes. At a step boundary every rank learns (one tiny all-reduce) that
  the rendezvous published a new round; survivors re-form the gloo/nccl group in place,
  a newcomer receives the full training state by broadcast from a survivor, and
  training continues. Nothing is reloaded from disk unless no worker holds state.
- torchrun (`--torchrun`): plain `torchrun` elastic semantics for comparison and for
  users who want it: ranks from the environment, restart = reload the newest checkpoint.

The configuration comes from `ELASTICLM_CONFIG` (see `lmworker.config`).
"""

from __future__ import annotations

import argparse
import faulthandler
import gc
import io
import json
import logging
import math
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.nn import functional
from torch.nn.parallel import DistributedDataParallel

from lmworker import checkpoint as ckpt
from lmworker.config import (
    CONFIG_ENV,
    EXIT_PERMANENT,
    EXPECTED_REPLICAS_ENV,
    INDEX_ENV,
    METRICS_PORT,
    POD_IP_ENV,
    RDZV_ENV,
    TERMINATION_LOG_ENV,
    THREADS_ENV,
    ModelConfig,
    WorkerConfig,
)
from lmworker.data import DataError, GlobalSampler, TokenSequences, plan_micro_batches, read_text
from lmworker.files import write_atomically
from lmworker.metrics import TrainMetrics
from lmworker.metrics import serve as serve_metrics
from lmworker.model import LlamaModel, init_weights
from lmworker.precision import PrecisionError, resolve_precision
from lmworker.tokenizer import Tokenizer, build_tokenizer, load_tokenizer

log = logging.getLogger("lmworker.train")

# Rank 0 appends one JSON line per step here (benchmarks read it).
STEP_LOG_ENV = "ELASTICLM_STEP_LOG"
# After SIGTERM, a worker whose group has not let it go by then saves (rank 0) and exits.
LEAVE_TIMEOUT_ENV = "ELASTICLM_LEAVE_TIMEOUT"
# Consecutive rounds that fail before a single step completes: then the error is ours.
MAX_BARREN_ROUNDS = 5
EXIT_WATCHDOG_SECONDS = 15
# The exit code of a worker whose exit watchdog fired before its report was written.
EXIT_WATCHDOG = 70
# The model's only buffer (RoPE frequencies) is derived from the config, so DDP must
# not broadcast it before every forward; torch 2.13 warns that the switch for that is
# deprecated, with no replacement yet.
warnings.filterwarnings("ignore", message=".*broadcast_buffers.*", category=FutureWarning)
PG_TIMEOUT = timedelta(seconds=60)


class ConfigError(ValueError):
    """The job's configuration cannot work; restarting will not help."""


def hf_model_config(directory: str) -> ModelConfig:
    from lmworker.hf_export import model_config_from_hf

    path = Path(directory) / "config.json"
    if not path.is_file():
        raise ConfigError(f"{directory} is not a Hugging Face model directory: no config.json")
    return model_config_from_hf(json.loads(path.read_text()))


def lr_at(step: int, peak: float, warmup: int, total: int) -> float:
    """Linear warmup, then cosine decay to 10% of the peak at `total`."""
    if warmup > 0 and step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))


@dataclass
class StepResult:
    loss_sum: float  # sum of this rank's micro-batch mean losses
    micro_batches: int
    # With `agree`: [loss sum, micro-batches, newer-round flag] summed over the ranks.
    agreed: torch.Tensor | None = None

    def global_loss(self) -> float:
        if self.agreed is None:
            return self.loss_sum / self.micro_batches
        return float(self.agreed[0] / self.agreed[1])

    def round_changed(self) -> bool:
        return self.agreed is not None and bool(self.agreed[2] > 0)


class Trainer:
    """Model, optimizer and data of one worker; knows nothing about membership."""

    def __init__(self, cfg: WorkerConfig, device: torch.device) -> None:
        self.cfg = cfg
        self.device = device
        t = cfg.training
        # A Hugging Face starting point brings its own architecture (the operator cannot
        # read it) and, when it has one, its tokenizer.
        self.model_config = hf_model_config(cfg.init_from_hf) if cfg.init_from_hf else cfg.model
        text = read_text(cfg.data_path)
        self.tokenizer = self._tokenizer(text)
        if self.tokenizer.vocab_size > self.model_config.vocab_size:
            raise ConfigError(
                f"the tokenizer has {self.tokenizer.vocab_size} entries but the model's "
                f"vocabulary is {self.model_config.vocab_size}"
            )
        tokens = self.tokenizer.encode_corpus(text)
        sequences = TokenSequences(tokens, self.model_config.context_length)
        self.train_data, self.validation_data = sequences.split(cfg.validation_fraction)
        self.sampler = GlobalSampler(self.train_data.count, t.seed)
        self.model = LlamaModel(self.model_config).to(device)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(),
            lr=t.learning_rate,
            betas=(0.9, 0.95),
            weight_decay=t.weight_decay,
            fused=False,
        )
        try:
            precision = resolve_precision(t.precision, device)
        except PrecisionError as exc:
            raise ConfigError(str(exc)) from exc
        log.info("Precision %s: %s", precision.name, precision.reason)
        self.autocast_dtype = None if precision.name == "fp32" else precision.dtype
        self.scaler = torch.amp.GradScaler(device.type) if precision.name == "fp16" else None
        self.step = -1  # no state yet: fresh, restored or received decides
        self.checkpointer = (
            ckpt.Checkpointer(cfg.checkpoint_dir, cfg.checkpoint_keep, cfg.checkpoint_async)
            if cfg.checkpoint_dir
            else None
        )

    def _tokenizer(self, text: str) -> Tokenizer:
        cfg = self.cfg
        if cfg.tokenizer_path:
            return load_tokenizer(cfg.tokenizer_path)
        if cfg.init_from_hf and (Path(cfg.init_from_hf) / "tokenizer.json").is_file():
            return load_tokenizer(cfg.init_from_hf)
        shared = str(Path(cfg.checkpoint_dir) / "tokenizer") if cfg.checkpoint_dir else None
        tok = build_tokenizer(cfg.tokenizer, [text], cfg.bpe_vocab_size, shared)
        # Several workers may train one at once: everyone uses the copy that was saved.
        return load_tokenizer(shared) if shared else tok

    # -- state ----------------------------------------------------------------------

    def init_fresh(self) -> None:
        init_weights(self.model, self.cfg.training.seed)
        self.step = 0

    def restore_or_init(self) -> str:
        """Load the newest complete checkpoint, or start from step 0."""
        if self.checkpointer is not None:
            latest = ckpt.latest_checkpoint(self.checkpointer.root)
            if latest is not None:
                self.load_checkpoint(latest.path)
                return f"restored checkpoint {latest.path.name}"
        if self.cfg.init_from_hf:
            from lmworker.hf_export import load_hf_llama

            loaded, _ = load_hf_llama(self.cfg.init_from_hf)
            self.model.load_state_dict(loaded.state_dict())
            self.step = 0
            return f"initialised from {self.cfg.init_from_hf}"
        self.init_fresh()
        return "initialised fresh weights"

    def checkpoint_state(self) -> dict[str, Any]:
        """The whole training state; optimizer state keyed by parameter name (DCP's form,
        which loads at any world size). Checkpoints and the hand-over both use it."""
        model_sd, optim_sd = get_state_dict(self.model, self.optimizer)
        return {
            "model": model_sd,
            "optimizer": optim_sd,
            "scaler": self.scaler.state_dict() if self.scaler else {},
            "step": self.step,
            "rng": torch.get_rng_state(),
        }

    def apply_state(self, state: dict[str, Any]) -> None:
        set_state_dict(
            self.model,
            self.optimizer,
            model_state_dict=state["model"],
            optim_state_dict=state["optimizer"],
        )
        if self.scaler and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"])
        self.step = int(state["step"])

    def load_checkpoint(self, path: Path) -> None:
        self.apply_state(ckpt.load(path, self.checkpoint_state()))

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        torch.save(self.checkpoint_state(), buf)
        return buf.getvalue()

    def from_bytes(self, data: bytes) -> None:
        self.apply_state(torch.load(io.BytesIO(data), weights_only=True))

    # -- one optimizer step -----------------------------------------------------------

    def train_step(
        self,
        module: nn.Module,
        rank: int,
        world_size: int,
        ddp: bool,
        agree: Callable[[], float] | None = None,
    ) -> StepResult:
        """Run this rank's share of step `self.step`'s global batch and update.

        With `agree`, the ranks also sum [loss, micro-batches, agree()] in one small
        all-reduce that overlaps the clipping and the optimizer update.
        """
        t = self.cfg.training
        # A round that failed mid-step leaves partial gradients behind.
        self.optimizer.zero_grad(set_to_none=True)
        plan = plan_micro_batches(t.global_batch_size, t.micro_batch_size, rank, world_size)
        lr = lr_at(self.step, t.learning_rate, t.warmup_steps, t.steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        # DDP averages gradients over ranks; scaling each micro-batch by W / per_step
        # makes the result the mean over the whole global batch, even when ranks run
        # different numbers of micro-batches. LocalSGD averages locally.
        scale = world_size / plan.per_step if ddp else 1.0 / len(plan.micro_batches)
        loss_sum = 0.0
        last = len(plan.micro_batches) - 1
        for i, which in enumerate(plan.micro_batches):
            idx = self.sampler.micro_batch(
                self.step, t.global_batch_size, t.micro_batch_size, which
            )
            inputs, targets = self.train_data.batch(idx)
            inputs, targets = inputs.to(self.device), targets.to(self.device)
            sync = ddp and i < last and isinstance(module, DistributedDataParallel)
            with module.no_sync() if sync else nullcontext():  # type: ignore[operator]
                with self._autocast():
                    logits = module(inputs)
                loss = functional.cross_entropy(
                    logits.view(-1, logits.size(-1)), targets.reshape(-1)
                )
                scaled = loss * scale
                if self.scaler is not None:
                    self.scaler.scale(scaled).backward()  # type: ignore[no-untyped-call]
                else:
                    scaled.backward()  # type: ignore[no-untyped-call]
            loss_sum += float(loss.detach())
        agreed, work = None, None
        if agree is not None:
            agreed = torch.tensor([loss_sum, float(len(plan.micro_batches)), agree()])
            work = dist.all_reduce(agreed, async_op=True)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if t.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if work is not None:
            work.wait()
        self.step += 1
        return StepResult(loss_sum, len(plan.micro_batches), agreed)

    def _autocast(self) -> Any:
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    @torch.no_grad()
    def validation_loss(self, max_sequences: int = 64) -> float | None:
        """Mean loss on the held-out text (its first sequences, always the same ones)."""
        data = self.validation_data
        if data is None:
            return None
        n = min(max_sequences, data.count)
        batch = self.cfg.training.micro_batch_size
        self.model.eval()
        total = 0.0
        try:
            for first in range(0, n, batch):
                idx = torch.arange(first, min(first + batch, n))
                inputs, targets = data.batch(idx)
                with self._autocast():
                    logits = self.model(inputs.to(self.device))
                loss = functional.cross_entropy(
                    logits.view(-1, logits.size(-1)), targets.to(self.device).reshape(-1)
                )
                total += float(loss) * len(idx)
        finally:
            self.model.train()
        return total / n

    def tokens_per_step(self) -> int:
        t = self.cfg.training
        return t.global_batch_size * self.model_config.context_length

    @torch.no_grad()
    def average_parameters(self, world_size: int) -> None:
        """LocalSGD's model average (also before a group changes, so nothing is lost)."""
        flat = torch.nn.utils.parameters_to_vector(self.model.parameters())
        dist.all_reduce(flat)
        flat /= world_size
        torch.nn.utils.vector_to_parameters(flat, self.model.parameters())

    def save_checkpoint(self, meta: dict[str, Any], wait: bool = False) -> None:
        if self.checkpointer is None:
            return
        # The architecture travels with the weights: a server (lmworker.serve) loads a
        # checkpoint without the job's spec.
        meta = {**meta, "model": asdict(self.model_config)}
        self.checkpointer.save(self.step, self.checkpoint_state(), meta)
        if wait:
            self.checkpointer.wait()

    def export(self) -> str | None:
        """The trained model in the Hugging Face Llama layout, next to the checkpoints."""
        if not self.cfg.checkpoint_dir:
            return None
        from lmworker.hf_export import export_hf_llama

        out = str(Path(self.cfg.checkpoint_dir) / "export")
        export_hf_llama(self.model, self.model_config, self.tokenizer, out)
        return out


# --------------------------------------------------------------------------------------
# Reporting


class Reporter:
    """Metrics, the progress file, the step log and the termination message."""

    def __init__(self, trainer: Trainer, metrics: TrainMetrics) -> None:
        self.trainer = trainer
        self.metrics = metrics
        self.step_log = os.environ.get(STEP_LOG_ENV)
        self._last_progress = 0.0
        self.last_validation: float | None = None
        metrics.target_steps.set(trainer.cfg.training.steps)

    def validation(self, loss: float | None) -> None:
        if loss is None:
            return
        self.last_validation = loss
        self.metrics.validation_loss.set(loss)
        log.info("step %d validation loss %.4f", self.trainer.step, loss)

    def step(self, loss: float, seconds: float, rank: int, world_size: int, rnd: int) -> None:
        m = self.metrics
        tr = self.trainer
        tps = tr.tokens_per_step() / seconds if seconds > 0 else 0.0
        m.step.set(tr.step)
        m.loss.set(loss)
        m.step_seconds.set(seconds)
        m.tokens_per_second.set(tps)
        m.world_size.set(world_size)
        m.rank.set(rank)
        m.round.set(rnd)
        if tr.checkpointer is not None and tr.checkpointer.last is not None:
            m.last_checkpoint_step.set(tr.checkpointer.last.step)
            m.last_checkpoint_time.set(tr.checkpointer.last.time)
            m.checkpoint_seconds.set(tr.checkpointer.last_seconds)
        if rank != 0:
            return
        record: dict[str, Any] = {
            "t": time.time(),
            "step": tr.step,
            "loss": loss,
            "world_size": world_size,
            "round": rnd,
            "tokens_per_second": tps,
        }
        if self.step_log:
            with open(self.step_log, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        now = time.monotonic()
        if tr.cfg.checkpoint_dir and (
            now - self._last_progress > 1.0 or tr.step == tr.cfg.training.steps
        ):
            self._last_progress = now
            last = tr.checkpointer.last if tr.checkpointer else None
            record["target_steps"] = tr.cfg.training.steps
            record["validation_loss"] = self.last_validation
            record["last_checkpoint_step"] = last.step if last else None
            write_atomically(Path(tr.cfg.checkpoint_dir) / "progress.json", json.dumps(record))
        if tr.step % 10 == 0 or tr.step == tr.cfg.training.steps:
            log.info(
                "step %d/%d loss %.4f %.0f tokens/s world size %d",
                tr.step,
                tr.cfg.training.steps,
                loss,
                tps,
                world_size,
            )


def write_termination_message(info: dict[str, Any]) -> bool:
    """Kubernetes shows it in the pod's status; the operator reads completion from it.

    False when it could not be written (True also when there is nowhere to write it)."""
    path = os.environ.get(TERMINATION_LOG_ENV)
    if not path:
        return True
    try:
        Path(path).write_text(json.dumps(info)[:4000])
    except OSError as exc:
        log.warning("could not write the termination message to %s: %s", path, exc)
        return False
    return True


class ExitWatchdog:
    """The last resort against a worker that finished but does not exit.

    A worker that does not exit holds its pod, and the job, open. Armed once the runtime
    has returned: after `seconds`, faulthandler (which runs without the GIL, so even a C++
    call holding it cannot stop it) prints every thread's stack to stderr, the pod's log;
    a second later a timer thread (if the GIL is free; else the kubelet's SIGKILL after
    the grace period) says so in the termination message and exits. A worker whose
    report was already written exits 0 with the report kept (the operator reads the
    report, not the exit code); one whose report was not exits EXIT_WATCHDOG, a failure.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._report: dict[str, Any] | None = None
        self._timer = threading.Timer(seconds + 1, self._fire)
        self._timer.daemon = True
        self._timer.name = "exit-watchdog"

    def arm(self) -> None:
        faulthandler.dump_traceback_later(self.seconds)
        self._timer.start()

    def reported(self, info: dict[str, Any]) -> None:
        """The termination message now holds `info`."""
        self._report = info

    def note(self) -> str:
        return (
            f"exit watchdog: the worker had not exited {self.seconds:g} s after its runtime "
            "returned; the stacks of all its threads are in its log"
        )

    def _fire(self) -> None:
        note = self.note()
        log.error("%s", note)
        if self._report is not None:
            write_termination_message({**self._report, "exitWatchdog": note})
            code = 0
        else:
            write_termination_message({"completed": False, "permanent": False, "error": note})
            code = EXIT_WATCHDOG
        sys.stderr.flush()
        os._exit(code)


# --------------------------------------------------------------------------------------
# Elastic runtime


class ElasticWorker:
    def __init__(self, cfg: WorkerConfig, trainer: Trainer, metrics: TrainMetrics) -> None:
        from lmworker.elastic import Membership

        self.cfg = cfg
        self.trainer = trainer
        self.metrics = metrics
        self.reporter = Reporter(trainer, metrics)
        host, _, port = os.environ[RDZV_ENV].rpartition(":")
        self.membership = Membership(
            host,
            int(port),
            index=int(os.environ.get(INDEX_ENV, "0")),
            pod=os.environ.get("POD_NAME", f"pid-{os.getpid()}"),
            expected=int(os.environ.get(EXPECTED_REPLICAS_ENV, "0")),
        )
        self.leave_requested_at: float | None = None
        self.leave_timeout = float(os.environ.get(LEAVE_TIMEOUT_ENV, "20"))
        self.backend = "nccl" if trainer.device.type == "cuda" else "gloo"

    def request_leave(self) -> None:
        if self.leave_requested_at is None:
            self.leave_requested_at = time.monotonic()
            self.membership.leaving.set()

    def run(self) -> dict[str, Any]:
        """Train until the job's steps are done (or this worker is let go)."""
        from lmworker.elastic import Round

        rnd: Round | None = None
        barren = 0
        while True:
            rnd = self.membership.next_round(rnd, self.membership.leaving)
            if rnd is None:
                done = self.membership.done_info()
                if done is not None:
                    return {**done, "left": False}
                return self._leave("asked to leave while waiting for a round")
            if rnd.rank < 0:
                return self._leave(f"round {rnd.number} continues without this worker")
            if rnd.stop:
                return self._leave(f"round {rnd.number}: {rnd.reason}")
            started_at = self.trainer.step
            try:
                outcome = self._train_round(rnd)
            except (RuntimeError, dist.DistError) as exc:
                self.metrics.ready.clear()
                self.metrics.group_failures.inc()
                # Close our connections now: a peer still blocked on us then fails at
                # once instead of waiting out the process-group timeout.
                if dist.is_initialized():
                    dist.destroy_process_group()
                log.warning("round %d failed: %s", rnd.number, str(exc).splitlines()[0][:300])
                self.membership.report_failure(rnd)
                barren = barren + 1 if self.trainer.step == started_at else 0
                if barren >= MAX_BARREN_ROUNDS:
                    raise
                continue
            barren = 0
            if outcome is not None:
                return outcome

    def _form(self, rnd: Any) -> bool:
        t0 = time.monotonic()
        if not self.membership.gather_at(rnd, self.membership.leaving):
            return False
        if dist.is_initialized():
            dist.destroy_process_group()
        dist.init_process_group(
            self.backend,
            store=self.membership.group_store(rnd),
            rank=rnd.rank,
            world_size=rnd.world_size,
            timeout=PG_TIMEOUT,
        )
        self.membership.formed(rnd)
        how = self._sync_state(rnd)
        self.metrics.reform_seconds.set(time.monotonic() - t0)
        self.metrics.rounds.inc()
        log.info(
            "round %d formed: rank %d of %d (%s) in %.2fs; %s",
            rnd.number,
            rnd.rank,
            rnd.world_size,
            rnd.reason,
            time.monotonic() - t0,
            how,
        )
        return True

    def _sync_state(self, rnd: Any) -> str:
        """Every rank ends with the same state: the most advanced one, or a restored one."""
        tr = self.trainer
        steps = [torch.zeros(1, dtype=torch.long) for _ in range(rnd.world_size)]
        dist.all_gather(steps, torch.tensor([tr.step], dtype=torch.long))
        values = [int(s.item()) for s in steps]
        best = max(values)
        how = ""
        if best < 0:
            source = 0
            how = tr.restore_or_init() if rnd.rank == 0 else "receiving the state from rank 0"
        else:
            source = values.index(best)
            local_sgd = self.cfg.training.sync == "LocalSGD"
            if min(values) == best and not local_sgd:
                return f"every rank holds step {best}"
            how = f"state of step {best} from rank {source}"
        if rnd.world_size > 1:
            self._broadcast_state(source, rnd.rank)
        return how

    def _broadcast_state(self, source: int, rank: int) -> None:
        data = self.trainer.to_bytes() if rank == source else b""
        size = torch.tensor([len(data)], dtype=torch.long)
        dist.broadcast(size, src=source)
        buf = (
            torch.frombuffer(bytearray(data), dtype=torch.uint8)
            if rank == source
            else torch.empty(int(size.item()), dtype=torch.uint8)
        )
        dist.broadcast(buf, src=source)
        if rank != source:
            self.trainer.from_bytes(buf.numpy().tobytes())

    def _train_round(self, rnd: Any) -> dict[str, Any] | None:
        """Train in this round until it changes (None) or the job is done."""
        if not self._form(rnd):
            return None
        tr = self.trainer
        t = self.cfg.training
        ddp_mode = t.sync == "DDP"
        module: nn.Module = tr.model
        if ddp_mode and rnd.world_size > 1:
            module = DistributedDataParallel(tr.model, broadcast_buffers=False)
        self.metrics.ready.set()
        try:
            while tr.step < t.steps:
                t0 = time.monotonic()
                # One small all-reduce per step: the global loss, and whether any rank
                # saw a newer round (then everyone switches at this same boundary).
                result = tr.train_step(
                    module,
                    rnd.rank,
                    rnd.world_size,
                    ddp_mode,
                    agree=lambda: 1.0 if self.membership.changed_since(rnd) else 0.0,
                )
                loss = result.global_loss()
                seconds = time.monotonic() - t0
                self.reporter.step(loss, seconds, rnd.rank, rnd.world_size, rnd.number)
                if not ddp_mode and tr.step % t.local_sgd_sync_steps == 0:
                    tr.average_parameters(rnd.world_size)
                if tr.step % self.cfg.checkpoint_interval_steps == 0 and tr.step < t.steps:
                    self._checkpoint(rnd, local_sgd_averaged=ddp_mode)
                if tr.step >= t.steps:
                    break
                if result.round_changed():
                    return self._switch(rnd, ddp_mode)
                if self._leave_overdue():
                    return self._leave_alone(rnd)
            return self._finish(rnd, ddp_mode, loss)
        finally:
            self.metrics.ready.clear()
            del module
            gc.collect()

    def _checkpoint(self, rnd: Any, local_sgd_averaged: bool) -> None:
        if not local_sgd_averaged:
            self.trainer.average_parameters(rnd.world_size)
        if rnd.rank == 0:
            self.reporter.validation(self.trainer.validation_loss())
            self.trainer.save_checkpoint(
                {"round": rnd.number, "epoch": rnd.epoch, "world_size": rnd.world_size}
            )

    def _switch(self, rnd: Any, ddp_mode: bool) -> dict[str, Any] | None:
        """Leave this round at the agreed boundary; save first if everyone is leaving."""
        if not ddp_mode:
            self.trainer.average_parameters(rnd.world_size)
        stop = torch.tensor([0])
        if rnd.rank == 0:
            latest = self.membership.peek_latest()
            stop[0] = 1 if latest is not None and latest.stop else 0
        dist.broadcast(stop, src=0)
        if stop.item():
            if rnd.rank == 0:
                self.trainer.save_checkpoint(
                    {"round": rnd.number, "epoch": rnd.epoch, "reason": "stop"}, wait=True
                )
            dist.barrier()
            return self._leave("every worker is leaving; the state is checkpointed")
        return None

    def _leave_overdue(self) -> bool:
        return (
            self.leave_requested_at is not None
            and time.monotonic() - self.leave_requested_at > self.leave_timeout
        )

    def _leave_alone(self, rnd: Any) -> dict[str, Any]:
        """The rendezvous did not let us go in time (e.g. it is gone): save and exit."""
        if rnd.rank == 0:
            self.trainer.save_checkpoint(
                {"round": rnd.number, "epoch": rnd.epoch, "reason": "leave timeout"}, wait=True
            )
        return self._leave(f"no new round within {self.leave_timeout:g}s of SIGTERM")

    def _finish(self, rnd: Any, ddp_mode: bool, loss: float) -> dict[str, Any]:
        tr = self.trainer
        if not ddp_mode:
            tr.average_parameters(rnd.world_size)
        info: dict[str, Any] = {"completed": True, "step": tr.step, "loss": round(loss, 6)}
        if rnd.rank == 0:
            validation = tr.validation_loss()
            self.reporter.validation(validation)
            if validation is not None:
                info["validationLoss"] = round(validation, 6)
            tr.save_checkpoint({"round": rnd.number, "epoch": rnd.epoch, "final": True}, wait=True)
            exported = tr.export()
            if exported:
                info["export"] = exported
            self.membership.mark_done(info)
        dist.barrier()
        log.info("training complete at step %d, loss %.4f", tr.step, loss)
        return info

    def _leave(self, why: str) -> dict[str, Any]:
        if self.trainer.checkpointer is not None:
            self.trainer.checkpointer.wait()
        log.info("leaving: %s", why)
        return {"completed": False, "left": True, "step": self.trainer.step, "reason": why}


# --------------------------------------------------------------------------------------
# torchrun runtime


def run_torchrun(cfg: WorkerConfig, trainer: Trainer, metrics: TrainMetrics) -> dict[str, Any]:
    """Plain torchrun semantics: every (re)start reloads the newest checkpoint."""
    backend = "nccl" if trainer.device.type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=PG_TIMEOUT)
    rank, world = dist.get_rank(), dist.get_world_size()
    how = trainer.restore_or_init()
    log.info("rank %d of %d: %s", rank, world, how)
    reporter = Reporter(trainer, metrics)
    t = cfg.training
    ddp_mode = t.sync == "DDP"
    module: nn.Module = (
        DistributedDataParallel(trainer.model, broadcast_buffers=False)
        if world > 1 and ddp_mode
        else trainer.model
    )
    rnd = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    metrics.ready.set()
    loss = float("nan")
    while trainer.step < t.steps:
        t0 = time.monotonic()
        result = trainer.train_step(module, rank, world, ddp_mode, agree=lambda: 0.0)
        loss = result.global_loss()
        reporter.step(loss, time.monotonic() - t0, rank, world, rnd)
        if not ddp_mode and trainer.step % t.local_sgd_sync_steps == 0:
            trainer.average_parameters(world)
        if trainer.step % cfg.checkpoint_interval_steps == 0 and rank == 0:
            trainer.save_checkpoint({"round": rnd, "world_size": world})
    if rank == 0:
        trainer.save_checkpoint({"round": rnd, "final": True}, wait=True)
        trainer.export()
    dist.barrier()
    dist.destroy_process_group()
    return {"completed": True, "step": trainer.step, "loss": round(loss, 6)}


# --------------------------------------------------------------------------------------
# Entry point


def _load_config() -> WorkerConfig:
    raw = os.environ.get(CONFIG_ENV)
    if not raw:
        raise ConfigError(f"{CONFIG_ENV} is not set: the operator passes the job's settings there")
    try:
        return WorkerConfig.from_json(raw)
    except (ValueError, TypeError, KeyError) as exc:
        raise ConfigError(f"{CONFIG_ENV} is not a valid worker configuration: {exc}") from exc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lmworker.train", description=__doc__)
    parser.add_argument(
        "--torchrun", action="store_true", help="run under torchrun (ranks from the environment)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr
    )
    metrics = TrainMetrics()
    host = os.environ.get(POD_IP_ENV, "127.0.0.1")
    try:
        cfg = _load_config()
        torch.manual_seed(cfg.training.seed)
        # The operator sets it from the pod's CPU request, so workers sharing a node's
        # cores do not oversubscribe them.
        threads = os.environ.get(THREADS_ENV)
        if threads:
            torch.set_num_threads(int(threads))
        device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
        trainer = Trainer(cfg, device)
    except (ConfigError, DataError, ValueError, FileNotFoundError) as exc:
        log.error("%s", exc)
        write_termination_message({"completed": False, "permanent": True, "error": str(exc)})
        return EXIT_PERMANENT
    serve_metrics(metrics, host, int(os.environ.get("ELASTICLM_METRICS_PORT", METRICS_PORT)))
    # Armed once the runtime returns: from there on nothing may block.
    watchdog = ExitWatchdog(EXIT_WATCHDOG_SECONDS)
    if args.torchrun:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        info = run_torchrun(cfg, trainer, metrics)
        watchdog.arm()
    else:
        worker = ElasticWorker(cfg, trainer, metrics)
        signal.signal(signal.SIGTERM, lambda *_: worker.request_leave())
        info = worker.run()
        watchdog.arm()
        worker.membership.close()
    if write_termination_message(info):
        watchdog.reported(info)
    log.info("exiting: %s", json.dumps(info))
    return 0


if __name__ == "__main__":
    threading.current_thread().name = "main"
    code = main()
    # Everything that matters is on disk and in the termination message. Skip the
    # interpreter's teardown: destroying process groups and stores whose peers are gone
    # can block.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
