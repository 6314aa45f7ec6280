"""Waiting in tests: poll a condition until it holds or a deadline passes.

Tests never sleep to let something happen; they wait for the thing itself with
`wait_for` (or `wait_for_async` inside a coroutine) and say what they wait for, so a
timeout reads as "timed out after 30s waiting for <what>; last: <the last answer>".
To check that something does NOT happen, wait first for a positive sign that the system
has handled the event that could have caused it (a later event, a counter that moved, a
status it wrote), then assert the absence.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar, overload

T = TypeVar("T")
#: What a wait is for, in words; a function is called for them when the wait times out
#: (to show a log or the state at that moment).
What = str | Callable[[], str]

#: How long a wait lasts unless it says otherwise.
DEFAULT_TIMEOUT = 30.0
#: The first pause between polls; it grows by half each poll up to MAX_INTERVAL.
INTERVAL = 0.05
MAX_INTERVAL = 0.5


class _Poll:
    """The deadline, the growing interval and the last answer of one wait."""

    def __init__(self, timeout: float, what: What, interval: float) -> None:
        self.timeout = timeout
        self.what = what
        self.interval = interval
        self.deadline = time.monotonic() + timeout
        self.last: object = None

    def next_interval(self) -> float:
        if time.monotonic() >= self.deadline:
            what = self.what() if callable(self.what) else self.what
            raise AssertionError(
                f"timed out after {self.timeout:g}s waiting for {what}; last: {self.last!r}"
            )
        interval = min(self.interval, max(0.0, self.deadline - time.monotonic()))
        self.interval = min(self.interval * 1.5, MAX_INTERVAL)
        return interval


def _source(predicate: Callable[..., object]) -> str:
    """The code of a predicate, for a wait that does not say what it waits for."""
    try:
        return " ".join(inspect.getsource(predicate).split())
    except (OSError, TypeError):
        return repr(predicate)


def wait_for(
    predicate: Callable[[], T | None],
    timeout: float = DEFAULT_TIMEOUT,
    what: What = "",
    *,
    interval: float = INTERVAL,
    retry_on: tuple[type[Exception], ...] = (),
) -> T:
    """Poll `predicate()` until it returns something truthy, and return that.

    An exception of a type in `retry_on` counts as "not yet" (it is shown if time runs
    out); any other exception fails the wait at once.
    """
    poll = _Poll(timeout, what or _source(predicate), interval)
    while True:
        try:
            value = predicate()
        except retry_on as exc:
            poll.last = exc
        else:
            if value:
                return value
            poll.last = value
        time.sleep(poll.next_interval())


@overload
async def wait_for_async(
    predicate: Callable[[], Awaitable[T | None]],
    timeout: float = ...,
    what: What = ...,
    *,
    interval: float = ...,
    retry_on: tuple[type[Exception], ...] = ...,
) -> T: ...


@overload
async def wait_for_async(
    predicate: Callable[[], T | None],
    timeout: float = ...,
    what: What = ...,
    *,
    interval: float = ...,
    retry_on: tuple[type[Exception], ...] = ...,
) -> T: ...


async def wait_for_async(
    predicate: Callable[[], T | None] | Callable[[], Awaitable[T | None]],
    timeout: float = DEFAULT_TIMEOUT,
    what: What = "",
    *,
    interval: float = INTERVAL,
    retry_on: tuple[type[Exception], ...] = (),
) -> T:
    """`wait_for` inside an event loop: the loop keeps running between polls.

    `predicate` may be a plain function or a coroutine function.
    """
    poll = _Poll(timeout, what or _source(predicate), interval)
    while True:
        try:
            answer = predicate()
            value = await answer if inspect.isawaitable(answer) else answer
        except retry_on as exc:
            poll.last = exc
        else:
            if value:
                return value
            poll.last = value
        await asyncio.sleep(poll.next_interval())
