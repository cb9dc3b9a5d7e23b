"""Build the benchmark capture from the public captures in shared/captures.

The output is one classic pcap (Ethernet, microsecond timestamps) of about a million packets:

* the background part: replicas of every ``bg-*`` capture (ordinary LAN and internet traffic);
* the RMM part (about 5 % of the packets): a few replicas of the AnyDesk, TeamViewer, RDP and
  VNC captures, plus the project's own ``pcaps/*.pcap``.

Replica k rewrites every IPv4 and IPv6 address (IP headers and ARP) through a keyed hash of
(address, part, k), so each replica is a new set of hosts and flows, while one address maps the
same way everywhere in that replica and conversations stay intact. IP, TCP, UDP and ICMPv6
checksums are updated incrementally (RFC 1624), so a checksum that was right stays right.
Addresses inside payloads (DNS answers, ICMP quotes, SMB, tunnels) are left as they are.

Timestamps: each source is sorted and its idle gaps longer than ``MAX_GAP_US`` are shortened;
replica k starts at ``k * spacing`` after a fixed epoch, and all replicas are merged by timestamp,
so the file runs forward in time with many replicas active at once. The same arguments always
give the same bytes.

A second file holds only the background part (same packets, same addresses, same times), for
false-positive counts.
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import struct
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import dpkt

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CAPTURES = REPO.parent / "shared" / "captures"
DEFAULT_OUT = REPO / "bench" / "out" / "bench.pcap"
DEFAULT_BACKGROUND_OUT = REPO / "bench" / "out" / "bench-background.pcap"

RMM_PATTERNS = (
    "anydesk-2022-ndpi.pcapng",
    "teamviewer-ndpi.pcap",
    "rdp-*",
    "vnc-*",
)
RMM_SHARE = 0.05

# Output epoch: 2024-01-01T00:00:00Z, fixed so the output is reproducible.
BASE_US = 1_704_067_200 * 1_000_000
# Idle gaps longer than this (merged captures jump years) shrink to GAP_FILL_US.
MAX_GAP_US = 60 * 1_000_000
GAP_FILL_US = 1_000_000
HASH_KEY = b"rmm-sensor-bench-v1"

LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108

ETH_IPV4 = 0x0800
ETH_IPV6 = 0x86DD
ETH_ARP = 0x0806
ETH_VLAN = (0x8100, 0x88A8, 0x9100)
ETH_PPPOE_SESSION = 0x8864
PPP_IPV4 = 0x0021
PPP_IPV6 = 0x0057
MAX_VLAN_TAGS = 4

IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_ICMPV6 = 58

PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, LINKTYPE_ETHERNET)
RECORD = struct.Struct("<IIII")
# Stand-in MAC addresses for frames that arrive without an Ethernet header.
FAKE_ETH_SRC = b"\x02\x00\x00\x00\x00\x01"
FAKE_ETH_DST = b"\x02\x00\x00\x00\x00\x02"
NULL_FAMILY_INET6 = (24, 28, 30)  # BSD, FreeBSD, macOS values of AF_INET6


@dataclass(frozen=True, slots=True)
class RawPacket:
    ts_us: int
    data: bytes
    orig_len: int


@dataclass(frozen=True, slots=True)
class Plan:
    """Where one Ethernet frame holds the addresses and checksums the rewrite touches."""

    addr_offsets: tuple[int, ...]
    addr_size: int
    ip_csum: int  # offset of the IPv4 header checksum, or -1
    l4_csum: int  # offset of a TCP/UDP/ICMPv6 checksum covering the addresses, or -1
    l4_udp: bool  # a UDP checksum of 0 means "none" and stays 0


NO_PLAN = Plan((), 0, -1, -1, False)


@dataclass(frozen=True, slots=True)
class TemplatePacket:
    rel_us: int
    data: bytes
    orig_len: int
    plan: Plan


@dataclass(frozen=True, slots=True)
class Replica:
    template: tuple[TemplatePacket, ...]
    mapping: dict[bytes, tuple[bytes, int]]
    start_us: int
    background: bool
    order: int


# --- input -------------------------------------------------------------------------------------


def read_capture(path: Path) -> list[RawPacket]:
    """Every frame of a pcap or pcapng file as Ethernet, in file order."""
    with path.open("rb") as f:
        magic = f.read(4)
        f.seek(0)
        pcapng = magic == b"\x0a\x0d\x0d\x0a"
        frames = list(_read_pcapng(f.read()) if pcapng else _read_pcap(f))
    packets = []
    for ts_us, linktype, data, orig_len in frames:
        eth = to_ethernet(linktype, data)
        if eth is not None:
            packets.append(RawPacket(ts_us, eth, orig_len + len(eth) - len(data)))
    return packets


def _read_pcap(f: object) -> Iterator[tuple[int, int, bytes, int]]:
    reader = dpkt.pcap.Reader(f)
    linktype = reader.datalink()
    for ts, buf in reader:
        # dpkt's pcap reader drops the wire length; every input here has caplen == len.
        yield round(ts * 1_000_000), linktype, bytes(buf), len(buf)


def _read_pcapng(buf: bytes) -> Iterator[tuple[int, int, bytes, int]]:
    """Walk pcapng blocks with dpkt's block classes.

    dpkt's pcapng.Reader applies the first interface's resolution to every packet, which is wrong
    for the merged captures here (micro- and nanosecond interfaces in one file).
    """
    off = 0
    little = True
    interfaces: list[tuple[int, int, int]] = []  # (linktype, ticks per second, offset s)
    while off + 12 <= len(buf):
        if buf[off : off + 4] == b"\x0a\x0d\x0d\x0a":
            little = buf[off + 8 : off + 12] == b"\x4d\x3c\x2b\x1a"
            interfaces = []
        block_type, block_len = struct.unpack_from("<II" if little else ">II", buf, off)
        if block_len < 12 or off + block_len > len(buf):
            raise ValueError(f"truncated pcapng block at offset {off}")
        block = buf[off : off + block_len]
        off += block_len
        if block_type == dpkt.pcapng.PCAPNG_BT_IDB:
            idb_cls = (
                dpkt.pcapng.InterfaceDescriptionBlockLE
                if little
                else dpkt.pcapng.InterfaceDescriptionBlock
            )
            idb = idb_cls(block)
            interfaces.append(_interface(idb, little))
        elif block_type in (dpkt.pcapng.PCAPNG_BT_EPB, dpkt.pcapng.PCAPNG_BT_PB):
            if block_type == dpkt.pcapng.PCAPNG_BT_EPB:
                pkt_cls = (
                    dpkt.pcapng.EnhancedPacketBlockLE if little else dpkt.pcapng.EnhancedPacketBlock
                )
            else:
                pkt_cls = dpkt.pcapng.PacketBlockLE if little else dpkt.pcapng.PacketBlock
            pkt = pkt_cls(block)
            linktype, per_second, offset_s = interfaces[pkt.iface_id]
            ticks = (pkt.ts_high << 32) | pkt.ts_low
            ts_us = ticks * 1_000_000 // per_second + offset_s * 1_000_000
            yield ts_us, linktype, bytes(pkt.pkt_data), pkt.pkt_len


def _interface(idb: object, little: bool) -> tuple[int, int, int]:
    per_second = 1_000_000
    offset_s = 0
    for opt in idb.opts:  # type: ignore[attr-defined]
        if opt.code == dpkt.pcapng.PCAPNG_OPT_IF_TSRESOL and opt.data:
            value = opt.data[0]
            # High bit set: a negative power of 2; otherwise a negative power of 10.
            per_second = 2 ** (value & 0x7F) if value & 0x80 else 10 ** (value & 0x7F)
        elif opt.code == dpkt.pcapng.PCAPNG_OPT_IF_TSOFFSET and len(opt.data) == 8:
            offset_s = struct.unpack("<q" if little else ">q", opt.data)[0]
    return idb.linktype, per_second, offset_s  # type: ignore[attr-defined]


def to_ethernet(linktype: int, data: bytes) -> bytes | None:
    """The frame with an Ethernet header, or None when the link type is not handled."""
    if linktype == LINKTYPE_ETHERNET:
        return data
    if linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
        if len(data) < 4:
            return None
        # NULL stores the family in the writer's byte order, LOOP in network order.
        family = min(int.from_bytes(data[:4], "little"), int.from_bytes(data[:4], "big"))
        ethertype = ETH_IPV4 if family == 2 else ETH_IPV6 if family in NULL_FAMILY_INET6 else 0
        payload = data[4:]
    elif linktype == LINKTYPE_RAW:
        version = data[0] >> 4 if data else 0
        ethertype = ETH_IPV4 if version == 4 else ETH_IPV6 if version == 6 else 0
        payload = data
    else:
        return None
    if not ethertype:
        return None
    return FAKE_ETH_DST + FAKE_ETH_SRC + ethertype.to_bytes(2, "big") + payload


# --- where the addresses are ---------------------------------------------------------------------


def plan_frame(data: bytes) -> Plan:
    """Locate the IP (or ARP) addresses and the checksums that cover them."""
    off = 12
    if len(data) < off + 2:
        return NO_PLAN
    ethertype = int.from_bytes(data[off : off + 2], "big")
    off += 2
    for _ in range(MAX_VLAN_TAGS):
        if ethertype not in ETH_VLAN or len(data) < off + 4:
            break
        ethertype = int.from_bytes(data[off + 2 : off + 4], "big")
        off += 4
    if ethertype == ETH_PPPOE_SESSION and len(data) >= off + 8:
        ppp = int.from_bytes(data[off + 6 : off + 8], "big")
        ethertype = ETH_IPV4 if ppp == PPP_IPV4 else ETH_IPV6 if ppp == PPP_IPV6 else 0
        off += 8
    if ethertype == ETH_IPV4:
        return _plan_ipv4(data, off)
    if ethertype == ETH_IPV6:
        return _plan_ipv6(data, off)
    if ethertype == ETH_ARP:
        return _plan_arp(data, off)
    return NO_PLAN


def _plan_ipv4(data: bytes, off: int) -> Plan:
    if len(data) < off + 20 or data[off] >> 4 != 4:
        return NO_PLAN
    ihl = (data[off] & 0x0F) * 4
    proto = data[off + 9]
    frag_offset = int.from_bytes(data[off + 6 : off + 8], "big") & 0x1FFF
    l4_csum, udp = -1, False
    if ihl >= 20 and frag_offset == 0:
        l4_csum, udp = _l4_checksum(data, off + ihl, proto, icmp_has_pseudo=False)
    return Plan((off + 12, off + 16), 4, off + 10, l4_csum, udp)


def _plan_ipv6(data: bytes, off: int) -> Plan:
    if len(data) < off + 40 or data[off] >> 4 != 6:
        return NO_PLAN
    # Only a transport header right after the fixed header is fixed up; extension headers are
    # rare in these captures and a stale checksum there is harmless for the benchmark.
    l4_csum, udp = _l4_checksum(data, off + 40, data[off + 6], icmp_has_pseudo=True)
    return Plan((off + 8, off + 24), 16, -1, l4_csum, udp)


def _plan_arp(data: bytes, off: int) -> Plan:
    if len(data) < off + 28:
        return NO_PLAN
    htype_plen = data[off + 4 : off + 6]
    if int.from_bytes(data[off + 2 : off + 4], "big") != ETH_IPV4 or htype_plen != b"\x06\x04":
        return NO_PLAN
    return Plan((off + 14, off + 24), 4, -1, -1, False)


def _l4_checksum(data: bytes, l4: int, proto: int, icmp_has_pseudo: bool) -> tuple[int, bool]:
    if proto == IPPROTO_TCP and len(data) >= l4 + 18:
        return l4 + 16, False
    if proto == IPPROTO_UDP and len(data) >= l4 + 8:
        return l4 + 6, True
    if proto == IPPROTO_ICMPV6 and icmp_has_pseudo and len(data) >= l4 + 4:
        return l4 + 2, False
    return -1, False


# --- address mapping -----------------------------------------------------------------------------


def _digest(addr: bytes, label: str, attempt: int) -> bytes:
    return hashlib.blake2b(
        addr + label.encode() + attempt.to_bytes(4, "big"), key=HASH_KEY, digest_size=16
    ).digest()


def keep_as_is(addr: bytes) -> bool:
    """Addresses that name no single host: unspecified, multicast, broadcast."""
    if len(addr) == 4:
        return addr[0] == 0 or addr[0] >= 224
    return addr[0] == 0xFF or addr == bytes(16)


def map_address(addr: bytes, label: str, attempt: int) -> bytes:
    """Keep the prefix that says what kind of address it is, hash the rest."""
    h = _digest(addr, label, attempt)
    if len(addr) == 4:
        if addr[:2] in (b"\xc0\xa8", b"\xa9\xfe"):  # 192.168/16, 169.254/16
            head = addr[:2]
        elif addr[0] == 172 and 16 <= addr[1] <= 31:  # 172.16/12
            head = bytes((172, 16 + (h[0] & 0x0F)))
        else:
            head = addr[:1]
        # Never .0 or .255, which read as network or broadcast addresses.
        return head + h[1 : 4 - len(head)] + bytes((1 + h[4] % 254,))
    if addr[:2] == b"\xfe\x80":  # link-local: keep the /64, hash the interface id
        return addr[:8] + h[:8]
    return addr[:2] + h[:14]


def checksum_delta(old: bytes, new: bytes) -> int:
    """RFC 1624 term ~m + m' summed over the 16-bit words of one address."""
    total = 0
    for i in range(0, len(old), 2):
        total += (~((old[i] << 8) | old[i + 1]) & 0xFFFF) + ((new[i] << 8) | new[i + 1])
    return total


