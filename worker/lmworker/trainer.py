"""The trainer of one data-parallel worker: model, optimizer, data and the step.

It knows nothing about membership: `lmworker.train`'s runtimes (elastic and torchrun)
drive it, form the process groups and hand its state over (`flatten_state`/`unflatten_state`:
the state as a small skeleton plus its tensors, broadcast one by one).
"""

from __future__ import annotations

import io
import json
import logging
import math
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass
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
    ModelConfig,
    WorkerConfig,
)
from lmworker.data import GlobalSampler, TokenSequences, plan_micro_batches, read_text
from lmworker.model import LlamaModel, init_weights
from lmworker.precision import PrecisionError, resolve_precision
from lmworker.tokenizer import Tokenizer, build_tokenizer, load_tokenizer

log = logging.getLogger("lmworker.train")

# gloo or nccl; by default nccl on a GPU and gloo on a CPU. gloo also runs on GPUs, e.g.
# for several processes that share one GPU, which nccl refuses.
BACKEND_ENV = "ELASTICLM_DIST_BACKEND"


def choose_backend(device: torch.device, requested: str | None) -> str:
    """The process-group backend for this device, or a clear error for a bad request."""
    if not requested:
        return "nccl" if device.type == "cuda" else "gloo"
    if requested not in ("gloo", "nccl"):
        raise ConfigError(f"{BACKEND_ENV}={requested!r}: use gloo or nccl")
    if requested == "nccl" and device.type != "cuda":
        raise ConfigError(f"{BACKEND_ENV}=nccl needs a GPU; this worker has none: use gloo")
    return requested


def collective_device(device: torch.device) -> torch.device:
    """Where the runtime's small control tensors live: nccl only reduces GPU tensors."""
    return device if dist.get_backend() == "nccl" else torch.device("cpu")


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
        self.sequence_length = t.sequence_length or self.model_config.context_length
        if self.sequence_length > self.model_config.context_length:
            raise ConfigError(
                f"spec.training.sequenceLength ({self.sequence_length}) exceeds the model's "
                f"context length ({self.model_config.context_length}): lower it"
            )
        sequences = TokenSequences(tokens, self.sequence_length)
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
            self.precision = resolve_precision(t.precision, device, training=True)
        except PrecisionError as exc:
            raise ConfigError(f"spec.training.precision: {exc}") from exc
        log.info("Precision %s: %s", self.precision.name, self.precision.reason)
        self.autocast_dtype = None if self.precision.name == "fp32" else self.precision.dtype
        self.scaler = torch.amp.GradScaler(device.type) if self.precision.grad_scaler else None
        # Held-out loss of the starting weights (measured once, before the first step;
        # carried through checkpoints and hand-overs), to compare the trained model with.
        self.initial_validation_loss: float | None = None
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
        if self._tokenizer_from_hf():
            assert cfg.init_from_hf is not None
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
        return self.init_start()

    def init_start(self) -> str:
        """Step 0's state, a pure function of the configuration (so every rank can make
        its own): the Hugging Face model's weights, or fresh ones from the seed."""
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
        initial = ckpt.read_meta(path).get("initial_validation_loss")
        if isinstance(initial, int | float):
            self.initial_validation_loss = float(initial)

    def checkpoint_state_for_hand_over(self) -> dict[str, Any]:
        """`checkpoint_state` plus what only a running job carries."""
        state = self.checkpoint_state()
        state["initial_validation_loss"] = self.initial_validation_loss
        return state

    def apply_hand_over(self, state: dict[str, Any]) -> None:
        initial = state.pop("initial_validation_loss", None)
        self.apply_state(state)
        if initial is not None:
            self.initial_validation_loss = float(initial)

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        torch.save(self.checkpoint_state_for_hand_over(), buf)
        return buf.getvalue()

    def from_bytes(self, data: bytes) -> None:
        self.apply_hand_over(torch.load(io.BytesIO(data), weights_only=True))

    def measure_initial_validation(self) -> float | None:
        """The held-out loss before training, once (step 0 only); None without held-out data."""
        if self.initial_validation_loss is None and self.step == 0:
            self.initial_validation_loss = self.validation_loss()
            if self.initial_validation_loss is not None:
                log.info(
                    "step 0 validation loss %.4f (before training)", self.initial_validation_loss
                )
        return self.initial_validation_loss

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
        # Summed on the device: reading each micro-batch's loss would wait for the GPU.
        loss_total = torch.zeros((), device=self.device)
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
            loss_total += loss.detach()
        loss_sum = float(loss_total)
        agreed, work = None, None
        if agree is not None:
            agreed = torch.tensor(
                [loss_sum, float(len(plan.micro_batches)), agree()],
                device=collective_device(self.device),
            )
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
    def validation_loss(
        self, max_sequences: int = 64, rank: int = 0, world_size: int = 1
    ) -> float | None:
        """Mean loss on the held-out text (its first sequences, always the same ones).

        With `world_size` > 1 it is a collective: every rank of the group calls it, each
        measures every `world_size`-th micro-batch of them, and all get the mean of the
        whole. During training this keeps every rank busy for 1/world_size of the time
        that rank 0 alone would take while the others wait for it.
        """
        data = self.validation_data
        if data is None:
            return None
        n = min(max_sequences, data.count)
        batch = self.cfg.training.micro_batch_size
        self.model.eval()
        total = torch.zeros((), dtype=torch.float64)
        try:
            for first in range(rank * batch, n, batch * world_size):
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
        if world_size > 1:
            summed = total.to(collective_device(self.device))
            dist.all_reduce(summed)
            total = summed.cpu()
        return float(total) / n

    def tokens_per_step(self) -> int:
        return self.cfg.training.global_batch_size * self.sequence_length

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
        meta = {
            **meta,
            "model": asdict(self.model_config),
            "initial_validation_loss": self.initial_validation_loss,
        }
        self.checkpointer.save(self.step, self.checkpoint_state(), meta)
        if wait:
            self.checkpointer.wait()

    def report_fields(self, validation: float | None) -> dict[str, Any]:
        """What a completion report adds to step and loss: the held-out loss before and
        after training, and the precision with its reason."""
        fields: dict[str, Any] = {
            "precision": {
                "requested": self.precision.requested,
                "chosen": self.precision.name,
                "reason": self.precision.reason,
            }
        }
        if validation is not None:
            fields["validationLoss"] = round(validation, 6)
        if self.initial_validation_loss is not None:
            fields["initialValidationLoss"] = round(self.initial_validation_loss, 6)
        return fields

    def export(self) -> str | None:
        """The trained model in the Hugging Face Llama layout, next to the checkpoints."""
        if not self.cfg.checkpoint_dir:
            return None
        from lmworker.hf_export import export_hf_llama

        out = str(Path(self.cfg.checkpoint_dir) / "export")
        # A model fine-tuned with its own tokenizer keeps that tokenizer's files.
        based_on = self.cfg.init_from_hf if self._tokenizer_from_hf() else None
        export_hf_llama(self.model, self.model_config, self.tokenizer, out, based_on=based_on)
        return out

    def _tokenizer_from_hf(self) -> bool:
        cfg = self.cfg
        return bool(
            cfg.init_from_hf
            and not cfg.tokenizer_path
            and (Path(cfg.init_from_hf) / "tokenizer.json").is_file()
        )


