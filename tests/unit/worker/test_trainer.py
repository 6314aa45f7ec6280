"""The trainer: constant global batch at any world size, state hand-over, restore."""

from __future__ import annotations

import ast
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lmworker.config import ModelConfig, TrainingConfig, WorkerConfig
from lmworker.corpus import write_corpus
from lmworker.hf_export import export_hf_llama
from lmworker.precision import resolve_precision
from lmworker.trainer import ConfigError, Trainer, choose_backend, lr_at

MODEL = ModelConfig(
    vocab_size=257,
    layers=1,
    hidden_size=32,
    heads=2,
    kv_heads=1,
    intermediate_size=64,
    context_length=16,
)


def config(tmp: Path, **training: object) -> WorkerConfig:
    corpus = tmp / "corpus.txt"
    if not corpus.exists():
        write_corpus(corpus, n_bytes=20_000, seed=0)
    t = {
        "steps": 10,
        "global_batch_size": 12,
        "micro_batch_size": 2,
        "learning_rate": 1e-2,
        "warmup_steps": 2,
        "weight_decay": 0.1,
        "grad_clip": 1.0,
        "precision": "fp32",
        "sync": "DDP",
        "local_sgd_sync_steps": 2,
        "seed": 4,
    }
    t.update(training)
    return WorkerConfig(
        job="t",
        namespace="default",
        model=MODEL,
        training=TrainingConfig(**t),  # type: ignore[arg-type]
        data_path=str(corpus),
        checkpoint_dir=str(tmp / "ckpt"),
        checkpoint_interval_steps=5,
    )


def test_lr_warms_up_then_decays_to_a_tenth() -> None:
    assert lr_at(0, 1.0, 10, 100) == pytest.approx(0.1)
    assert lr_at(9, 1.0, 10, 100) == pytest.approx(1.0)
    assert lr_at(10, 1.0, 10, 100) == pytest.approx(1.0)
    assert lr_at(55, 1.0, 10, 100) == pytest.approx(0.55)
    assert lr_at(100, 1.0, 10, 100) == pytest.approx(0.1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# Each rank runs in its own interpreter: test modules are not importable by name there.
# What every rank script starts with: a gloo group of `world` and a fresh Trainer.
RANK_SETUP = """
import os, sys, torch, torch.distributed as dist
from lmworker.config import WorkerConfig
from lmworker.trainer import Trainer
rank, world, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
cfg = WorkerConfig.from_json(os.environ["ELASTICLM_CONFIG"])
torch.set_num_threads(1)
store = dist.TCPStore("127.0.0.1", int(port), world, rank == 0)
dist.init_process_group("gloo", store=store, rank=rank, world_size=world)
tr = Trainer(cfg, torch.device("cpu"))
tr.init_fresh()
"""

RANK_SCRIPT = (
    RANK_SETUP
    + """
from torch.nn.parallel import DistributedDataParallel
module = DistributedDataParallel(tr.model) if world > 1 else tr.model
for _ in range(3):
    tr.train_step(module, rank, world, True)
if rank == 0:
    torch.save(tr.model.state_dict(), out)
dist.destroy_process_group()
"""
)


def _train(cfg: WorkerConfig, world: int, out: str) -> None:
    port = str(_free_port())
    env = {**os.environ, "ELASTICLM_CONFIG": cfg.to_json()}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RANK_SCRIPT, str(r), str(world), port, out], env=env
        )
        for r in range(world)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0] * world


@pytest.mark.parametrize("world", [2, 4])
def test_a_step_is_the_same_update_at_any_world_size(tmp_path: Path, world: int) -> None:
    """12 sequences per step: 6 micro-batches split 6/0, 3/3 or 2/2/1/1 over ranks."""
    cfg = config(tmp_path)
    outs = {}
    for w in (1, world):
        outs[w] = str(tmp_path / f"w{w}.pt")
        _train(cfg, w, outs[w])
    one, many = torch.load(outs[1]), torch.load(outs[world])
    for name in one:
        torch.testing.assert_close(many[name], one[name], rtol=1e-4, atol=1e-5)


