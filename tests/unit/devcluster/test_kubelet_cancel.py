"""The kubelet stops a container's probe loop even when Python 3.11's `wait_for` loses
the cancellation (the probe's own call completing in the same turn as the cancel)."""

from __future__ import annotations

import asyncio
import contextlib

from devcluster.kubelet.lifecycle import cancel_until_done


async def test_a_lost_cancellation_is_repeated_until_the_task_ends() -> None:
    loop = asyncio.get_running_loop()
    probes: list[asyncio.Future[None]] = []

    async def probe_loop() -> None:
        while True:  # as the kubelet's periodic probes: one timed call after another
            probe = loop.create_future()
            probes.append(probe)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(probe, timeout=30)

    task = asyncio.create_task(probe_loop())
    await asyncio.sleep(0)
    # The probe answers in the same turn as the cancellation: 3.11's wait_for returns
    # the answer and the loop goes on to its next probe.
    probes[0].set_result(None)
    task.cancel()
    await asyncio.wait_for(cancel_until_done(task), timeout=10)
    assert task.cancelled()


async def test_a_task_that_already_ended_is_left_as_it_is() -> None:
    async def done() -> None:
        return None

    task = asyncio.create_task(done())
    await task
    await cancel_until_done(task)
    assert task.done()
    assert not task.cancelled()