def build_mapping(
    addresses: Iterable[bytes], label: str, used: set[bytes]
) -> dict[bytes, tuple[bytes, int]]:
    """Map each address to a new one that no other address of any replica got."""
    mapping: dict[bytes, tuple[bytes, int]] = {}
    for addr in sorted(addresses):
        if keep_as_is(addr):
            mapping[addr] = (addr, 0)
            continue
        for attempt in range(1000):
            new = map_address(addr, label, attempt)
            if new not in used and not keep_as_is(new):
                break
        used.add(new)
        mapping[addr] = (new, checksum_delta(addr, new))
    return mapping


# --- templates and replicas ----------------------------------------------------------------------


def compress_gaps(packets: Sequence[RawPacket]) -> list[tuple[int, RawPacket]]:
    """Packets sorted by time with relative timestamps and long idle gaps shortened."""
    ordered = sorted(packets, key=lambda p: p.ts_us)
    out: list[tuple[int, RawPacket]] = []
    rel = 0
    for i, p in enumerate(ordered):
        if i:
            gap = p.ts_us - ordered[i - 1].ts_us
            rel += GAP_FILL_US if gap > MAX_GAP_US else gap
        out.append((rel, p))
    return out


def build_template(
    sources: Sequence[list[RawPacket]], spacing_us: int
) -> tuple[TemplatePacket, ...]:
    """One replica's worth of packets: the sources staggered slightly and merged by time."""
    entries: list[tuple[int, int, int, RawPacket]] = []
    for idx, packets in enumerate(sources):
        stagger = idx * spacing_us // max(len(sources), 1)
        for seq, (rel, p) in enumerate(compress_gaps(packets)):
            entries.append((rel + stagger, idx, seq, p))
    entries.sort(key=lambda e: e[:3])
    return tuple(
        TemplatePacket(rel, p.data, p.orig_len, plan_frame(p.data)) for rel, _, _, p in entries
    )


