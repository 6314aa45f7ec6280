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
import json
import logging
import math
import os
import signal
import sys
import threading
import time
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from lmworker.config import (
    CONFIG_ENV,
    EXIT_PERMANENT,
    EXPECTED_REPLICAS_ENV,
    INDEX_ENV,
    METRICS_PORT,
    POD_IP_ENV,
    RDZV_ENV,
    SECRET_FILE_ENV,
    SPARE_ENV,
    TERMINATION_LOG_ENV,
    THREADS_ENV,
    WorkerConfig,
)
from lmworker.data import DataError
from lmworker.files import write_atomically
from lmworker.metrics import TrainMetrics
from lmworker.metrics import serve as serve_metrics
from lmworker.storeauth import AuthError, read_secret
from lmworker.synthetic import SYNTHETIC_SCALING_ENV, SyntheticScaling
from lmworker.synthetic import parse as parse_synthetic
from lmworker.trainer import (
    BACKEND_ENV,
    ConfigError,
    Trainer,
    choose_backend,
    collective_device,
    flatten_state,
    tensor_slots,
    unflatten_state,
)

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
        choice = trainer.precision
        metrics.precision.info(
            {"requested": choice.requested, "precision": choice.name, "reason": choice.reason}
        )

    def initial_validation(self) -> None:
        """Measure (rank 0, at step 0) and report the held-out loss of the starting weights."""
        loss = self.trainer.measure_initial_validation()
        if loss is not None:
            self.metrics.initial_validation_loss.set(loss)

    def validation(self, loss: float | None) -> None:
        if loss is None:
            return
        self.last_validation = loss
        self.metrics.validation_loss.set(loss)
        self.metrics.validation_step.set(self.trainer.step)
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
    def __init__(
        self,
        cfg: WorkerConfig,
        trainer: Trainer,
        metrics: TrainMetrics,
        synthetic: SyntheticScaling | None = None,
    ) -> None:
        from lmworker.elastic import Membership
        from lmworker.pod import local_identity

        self.cfg = cfg
        self.synthetic = synthetic
        self._slower_than_curve = False
        self.trainer = trainer
        self.metrics = metrics
        self.reporter = Reporter(trainer, metrics)
        host, _, port = os.environ[RDZV_ENV].rpartition(":")
        secret_file = os.environ.get(SECRET_FILE_ENV)
        local_rank, local_size, group = local_identity(os.environ)
        spare = os.environ.get(SPARE_ENV) == "1"
        self.membership = Membership(
            host,
            int(port),
            # A spare has no index until it is promoted.
            index=-1 if spare else int(os.environ.get(INDEX_ENV, "0")),
            pod=os.environ.get("POD_NAME", f"pid-{os.getpid()}"),
            expected=int(os.environ.get(EXPECTED_REPLICAS_ENV, "0")),
            secret_file=secret_file or None,
            local_rank=local_rank,
            local_size=local_size,
            group=group,
            spare=spare,
        )
        if spare:
            metrics.on_promote = self.promote
            metrics.standby.set()
            metrics.spare.set(1)
        self.leave_requested_at: float | None = None
        self.leave_timeout = float(os.environ.get(LEAVE_TIMEOUT_ENV, "20"))
        self.backend = choose_backend(trainer.device, os.environ.get(BACKEND_ENV))
        # The current round's process group; see _release_group.
        self._group: Any = None

    def promote(self, index: int, expected: int) -> bool:
        """The operator's order: this spare becomes the worker of `index`."""
        accepted = self.membership.promote(index, expected)
        if accepted:
            self.metrics.spare.set(0)
            self.metrics.standby.clear()
        return accepted

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
                failure = None
            except (RuntimeError, dist.DistError) as exc:
                # Only the text is kept: the traceback holds the round's DDP module,
                # which must be gone before the group is released (see _release_group).
                failure = str(exc).splitlines()[0][:300]
            if failure is not None:
                self.metrics.ready.clear()
                self.metrics.group_failures.inc()
                # Close our connections now: a peer still blocked on us then fails at
                # once instead of waiting out the process-group timeout.
                self._release_group()
                log.warning("round %d failed: %s", rnd.number, failure)
                self.membership.report_failure(rnd)
                barren = barren + 1 if self.trainer.step == started_at else 0
                if barren >= MAX_BARREN_ROUNDS:
                    raise RuntimeError(
                        f"{barren} rounds in a row failed before training a step; "
                        f"the last: {failure}"
                    )
                continue
            barren = 0
            if outcome is not None:
                return outcome

    def _form(self, rnd: Any) -> bool:
        t0 = time.monotonic()
        if not self.membership.gather_at(rnd, self.membership.leaving):
            return False
        self._release_group()
        dist.init_process_group(
            self.backend,
            store=self.membership.group_store(rnd),
            rank=rnd.rank,
            world_size=rnd.world_size,
            timeout=PG_TIMEOUT,
        )
        self._group = dist.group.WORLD
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

    def _release_group(self) -> None:
        """Destroy the round's process group, dropping the last reference to it here.

        A gloo group's destructor joins its worker threads, and a worker thread that is
        freeing a collective launched in backward() needs the GIL (torch keeps a Python
        context in that work's thread-local state). Freed from a DDP Reducer, the group
        is destroyed with the GIL held, and the process freezes for good: seen after a
        peer was killed mid-step. The Python reference held since _form is dropped
        last, once nothing else holds the group, and that destructor releases the GIL.
        """
        if dist.is_initialized():
            dist.destroy_process_group()
        gc.collect()  # a DDP module left in a reference cycle lets go of the group now
        self._group = None

    def _sync_state(self, rnd: Any) -> str:
        """Every rank ends with the same state: the most advanced one, or a restored one."""
        tr = self.trainer
        where = collective_device(tr.device)
        steps = [torch.zeros(1, dtype=torch.long, device=where) for _ in range(rnd.world_size)]
        dist.all_gather(steps, torch.tensor([tr.step], dtype=torch.long, device=where))
        values = [int(s.item()) for s in steps]
        best = max(values)
        how = ""
        if best < 0:
            source = 0
            how = tr.restore_or_init() if rnd.rank == 0 else "receiving the state from rank 0"
            # Without a checkpoint, step 0 is the same everywhere: each rank makes its own
            # rather than receive a pretrained model's whole state.
            restored = torch.tensor([1 if rnd.rank == 0 and tr.step > 0 else 0])
            if rnd.world_size > 1:
                dist.broadcast(restored, src=0)
            if not restored.item():
                if rnd.rank != 0:
                    how = tr.init_start()
                return how
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
        """The source's whole training state to every rank, tensor by tensor.

        The structure (names, shapes, dtypes, the few plain values) travels as one small
        pickled object; each tensor is then broadcast straight into a buffer of its own.
        Nothing is serialised in bulk: for a 135 M-parameter model with AdamW that would
        be 1.6 GB pickled with the GIL held for seconds (the heartbeat thread starves and
        the rendezvous declares the worker dead) and copied twice more on every rank.
        Tensors travel on the collective's device (nccl: the GPU) and land where the
        state keeps them: on the trainer's device, or on the CPU (the RNG state).
        """
        where = collective_device(self.trainer.device)
        flat: list[torch.Tensor] = []
        skeleton: list[Any] = [None]
        if rank == source:
            skeleton[0] = flatten_state(self.trainer.checkpoint_state_for_hand_over(), flat)
            flat = [t.to(where) for t in flat]
        dist.broadcast_object_list(skeleton, src=source, device=where)
        slots = tensor_slots(skeleton[0])
        if rank != source:
            flat = [torch.empty(slot.shape, dtype=slot.dtype, device=where) for slot in slots]
        for tensor in flat:
            dist.broadcast(tensor, src=source)
        if rank != source:
            home = [
                t.cpu() if slot.on_cpu else t.to(self.trainer.device)
                for t, slot in zip(flat, slots, strict=True)
            ]
            self.trainer.apply_hand_over(unflatten_state(skeleton[0], iter(home)))

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
        # A round formed from a checkpoint of the last step trains no step at all.
        loss = float("nan")
        if rnd.rank == 0:
            self.reporter.initial_validation()
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
                seconds = self._pace(time.monotonic() - t0, rnd.world_size)
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

    def _pace(self, seconds: float, world_size: int) -> float:
        """The step's duration to report: as measured, or (with a synthetic scaling
        curve, lmworker/synthetic.py) the curve's, after sleeping out the difference."""
        if self.synthetic is None:
            return seconds
        target = self.synthetic.step_seconds(self.trainer.tokens_per_step(), world_size)
        if seconds <= target:
            time.sleep(target - seconds)
            return target
        if not self._slower_than_curve:
            self._slower_than_curve = True
            log.warning(
                "a step took %.3fs, longer than the synthetic curve's %.3fs at world size %d: "
                "reporting measured durations while that lasts (lower t1)",
                seconds,
                target,
                world_size,
            )
        return seconds

    def _checkpoint(self, rnd: Any, local_sgd_averaged: bool) -> None:
        if not local_sgd_averaged:
            self.trainer.average_parameters(rnd.world_size)
        # Every rank measures its share of the held-out loss.
        validation = self.trainer.validation_loss(rank=rnd.rank, world_size=rnd.world_size)
        if rnd.rank == 0:
            self.reporter.validation(validation)
            self.trainer.save_checkpoint(
                {"round": rnd.number, "epoch": rnd.epoch, "world_size": rnd.world_size}
            )

    def _switch(self, rnd: Any, ddp_mode: bool) -> dict[str, Any] | None:
        """Leave this round at the agreed boundary; save first if everyone is leaving."""
        if not ddp_mode:
            self.trainer.average_parameters(rnd.world_size)
        stop = torch.tensor([0], device=collective_device(self.trainer.device))
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
        info: dict[str, Any] = {"completed": True, "step": tr.step}
        if math.isfinite(loss):
            info["loss"] = round(loss, 6)
        if rnd.rank == 0:
            validation = tr.validation_loss()
            self.reporter.validation(validation)
            info.update(tr.report_fields(validation))
            if validation is not None and tr.initial_validation_loss is not None:
                log.info(
                    "held-out loss %.4f before training, %.4f after (%+.4f)",
                    tr.initial_validation_loss,
                    validation,
                    validation - tr.initial_validation_loss,
                )
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
    backend = choose_backend(trainer.device, os.environ.get(BACKEND_ENV))
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
    if rank == 0:
        reporter.initial_validation()
    metrics.ready.set()
    loss = float("nan")
    while trainer.step < t.steps:
        t0 = time.monotonic()
        result = trainer.train_step(module, rank, world, ddp_mode, agree=lambda: 0.0)
        loss = result.global_loss()
        reporter.step(loss, time.monotonic() - t0, rank, world, rnd)
        if not ddp_mode and trainer.step % t.local_sgd_sync_steps == 0:
            trainer.average_parameters(world)
        if trainer.step % cfg.checkpoint_interval_steps == 0:
            if not ddp_mode:
                trainer.average_parameters(world)
            # The same held-out loss at the same steps as the elastic runtime.
            validation = trainer.validation_loss(rank=rank, world_size=world)
            if rank == 0:
                reporter.validation(validation)
                trainer.save_checkpoint({"round": rnd, "world_size": world})
    if rank == 0:
        trainer.save_checkpoint({"round": rnd, "final": True}, wait=True)
        trainer.export()
    dist.barrier()
    dist.destroy_process_group()
    return {"completed": True, "step": trainer.step, "loss": round(loss, 6)}


