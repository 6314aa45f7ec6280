"""Which floating-point format a model computes in: `precision: auto` and its explicit peers.

One decision for serving and training alike. `choose_precision(requested, facts)` is pure:
it takes what is known about the machine (`MachineFacts`) and returns the choice with a
sentence saying why, for logs, status conditions and reports. `probe_machine(device)`
gathers those facts (CPU flags from /proc/cpuinfo, the CUDA compute capability), and
`resolve_precision(requested, device)` is the two together.

auto picks bf16 where the hardware computes it natively, else fp32:
- CPU: AMX (amx_bf16) or AVX512-BF16 (x86), or the Arm `bf16` extension. There bf16
  matmuls run ~2x faster than fp32 whenever more than one row is multiplied (batched
  decoding, prefill, training); without them torch converts to fp32 and back, and bf16
  is slower than fp32.
- CUDA: compute capability 8.0 (Ampere) or newer: bf16 tensor cores.
For serving, fp16 is never picked automatically: weights are cast to it, and its narrow
range (max 65504) can overflow in activations. Training (`training=True`) runs fp16 under
autocast with fp32 master weights and a gradient scaler, so there auto picks fp16 on GPUs
that have fp16 tensor cores but predate bf16 (compute capability 7.x: V100, T4, RTX 20xx);
older GPUs compute fp16 no faster than fp32 (or, 6.1, far slower) and get fp32.

Explicit fp32/bf16/fp16 pass through; where the format cannot work at all (bf16 before
compute capability 8.0, fp16 before 5.3 on CUDA) `PrecisionError` says so and what to use
instead. Where it works but slowly (bf16 on a CPU without native support) the reason says so.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, replace
from pathlib import Path

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# /proc/cpuinfo flags of native bf16 arithmetic: Intel AMX, AVX512-BF16 (Intel Cooper Lake+,
# AMD Zen 4+), the Armv8.6 BF16 extension.
NATIVE_BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16", "bf16")
# /proc/cpuinfo flags of native fp16 arithmetic (Intel Sapphire Rapids+, Armv8.2 FP16).
NATIVE_FP16_CPU_FLAGS = ("avx512_fp16", "amx_fp16", "fphp", "asimdhp")
BF16_MIN_CUDA_CAPABILITY = (8, 0)
FP16_MIN_CUDA_CAPABILITY = (5, 3)
# fp16 tensor cores (Volta): where training in fp16 pays.
FP16_TENSOR_CORE_CUDA_CAPABILITY = (7, 0)


class PrecisionError(ValueError):
    """The requested precision cannot run on this device; the message says what to use."""


@dataclass(frozen=True)
class MachineFacts:
    """What the choice depends on; built by `probe_machine`, or by hand in tests."""

    device_type: str  # "cpu" | "cuda"
    cpu_flags: frozenset[str] = frozenset()
    cpu_model: str = ""
    cuda_capability: tuple[int, int] | None = None
    cuda_name: str = ""
    architecture: str = ""  # platform.machine(): x86_64, aarch64, ...


@dataclass(frozen=True)
class PrecisionChoice:
    name: str  # fp32 | bf16 | fp16
    dtype: torch.dtype
    requested: str
    reason: str  # one sentence: what was chosen and why
    # Training only: fp16 gradients need loss scaling (torch.amp.GradScaler).
    grad_scaler: bool = False


def choose_precision(
    requested: str, facts: MachineFacts, *, training: bool = False
) -> PrecisionChoice:
    """The precision to compute in for `requested` (auto|fp32|bf16|fp16) on this machine.

    `training` is for the trainer (autocast over fp32 weights): fp16 then comes with a
    gradient scaler, and auto may pick it on GPUs without bf16 (see the module docstring).
    """
    if requested not in PRECISIONS:
        raise PrecisionError(f"precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    if facts.device_type == "cuda":
        choice = _choose_on_cuda(requested, facts, training)
    elif facts.device_type != "cpu":
        if requested == "auto":
            choice = _choice("fp32", requested, f"auto chose fp32 on {facts.device_type}")
        else:
            choice = _choice(
                requested, requested, f"{requested} as requested on {facts.device_type}"
            )
    else:
        choice = _choose_on_cpu(requested, facts)
    if training and choice.name == "fp16":
        return replace(
            choice, grad_scaler=True, reason=f"{choice.reason}; gradients are loss-scaled"
        )
    return choice


def _choose_on_cpu(requested: str, facts: MachineFacts) -> PrecisionChoice:
    cpu = facts.cpu_model or "this CPU"
    bf16_flags = sorted(facts.cpu_flags.intersection(NATIVE_BF16_CPU_FLAGS))
    fp16_flags = sorted(facts.cpu_flags.intersection(NATIVE_FP16_CPU_FLAGS))
    if requested == "auto":
        if bf16_flags:
            return _choice(
                "bf16",
                requested,
                f"auto chose bf16: {cpu} computes bf16 natively ({', '.join(bf16_flags)})",
            )
        return _choice(
            "fp32",
            requested,
            f"auto chose fp32: {cpu} has no native bf16 (no {' or '.join(NATIVE_BF16_CPU_FLAGS)} "
            "flag), where bf16 would be slower than fp32",
        )
    if requested == "bf16" and not bf16_flags:
        return _choice(
            "bf16",
            requested,
            f"bf16 as requested, but {cpu} has no native bf16: expect it slower than fp32",
        )
    if requested == "fp16" and not fp16_flags:
        return _choice(
            "fp16",
            requested,
            f"fp16 as requested; {cpu} has no native fp16 arithmetic and converts to fp32 "
            "to compute, so fp16 saves memory more than time",
        )
    return _choice(requested, requested, f"{requested} as requested")


def _choose_on_cuda(requested: str, facts: MachineFacts, training: bool) -> PrecisionChoice:
    gpu = facts.cuda_name or "this GPU"
    capability = facts.cuda_capability or (0, 0)
    shown = f"{capability[0]}.{capability[1]}"
    if requested == "auto":
        if capability >= BF16_MIN_CUDA_CAPABILITY:
            return _choice(
                "bf16",
                requested,
                f"auto chose bf16: {gpu} (compute capability {shown}) has bf16 tensor cores",
            )
        if training and capability >= FP16_TENSOR_CORE_CUDA_CAPABILITY:
            return _choice(
                "fp16",
                requested,
                f"auto chose fp16: {gpu} (compute capability {shown}) has fp16 tensor cores "
                "but predates bf16, which needs 8.0",
            )
        if training:
            return _choice(
                "fp32",
                requested,
                f"auto chose fp32: {gpu} (compute capability {shown}) has no tensor cores "
                "(fp16 pays from 7.0, bf16 from 8.0)",
            )
        return _choice(
            "fp32",
            requested,
            f"auto chose fp32: {gpu} (compute capability {shown}) predates bf16, which "
            "needs 8.0; set fp16 explicitly for half precision there",
        )
    if requested == "bf16" and capability < BF16_MIN_CUDA_CAPABILITY:
        raise PrecisionError(
            f"precision bf16 needs CUDA compute capability 8.0 or newer; {gpu} has {shown}: "
            "use fp16 or fp32"
        )
    if requested == "fp16" and capability < FP16_MIN_CUDA_CAPABILITY:
        raise PrecisionError(
            f"precision fp16 needs CUDA compute capability 5.3 or newer; {gpu} has {shown}: "
            "use fp32"
        )
    return _choice(requested, requested, f"{requested} as requested on {gpu}")


def _choice(name: str, requested: str, reason: str) -> PrecisionChoice:
    return PrecisionChoice(name=name, dtype=DTYPES[name], requested=requested, reason=reason)


def probe_machine(device: torch.device | str = "cpu") -> MachineFacts:
    """The facts of `device` on this machine (CPU flags are read even for CUDA devices)."""
    dev = torch.device(device)
    flags, model = read_cpuinfo(Path("/proc/cpuinfo"))
    architecture = platform.machine()
    if dev.type == "cuda":
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        return MachineFacts(
            device_type="cuda",
            cpu_flags=flags,
            cpu_model=model,
            cuda_capability=torch.cuda.get_device_capability(index),
            cuda_name=torch.cuda.get_device_name(index),
            architecture=architecture,
        )
    return MachineFacts(
        device_type=dev.type, cpu_flags=flags, cpu_model=model, architecture=architecture
    )


def read_cpuinfo(path: Path) -> tuple[frozenset[str], str]:
    """The flags and model name of the first CPU listed in `path` (empty where unreadable).

    x86 lists `flags` and `model name`; Arm lists `Features` and no model name, so the
    machine's architecture stands in for it.
    """
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return frozenset(), platform.machine()
    return parse_cpuinfo(text)


def parse_cpuinfo(text: str) -> tuple[frozenset[str], str]:
    flags: frozenset[str] = frozenset()
    model = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("flags", "features") and not flags:
            flags = frozenset(value.split())
        elif key == "model name" and not model:
            model = value.strip()
        if flags and model:
            break
    return flags, model or platform.machine()


def resolve_precision(
    requested: str, device: torch.device | str = "cpu", *, training: bool = False
) -> PrecisionChoice:
    """`choose_precision` for the machine this runs on."""
    return choose_precision(requested, probe_machine(device), training=training)
