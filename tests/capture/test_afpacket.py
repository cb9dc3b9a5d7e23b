"""Live AF_PACKET ring capture on a veth pair inside a network namespace made for each test.

The test process enters the namespace (setns on its only thread) for the length of one test and
returns to its own namespace in the fixture's finalizer, which also deletes the namespace, so no
interface outside it is ever touched. Frames are injected with a raw packet socket on the peer end
of the pair, which the kernel delivers to the capture end synchronously and in order.
"""

from __future__ import annotations

import ctypes
import dataclasses
import fcntl
import os
import secrets
import socket
import struct
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sensor.capture import afpacket
from sensor.capture.afpacket import (
    BPF_INSN,
    BPF_RET_K,
    MAX_SNAPLEN,
    CaptureSetupError,
    RingCapture,
    RingSettings,
    compile_bpf,
)
from tests.capbuild import Frame, plain

REPO = Path(__file__).resolve().parents[2]
CAPTURE_IF = "rmmcap0"
SENDER_IF = "rmmsend0"
CLONE_NEWNET = 0x40000000
# Small rings: tests open many captures, and a short block timeout keeps them quick.
SMALL = RingSettings(block_size=1 << 16, block_count=8, block_timeout_ms=10, snaplen=4096)
MAC_A = bytes.fromhex("020000000a01")
MAC_B = bytes.fromhex("020000000b02")
# Documentation ranges (RFC 5737): the frames never leave the namespace's veth pair anyway.
HOST_A = bytes([192, 0, 2, 10])
HOST_B = bytes([198, 51, 100, 20])


# -- frame builders ------------------------------------------------------------------------------


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _ipv4(src: bytes, dst: bytes, proto: int, payload: bytes, ident: int) -> bytes:
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, 0x4000, 64, proto, 0, src, dst
    )
    return header[:10] + struct.pack("!H", _checksum(header)) + header[12:] + payload


def _l4(proto: int, sport: int, dport: int, body: bytes, seq: int) -> bytes:
    if proto == socket.IPPROTO_UDP:
        return struct.pack("!HHHH", sport, dport, 8 + len(body), 0) + body
    # TCP, PSH|ACK, no options
    return struct.pack("!HHIIBBHHH", sport, dport, seq, 1, 5 << 4, 0x18, 65535, 0, 0) + body