def test_state_hand_over_is_exact(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    a = Trainer(cfg, torch.device("cpu"))
    a.init_fresh()
    for _ in range(2):
        a.train_step(a.model, 0, 1, True)
    b = Trainer(cfg, torch.device("cpu"))
    assert b.step == -1
    b.from_bytes(a.to_bytes())
    assert b.step == 2
    la = a.train_step(a.model, 0, 1, True)
    lb = b.train_step(b.model, 0, 1, True)
    assert la.loss_sum == lb.loss_sum
    for (n, p), (_, q) in zip(a.model.named_parameters(), b.model.named_parameters(), strict=True):
        assert torch.equal(p, q), n


def test_restore_continues_from_the_newest_checkpoint(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    a = Trainer(cfg, torch.device("cpu"))
    assert a.restore_or_init() == "initialised fresh weights"
    for _ in range(3):
        a.train_step(a.model, 0, 1, True)
    a.save_checkpoint({"round": 1}, wait=True)
    b = Trainer(cfg, torch.device("cpu"))
    assert "step-00000003" in b.restore_or_init()
    assert b.step == 3
    la = a.train_step(a.model, 0, 1, True)
    lb = b.train_step(b.model, 0, 1, True)
    assert la.loss_sum == pytest.approx(lb.loss_sum, rel=1e-6)


def test_fp16_and_bf16_train(tmp_path: Path) -> None:
    for precision in ("bf16", "fp16"):
        tr = Trainer(config(tmp_path, precision=precision), torch.device("cpu"))
        tr.init_fresh()
        first = tr.train_step(tr.model, 0, 1, True).loss_sum
        for _ in range(4):
            last = tr.train_step(tr.model, 0, 1, True).loss_sum
        assert last < first, precision


def test_precision_auto_trains_in_what_this_machine_computes_natively(tmp_path: Path) -> None:
    tr = Trainer(config(tmp_path, precision="auto"), torch.device("cpu"))
    choice = resolve_precision("auto", "cpu")
    assert tr.autocast_dtype == (None if choice.name == "fp32" else choice.dtype)
    assert tr.scaler is None  # auto never picks fp16
    tr.init_fresh()
    assert math.isfinite(tr.train_step(tr.model, 0, 1, True).loss_sum)


def test_the_loss_goes_down(tmp_path: Path) -> None:
    tr = Trainer(config(tmp_path, steps=30), torch.device("cpu"))
    tr.init_fresh()
    losses = [tr.train_step(tr.model, 0, 1, True).loss_sum / 6 for _ in range(30)]
    assert losses[-1] < 0.8 * losses[0]


def test_starting_from_a_hugging_face_model_takes_its_architecture(tmp_path: Path) -> None:
    """The operator cannot read the model directory, so its placeholder size is ignored."""
    import dataclasses

    source = Trainer(config(tmp_path), torch.device("cpu"))
    source.init_fresh()
    source.train_step(source.model, 0, 1, True)
    hf_dir = tmp_path / "hf"
    export_hf_llama(source.model, MODEL, source.tokenizer, hf_dir)
    placeholder = dataclasses.replace(MODEL, layers=3, hidden_size=64, intermediate_size=128)
    cfg = dataclasses.replace(
        config(tmp_path), model=placeholder, init_from_hf=str(hf_dir), checkpoint_dir=None
    )
    tr = Trainer(cfg, torch.device("cpu"))
    assert tr.restore_or_init() == f"initialised from {hf_dir}"
    assert tr.model_config.layers == MODEL.layers
    for (name, p), (_, q) in zip(
        tr.model.named_parameters(), source.model.named_parameters(), strict=True
    ):
        assert torch.equal(p, q), name
    tr.train_step(tr.model, 0, 1, True)


def test_validation_loss_on_held_out_text(tmp_path: Path) -> None:
    import dataclasses

    assert Trainer(config(tmp_path), torch.device("cpu")).validation_loss() is None
    cfg = dataclasses.replace(config(tmp_path), validation_fraction=0.1)
    tr = Trainer(cfg, torch.device("cpu"))
    tr.init_fresh()
    before = tr.validation_loss()
    assert before is not None
    assert before == pytest.approx(math.log(257), rel=0.05)  # untrained: near uniform
    for _ in range(20):
        tr.train_step(tr.model, 0, 1, True)
    after = tr.validation_loss()
    assert after is not None
    assert after < before
    assert tr.validation_loss() == after  # the same sequences every time


VALIDATION_SCRIPT = (
    RANK_SETUP
    + """
seen = []
tr.model.register_forward_hook(lambda _m, args, _out: seen.append(args[0].shape[0]))
loss = tr.validation_loss(max_sequences=63, rank=rank, world_size=world)
with open(f"{out}.{rank}", "w") as f:
    f.write(repr((loss, sum(seen))))
dist.destroy_process_group()
"""
)


@pytest.mark.parametrize("world", [2, 3])
def test_every_rank_measures_a_share_of_the_validation_loss(tmp_path: Path, world: int) -> None:
    """The checkpoints' held-out loss is a collective: each rank measures every
    world-th micro-batch (63 sequences in micro-batches of 2: 32 batches, the last one
    short, split 16/16 or 11/11/10), and all ranks get the loss of the whole."""
    import dataclasses

    cfg = dataclasses.replace(config(tmp_path), validation_fraction=0.1)
    tr = Trainer(cfg, torch.device("cpu"))
    tr.init_fresh()
    alone = tr.validation_loss(max_sequences=63)
    assert alone is not None
    port = str(_free_port())
    env = {**os.environ, "ELASTICLM_CONFIG": cfg.to_json()}
    out = str(tmp_path / "loss")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", VALIDATION_SCRIPT, str(r), str(world), port, out], env=env
        )
        for r in range(world)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0] * world
    results = [ast.literal_eval(Path(f"{out}.{r}").read_text()) for r in range(world)]
    assert [loss for loss, _ in results] == pytest.approx([alone] * world, rel=1e-6)
    shares = [sequences for _, sequences in results]
    assert sum(shares) == 63
    assert max(shares) <= 2 * math.ceil(32 / world)


