"""Checkpoints: atomic, pruned, asynchronous, loadable into a fresh model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from lmworker import checkpoint as ckpt


def state(value: float, step: int) -> dict[str, object]:
    return {"w": torch.full((3,), value), "step": step, "nested": {"b": torch.zeros(2) + value}}


@pytest.mark.parametrize("asynchronous", [False, True])
def test_save_load_and_keep_newest(tmp_path: Path, asynchronous: bool) -> None:
    c = ckpt.Checkpointer(str(tmp_path), keep=2, asynchronous=asynchronous)
    for step in (10, 20, 30):
        s = state(float(step), step)
        c.save(step, s, {"round": 1})
        w = s["w"]
        assert isinstance(w, torch.Tensor)
        w.add_(1000)  # training goes on; the save must not see it
    c.wait()
    found = ckpt.complete_checkpoints(tmp_path)
    assert [x.step for x in found] == [20, 30]
    loaded = ckpt.load(found[-1].path, state(0.0, 0))
    assert loaded["step"] == 30
    assert torch.equal(loaded["w"], torch.full((3,), 30.0))  # the values at save time
    assert ckpt.read_meta(found[-1].path)["round"] == 1


def test_half_written_checkpoint_is_never_loaded(tmp_path: Path) -> None:
    c = ckpt.Checkpointer(str(tmp_path), keep=3, asynchronous=False)
    c.save(5, state(5.0, 5), {})
    # What a worker killed mid-write leaves behind: a temporary directory, and a final
    # name without DCP's metadata.
    (tmp_path / ".tmp-step-00000009-deadbeef").mkdir()
    (tmp_path / "step-00000009").mkdir()
    latest = ckpt.latest_checkpoint(tmp_path)
    assert latest is not None
    assert latest.step == 5


def test_saving_an_existing_step_is_a_no_op(tmp_path: Path) -> None:
    c = ckpt.Checkpointer(str(tmp_path), keep=3, asynchronous=False)
    c.save(7, state(1.0, 7), {})
    c.save(7, state(2.0, 7), {})
    loaded = ckpt.load(tmp_path / "step-00000007", state(0.0, 0))
    assert torch.equal(loaded["w"], torch.ones(3))


def test_model_and_optimizer_round_trip(tmp_path: Path) -> None:
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    torch.manual_seed(0)
    m = nn.Linear(4, 2)
    opt = torch.optim.AdamW(m.parameters())
    m(torch.randn(3, 4)).sum().backward()
    opt.step()
    msd, osd = get_state_dict(m, opt)
    ckpt.Checkpointer(str(tmp_path), 1, False).save(1, {"model": msd, "optim": osd}, {})
    m2 = nn.Linear(4, 2)
    opt2 = torch.optim.AdamW(m2.parameters())
    msd2, osd2 = get_state_dict(m2, opt2)
    loaded = ckpt.load(tmp_path / "step-00000001", {"model": msd2, "optim": osd2})
    set_state_dict(m2, opt2, model_state_dict=loaded["model"], optim_state_dict=loaded["optim"])
    assert torch.equal(m2.weight, m.weight)
    assert torch.equal(
        opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"]
    )
