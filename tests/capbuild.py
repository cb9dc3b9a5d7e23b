"""Byte builders for capture files (pcap, pcapng, gzip) and for link, IP and transport headers.

Everything is written with ``struct`` so each field is explicit. A capture builder returns a
:class:`Built`: the file bytes, the frames a reader must yield for them (timestamps quantised to
the resolution the file stores) and the byte range of every record, so damage tests can say
exactly which frames come out and at which offset reading must stop.
"""

from __future__ import annotations

import gzip
import ipaddress
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sensor.capture import formats

# A packet as a test states it: (ts_ns, linktype, data, wire_len). The readers yield it as a
# sensor frame, its bytes a slice of a larger buffer; ``plain`` and ``framed`` convert.
Frame = tuple[int, int, bytes, int]


def plain(frames: Iterable[formats.Frame]) -> list[Frame]:
    """Reader output as (ts_ns, linktype, packet bytes, wire_len)."""
    return [(f[0], f[1], formats.frame_bytes(f), f[5]) for f in frames]


def framed(packets: Iterable[Frame]) -> list[formats.Frame]:
    """Packets as frames for the engine, each frame all of its own bytes."""
    return [formats.frame(*p) for p in packets]


NS = 1_000_000_000
CAPTURES = Path(__file__).resolve().parents[1] / ".." / "shared" / "captures"

LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276

ETH_IPV4 = 0x0800
ETH_IPV6 = 0x86DD
ETH_ARP = 0x0806

PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_ICMPV6 = 58

MAC_CLIENT = bytes.fromhex("00163e0a0b0c")
MAC_SERVER = bytes.fromhex("3c22fb123456")


# --- IP and transport ----------------------------------------------------------------------


def addr(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


def inet_checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def tcp(
    sport: int,
    dport: int,
    payload: bytes = b"",
    *,
    seq: int = 1000,
    ack: int = 0,
    flags: int = 0x18,
    options: bytes = b"",
    doff: int | None = None,
) -> bytes:
    """TCP header (checksum left zero: the decoders never verify it) plus payload."""
    if len(options) % 4:
        options += b"\x01" * (4 - len(options) % 4)  # NOP padding
    words = (20 + len(options)) // 4 if doff is None else doff
    header = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, words << 4, flags, 64240, 0, 0)
    return header + options + payload


def udp(sport: int, dport: int, payload: bytes = b"") -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def icmp_echo(ident: int = 1, seq: int = 1, payload: bytes = b"ping", *, v6: bool = False) -> bytes:
    kind = 128 if v6 else 8
    body = struct.pack("!BBHHH", kind, 0, 0, ident, seq) + payload
    if v6:
        return body  # the ICMPv6 checksum covers a pseudo-header; nothing here checks it
    return body[:2] + struct.pack("!H", inet_checksum(body)) + body[4:]


def ipv4(
    src: str,
    dst: str,
    proto: int,
    l4: bytes,
    *,
    options: bytes = b"",
    frag: int = 0x4000,
    total: int | None = None,
    ihl: int | None = None,
    ident: int = 0x1234,
    ttl: int = 64,
) -> bytes:
    """IPv4 header with a valid checksum; ``frag`` is the flags + fragment offset field."""
    if len(options) % 4:
        options += b"\x00" * (4 - len(options) % 4)  # end-of-options padding
    words = (20 + len(options)) // 4 if ihl is None else ihl
    length = 20 + len(options) + len(l4) if total is None else total
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x40 | words, 0, length, ident, frag, ttl, proto, 0, addr(src), addr(dst)
    )
    header += options
    header = header[:10] + struct.pack("!H", inet_checksum(header)) + header[12:]
    return header + l4


def ipv6(
    src: str,
    dst: str,
    proto: int,
    l4: bytes,
    *,
    ext: Sequence[tuple[int, bytes]] = (),
    plen: int | None = None,
) -> bytes:
    """IPv6 header, then ``ext`` headers ``(type, bytes)`` chained in order, then ``l4``.

    Each extension header's first byte (its next-header field) is filled in here.
    """
    types = [t for t, _ in ext] + [proto]
    chain = b"".join(bytes([types[i + 1]]) + body[1:] for i, (_, body) in enumerate(ext))
    payload = chain + l4
    length = len(payload) if plen is None else plen
    header = struct.pack("!IHBB16s16s", 0x60000000, length, types[0], 64, addr(src), addr(dst))
    return header + payload


