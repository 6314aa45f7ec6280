"""Pod IPs: loopback addresses handed out round robin."""

from __future__ import annotations

import ipaddress
import random

# --------------------------------------------------------------------------------------
# Pod IPs


class IPAllocator:
    """Hands out loopback addresses from a CIDR (default 127.10.0.0/16), one per pod.

    The network address and the first host address are never given out. Addresses are
    handed out round robin, so a released address is reused as late as possible (stale
    connections then find nothing rather than another pod). The round starts at a random
    address unless `start` (an offset into the range) is given, so that two devclusters
    on one machine (parallel test runs) rarely hand out the same addresses.
    """

    def __init__(self, cidr: str = "127.10.0.0/16", *, start: int | None = None) -> None:
        self.network = ipaddress.ip_network(cidr)
        if not self.network.is_loopback:
            raise ValueError(f"pod CIDR {cidr} is not a loopback range")
        self._first = int(self.network.network_address) + 2
        self._last = int(self.network.broadcast_address) - 1
        if self._last < self._first:
            raise ValueError(f"pod CIDR {cidr} is too small")
        size = self._last - self._first + 1
        offset = random.randrange(size) if start is None else start % size
        self._next = self._first + offset
        self.in_use: set[str] = set()

    def __contains__(self, ip: str) -> bool:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return addr in self.network and self._first <= int(addr) <= self._last

    def allocate(self, preferred: str | None = None) -> str:
        """A free address; `preferred` (e.g. the pod's recorded podIP) when it is free."""
        if preferred and preferred in self and preferred not in self.in_use:
            self.in_use.add(preferred)
            return preferred
        size = self._last - self._first + 1
        for _ in range(size):
            ip = str(ipaddress.ip_address(self._next))
            self._next = self._first if self._next >= self._last else self._next + 1
            if ip not in self.in_use:
                self.in_use.add(ip)
                return ip
        raise RuntimeError(f"no free pod IP left in {self.network}")

    def release(self, ip: str | None) -> None:
        if ip:
            self.in_use.discard(ip)
