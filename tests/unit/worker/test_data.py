"""The resumable sampler and micro-batch plan: no sample skipped or repeated."""

from __future__ import annotations

import pytest
import torch

from lmworker.data import DataError, GlobalSampler, TokenSequences, plan_micro_batches, read_text


def samples_of_step(sampler: GlobalSampler, step: int, g: int, m: int, world: int) -> list[int]:
    out: list[int] = []
    for rank in range(world):
        plan = plan_micro_batches(g, m, rank, world)
        for which in plan.micro_batches:
            out += sampler.micro_batch(step, g, m, which).tolist()
    return sorted(out)


@pytest.mark.parametrize("world", [1, 2, 3, 5])
def test_a_step_sees_the_same_samples_at_any_world_size(world: int) -> None:
    sampler = GlobalSampler(count=50, seed=3)
    for step in range(12):
        assert samples_of_step(sampler, step, 12, 2, world) == samples_of_step(
            sampler, step, 12, 2, 1
        )


def test_an_epoch_visits_every_sequence_once_across_rescales() -> None:
    sampler = GlobalSampler(count=24, seed=0)
    seen: list[int] = []
    for step, world in zip(range(4), [2, 3, 1, 2], strict=True):  # 4 steps x 6 = 24
        seen += samples_of_step(sampler, step, 6, 2, world)
    assert sorted(seen) == list(range(24))


def test_epochs_are_reshuffled_deterministically() -> None:
    a, b = GlobalSampler(10, seed=1), GlobalSampler(10, seed=1)
    assert a.indexes(0, 20).tolist() == b.indexes(0, 20).tolist()
    assert a.indexes(0, 10).tolist() != a.indexes(10, 10).tolist()


def test_micro_batches_are_spread_round_robin() -> None:
    plans = [plan_micro_batches(24, 4, r, 4) for r in range(4)]
    assert [p.micro_batches for p in plans] == [(0, 4), (1, 5), (2,), (3,)]
    assert all(p.per_step == 6 for p in plans)
    with pytest.raises(DataError, match="multiple"):
        plan_micro_batches(10, 4, 0, 1)


def test_sequences_are_shifted_windows_and_split() -> None:
    seq = TokenSequences(torch.arange(101), length=10)
    assert seq.count == 10
    x, y = seq.batch(torch.tensor([0, 3]))
    assert x[1].tolist() == list(range(30, 40))
    assert y[1].tolist() == list(range(31, 41))
    train, val = seq.split(0.2)
    assert train.count == 8
    assert val is not None
    assert val.count == 2
    with pytest.raises(DataError, match="fewer than one sequence"):
        TokenSequences(torch.arange(5), length=10)


def test_missing_data_says_how_to_make_some(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(DataError, match=r"lmworker\.corpus"):
        read_text(str(tmp_path / "nope.txt"))
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "b.txt").write_text("second")
    (tmp_path / "d" / "a.txt").write_text("first")
    assert read_text(str(tmp_path / "d")) == "first\nsecond"
