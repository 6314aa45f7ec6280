"""Cluster IPs: handed out round robin from a random place in the range."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any, cast

from devcluster.resources.strategies import ServiceStrategy
from devcluster.resources.types import Env


class _Store:
    def __init__(self, ips: list[str]) -> None:
        self.services = [{"spec": {"clusterIP": ip, "clusterIPs": [ip]}} for ip in ips]

    def items(self, _: Any) -> Iterator[dict[str, Any]]:
        return iter(self.services)


def _env(used: list[str], network: str = "127.96.0.0/16") -> Env:
    return cast(
        Env, SimpleNamespace(store=_Store(used), service_network=ipaddress.IPv4Network(network))
    )


def test_allocation_starts_where_the_strategy_says_and_skips_used_addresses() -> None:
    strategy = ServiceStrategy()
    strategy._start = 300  # 127.96.0.1 + 300
    assert strategy.allocate_ip(_env([])) == "127.96.1.45"
    assert strategy.allocate_ip(_env(["127.96.1.46"])) == "127.96.1.47"
    # Round robin: a freed address is not handed out again at once.
    assert strategy.allocate_ip(_env([])) == "127.96.1.48"


def test_allocation_wraps_around_and_never_hands_out_a_dot_one() -> None:
    strategy = ServiceStrategy()
    strategy._start = 5  # the last host of a /29 is 127.96.0.6
    env = _env(["127.96.0.6"], "127.96.0.0/29")
    assert strategy.allocate_ip(env) == "127.96.0.2"  # wrapped; .1 skipped
