"""Scheduled replica floors: a five-field cron expression in an IANA time zone opens a
window of `duration_seconds`; inside it the service keeps at least `min_replicas`.

A window is active at `now` when the latest start at or before `now` (in the schedule's
time zone, so daylight-saving shifts move it as people expect) is less than its
duration ago. croniter does the cron arithmetic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter


class InvalidScheduleError(ValueError):
    """A schedule that cannot be evaluated; the message names the field and the fix."""


@dataclass(frozen=True)
class Schedule:
    name: str
    cron: str
    duration_seconds: float
    min_replicas: int
    time_zone: str = "UTC"


def validate(schedule: Schedule) -> None:
    if not croniter.is_valid(schedule.cron) or len(schedule.cron.split()) != 5:
        raise InvalidScheduleError(
            f"schedules[{schedule.name}].cron {schedule.cron!r} is not a five-field cron "
            "expression (minute hour day-of-month month day-of-week), e.g. '0 8 * * 1-5'"
        )
    try:
        ZoneInfo(schedule.time_zone)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise InvalidScheduleError(
            f"schedules[{schedule.name}].timeZone {schedule.time_zone!r} is not an IANA time "
            "zone name; use e.g. 'UTC' or 'Europe/Berlin'"
        ) from e


def window_start(schedule: Schedule, now: float) -> float:
    """The latest start of the schedule's window at or before `now` (epoch seconds)."""
    zone = ZoneInfo(schedule.time_zone)
    # Cron has minute resolution; starting just after `now` makes a start at exactly
    # `now` count as the latest one.
    base = datetime.fromtimestamp(now, UTC).astimezone(zone) + timedelta(seconds=1)
    start = croniter(schedule.cron, base).get_prev(datetime)
    return start.timestamp()


@dataclass(frozen=True)
class Floor:
    replicas: int
    schedule: str | None  # the schedule that sets it, None when no window is open


def active_floor(schedules: Sequence[Schedule], now: float) -> Floor:
    """The highest floor among the windows open at `now`."""
    best = Floor(0, None)
    for schedule in schedules:
        start = window_start(schedule, now)
        if now < start + schedule.duration_seconds and schedule.min_replicas > best.replicas:
            best = Floor(schedule.min_replicas, schedule.name)
    return best
