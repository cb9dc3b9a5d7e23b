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
        # host -> tool -> the earliest session of that tool still inside the window
        self._hosts: OrderedDict[str, dict[str, Session]] = OrderedDict()
        self._raised: OrderedDict[tuple[str, str, str], int] = OrderedDict()

    def observe(self, s: Session) -> list[tuple[Session, Session]]:
        """(first, second) session pairs of two tools on one host that this session completes."""
        host = s.src_ip
        tools = self._hosts.pop(host, {})
        self._hosts[host] = tools
        if len(self._hosts) > MAX_HOSTS:
            self._hosts.popitem(last=False)
        chains = []
        for tool, other in tools.items():
            if tool == s.tool or abs(s.start_ns - other.start_ns) > self.window:
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
        mine = tools.get(s.tool)
        if mine is None or s.start_ns - mine.start_ns > self.window:
            tools[s.tool] = s
        return chains
