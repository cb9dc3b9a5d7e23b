"""Bounded, time-aware memory of addresses that DNS answered for remote-access names.

AnyDesk relays are reached without SNI and ScreenConnect relays speak a private protocol, so a
flow to such an address is attributed through the DNS answer that named it. Entries expire with
the packet clock (TTL clamped to a floor, so connections kept open after the TTL still count),
and the oldest entry goes when the cache is full.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

from sensor.frozen import picklable

NS: Final = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Attribution:
    address: str
    name: str  # the DNS name the client asked for
    signature: str
    tool: str
    channel: str
    confidence: str
    seen_ns: int
    expires_ns: int


class AttributionCache:
    def __init__(
        self, max_entries: int = 65_536, min_ttl_s: int = 300, max_ttl_s: int = 86_400
    ) -> None:
        self.max_entries = max_entries
        self.min_ttl_s = min_ttl_s
        self.max_ttl_s = max_ttl_s
        self.evicted = 0
        self._entries: OrderedDict[str, Attribution] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def remember(
        self,
        address: str,
        name: str,
        ttl_s: int,
        ts_ns: int,
        *,
        signature: str,
        tool: str,
        channel: str,
        confidence: str,
    ) -> Attribution:
        ttl = min(max(ttl_s, self.min_ttl_s), self.max_ttl_s)
        entry = Attribution(address, name, signature, tool, channel, confidence, ts_ns,
                            ts_ns + ttl * NS)  # fmt: skip
        self.put(entry)
        return entry

    def put(self, entry: Attribution) -> None:
        address = entry.address
        entries = self._entries
        entries.pop(address, None)
        entries[address] = entry
        if len(entries) > self.max_entries:
            entries.popitem(last=False)
            self.evicted += 1

    def lookup(self, address: str, ts_ns: int) -> Attribution | None:
        """The attribution valid for a flow to ``address`` that started at ``ts_ns``."""
        entry = self._entries.get(address)
        if entry is None:
            return None
        # A little slack before the answer: capture timestamps of two flows can cross.
        if entry.seen_ns - NS <= ts_ns <= entry.expires_ns:
            return entry
        return None


class NameCache:
    """Last DNS name answered for each address (any name), to name servers reached by address.

    Not evidence of a tool: it only lets the policy match ``hosts`` entries for flows such as an
    on-premises relay that carry no name of their own.
    """

    def __init__(self, max_entries: int = 65_536) -> None:
        self.max_entries = max_entries
        self._names: OrderedDict[str, str] = OrderedDict()

    def remember(self, address: str, name: str) -> None:
        names = self._names
        names.pop(address, None)
        names[address] = name
        if len(names) > self.max_entries:
            names.popitem(last=False)

    def name(self, address: str) -> str | None:
        return self._names.get(address)


picklable(Attribution)