def opts_ext(size: int = 8) -> bytes:
    """Hop-by-hop or destination options header of ``size`` bytes, filled with PadN."""
    assert size % 8 == 0 and size >= 8
    return bytes([0, size // 8 - 1, 1, size - 4]) + b"\x00" * (size - 4)


def routing_ext() -> bytes:
    """Type 4 (segment routing) header with one segment: 8 fixed bytes + 16 of address."""
    return bytes([0, 2, 4, 0, 0, 0, 0, 0]) + addr("2001:db8::99")


def fragment_ext(offset: int = 0, more: bool = False, ident: int = 0xABCD) -> bytes:
    return struct.pack("!BBHI", 0, 0, (offset << 3) | int(more), ident)


def ah_ext(icv: int = 12) -> bytes:
    """Authentication header: 12 fixed bytes + ICV; its length counts 4-byte words minus 2."""
    return bytes([0, (12 + icv) // 4 - 2, 0, 0]) + struct.pack("!II", 0x100, 1) + b"\xaa" * icv


# Ready-made packets used across the tests.
V4_SRC, V4_DST = "192.0.2.10", "198.51.100.20"
V6_SRC, V6_DST = "2001:db8::10", "2001:db8:1::20"
HTTP_REQUEST = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"


def v4_tcp(payload: bytes = HTTP_REQUEST) -> bytes:
    return ipv4(V4_SRC, V4_DST, PROTO_TCP, tcp(49152, 80, payload))


def v6_udp(payload: bytes = b"\x12\x34\x01\x00\x00\x01") -> bytes:
    return ipv6(V6_SRC, V6_DST, PROTO_UDP, udp(53000, 53, payload))


def v4_key(sport: int = 49152, dport: int = 80) -> bytes:
    return addr(V4_SRC) + addr(V4_DST) + struct.pack("!HH", sport, dport)


def v6_key(sport: int = 53000, dport: int = 53) -> bytes:
    return addr(V6_SRC) + addr(V6_DST) + struct.pack("!HH", sport, dport)


# --- link layers -----------------------------------------------------------------------------


def ethertype_of(ip: bytes) -> int:
    return ETH_IPV6 if ip[0] >> 4 == 6 else ETH_IPV4


def ethernet(ethertype: int, payload: bytes, *, pad: bool = True) -> bytes:
    """Ethernet II frame, zero-padded to the 60-byte minimum like a real NIC would."""
    frame = MAC_SERVER + MAC_CLIENT + struct.pack("!H", ethertype) + payload
    return frame + b"\x00" * (60 - len(frame)) if pad and len(frame) < 60 else frame


def vlan_tag(vid: int, inner: int) -> bytes:
    """What follows a VLAN TPID: the TCI (priority 0, ``vid``) and the next ethertype."""
    return struct.pack("!HH", vid & 0x0FFF, inner)


def vlan_frame(ip: bytes, tags: Sequence[tuple[int, int]], inner: int | None = None) -> bytes:
    """Ethernet frame carrying ``tags`` (``(tpid, vid)``, outermost first) then ``ip``."""
    types = [t for t, _ in tags] + [ethertype_of(ip) if inner is None else inner]
    head = b"".join(vlan_tag(vid, types[i + 1]) for i, (_, vid) in enumerate(tags))
    return ethernet(types[0], head + ip)


def pppoe_session(ip: bytes, *, ppp_proto: int | None = None, session: int = 0x1234) -> bytes:
    """PPPoE session header (RFC 2516) and the 2-byte PPP protocol, as after ethertype 0x8864."""
    proto = (0x0057 if ip[0] >> 4 == 6 else 0x0021) if ppp_proto is None else ppp_proto
    return struct.pack("!BBHHH", 0x11, 0x00, session, len(ip) + 2, proto) + ip


def sll(protocol: int, payload: bytes) -> bytes:
    """Linux cooked header v1: packet type, ARPHRD, address length, 8 address bytes, protocol."""
    return struct.pack("!HHH8sH", 0, 1, 6, MAC_CLIENT, protocol) + payload


def sll2(protocol: int, payload: bytes) -> bytes:
    """Linux cooked header v2: protocol, reserved, ifindex, ARPHRD, type, addr len, address."""
    return struct.pack("!HHIHBB8s", protocol, 0, 2, 1, 4, 6, MAC_CLIENT) + payload


def null_frame(ip: bytes, family: int, order: str) -> bytes:
    """BSD loopback: a 4-byte address family in ``order`` ("little" or "big")."""
    return family.to_bytes(4, "little" if order == "little" else "big") + ip


@dataclass(frozen=True, slots=True)
class Wrapped:
    linktype: int
    frame: bytes
    offset: int  # where the IP header starts


Wrapper = Callable[[bytes], Wrapped]


def _null(order: str, v6_family: int) -> Wrapper:
    def wrap(ip: bytes) -> Wrapped:
        family = v6_family if ip[0] >> 4 == 6 else 2
        return Wrapped(LINKTYPE_NULL, null_frame(ip, family, order), 4)

    return wrap


def _pppoe(ip: bytes) -> Wrapped:
    return Wrapped(LINKTYPE_ETHERNET, ethernet(0x8864, pppoe_session(ip)), 22)


def _vlan_pppoe(ip: bytes) -> Wrapped:
    return Wrapped(LINKTYPE_ETHERNET, vlan_frame(pppoe_session(ip), [(0x8100, 7)], 0x8864), 26)


def _sll2_vlan(ip: bytes) -> Wrapped:
    return Wrapped(LINKTYPE_LINUX_SLL2, sll2(0x8100, vlan_tag(42, ethertype_of(ip)) + ip), 24)


# Every supported link layer, keyed by a readable id; each wraps an IPv4 or IPv6 packet.
WRAPPERS: dict[str, Wrapper] = {
    "ethernet": lambda ip: Wrapped(1, ethernet(ethertype_of(ip), ip), 14),
    "vlan": lambda ip: Wrapped(1, vlan_frame(ip, [(0x8100, 100)]), 18),
    "qinq-88a8": lambda ip: Wrapped(1, vlan_frame(ip, [(0x88A8, 200), (0x8100, 100)]), 22),
    "qinq-9100": lambda ip: Wrapped(1, vlan_frame(ip, [(0x9100, 300), (0x8100, 100)]), 22),
    "pppoe": _pppoe,
    "vlan-pppoe": _vlan_pppoe,
    "sll": lambda ip: Wrapped(LINKTYPE_LINUX_SLL, sll(ethertype_of(ip), ip), 16),
    "sll-vlan": lambda ip: Wrapped(
        LINKTYPE_LINUX_SLL, sll(0x8100, vlan_tag(42, ethertype_of(ip)) + ip), 20
    ),
    "sll2": lambda ip: Wrapped(LINKTYPE_LINUX_SLL2, sll2(ethertype_of(ip), ip), 20),
    "sll2-vlan": _sll2_vlan,
    "raw-101": lambda ip: Wrapped(LINKTYPE_RAW, ip, 0),
    "raw-12": lambda ip: Wrapped(12, ip, 0),
    "raw-14": lambda ip: Wrapped(14, ip, 0),
    "null-le-10": _null("little", 10),
    "null-le-24": _null("little", 24),
    "null-le-28": _null("little", 28),
    "null-le-30": _null("little", 30),
    "null-be-10": _null("big", 10),
    "null-be-24": _null("big", 24),
    "null-be-28": _null("big", 28),
    "null-be-30": _null("big", 30),
    "loop": lambda ip: Wrapped(
        LINKTYPE_LOOP, null_frame(ip, 24 if ip[0] >> 4 == 6 else 2, "big"), 4
    ),
    "ipv4-228": lambda ip: Wrapped(LINKTYPE_IPV4, ip, 0),
    "ipv6-229": lambda ip: Wrapped(LINKTYPE_IPV6, ip, 0),
}
# 228 and 229 carry only their own IP version.
V4_WRAPPERS = sorted(k for k in WRAPPERS if k != "ipv6-229")
V6_WRAPPERS = sorted(k for k in WRAPPERS if k != "ipv4-228")


# --- capture files ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Built:
    data: bytes
    frames: tuple[Frame, ...]  # what a reader must yield
    # (start, end, index into frames or -1) for the file header and every record or block
    records: tuple[tuple[int, int, int], ...]


@dataclass(frozen=True, slots=True)
class Iface:
    linktype: int = LINKTYPE_ETHERNET
    tsresol: int | None = None  # the if_tsresol byte; None writes no option (microseconds)
    tsoffset: int = 0  # if_tsoffset, seconds
    snaplen: int = 0

    @property
    def per_second(self) -> int:
        if self.tsresol is None:
            return 1_000_000
        exp = self.tsresol & 0x7F
        return 1 << exp if self.tsresol & 0x80 else 10**exp

    def units(self, ts_ns: int) -> int:
        return (ts_ns - self.tsoffset * NS) * self.per_second // NS

    def read_back(self, ts_ns: int) -> int:
        """The timestamp a reader must return for ``ts_ns`` stored on this interface."""
        return self.units(ts_ns) * NS // self.per_second + self.tsoffset * NS


def pcap(
    frames: Sequence[Frame],
    *,
    big_endian: bool = False,
    nanos: bool = False,
    linktype: int | None = None,
    snaplen: int = 262144,
) -> Built:
    """Classic pcap; every frame must have the file's link type."""
    e = ">" if big_endian else "<"
    lt = frames[0][1] if linktype is None else linktype
    magic = 0xA1B23C4D if nanos else 0xA1B2C3D4
    out = [struct.pack(e + "IHHiIII", magic, 2, 4, 0, 0, snaplen, lt)]
    records = [(0, 24, -1)]
    expected: list[Frame] = []
    pos = 24
    for ts, frame_lt, data, wire_len in frames:
        assert linktype is not None or frame_lt == lt
        sec, frac = divmod(ts, NS)
        if not nanos:
            frac //= 1000
        out.append(struct.pack(e + "IIII", sec, frac, len(data), wire_len) + data)
        records.append((pos, pos + 16 + len(data), len(expected)))
        pos += 16 + len(data)
        read_ts = sec * NS + (frac if nanos else frac * 1000)
        expected.append((read_ts, lt & 0xFFFF, data, wire_len))
    return Built(b"".join(out), tuple(expected), tuple(records))


def pad4(data: bytes) -> bytes:
    return data + b"\x00" * (-len(data) % 4)


def option(code: int, value: bytes, e: str) -> bytes:
    return struct.pack(e + "HH", code, len(value)) + pad4(value)


def block(btype: int, body: bytes, e: str) -> bytes:
    length = 12 + len(body)
    return struct.pack(e + "II", btype, length) + body + struct.pack(e + "I", length)


def shb(e: str, *, options: bytes = b"") -> bytes:
    return block(0x0A0D0D0A, struct.pack(e + "IHHq", 0x1A2B3C4D, 1, 0, -1) + options, e)


def idb(iface: Iface, e: str, *, name: str = "eth0") -> bytes:
    opts = option(2, name.encode(), e)  # if_name
    if iface.tsresol is not None:
        opts += option(9, bytes([iface.tsresol]), e)
    if iface.tsoffset:
        opts += option(14, struct.pack(e + "q", iface.tsoffset), e)
    opts += option(0, b"", e)
    return block(1, struct.pack(e + "HHI", iface.linktype, 0, iface.snaplen) + opts, e)


def epb(
    iface_id: int, units: int, data: bytes, wire_len: int, e: str, *, caplen: int = -1
) -> bytes:
    hi, lo = divmod(units, 1 << 32)
    cap = len(data) if caplen < 0 else caplen
    head = struct.pack(e + "IIIII", iface_id, hi, lo, cap, wire_len)
    flags = option(2, struct.pack(e + "I", 1), e) + option(0, b"", e)  # epb_flags: inbound
    return block(6, head + pad4(data) + flags, e)


def opb(iface_id: int, units: int, data: bytes, wire_len: int, e: str) -> bytes:
    """Obsolete packet block (type 2): a 16-bit interface id and a drops count."""
    hi, lo = divmod(units, 1 << 32)
    return block(
        2, struct.pack(e + "HHIIII", iface_id, 0, hi, lo, len(data), wire_len) + pad4(data), e
    )


def spb(data: bytes, wire_len: int, e: str) -> bytes:
    return block(3, struct.pack(e + "I", wire_len) + pad4(data), e)


def other_blocks(e: str) -> list[bytes]:
    """Blocks a reader must skip: name resolution, interface statistics, custom (PEN 32473)."""
    record = addr("192.0.2.1") + b"host.test\x00"
    nrb = block(4, option(1, record, e) + option(0, b"", e), e)  # nrb_record_ipv4, end
    isb = block(5, struct.pack(e + "III", 0, 0, 0) + option(0, b"", e), e)
    custom = block(0x00000BAD, struct.pack(e + "I", 32473) + b"opaque\x00\x00", e)
    return [nrb, isb, custom]


Placement = tuple[int, int, str]  # (section, interface, "epb" | "spb" | "opb")


def pcapng(
    sections: Sequence[Sequence[Iface]],
    frames: Sequence[Frame],
    where: Sequence[Placement],
    *,
    big_endian: bool = False,
    extras: bool = True,
) -> Built:
    """pcapng with the given sections and interfaces; ``where[i]`` places ``frames[i]``.

    ``extras`` adds SHB options and blocks a reader must skip (NRB, ISB, a custom block).
    """
    e = ">" if big_endian else "<"
    out: list[bytes] = []
    records: list[tuple[int, int, int]] = []
    expected: list[Frame] = []
    pos = 0
    last_ts = 0

    def put(raw: bytes, frame: Frame | None = None) -> None:
        nonlocal pos
        out.append(raw)
        records.append((pos, pos + len(raw), -1 if frame is None else len(expected)))
        if frame is not None:
            expected.append(frame)
        pos += len(raw)

    for s, ifaces in enumerate(sections):
        put(shb(e, options=option(4, b"capbuild", e) + option(0, b"", e) if extras else b""))
        for i, iface in enumerate(ifaces):
            put(idb(iface, e, name=f"if{i}"))
        if extras:
            for raw in other_blocks(e):
                put(raw)
        for (ts, lt, data, wire_len), (fs, fi, kind) in zip(frames, where, strict=True):
            if fs != s:
                continue
            iface = ifaces[fi]
            assert lt == iface.linktype
            if kind == "spb":
                assert fi == 0 and len(data) == min(wire_len, iface.snaplen or wire_len)
                put(spb(data, wire_len, e), (last_ts, lt, data, wire_len))
                continue
            last_ts = iface.read_back(ts)
            maker = epb if kind == "epb" else opb
            put(maker(fi, iface.units(ts), data, wire_len, e), (last_ts, lt, data, wire_len))
    return Built(b"".join(out), tuple(expected), tuple(records))


# Four Ethernet interfaces with different clocks, then a second section with a snap length.
SECTION_A = (
    Iface(),
    Iface(tsresol=9),
    Iface(tsresol=0x80 | 20),
    Iface(tsresol=6, tsoffset=1_600_000_000),
)
SECTION_B = (Iface(tsresol=9, snaplen=262144),)


def mixed_pcapng(frames: Sequence[Frame], *, big_endian: bool = False) -> Built:
    """``frames`` (Ethernet) spread over two sections, five interfaces and all packet blocks."""
    where = mixed_placement(frames)
    return pcapng((SECTION_A, SECTION_B), frames, where, big_endian=big_endian)


def mixed_placement(frames: Sequence[Frame]) -> list[Placement]:
    half = len(frames) // 2
    where: list[Placement] = []
    for i, (_ts, _lt, data, wire_len) in enumerate(frames):
        if i < half:
            where.append((0, i % 4, "opb" if i == 1 else "epb"))
        elif i % 3 == 1 and len(data) == wire_len:
            where.append((1, 0, "spb"))
        else:
            where.append((1, 0, "opb" if i % 3 == 2 else "epb"))
    return where


def gzipped(built: Built) -> Built:
    """The same capture gzip-compressed (records then refer to the decompressed bytes)."""
    return Built(gzip.compress(built.data, mtime=0), built.frames, built.records)


def sample_frames() -> list[Frame]:
    """Ethernet frames with awkward timestamps, sizes and snap lengths."""
    big = ipv4(V4_SRC, V4_DST, PROTO_TCP, tcp(49152, 443, bytes(range(256)) * 6))
    rows: list[tuple[int, bytes, int]] = [
        (1_700_000_000_123_456_789, ethernet(ETH_IPV4, v4_tcp()), 0),
        (1_700_000_000_999_999_999, ethernet(ETH_IPV6, v6_udp()), 0),
        (1_700_000_001_333_333_333, b"", 60),  # zero bytes kept of a 60-byte frame
        (1_700_000_001_500_000_001, ethernet(ETH_IPV4, big)[:96], 14 + len(big)),  # snapped
        (1_700_000_002_500_000_000, ethernet(ETH_ARP, b"\x00\x01\x08\x00\x06\x04\x00\x01"), 0),
        (1_700_000_003_000_001_000, ethernet(ETH_IPV4, v4_tcp(b"x" * 7))[:61], 0),  # odd size
        (1_700_000_004_000_000_500, ethernet(ETH_IPV6, v6_udp(b"y" * 33)), 0),
        (1_700_000_005_987_654_321, ethernet(ETH_IPV4, big), 0),
    ]
    return [(ts, LINKTYPE_ETHERNET, data, wire or len(data)) for ts, data, wire in rows]