def test_backend_defaults_to_nccl_on_a_gpu_and_gloo_on_a_cpu() -> None:
    assert choose_backend(torch.device("cpu"), None) == "gloo"
    assert choose_backend(torch.device("cuda", 0), None) == "nccl"
    # Several processes sharing one GPU need gloo: nccl refuses a GPU used twice.
    assert choose_backend(torch.device("cuda", 0), "gloo") == "gloo"


def test_a_backend_the_device_cannot_run_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="nccl needs a GPU"):
        choose_backend(torch.device("cpu"), "nccl")
    with pytest.raises(ConfigError, match="use gloo or nccl"):
        choose_backend(torch.device("cpu"), "mpi")


def test_sequence_length_below_the_context_and_its_limit(tmp_path: Path) -> None:
    tr = Trainer(config(tmp_path, sequence_length=8), torch.device("cpu"))
    assert tr.train_data.length == 8
    assert tr.tokens_per_step() == 12 * 8
    tr.init_fresh()
    assert math.isfinite(tr.train_step(tr.model, 0, 1, True).loss_sum)
    with pytest.raises(ValueError, match=r"sequenceLength \(32\) exceeds .* context length \(16\)"):
        Trainer(config(tmp_path, sequence_length=32), torch.device("cpu"))


def test_the_held_out_loss_before_training_travels_with_the_state(tmp_path: Path) -> None:
    import dataclasses

    cfg = dataclasses.replace(config(tmp_path), validation_fraction=0.1)
    a = Trainer(cfg, torch.device("cpu"))
    a.init_fresh()
    before = a.measure_initial_validation()
    assert before is not None
    assert before == a.validation_loss()
    for _ in range(3):
        a.train_step(a.model, 0, 1, True)
    assert a.measure_initial_validation() == before  # measured once, at step 0
    fresh = Trainer(cfg, torch.device("cpu"))
    fresh.step = 3
    assert fresh.measure_initial_validation() is None  # past step 0 nothing is measured
    b = Trainer(cfg, torch.device("cpu"))
    b.from_bytes(a.to_bytes())
    assert b.initial_validation_loss == before
    a.save_checkpoint({"round": 1}, wait=True)
    c = Trainer(cfg, torch.device("cpu"))
    c.restore_or_init()
    assert c.initial_validation_loss == before
    fields = c.report_fields(c.validation_loss())
    assert fields["initialValidationLoss"] == round(before, 6)
    assert fields["validationLoss"] < fields["initialValidationLoss"]
    assert fields["precision"] == {
        "requested": "fp32",
        "chosen": "fp32",
        "reason": "fp32 as requested",
    }


def test_the_hand_over_skeleton_and_tensors_rebuild_the_state_exactly(tmp_path: Path) -> None:
    """What `_broadcast_state` sends: a small skeleton, then each tensor on its own."""
    import pickle

    from lmworker.trainer import flatten_state, tensor_slots, unflatten_state

    a = Trainer(config(tmp_path), torch.device("cpu"))
    a.init_fresh()
    for _ in range(2):
        a.train_step(a.model, 0, 1, True)
    a.initial_validation_loss = 5.5
    tensors: list[torch.Tensor] = []
    skeleton = pickle.loads(
        pickle.dumps(flatten_state(a.checkpoint_state_for_hand_over(), tensors))
    )
    assert len(pickle.dumps(skeleton)) < 64 * 1024  # the structure only, never the weights
    received = [torch.empty(slot.shape, dtype=slot.dtype) for slot in tensor_slots(skeleton)]
    for into, sent in zip(received, tensors, strict=True):
        into.copy_(sent)
    b = Trainer(config(tmp_path), torch.device("cpu"))
    b.apply_hand_over(unflatten_state(skeleton, iter(received)))
    assert (b.step, b.initial_validation_loss) == (2, 5.5)
    assert a.train_step(a.model, 0, 1, True).loss_sum == b.train_step(b.model, 0, 1, True).loss_sum
    for (n, p), (_, q) in zip(a.model.named_parameters(), b.model.named_parameters(), strict=True):
        assert torch.equal(p, q), n
