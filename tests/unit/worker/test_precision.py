"""precision: auto and its explicit peers, decided from the machine's facts."""

import pytest
import torch

from lmworker.precision import (
    MachineFacts,
    PrecisionError,
    choose_precision,
    parse_cpuinfo,
    probe_machine,
    resolve_precision,
)

EPYC = MachineFacts(
    device_type="cpu",
    cpu_flags=frozenset({"avx2", "avx512f", "avx512_bf16", "avx512_vnni"}),
    cpu_model="AMD EPYC 9B14",
    architecture="x86_64",
)
SAPPHIRE_RAPIDS = MachineFacts(
    device_type="cpu",
    cpu_flags=frozenset({"avx512f", "amx_bf16", "amx_int8", "avx512_fp16"}),
    cpu_model="Intel Xeon 8480",
    architecture="x86_64",
)
OLD_X86 = MachineFacts(
    device_type="cpu", cpu_flags=frozenset({"avx2", "fma"}), cpu_model="Intel Xeon E5-2690 v4"
)
GRAVITON3 = MachineFacts(
    device_type="cpu", cpu_flags=frozenset({"fp", "asimd", "asimdhp", "bf16"}), cpu_model="aarch64"
)


def cuda(major: int, minor: int) -> MachineFacts:
    return MachineFacts(device_type="cuda", cuda_capability=(major, minor), cuda_name="GPU")


@pytest.mark.parametrize(
    ("facts", "expected", "in_reason"),
    [
        (EPYC, "bf16", "avx512_bf16"),
        (SAPPHIRE_RAPIDS, "bf16", "amx_bf16"),
        (GRAVITON3, "bf16", "bf16"),
        (OLD_X86, "fp32", "no native bf16"),
        (cuda(8, 0), "bf16", "compute capability 8.0"),
        (cuda(9, 0), "bf16", "bf16 tensor cores"),
        (cuda(7, 5), "fp32", "predates bf16"),
    ],
    ids=["avx512-bf16", "amx", "arm-bf16", "no-bf16", "ampere", "hopper", "turing"],
)
def test_auto_picks_bf16_only_where_it_is_native(
    facts: MachineFacts, expected: str, in_reason: str
) -> None:
    choice = choose_precision("auto", facts)
    assert choice.name == expected
    assert choice.dtype == {"bf16": torch.bfloat16, "fp32": torch.float32}[expected]
    assert choice.requested == "auto"
    assert choice.reason.startswith(f"auto chose {expected}")
    assert in_reason in choice.reason


@pytest.mark.parametrize("requested", ["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("facts", [EPYC, OLD_X86, SAPPHIRE_RAPIDS, cuda(8, 6)])
def test_explicit_precisions_pass_through(requested: str, facts: MachineFacts) -> None:
    choice = choose_precision(requested, facts)
    assert choice.name == requested
    assert choice.requested == requested


def test_reasons_warn_where_an_explicit_choice_is_slow() -> None:
    assert "slower than fp32" in choose_precision("bf16", OLD_X86).reason
    assert "no native fp16" in choose_precision("fp16", EPYC).reason
    assert choose_precision("fp16", SAPPHIRE_RAPIDS).reason == "fp16 as requested"


def test_formats_a_gpu_cannot_compute_are_refused_with_the_alternative() -> None:
    needs_ampere = r"bf16 needs CUDA compute capability 8\.0.*7\.0.*fp16"
    with pytest.raises(PrecisionError, match=needs_ampere):
        choose_precision("bf16", cuda(7, 0))
    with pytest.raises(PrecisionError, match=r"fp16 needs CUDA compute capability 5\.3"):
        choose_precision("fp16", cuda(5, 2))
    assert choose_precision("fp16", cuda(7, 0)).name == "fp16"


def test_unknown_precision_names_the_choices() -> None:
    with pytest.raises(PrecisionError, match="one of auto, fp32, bf16, fp16, got 'fp8'"):
        choose_precision("fp8", EPYC)


def test_parse_cpuinfo_reads_x86_and_arm() -> None:
    x86 = "processor\t: 0\nmodel name\t: AMD EPYC 9B14\nflags\t\t: fpu avx2 avx512_bf16\n\n"
    x86 += "processor\t: 1\nmodel name\t: other\nflags\t\t: fpu\n"
    flags, model = parse_cpuinfo(x86)
    assert flags == {"fpu", "avx2", "avx512_bf16"}
    assert model == "AMD EPYC 9B14"
    arm = "processor\t: 0\nBogoMIPS\t: 2100.00\nFeatures\t: fp asimd bf16\nCPU part\t: 0xd40\n"
    flags, _ = parse_cpuinfo(arm)
    assert "bf16" in flags


def test_probe_and_resolve_on_this_machine() -> None:
    facts = probe_machine("cpu")
    assert facts.device_type == "cpu"
    assert facts.architecture
    choice = resolve_precision("auto")
    assert choice == choose_precision("auto", facts)


@pytest.mark.parametrize(
    ("facts", "expected", "scaler", "in_reason"),
    [
        (EPYC, "bf16", False, "avx512_bf16"),
        (SAPPHIRE_RAPIDS, "bf16", False, "amx_bf16"),
        (OLD_X86, "fp32", False, "no native bf16"),
        (cuda(9, 0), "bf16", False, "bf16 tensor cores"),
        (cuda(8, 0), "bf16", False, "compute capability 8.0"),
        (cuda(7, 5), "fp16", True, "fp16 tensor cores but predates bf16"),
        (cuda(7, 0), "fp16", True, "compute capability 7.0"),
        (cuda(6, 1), "fp32", False, "no tensor cores"),
    ],
    ids=["avx512-bf16", "amx", "no-bf16", "hopper", "ampere", "turing", "volta", "pascal"],
)
def test_auto_for_training_adds_fp16_with_a_scaler_on_gpus_before_bf16(
    facts: MachineFacts, expected: str, scaler: bool, in_reason: str
) -> None:
    choice = choose_precision("auto", facts, training=True)
    assert (choice.name, choice.grad_scaler) == (expected, scaler)
    assert choice.reason.startswith(f"auto chose {expected}")
    assert in_reason in choice.reason
    assert ("loss-scaled" in choice.reason) == scaler
    # Serving never picks fp16 by itself: its weights would be cast to it.
    assert choose_precision("auto", facts).name == ("fp32" if expected == "fp16" else expected)


def test_explicit_fp16_for_training_always_scales_its_gradients() -> None:
    for facts in (EPYC, SAPPHIRE_RAPIDS, cuda(8, 0)):
        choice = choose_precision("fp16", facts, training=True)
        assert choice.grad_scaler
        assert choice.reason.endswith("gradients are loss-scaled")
        assert not choose_precision("fp16", facts).grad_scaler
    assert not choose_precision("bf16", EPYC, training=True).grad_scaler
    with pytest.raises(PrecisionError, match=r"bf16 needs CUDA compute capability 8\.0"):
        choose_precision("bf16", cuda(7, 5), training=True)
