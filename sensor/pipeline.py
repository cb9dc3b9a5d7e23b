"""The engine: frames -> decode -> flow table -> protocol parsers -> flow records.

Stages, in order:
  1. capture source: records advanced one by one (``sensor.capture.formats.Records``), each
     frame ``(ts_ns, linktype, buf, offset, caplen, wire_len)``, the packet being
     ``buf[offset : offset + caplen]`` (no copy per packet);
  2. link + IP + TCP/UDP decode (``sensor.decode``), inline for Ethernet/IPv4;
  3. the flow table finds the packet's flow and direction with one dict lookup;
  4. while a direction is still inspected, its in-order bytes go to the protocol parsers
     (``sensor.inspect``); afterwards packets are only counted;
  5. when a flow ends (FIN/RST, idle, age, eviction, end of input) it becomes a FlowRecord and
     is handed to ``on_flow`` (fingerprints, sessions, outputs).

``run`` is the one place where a bad packet is isolated: whatever one packet does, it is counted
and the next packet is processed.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final

from mypy_extensions import i64

from sensor.capture.formats import Frame, FrameRecords, Records
from sensor.decode.inet import PROTO_TCP, PROTO_UDP, decode_transport
from sensor.decode.link import ETH_IPV4, ETH_IPV6, DecodeError, network_offset
from sensor.decode.sieve import Sieve
from sensor.flows.stream import add_segment
from sensor.flows.table import NS, Flow, FlowSettings, FlowTable
from sensor.inspect import DnsHook, Inspector
from sensor.model import FlowRecord
from sensor.records import CertCache, build_record

log = logging.getLogger(__name__)

ETHERTYPE_IPV4: Final = b"\x08\x00"
SEQ_MASK: Final = 0xFFFFFFFF


def settle_collector() -> None:
    """Tune the garbage collector for a long packet loop; call once, after set-up.

    Ended flows are freed by reference counting (the flow table breaks their one cycle), so the
    cyclic collector has little to find. Left at its defaults it runs a young collection every
    700 allocations and keeps re-scanning every live flow: about a sixth of the run time. A young
    collection every million allocations finds the same (nothing, on the benchmark capture) and
    costs about 4 % of it less than one every 100,000 did. What was loaded at set-up (signatures,
    configuration, modules) is moved out of its sight for good.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(1_000_000, 50, 1000)


@dataclass
class Stats:
    """Counters of the hot path; read at scrape time, never incremented through a library."""

    packets: int = 0
    bytes: int = 0
    non_ip: int = 0
    decode_errors: dict[str, int] = field(default_factory=dict)
    other_protocols: dict[int, int] = field(default_factory=dict)
    first_packet_ns: int = 0
    last_packet_ns: int = 0