# --------------------------------------------------------------------------------------
# The state as tensors and a skeleton (the hand-over)


@dataclass(frozen=True)
class TensorSlot:
    """Where a tensor was in the state: its shape and dtype, the tensor itself travels apart."""

    shape: tuple[int, ...]
    dtype: torch.dtype
    on_cpu: bool = True  # where the state keeps it (else: on the trainer's device)


def flatten_state(value: Any, out: list[torch.Tensor]) -> Any:
    """`value` with every tensor replaced by a `TensorSlot`; the tensors appended to `out`."""
    if isinstance(value, torch.Tensor):
        out.append(value.detach().contiguous())
        return TensorSlot(tuple(value.shape), value.dtype, value.device.type == "cpu")
    if isinstance(value, dict):
        return {k: flatten_state(v, out) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(flatten_state(v, out) for v in value)
    return value


def tensor_slots(skeleton: Any) -> list[TensorSlot]:
    """Every slot, in `flatten_state`'s order."""
    if isinstance(skeleton, TensorSlot):
        return [skeleton]
    if isinstance(skeleton, dict):
        return [slot for v in skeleton.values() for slot in tensor_slots(v)]
    if isinstance(skeleton, list | tuple):
        return [slot for v in skeleton for slot in tensor_slots(v)]
    return []


def unflatten_state(skeleton: Any, tensors: Iterator[torch.Tensor]) -> Any:
    if isinstance(skeleton, TensorSlot):
        return next(tensors)
    if isinstance(skeleton, dict):
        return {k: unflatten_state(v, tensors) for k, v in skeleton.items()}
    if isinstance(skeleton, list | tuple):
        return type(skeleton)(unflatten_state(v, tensors) for v in skeleton)
    return skeleton