def ip_packet(
    src: bytes = HOST_A,
    dst: bytes = HOST_B,
    sport: int = 40000,
    dport: int = 50001,
    proto: int = socket.IPPROTO_UDP,
    size: int = 64,
    seq: int = 0,
) -> bytes:
    """An IPv4 UDP or TCP packet whose body (``size`` bytes) carries ``seq`` to tell it apart."""
    body = (struct.pack("!I", seq) + bytes(range(256)) * (size // 256 + 1))[:size]
    return _ipv4(src, dst, proto, _l4(proto, sport, dport, body, seq), seq & 0xFFFF)


def ether(packet: bytes, tags: tuple[tuple[int, int], ...] = (), src: bytes = MAC_A) -> bytes:
    """Ethernet II around an IPv4 packet, with (tpid, tci) VLAN tags outermost first."""
    dst = MAC_B if src == MAC_A else MAC_A
    stack = b"".join(struct.pack("!HH", tpid, tci) for tpid, tci in tags)
    return dst + src + stack + b"\x08\x00" + packet


def udp_frame(dport: int = 50001, size: int = 64, seq: int = 0, sport: int = 40000) -> bytes:
    return ether(ip_packet(sport=sport, dport=dport, size=size, seq=seq))


# -- the namespace ---------------------------------------------------------------------------------


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


class Lab:
    """A namespace with the veth pair CAPTURE_IF <-> SENDER_IF; the test process is inside it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.captures: list[RingCapture] = []
        self.make_pair()
        self.sender = self._sender()

    def _sender(self) -> socket.socket:
        sender = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # protocol 0: send only
        sender.bind((SENDER_IF, 0))
        return sender

    def ip(self, *args: str) -> None:
        _run("ip", "-n", self.name, *args)

    def make_pair(self) -> None:
        self.ip("link", "add", "name", CAPTURE_IF, "type", "veth", "peer", "name", SENDER_IF)
        self.ip("link", "set", CAPTURE_IF, "up")
        self.ip("link", "set", SENDER_IF, "up")
        _wait_for(lambda: _carrier(CAPTURE_IF) and _carrier(SENDER_IF))

    def recreate_pair(self, delete: bool = True) -> None:
        """Delete (if still there) and re-create the pair: same names, new interface indexes."""
        self.sender.close()
        if delete:
            self.ip("link", "del", CAPTURE_IF)
        self.make_pair()
        self.sender = self._sender()

    def open(self, settings: RingSettings = SMALL, interface: str = CAPTURE_IF) -> RingCapture:
        cap = RingCapture(interface, settings)
        self.captures.append(cap)
        return cap

    def send(self, frames: list[bytes]) -> None:
        for frame in frames:
            self.sender.send(frame)

    def close(self) -> None:
        for cap in self.captures:
            cap.close()
        self.sender.close()


def _carrier(interface: str) -> bool:
    # sysfs would show the namespace it was mounted in, not ours: ask the kernel directly.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        request = struct.pack("16s16x", interface.encode())
        flags = struct.unpack_from("16sH", fcntl.ioctl(probe, 0x8913, request))[1]  # SIOCGIFFLAGS
    return bool(flags & 0x40)  # IFF_RUNNING: both ends up, carrier on


def _wait_for(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _netns_inode() -> int:
    return os.stat("/proc/thread-self/ns/net").st_ino


@pytest.fixture
def lab() -> Iterator[Lab]:
    name = f"rmmtest-{os.getpid()}-{secrets.token_hex(3)}"
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    home_inode = _netns_inode()
    _run("ip", "netns", "add", name)
    try:
        # No IPv6 autoconfiguration chatter: the only frames on the pair are the test's own.
        _run(
            "ip", "netns", "exec", name, "sysctl", "-qw",
            "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1",
        )  # fmt: skip
        inside = os.open(f"/var/run/netns/{name}", os.O_RDONLY)
        try:
            _setns(inside)
        finally:
            os.close(inside)
        try:
            the_lab = Lab(name)
            try:
                yield the_lab
            finally:
                the_lab.close()
        finally:
            _setns(home)
            assert _netns_inode() == home_inode
    finally:
        os.close(home)
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


def collect(cap: RingCapture, count: int, seconds: float = 5.0, settle: float = 0.1) -> list[Frame]:
    """Frames until ``count`` have arrived, then ``settle`` seconds more to catch any extra."""
    got: list[Frame] = []
    deadline = time.monotonic() + seconds
    while len(got) < count and time.monotonic() < deadline:
        got.extend(plain(cap.frames(20)))
    end = time.monotonic() + settle  # longer than the block timeouts used here
    while time.monotonic() < end:
        got.extend(plain(cap.frames(20)))
    return got


# -- compiling filters (no namespace needed) -------------------------------------------------------


def _program(packed: bytes) -> list[tuple[int, int, int, int]]:
    assert len(packed) % BPF_INSN.size == 0
    return [BPF_INSN.unpack_from(packed, i) for i in range(0, len(packed), BPF_INSN.size)]


def test_empty_filter_accepts_snaplen_bytes() -> None:
    assert _program(compile_bpf("", 1, 1234)) == [(BPF_RET_K, 0, 0, 1234)]
    assert _program(compile_bpf("  ", 101, 96)) == [(BPF_RET_K, 0, 0, 96)]


@settings(max_examples=20, deadline=None)
@given(snaplen=st.integers(1, MAX_SNAPLEN))
def test_every_accept_returns_the_snaplen(snaplen: int) -> None:
    program = _program(compile_bpf("udp port 50001 or tcp port 443", 1, snaplen))
    returns = [k for code, _jt, _jf, k in program if code == BPF_RET_K]
    assert len(program) > 5
    assert set(returns) == {0, snaplen}


@pytest.mark.parametrize(
    ("expression", "linktype", "message"),
    [
        ("udp portt 50001", 1, "syntax error"),
        ("tcp port 99999", 1, "port 99999"),
        ("ether host 02:00:00:00:00:01", 101, "ethernet addresses supported only"),
        ("(udp", 1, "syntax error"),
    ],
)
def test_bad_filters_are_setup_errors(expression: str, linktype: int, message: str) -> None:
    with pytest.raises(CaptureSetupError, match="bad capture filter") as caught:
        compile_bpf(expression, linktype, 100)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"snaplen": 0}, "snaplen 0"),
        ({"snaplen": MAX_SNAPLEN + 1}, "snaplen 262145"),
        ({"block_size": 3 * 4096}, "power-of-two"),
        ({"block_size": 2048}, "power-of-two"),
        ({"block_size": 1 << 16, "snaplen": 65536}, "too small for snaplen"),
        ({"block_count": 0}, "block_count 0"),
        ({"block_timeout_ms": 0}, "block_timeout_ms 0"),
        ({"fanout_group": 70000}, "fanout_group 70000"),
        ({"fanout_group": -1}, "fanout_group -1"),
    ],
)
def test_bad_settings_are_setup_errors(overrides: dict[str, int], message: str) -> None:
    base = {"block_size": 1 << 16, "block_count": 2, "snaplen": 2048}
    with pytest.raises(CaptureSetupError, match=message):
        # Settings are checked first; were they not, the missing interface would fail instead.
        RingCapture("rmmnope0", RingSettings(**(base | overrides)))  # type: ignore[arg-type]


def test_default_ring_is_at_most_128_mib() -> None:
    ring = RingSettings()
    assert ring.block_size * ring.block_count <= 128 << 20
    assert ring.snaplen == MAX_SNAPLEN and ring.block_size >= ring.snaplen + 1024


class _RefusingSocket:
    def setsockopt(self, *_args: object) -> None:
        raise PermissionError(1, "Operation not permitted")


def test_promiscuous_refusal_names_the_capability() -> None:
    # The kernel itself lets any packet socket join PROMISC; a security module may still refuse.
    with pytest.raises(CaptureSetupError, match=r"CAP_NET_ADMIN.*promiscuous: false"):
        afpacket._set_promiscuous(_RefusingSocket(), 7, "span0")  # type: ignore[arg-type]


# -- live capture ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "frames"),
    [
        ("sizes", [udp_frame(size=n, seq=i) for i, n in enumerate([18, 64, 200, 1000, 1472] * 8)]),
        (
            "tcp-and-udp",
            [
                ether(ip_packet(proto=proto, size=100 + i, seq=i, dport=443))
                for i, proto in enumerate([socket.IPPROTO_TCP, socket.IPPROTO_UDP] * 20)
            ],
        ),
        (
            "vlan-802.1q",
            [ether(ip_packet(seq=i), tags=((0x8100, 0x2000 | 100 + i),)) for i in range(20)],
        ),
        (
            "qinq-802.1ad",
            [ether(ip_packet(seq=i), tags=((0x88A8, 300), (0x8100, 10 + i))) for i in range(20)],
        ),
        ("many", [udp_frame(size=100, seq=i) for i in range(400)]),
    ],
)
def test_every_frame_arrives_once_in_order(lab: Lab, name: str, frames: list[bytes]) -> None:
    cap = lab.open()
    assert cap.linktype == 1
    before = time.time_ns()
    lab.send(frames)
    got = collect(cap, len(frames))
    after = time.time_ns()
    assert [data for _ts, _lt, data, _wire in got] == frames  # VLAN tags put back in place
    assert [wire for _ts, _lt, _data, wire in got] == [len(f) for f in frames]
    assert {linktype for _ts, linktype, _data, _wire in got} == {1}
    stamps = [ts for ts, _lt, _data, _wire in got]
    assert stamps == sorted(stamps)
    assert before <= stamps[0] and stamps[-1] <= after
    assert cap.stats() == (len(frames), 0)
    assert cap.stats() == (len(frames), 0)  # cumulative: the second read adds nothing


def test_default_settings_capture(lab: Lab) -> None:
    cap = lab.open(RingSettings())
    frames = [udp_frame(seq=i, size=1400) for i in range(50)]
    lab.send(frames)
    assert [data for _ts, _lt, data, _wire in collect(cap, 50)] == frames
    assert cap.stats() == (50, 0)


@pytest.mark.parametrize("bpf", ["", "udp"])
def test_snaplen_truncates_but_keeps_wire_length(lab: Lab, bpf: str) -> None:
    cap = lab.open(RingSettings(block_size=1 << 16, block_count=4, snaplen=64, bpf=bpf))
    frames = [udp_frame(size=n, seq=n) for n in (10, 22, 23, 200, 1472)]
    lab.send(frames)
    got = collect(cap, len(frames))
    assert [data for _ts, _lt, data, _wire in got] == [f[:64] for f in frames]
    assert [wire for _ts, _lt, _data, wire in got] == [len(f) for f in frames]


def test_filter_keeps_only_matching_frames(lab: Lab) -> None:
    cap = lab.open(
        RingSettings(block_size=1 << 16, block_count=4, snaplen=4096, bpf="udp port 50001")
    )
    wanted = [
        udp_frame(dport=50001, seq=1),
        udp_frame(sport=50001, dport=53, seq=2),  # the reply direction matches too
        udp_frame(dport=50001, size=1400, seq=3),
    ]
    unwanted = [
        udp_frame(dport=53, seq=4),
        udp_frame(dport=50002, seq=5),
        ether(ip_packet(proto=socket.IPPROTO_TCP, dport=50001, seq=6)),
        MAC_B + MAC_A + b"\x08\x06" + bytes(28),  # ARP
    ]
    mixed = [unwanted[0], wanted[0], unwanted[1], unwanted[2], wanted[1], unwanted[3], wanted[2]]
    lab.send(mixed * 3)
    got = collect(cap, len(wanted) * 3)
    assert [data for _ts, _lt, data, _wire in got] == wanted * 3
    assert cap.stats() == (9, 0)  # filtered-out packets are not counted


def test_fanout_splits_by_flow_and_loses_nothing(lab: Lab) -> None:
    group = secrets.randbelow(0xFFFF)
    ring = dataclasses.replace(SMALL, fanout_group=group)
    caps = [lab.open(ring), lab.open(ring)]
    flows: dict[bytes, int] = {}
    sent: list[bytes] = []
    for flow in range(32):
        proto = socket.IPPROTO_TCP if flow % 2 else socket.IPPROTO_UDP
        client = bytes([192, 0, 2, 1 + flow % 7])
        sport = 40000 + flow
        for seq in range(6):
            if seq % 2:  # the reply: addresses, ports and MACs swapped
                packet = ip_packet(HOST_B, client, 443, sport, proto, 80, seq)
                frame = ether(packet, src=MAC_B)
            else:
                frame = ether(ip_packet(client, HOST_B, sport, 443, proto, 80, seq))
            flows[frame] = flow
            sent.append(frame)
    lab.send(sent)
    got = [[data for _ts, _lt, data, _wire in collect(cap, 1, 1.0)] for cap in caps]
    assert Counter(got[0]) + Counter(got[1]) == Counter(sent)  # each packet exactly once
    owners = [{flows[frame] for frame in frames} for frames in got]
    assert owners[0].isdisjoint(owners[1])  # both directions of a flow went to one socket
    assert owners[0] and owners[1]  # 32 flows did not all hash to one member
    for frames in got:  # and in order within each socket
        mine = set(frames)
        assert frames == [frame for frame in sent if frame in mine]
    assert sum(cap.stats()[0] for cap in caps) == len(sent)


def test_fanout_members_must_match(lab: Lab) -> None:
    group = secrets.randbelow(0xFFFF)
    lab.open(RingSettings(block_size=1 << 16, block_count=2, snaplen=2048, fanout_group=group))
    lab.ip("link", "set", "lo", "up")
    with pytest.raises(CaptureSetupError, match=f"cannot join fanout group {group}"):
        lab.open(
            RingSettings(block_size=1 << 16, block_count=2, snaplen=2048, fanout_group=group),
            interface="lo",
        )


def test_consumer_stopping_mid_block_resumes_without_duplicates(lab: Lab) -> None:
    cap = lab.open()
    frames = [udp_frame(seq=i) for i in range(30)]
    lab.send(frames)
    time.sleep(0.05)  # all 30 sit in one retired block
    got: list[Frame] = []
    for take in (1, 4, 10):
        stream = cap.frames(100)
        got.extend(plain(next(stream) for _ in range(take)))
        stream.close()
    got.extend(collect(cap, 30 - len(got)))
    assert [data for _ts, _lt, data, _wire in got] == frames


def test_ring_wraps_many_times(lab: Lab) -> None:
    cap = lab.open(RingSettings(block_size=8192, block_count=4, block_timeout_ms=5, snaplen=2048))
    sent: list[bytes] = []
    got: list[Frame] = []
    for batch in range(40):  # each batch fills about one block
        frames = [udp_frame(size=1000, seq=batch * 100 + i) for i in range(6)]
        lab.send(frames)
        sent.extend(frames)
        got.extend(collect(cap, 6, 2.0, settle=0.02))
    assert [data for _ts, _lt, data, _wire in got] == sent
    assert cap.stats() == (len(sent), 0)


def test_overflow_is_counted_as_drops(lab: Lab) -> None:
    cap = lab.open(RingSettings(block_size=8192, block_count=4, block_timeout_ms=5, snaplen=2048))
    frames = [udp_frame(size=1000, seq=i) for i in range(300)]
    lab.send(frames)  # nobody reads: the ring fills after a few dozen
    packets, drops = cap.stats()
    got = collect(cap, 300, 0.3)
    assert packets == 300
    assert drops > 200
    assert len(got) == packets - drops
    datas = [data for _ts, _lt, data, _wire in got]
    kept = set(datas)
    assert datas == [frame for frame in frames if frame in kept]  # an ordered subset
    lab.send(frames[:5])  # after draining, capture goes on
    assert [data for _ts, _lt, data, _wire in collect(cap, 5)] == frames[:5]
    assert cap.stats() == (305, drops)


def test_interface_down_up_and_recreated(lab: Lab) -> None:
    cap = lab.open()
    lab.send([udp_frame(seq=1)])
    assert len(collect(cap, 1)) == 1
    assert cap.healthy() and not cap.needs_reopen()

    lab.ip("link", "set", CAPTURE_IF, "down")
    started = time.monotonic()
    for _ in range(3):
        assert list(cap.frames(100)) == []  # ENETDOWN is absorbed, not raised
    assert time.monotonic() - started >= 0.15  # the error was cleared: no busy loop
    assert not cap.healthy() and not cap.needs_reopen()

    lab.ip("link", "set", CAPTURE_IF, "up")
    _wait_for(lambda: _carrier(CAPTURE_IF))
    assert cap.healthy()
    lab.send([udp_frame(seq=2)])  # the same socket captures again by itself
    assert [data for _ts, _lt, data, _wire in collect(cap, 1)] == [udp_frame(seq=2)]

    lab.recreate_pair()
    assert cap.needs_reopen() and not cap.healthy()
    assert list(cap.frames(50)) == []
    cap.reopen()
    assert cap.healthy() and not cap.needs_reopen()
    lab.send([udp_frame(seq=3)])
    assert [data for _ts, _lt, data, _wire in collect(cap, 1)] == [udp_frame(seq=3)]
    assert cap.stats() == (3, 0)  # totals survive reopen()


def test_reopen_while_the_interface_is_missing(lab: Lab) -> None:
    cap = lab.open()
    lab.ip("link", "del", CAPTURE_IF)
    assert cap.needs_reopen()
    with pytest.raises(CaptureSetupError, match=f"interface {CAPTURE_IF} does not exist"):
        cap.reopen()
    with pytest.raises(ValueError, match="closed"):
        cap.fileno()
    assert not cap.healthy()
    lab.recreate_pair(delete=False)
    cap.reopen()
    assert cap.fileno() >= 0 and cap.healthy()


@pytest.mark.parametrize(
    ("interface", "message"),
    [
        ("rmmnope0", "interface rmmnope0 does not exist"),
        ("x" * 16, "not a valid interface name"),
        ("", "not a valid interface name"),
        ("eth0:1", "not a valid interface name"),
        ("a b", "not a valid interface name"),
        ("bad\udcff", "not a valid interface name"),
        ("nul\0", "not a valid interface name"),
        ("..", "not a valid interface name"),
    ],
)
def test_missing_interface(lab: Lab, interface: str, message: str) -> None:
    with pytest.raises(CaptureSetupError, match=message):
        lab.open(interface=interface)


def test_bad_filter_on_open(lab: Lab) -> None:
    with pytest.raises(CaptureSetupError, match=r"bad capture filter 'udp portt 1': .*syntax"):
        lab.open(RingSettings(block_size=1 << 16, block_count=2, snaplen=2048, bpf="udp portt 1"))


def test_without_cap_net_raw(lab: Lab) -> None:
    code = (
        "from sensor.capture.afpacket import CaptureSetupError, RingCapture, RingSettings\n"
        "try:\n"
        f"    RingCapture({CAPTURE_IF!r}, RingSettings(block_size=1 << 16, snaplen=2048))\n"
        "except CaptureSetupError as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run(
        ["setpriv", "--inh-caps=-net_raw", "--bounding-set=-net_raw", sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.strip() == (
        f"{CAPTURE_IF}: opening a packet socket needs CAP_NET_RAW (run as root or grant "
        "cap_net_raw)"
    )


def test_loopback_is_ethernet(lab: Lab) -> None:
    lab.ip("link", "set", "lo", "up")
    cap = lab.open(interface="lo")
    assert cap.linktype == 1
    frame = bytes(12) + b"\x08\x00" + ip_packet(bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1]))
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0) as sender:
        sender.bind(("lo", 0))
        sender.send(frame)
    # Seen leaving and entering lo.
    assert [data for _ts, _lt, data, _wire in collect(cap, 2)] == [frame, frame]


def test_tun_is_raw_ip(lab: Lab) -> None:
    lab.ip("tuntap", "add", "mode", "tun", "name", "rmmtun0")
    lab.ip("link", "set", "rmmtun0", "up")
    ring = RingSettings(block_size=1 << 16, block_count=2, snaplen=2048, bpf="udp")
    cap = lab.open(ring, interface="rmmtun0")
    assert cap.linktype == 101
    tun = os.open("/dev/net/tun", os.O_RDWR)
    try:
        # TUNSETIFF with IFF_TUN | IFF_NO_PI: writes are IP packets received on the device.
        fcntl.ioctl(tun, 0x400454CA, struct.pack("16sH14x", b"rmmtun0", 0x0001 | 0x1000))
        packets = [
            ip_packet(proto=socket.IPPROTO_TCP, seq=1),
            ip_packet(seq=2, size=300),
            ip_packet(seq=3),
        ]
        for packet in packets:
            os.write(tun, packet)
    finally:
        os.close(tun)
    got = collect(cap, 2)
    assert [(linktype, data) for _ts, linktype, data, _wire in got] == [
        (101, packets[1]),
        (101, packets[2]),
    ]


def test_closed_capture(lab: Lab) -> None:
    cap = lab.open()
    lab.send([udp_frame(seq=1)])
    assert len(collect(cap, 1)) == 1
    cap.close()
    cap.close()
    assert cap.stats() == (1, 0)
    assert not cap.healthy() and cap.needs_reopen()
    with pytest.raises(ValueError, match="closed"):
        next(cap.frames(10))
    with RingCapture(CAPTURE_IF, SMALL) as again:
        assert again.fileno() >= 0
    with pytest.raises(ValueError, match="closed"):
        again.fileno()