class Engine:
    """One flow table and its stages; one per worker process."""

    def __init__(
        self,
        settings: FlowSettings,
        on_flow: Callable[[FlowRecord], None],
        on_dns: DnsHook | None = None,
        on_tick: Callable[[int], None] | None = None,
        shard: tuple[int, int] = (0, 1),
        on_identified: Callable[[FlowRecord], None] | None = None,
        worker: tuple[int, int] = (0, 1),
    ) -> None:
        self.settings = settings
        self.on_flow = on_flow
        self.on_tick = on_tick
        self.stats = Stats()
        # Live, a flow is also looked at while it runs (a relay session can last hours).
        self.on_identified = on_identified
        early = self._flow_identified if on_identified is not None else None
        self.table = FlowTable(settings, self._flow_ended, early, worker=worker)
        self.inspector = Inspector(
            settings,
            on_dns,
            self.table.identify_now if early else None,
            self.table.identify_later if early else None,
        )
        self.certs = CertCache()
        self.shard_index, self.shards = shard
        # Time going back further than any flow can idle is a jump (a new file, a clock reset).
        self.backwards = max(settings.tcp_idle_s, settings.udp_idle_s) * NS + NS
        # A worker of several hands this to its capture reader (see sensor.decode.sieve).
        self.sieve = Sieve(*shard, self.backwards) if self.shards > 1 else None
        self._next_expiry = 0
        self._internal_errors_logged = 0

    def _flow_ended(self, flow: Flow, reason: str) -> None:
        record = build_record(flow, reason, self.certs)
        if self.on_identified is not None and not flow.identified:
            # Ended before it was looked at (a short connection): report it as seen now, so
            # live counts and alerts do not wait for the session to close.
            flow.identified = True
            self.on_identified(record)
        self.on_flow(record)

    def _flow_identified(self, flow: Flow) -> None:
        if self.on_identified is not None:
            self.on_identified(build_record(flow, "active", self.certs))

    def flush(self) -> None:
        """End every open flow (end of input or shutdown)."""
        self.table.flush()

    def advance(self, now_ns: int) -> None:
        """Let time pass without packets (a quiet live interface): expire flows, tick."""
        if now_ns >= self._next_expiry:
            self._next_expiry = now_ns + NS
            if self.sieve is not None:
                self.sieve.set_clock(self._next_expiry)
            self.table.expire(now_ns)
            if self.on_tick is not None:
                self.on_tick(now_ns)

    def run(self, frames: Iterable[Frame]) -> None:
        """Process frames until the iterable ends (it may raise; counters stay consistent)."""
        stats = self.stats
        table = self.table
        # Typed locals, not bound methods: compiled, tcp.get(key) is a direct dict lookup and
        # table.create(...) a native call, where a stored bound method is a generic Python call.
        tcp = table.tcp
        udp = table.udp
        inspector = self.inspector
        limit = self.settings.stream_bytes
        shards = self.shards
        shard_index = self.shard_index
        # With shards, every shard reads every packet's time. A shard counts the packets it owns;
        # shard 0 also counts those no shard owns (not IP, undecodable), so the sums are exact.
        counting = shard_index == 0
        errors = stats.decode_errors if counting else {}
        others = stats.other_protocols
        packets = bytes_seen = non_ip = 0
        next_expiry = self._next_expiry
        # A capture file's records are read field by field; other frames through an adapter.
        records = frames if isinstance(frames, Records) else FrameRecords(frames)
        backwards = self.backwards
        earliest = next_expiry - backwards
        ts = stats.last_packet_ns
        sieve = self.sieve
        if sieve is not None:
            # The reader drops packets by this clock, so it must be the engine's, always.
            sieve.set_clock(next_expiry)
            sieve.reading = False
        try:
            while records.advance():
                ts = records.ts
                linktype = records.linktype
                buf = records.buf
                # The packet's offset and length as 64-bit integers: the inline decode's index
                # arithmetic compiles to plain machine operations.
                at: i64 = records.at
                size: i64 = records.caplen
                wire_len: i64 = records.wire_len
                # Timeouts run on packet time, checked before the packet joins its flow.
                if not earliest <= ts < next_expiry:
                    if ts >= next_expiry:
                        if not stats.first_packet_ns:
                            stats.first_packet_ns = ts
                        table.expire(ts)
                        if self.on_tick is not None:
                            self.on_tick(ts)
                    else:
                        # Time went back further than any flow can idle (the next of several
                        # files, a clock reset): flows of the old timeline cannot continue.
                        table.flush("time_jump")
                    next_expiry = ts + NS
                    earliest = next_expiry - backwards
                    if sieve is not None:
                        sieve.set_clock(next_expiry)
                packets += 1
                bytes_seen += wire_len
                owned = shards == 1
                try:
                    # The packet is buf[at : at + size]. The offsets below (l4, start, end)
                    # index data: buf itself, or in the uncommon cases a copy of the packet.
                    data = buf
                    ordinary = False
                    if (
                        linktype == 1
                        and size >= 54
                        # Single bytes, not a slice: no object made per packet.
                        and data[at + 12] == 0x08
                        and data[at + 13] == 0x00
                        and data[at + 14] == 0x45
                        and not data[at + 20] & 0x3F
                        and not data[at + 21]
                        and (proto := data[at + 23]) in (PROTO_TCP, PROTO_UDP)
                    ):
                        # The common case decoded inline: Ethernet, IPv4 without options, not a
                        # fragment, TCP or UDP. Everything else takes decode_transport.
                        end = at + 14 + ((data[at + 16] << 8) | data[at + 17])
                        truncated = end > at + size
                        if truncated:
                            end = at + size
                        l4 = at + 34
                        key = data[at + 26 : at + 38]
                        if proto == PROTO_TCP:
                            start = l4 + ((data[at + 46] >> 4) << 2)
                            ordinary = at + 54 <= start <= end
                        else:
                            start = at + 42
                            ordinary = start <= end
                    if not ordinary:
                        # The decoders read a packet of its own, from its first byte.
                        if at or size != len(buf):
                            data = buf[at : at + size]
                        if linktype == 1 and data[12:14] == ETHERTYPE_IPV4:
                            off = 14
                            ethertype = ETH_IPV4
                        else:
                            off, ethertype = network_offset(linktype, data)
                            if ethertype not in (ETH_IPV4, ETH_IPV6):
                                non_ip += 1
                                if not counting:
                                    packets -= 1
                                    bytes_seen -= wire_len
                                continue
                        proto, key, l4, start, end, truncated = decode_transport(
                            data, off, ethertype
                        )
                    if shards > 1:
                        # By address pair (symmetric XOR of the last two address bytes), so all
                        # connections between two hosts, which may form one session, share a shard.
                        h = (len(key) >> 1) - 2
                        if h <= 0:
                            # Neither TCP nor UDP (no key): counted once, by shard 0.
                            if not counting:
                                packets -= 1
                                bytes_seen -= wire_len
                                continue
                        elif (
                            (key[h - 1] ^ key[2 * h - 1]) + (key[h - 2] ^ key[2 * h - 2])
                        ) % shards != shard_index:
                            if proto == PROTO_UDP and (data[l4] << 8 | data[l4 + 1]) == 53:
                                # attribution needs every answer
                                inspector.peek_dns(key, data[start:end], ts)
                            packets -= 1
                            bytes_seen -= wire_len
                            continue
                    owned = True
                    if proto == PROTO_TCP:
                        flags = data[l4 + 13]
                        d = tcp.get(key)
                        if d is None:
                            d = table.create(PROTO_TCP, key, ts, flags)
                            d.flow.syn_seen = bool(flags & 0x02)
                        elif flags & 0x12 == 0x02 and d.flow.closed:
                            table.end(d.flow, "reused")  # a new connection on an old 5-tuple
                            d = table.create(PROTO_TCP, key, ts, flags)
                            d.flow.syn_seen = True
                        d.pkts += 1
                        d.bytes += wire_len
                        d.last = ts
                        d.flags |= flags
                        if flags & 0x05:
                            table.close_soon(d.flow, ts)
                        if d.inspect:
                            seq = (
                                data[l4 + 4] << 24
                                | data[l4 + 5] << 16
                                | data[l4 + 6] << 8
                                | data[l4 + 7]
                            )
                            if flags & 0x02:
                                if d.buf is not None and not d.buf:
                                    d.next_seq = (seq + 1) & SEQ_MASK
                            elif start < end:
                                if add_segment(d, seq, data[start:end], limit):
                                    inspector.tcp_data(d.flow, d)
                                if truncated or d.gap:
                                    # the snap length or a hole ends what we can read
                                    inspector.stop(d)
                    elif proto == PROTO_UDP:
                        d = udp.get(key)
                        if d is None:
                            d = table.create(PROTO_UDP, key, ts, 0)
                        d.pkts += 1
                        d.bytes += wire_len
                        d.last = ts
                        if d.inspect:
                            inspector.udp_data(d.flow, d, data[start:end], ts)
                    else:
                        others[proto] = others.get(proto, 0) + 1
                except DecodeError as exc:
                    errors[exc.reason] = errors.get(exc.reason, 0) + 1
                    if not counting:
                        packets -= 1
                        bytes_seen -= wire_len
                except Exception:  # the one isolation point: no packet may stop the sensor
                    if not (owned or counting):
                        packets -= 1  # seen by every shard before its owner was known
                        bytes_seen -= wire_len
                        continue
                    failed = stats.decode_errors
                    failed["internal_error"] = failed.get("internal_error", 0) + 1
                    if self._internal_errors_logged < 10:
                        self._internal_errors_logged += 1
                        log.exception("packet %d could not be processed", stats.packets + packets)
        finally:
            stats.packets += packets
            stats.bytes += bytes_seen
            if counting:
                stats.non_ip += non_ip
            # The last record read may be one the sieve dropped.
            stats.last_packet_ns = sieve.last_ts if sieve is not None and sieve.reading else ts
            self._next_expiry = next_expiry
