"""Chaining: a host that used one remote-access tool and, within a window, another one.

The 2023 pharmacy intrusion came in through a (sanctioned) vendor ScreenConnect and then
installed AnyDesk. Whatever the verdicts, a host whose sessions of two different tools start
within ``window`` of each other raises one alert per (host, first tool, second tool) and window.
"""

from __future__ import annotations

from collections import OrderedDict

from sensor.model import Session

NS = 1_000_000_000
MAX_HOSTS = 65_536


class ChainTracker:
    def __init__(self, window_s: int) -> None:
        self.window = window_s * NS
        # host -> tool -> (earliest, latest) session of that tool. Both are kept because a tool
        # used again and again must chain with the latest use (sessions A@0, A@3000, B@4000
        # with a 3600 s window), and sessions that arrive late (a long one ends, and is
        # reported, after later ones) may still be closest to the earliest.
        self._hosts: OrderedDict[str, dict[str, tuple[Session, Session]]] = OrderedDict()
        self._raised: OrderedDict[tuple[str, str, str], int] = OrderedDict()

    def observe(self, s: Session) -> list[tuple[Session, Session]]:
        """(first, second) session pairs of two tools on one host that this session completes."""
        host = s.src_ip
        tools = self._hosts.pop(host, {})
        self._hosts[host] = tools
        if len(self._hosts) > MAX_HOSTS:
            self._hosts.popitem(last=False)
        chains = []
        for tool, seen in tools.items():
            if tool == s.tool:
                continue
            other = min(seen, key=lambda o: abs(s.start_ns - o.start_ns))
            if abs(s.start_ns - other.start_ns) > self.window:
                continue
            first, second = (other, s) if other.start_ns <= s.start_ns else (s, other)
            key = (host, first.tool, second.tool)
            last = self._raised.get(key)
            if last is not None and second.start_ns - last <= self.window:
                continue
            self._raised.pop(key, None)
            self._raised[key] = second.start_ns
            if len(self._raised) > MAX_HOSTS:
                self._raised.popitem(last=False)
            chains.append((first, second))
        earliest, latest = tools.get(s.tool, (s, s))
        tools[s.tool] = (
            s if s.start_ns < earliest.start_ns else earliest,
            s if s.start_ns >= latest.start_ns else latest,
        )
        return chains