# --------------------------------------------------------------------------------------
# Entry point


def freeze_loaded_objects() -> None:
    """Take what is loaded by now (torch, the data, the model: about 280,000 objects
    that live as long as the process) out of the garbage collector's view. The
    collection after each round, which frees the old DDP module's reference cycles on
    the rescale's critical path, then scans only what the rounds made (130 ms before,
    under 1 ms after, with transformers loaded), and the collector's automatic full
    passes during training stop rescanning them."""
    gc.collect()
    gc.freeze()


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
    parser.add_argument(
        "--synthetic-scaling",
        metavar="t1=T1,alpha=ALPHA",
        default=os.environ.get(SYNTHETIC_SCALING_ENV),
        help="test and benchmark aid: pace steps so that the job's tokens/s follows "
        "n*T1/(1+ALPHA*(n-1)) at world size n (default: $" + SYNTHETIC_SCALING_ENV + ")",
    )
    args = parser.parse_args(argv)
    local = os.environ.get("LOCAL_RANK") if os.environ.get("LOCAL_WORLD_SIZE", "1") != "1" else None
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s " + (f"[local {local}] " if local else "") + "%(name)s %(message)s",
        stream=sys.stderr,
    )
    metrics = TrainMetrics()
    host = os.environ.get(POD_IP_ENV, "127.0.0.1")
    try:
        cfg = _load_config()
        if cfg.processes_per_pod > 1 and not args.torchrun and "LOCAL_RANK" not in os.environ:
            # The pod's main process: start and supervise its training processes.
            from lmworker.pod import supervise

            return supervise(cfg.processes_per_pod, argv)
        torch.manual_seed(cfg.training.seed)
        # The operator sets it from the pod's CPU request, so workers sharing a node's
        # cores do not oversubscribe them.
        threads = os.environ.get(THREADS_ENV)
        if threads:
            torch.set_num_threads(int(threads))
        device = torch.device("cpu")
        if torch.cuda.is_available():
            # torchrun, or a pod of several processes, starts one process per GPU and
            # says which is this one's.
            local_rank = int(os.environ.get("LOCAL_RANK", "0"))
            if local_rank >= torch.cuda.device_count():
                raise ConfigError(
                    f"local rank {local_rank} needs GPU {local_rank}, but the pod has "
                    f"{torch.cuda.device_count()}: request one GPU per process "
                    "(spec.worker.processesPerPod) in spec.worker.resources"
                )
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        choose_backend(device, os.environ.get(BACKEND_ENV))  # a bad value fails here
        from lmworker.pod import local_identity

        local_identity(os.environ)  # so does a bad LOCAL_RANK
        trainer = Trainer(cfg, device)
        freeze_loaded_objects()
        synthetic = parse_synthetic(args.synthetic_scaling) if args.synthetic_scaling else None
    except (ConfigError, DataError, ValueError, FileNotFoundError) as exc:
        log.error("%s", exc)
        write_termination_message({"completed": False, "permanent": True, "error": str(exc)})
        return EXIT_PERMANENT
    secret_file = os.environ.get(SECRET_FILE_ENV)
    try:
        # It authenticates a spare's promotion (lmworker.metrics).
        secret = read_secret(secret_file) if secret_file else None
    except AuthError as exc:
        log.error("%s", exc)
        write_termination_message({"completed": False, "permanent": True, "error": str(exc)})
        return EXIT_PERMANENT
    metrics_port = int(os.environ.get("ELASTICLM_METRICS_PORT", METRICS_PORT))
    serve_metrics(metrics, host, metrics_port, secret)
    # Armed once the runtime returns: from there on nothing may block.
    watchdog = ExitWatchdog(EXIT_WATCHDOG_SECONDS)
    if args.torchrun:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        info = run_torchrun(cfg, trainer, metrics)
        watchdog.arm()
    else:
        try:
            worker = ElasticWorker(cfg, trainer, metrics, synthetic)
            signal.signal(signal.SIGTERM, lambda *_: worker.request_leave())
            info = worker.run()
            watchdog.arm()
        except AuthError as exc:
            # A wrong or missing secret stays wrong: restarting the pod cannot help.
            log.error("%s", exc)
            write_termination_message({"completed": False, "permanent": True, "error": str(exc)})
            return EXIT_PERMANENT
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
