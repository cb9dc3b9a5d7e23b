"""Bounded bidirectional flow table with idle, close and age timeouts.

Each flow has two :class:`Direction` objects, and the table maps *both* directional keys to
them, so the per-packet work is one dict lookup that also tells the packet's direction. Timeouts
are lazy deadlines (``sensor.flows.deadlines``): a flow is pushed with the earliest time it could
expire, and when that entry comes due the flow is either ended or pushed again with its new
deadline. Nothing is scanned per packet, and each flow has at most two entries.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from sensor.decode.inet import PROTO_TCP
from sensor.flows.deadlines import Deadlines
from sensor.frozen import picklable

NS: Final = 1_000_000_000

TCP_SYN: Final = 0x02
TCP_ACK: Final = 0x10
TCP_FIN: Final = 0x01
TCP_RST: Final = 0x04

# Ports that identify the server side when the handshake was not captured.
SERVICE_PORTS: Final = frozenset(
    (
        21, 22, 23, 25, 53, 80, 88, 110, 123, 135, 137, 138, 139, 143, 161, 389, 443, 445,
        465, 587, 636, 853, 993, 995, 1194, 1433, 1494, 1900, 3306, 3389, 4000, 4899, 5353,
        5355, 5432, 5500, 5900, 5901, 5938, 6568, 6783, 6784, 7070, 8040, 8041, 8080, 8443,
        21115, 21116, 21117, 21118, 21119, 50001, 50002, 50003,
    )
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class FlowSettings:
    max_flows: int = 131_072  # ~5 KB per inspected flow: about 0.7 GB per worker when full
    tcp_idle_s: int = 600
    tcp_closed_s: int = 10
    udp_idle_s: int = 120
    max_age_s: int = 3600
    stream_bytes: int = 8192  # in-order bytes kept per direction for the protocol parsers
    head_bytes: int = 512  # first payload bytes kept per direction for signatures


class Direction:
    """One direction of a flow: counters plus the in-order byte buffer while inspecting."""

    __slots__ = (
        "buf",
        "bytes",
        "consumed",
        "flags",
        "flow",
        "gap",
        "inspect",
        "is_client",
        "last",
        "next_seq",
        "pending",
        "pkts",
        "skip",
    )
    # Dropped when the flow ends, which breaks the flow <-> direction reference cycle: ended
    # flows are then freed at once by reference counting, not by a full garbage collection.
    __deletable__ = ("flow",)

    def __init__(self, flow: Flow, is_client: bool, ts: int) -> None:
        self.flow = flow
        self.is_client = is_client
        self.pkts = 0
        self.bytes = 0
        self.flags = 0
        self.last = ts
        self.inspect = True
        # In-order TCP bytes; a UDP direction hands each datagram to the parsers as it comes.
        self.buf: bytearray | None = bytearray() if flow.proto == PROTO_TCP else None
        self.next_seq = -1  # unknown until a SYN or the first data segment
        self.pending: dict[int, bytes] | None = None
        self.gap = False
        self.consumed = 0  # bytes a parser already took off the front of ``buf``
        self.skip = 0  # body bytes still to pass over before the next HTTP request head


class Flow:
    """Mutable per-flow state. ``key`` is oriented client -> server."""

    __slots__ = (
        "app",
        "c2s",
        "closed",
        "dns",
        "ended",
        "first",
        "first_sizes",
        "first_speaker",
        "heads",
        "http_requests",
        "http_response",
        "id",
        "identified",
        "key",
        "proto",
        "reply_key",
        "s2c",
        "syn_seen",
        "tls",
    )

    def __init__(self, flow_id: int, proto: int, key: bytes, ts: int) -> None:
        self.id = flow_id
        self.proto = proto
        self.key = key
        self.reply_key = reverse_key(key)  # server -> client, the table's other entry
        self.first = ts
        self.c2s = Direction(self, True, ts)
        self.s2c = Direction(self, False, ts)
        self.closed = False
        self.ended = False
        self.syn_seen = False
        self.identified = False  # the live sensor looked at it before it ended
        self.app = ""
        self.first_speaker = ""
        # Filled by the protocol stage; kept as loose slots to stay cheap for flows never inspected.
        self.heads: list[bytes] = [b"", b""]
        self.first_sizes = [0, 0]
        self.tls: list[object | None] = [None, None]
        self.http_requests: list[object] = []
        self.http_response: object | None = None
        self.dns: list[object] = []

    @property
    def last(self) -> int:
        return max(self.c2s.last, self.s2c.last)


def reverse_key(key: bytes) -> bytes:
    """The key of the opposite direction (addresses and ports swapped)."""
    half = (len(key) - 4) >> 1
    return key[half : 2 * half] + key[:half] + key[-2:] + key[-4:-2]


def key_ports(key: bytes) -> tuple[int, int]:
    # Single bytes, not int.from_bytes on slices: compiled, this is plain arithmetic.
    n = len(key)
    return key[n - 4] << 8 | key[n - 3], key[n - 2] << 8 | key[n - 1]


def sender_is_client(proto: int, key: bytes, tcp_flags: int) -> bool:
    """Decide the orientation of a new flow from its first packet."""
    if proto == PROTO_TCP and tcp_flags & TCP_SYN:
        return not tcp_flags & TCP_ACK
    sport, dport = key_ports(key)
    if (dport in SERVICE_PORTS) != (sport in SERVICE_PORTS):
        return dport in SERVICE_PORTS
    if (dport < 1024) != (sport < 1024):
        return dport < 1024
    if proto == PROTO_TCP and sport != dport:
        return dport < sport  # mid-stream TCP: the lower port is more likely the service
    return True  # UDP: whoever sent first asked first


# Entries of ended flows the deadlines (or the identify heap) may hold beyond twice the running
# flows before a rebuild.
COMPACT_SLACK: Final = 4096


class FlowTable:
    """Flows keyed by directional key, bounded in number, ended through ``on_end``."""

    def __init__(
        self,
        settings: FlowSettings,
        on_end: Callable[[Flow, str], None],
        on_identify: Callable[[Flow], None] | None = None,
        identify_after_s: int = 5,
        worker: tuple[int, int] = (0, 1),
        identify_grace_s: int = 2,
    ) -> None:
        self.settings = settings
        self.on_end = on_end
        self.on_identify = on_identify
        self.identify_after_s = identify_after_s
        # Live, a flow is looked at no sooner than this after its first packet. The DNS answer
        # that names its server may have reached another worker, and takes a few hundred
        # milliseconds to come here; judged without it, a sanctioned relay named only by DNS
        # would be alerted on as unknown.
        self.identify_grace_ns = identify_grace_s * NS
        self._identify_heap: list[tuple[int, int, Flow]] = []
        self.tcp: dict[bytes, Direction] = {}
        self.udp: dict[bytes, Direction] = {}
        self.active = 0
        self.created = 0
        self.ended_by: dict[str, int] = {}
        self._deadlines: Deadlines[Flow] = Deadlines()
        self._seq = itertools.count()
        # Flow ids stay unique across the worker processes of one sensor.
        self._ids = itertools.count(worker[0] + 1, worker[1])

    def create(self, proto: int, key: bytes, ts: int, tcp_flags: int) -> Direction:
        """Start a flow for a packet whose key is in neither direction of the table."""
        if self.active >= self.settings.max_flows:
            self._evict_one()
        client = sender_is_client(proto, key, tcp_flags)
        flow = Flow(next(self._ids), proto, key if client else reverse_key(key), ts)
        table = self.tcp if proto == PROTO_TCP else self.udp
        table[flow.key] = flow.c2s
        table[flow.reply_key] = flow.s2c
        self.active += 1
        self.created += 1
        self._deadlines.push(ts + self._idle(proto) * NS, flow)
        limit = 2 * self.active + COMPACT_SLACK
        if len(self._deadlines) > limit or len(self._identify_heap) > limit:
            self._compact()
        return flow.c2s if client else flow.s2c

    def _compact(self) -> None:
        """Rebuild the deadlines and the identify heap from the running flows.

        An ended flow's entries stay in them until they come due (a TCP flow's idle entry
        600 s after it was pushed), and they keep the flow and its buffers alive: a flood of
        short complete connections would hold memory in proportion to its rate, not to
        ``max_flows``. Rebuilding once they hold twice the running flows costs O(flows)
        every O(flows) pushes.
        """
        running = [d.flow for d in (*self.tcp.values(), *self.udp.values()) if d.is_client]
        self._deadlines.clear()
        for flow in running:
            self._deadlines.push(self._deadline(flow), flow)
        self._identify_heap[:] = [
            e for e in self._identify_heap if not (e[2].ended or e[2].identified)
        ]
        heapq.heapify(self._identify_heap)

    def close_soon(self, flow: Flow, ts: int) -> None:
        """FIN or RST seen: let the flow go after a short quiet period."""
        if not flow.closed:
            flow.closed = True
            self._deadlines.push(ts + self.settings.tcp_closed_s * NS, flow)

    def identify_later(self, flow: Flow, ts: int) -> None:
        """First payload seen: look at the flow once its first bytes had time to arrive."""
        self._identify_at(flow, ts + self.identify_after_s * NS)

    def identify_now(self, flow: Flow) -> None:
        """Both directions told what they are: look at the flow while it is still running."""
        due = flow.first + self.identify_grace_ns
        if due > flow.last:
            self._identify_at(flow, due)
        else:
            self._identify(flow)

    def _identify_at(self, flow: Flow, due: int) -> None:
        if self.on_identify is not None and not flow.identified and not flow.ended:
            heapq.heappush(self._identify_heap, (due, next(self._seq), flow))

    def _identify(self, flow: Flow) -> None:
        if self.on_identify is not None and not flow.identified and not flow.ended:
            flow.identified = True
            self.on_identify(flow)

    def end(self, flow: Flow, reason: str) -> None:
        if flow.ended:
            return
        flow.ended = True
        table = self.tcp if flow.proto == PROTO_TCP else self.udp
        table.pop(flow.key, None)
        table.pop(flow.reply_key, None)
        self.active -= 1
        self.ended_by[reason] = self.ended_by.get(reason, 0) + 1
        try:
            self.on_end(flow, reason)
        finally:
            del flow.c2s.flow, flow.s2c.flow

    def expire(self, now: int) -> None:
        """End every flow whose idle, close or age deadline has passed at packet time ``now``."""
        due = self._identify_heap
        while due and due[0][0] <= now:
            self._identify(heapq.heappop(due)[2])
        settings = self.settings
        for _, _, flow in self._deadlines.pop_due(now):
            if flow.ended:
                continue
            idle = settings.tcp_closed_s if flow.closed else self._idle(flow.proto)
            idle_at = flow.last + idle * NS
            age_at = flow.first + settings.max_age_s * NS
            if idle_at <= now:
                self.end(flow, "closed" if flow.closed else "timeout")
            elif age_at <= now:
                self.end(flow, "max_age")
            else:
                self._deadlines.push(min(idle_at, age_at), flow)

    def flush(self, reason: str = "end") -> None:
        """End every flow, oldest first (end of capture, shutdown)."""
        flows = {id(d.flow): d.flow for d in (*self.tcp.values(), *self.udp.values())}
        for flow in sorted(flows.values(), key=lambda f: (f.first, f.id)):
            self.end(flow, reason)
        self._deadlines.clear()
        self._identify_heap.clear()

    def _evict_one(self) -> None:
        """End the flow closest to its own timeout, so a flood of new flows cannot push out a
        long, busy session: an entry whose flow was active since it was pushed goes back with
        its real deadline, and the search goes on."""
        while (entry := self._deadlines.pop_first()) is not None:
            due, _, flow = entry
            if flow.ended:
                continue
            deadline = self._deadline(flow)
            if deadline > due:
                self._deadlines.push(deadline, flow)
                continue
            self.end(flow, "evicted")
            return

    def _deadline(self, flow: Flow) -> int:
        """When the flow ends unless another packet comes: idle (or closed) timeout, or age."""
        idle = self.settings.tcp_closed_s if flow.closed else self._idle(flow.proto)
        return min(flow.last + idle * NS, flow.first + self.settings.max_age_s * NS)

    def _idle(self, proto: int) -> int:
        s = self.settings
        return s.tcp_idle_s if proto == PROTO_TCP else s.udp_idle_s


picklable(FlowSettings)
