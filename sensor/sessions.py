"""Session stage: the flows of one remote-access session become one record.

Several flows form one session when they share tool, channel, client and server and follow each
other within ``gap`` (an installer download after the web console, reconnects of a relay, repeated
DNS look-ups). A session is emitted once no flow has joined it for ``gap`` of packet time.
"""

from __future__ import annotations

import dataclasses
from typing import Final

from sensor.model import Session
from sensor.signatures.schema import CONFIDENCE_RANK

NS: Final = 1_000_000_000
MAX_FLOW_IDS: Final = (
    64  # a session keeps at most this many flow ids (the count is in its evidence)
)

SessionKey = tuple[str, str, str, str, int, str]


class SessionBuilder:
    def __init__(self, gap_s: int = 300, max_open: int = 65_536) -> None:
        self.gap = gap_s * NS
        self.max_open = max_open
        self.forced = 0  # sessions emitted early because too many were open
        self._open: dict[SessionKey, Session] = {}

    def add(self, s: Session) -> list[Session]:
        """Merge ``s`` into an open session or open a new one; return sessions forced out."""
        # Look-ups of different names are different evidence, so they stay separate sessions.
        name = (s.server_name or "") if s.channel == "dns" else ""
        key = (s.tool, s.channel, s.src_ip, s.dest_ip, s.dest_port, name)
        cur = self._open.get(key)
        if cur is not None and s.start_ns <= cur.end_ns + self.gap:
            self._open[key] = merge(cur, s)
            return []
        out = [self._finish(self._open.pop(key))] if cur is not None else []
        self._open[key] = s
        if len(self._open) > self.max_open:
            oldest = min(self._open, key=lambda k: self._open[k].end_ns)
            out.append(self._finish(self._open.pop(oldest)))
            self.forced += 1
        return out

    def expire(self, now_ns: int) -> list[Session]:
        done = [k for k, s in self._open.items() if s.end_ns + self.gap < now_ns]
        return [self._finish(self._open.pop(k)) for k in sorted(done, key=self._order)]

    def flush(self) -> list[Session]:
        keys = sorted(self._open, key=self._order)
        return [self._finish(self._open.pop(k)) for k in keys]

    def _order(self, key: SessionKey) -> tuple[int, int]:
        s = self._open[key]
        return s.start_ns, s.flow_ids[0] if s.flow_ids else 0

    def _finish(self, s: Session) -> Session:
        return s


def merge(a: Session, b: Session) -> Session:
    first, _ = (a, b) if a.start_ns <= b.start_ns else (b, a)
    attrs = dict(a.attributes)
    for k, v in b.attributes:
        attrs.setdefault(k, v)
    best = a if CONFIDENCE_RANK[a.confidence] >= CONFIDENCE_RANK[b.confidence] else b
    return dataclasses.replace(
        first,
        end_ns=max(a.end_ns, b.end_ns),
        bytes_toserver=a.bytes_toserver + b.bytes_toserver,
        bytes_toclient=a.bytes_toclient + b.bytes_toclient,
        pkts_toserver=a.pkts_toserver + b.pkts_toserver,
        pkts_toclient=a.pkts_toclient + b.pkts_toclient,
        server_name=a.server_name or b.server_name,
        instance=a.instance or b.instance,
        confidence=best.confidence,
        evidence=tuple(dict.fromkeys((*a.evidence, *b.evidence))),
        attributes=tuple(attrs.items()),
        flow_ids=(a.flow_ids + b.flow_ids)[:MAX_FLOW_IDS],
    )