def template_addresses(template: Sequence[TemplatePacket]) -> set[bytes]:
    found = set()
    for tp in template:
        size = tp.plan.addr_size
        for off in tp.plan.addr_offsets:
            found.add(tp.data[off : off + size])
    return found


def _fix_checksum(buf: bytearray, off: int, delta: int, udp: bool) -> None:
    old = (buf[off] << 8) | buf[off + 1]
    if udp and old == 0:
        return  # UDP over IPv4 without a checksum
    total = (~old & 0xFFFF) + delta
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    new = ~total & 0xFFFF
    if udp and new == 0:
        new = 0xFFFF
    buf[off] = new >> 8
    buf[off + 1] = new & 0xFF


def replica_records(replica: Replica) -> Iterator[tuple[int, int, int, bool, bytes]]:
    """(ts_us, order, index, background, pcap record) for every packet of one replica."""
    mapping = replica.mapping
    pack = RECORD.pack
    for i, tp in enumerate(replica.template):
        plan = tp.plan
        data = tp.data
        if plan.addr_offsets:
            buf = bytearray(data)
            size = plan.addr_size
            delta = 0
            for off in plan.addr_offsets:
                new, d = mapping[data[off : off + size]]
                buf[off : off + size] = new
                delta += d
            if delta:
                if plan.ip_csum >= 0:
                    _fix_checksum(buf, plan.ip_csum, delta, False)
                if plan.l4_csum >= 0:
                    _fix_checksum(buf, plan.l4_csum, delta, plan.l4_udp)
            data = bytes(buf)
        ts = replica.start_us + tp.rel_us
        header = pack(ts // 1_000_000, ts % 1_000_000, len(data), tp.orig_len)
        yield ts, replica.order, i, replica.background, header + data


# --- main ----------------------------------------------------------------------------------------


def find_sources(captures: Path, project_pcaps: Path) -> tuple[list[Path], list[Path]]:
    background = sorted(captures.glob("bg-*"))
    rmm: list[Path] = []
    for pattern in RMM_PATTERNS:
        rmm.extend(sorted(captures.glob(pattern)))
    rmm.extend(sorted(project_pcaps.glob("*.pcap")))
    return background, rmm


def load(paths: Sequence[Path]) -> list[list[RawPacket]]:
    loaded = []
    for path in paths:
        packets = read_capture(path)
        if packets:
            loaded.append(packets)
        else:
            print(f"  skipped {path.name}: no Ethernet/IP frames", file=sys.stderr)
    return loaded


def replica_counts(target: int, bg_size: int, rmm_size: int) -> tuple[int, int]:
    n_rmm = max(1, round(target * RMM_SHARE / rmm_size)) if rmm_size else 0
    n_bg = max(1, round((target - n_rmm * rmm_size) / bg_size))
    return n_bg, n_rmm


def write_merged(replicas: Sequence[Replica], out: Path, background_out: Path) -> tuple[int, int]:
    """Merge every replica by timestamp into both files; return (all, background) counts."""
    out.parent.mkdir(parents=True, exist_ok=True)
    background_out.parent.mkdir(parents=True, exist_ok=True)
    n_all = n_bg = 0
    streams = [replica_records(r) for r in replicas]
    with (
        out.open("wb", buffering=1 << 22) as f_all,
        background_out.open("wb", buffering=1 << 22) as f_bg,
    ):
        f_all.write(PCAP_HEADER)
        f_bg.write(PCAP_HEADER)
        write_all, write_bg = f_all.write, f_bg.write
        for _, _, _, is_bg, record in heapq.merge(*streams):
            write_all(record)
            n_all += 1
            if is_bg:
                write_bg(record)
                n_bg += 1
    return n_all, n_bg


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--packets", type=int, default=1_000_000, help="target packet count")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--background-out", type=Path, default=DEFAULT_BACKGROUND_OUT)
    parser.add_argument("--captures", type=Path, default=DEFAULT_CAPTURES)
    parser.add_argument("--project-pcaps", type=Path, default=REPO / "pcaps")
    parser.add_argument("--spacing", type=float, default=1.0, help="seconds between replica starts")
    args = parser.parse_args(argv)
    if args.packets < 1 or args.spacing <= 0:
        parser.error("--packets and --spacing must be positive")

    started = time.perf_counter()
    bg_paths, rmm_paths = find_sources(args.captures, args.project_pcaps)
    if not bg_paths:
        parser.error(f"no bg-* captures in {args.captures}")
    spacing_us = round(args.spacing * 1_000_000)
    bg_template = build_template(load(bg_paths), spacing_us)
    rmm_template = build_template(load(rmm_paths), spacing_us)
    n_bg, n_rmm = replica_counts(args.packets, len(bg_template), len(rmm_template))

    replicas: list[Replica] = []
    used: set[bytes] = set()
    bg_addrs = template_addresses(bg_template)
    rmm_addrs = template_addresses(rmm_template)
    for k in range(n_bg):
        mapping = build_mapping(bg_addrs, f"bg-{k}", used)
        replicas.append(Replica(bg_template, mapping, BASE_US + k * spacing_us, True, k))
    # RMM replicas are spread evenly over the background's span.
    rmm_step = n_bg * spacing_us // max(n_rmm, 1)
    for j in range(n_rmm):
        mapping = build_mapping(rmm_addrs, f"rmm-{j}", used)
        start = BASE_US + rmm_step // 2 + j * rmm_step
        replicas.append(Replica(rmm_template, mapping, start, False, n_bg + j))
    prepared = time.perf_counter()

    n_all, n_background = write_merged(replicas, args.out, args.background_out)
    elapsed = time.perf_counter() - started
    print(
        f"sources: {len(bg_paths)} background ({len(bg_template)} packets per replica), "
        f"{len(rmm_paths)} RMM ({len(rmm_template)} packets per replica)"
    )
    print(f"replicas: {n_bg} background + {n_rmm} RMM, spacing {args.spacing:g} s")
    print(
        f"{args.out}: {n_all} packets ({n_all - n_background} RMM, "
        f"{100 * (n_all - n_background) / max(n_all, 1):.1f} %), "
        f"{args.out.stat().st_size / 1e6:.1f} MB"
    )
    print(
        f"{args.background_out}: {n_background} packets, "
        f"{args.background_out.stat().st_size / 1e6:.1f} MB"
    )
    print(f"time: {elapsed:.1f} s (prepare {prepared - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
