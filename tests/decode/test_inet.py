"""IPv4/IPv6 and TCP/UDP decoding: offsets, flow keys, fragments, extension headers, damage."""

from __future__ import annotations

import ipaddress
import struct
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sensor.capture.files import read_frames
from sensor.decode.inet import decode_transport
from sensor.decode.link import ETH_IPV4, ETH_IPV6, DecodeError, network_offset
from tests.capbuild import (
    CAPTURES,
    ETH_ARP,
    PROTO_ICMP,
    PROTO_ICMPV6,
    PROTO_TCP,
    PROTO_UDP,
    V4_DST,
    V4_SRC,
    V6_DST,
    V6_SRC,
    addr,
    ah_ext,
    ethernet,
    fragment_ext,
    icmp_echo,
    ipv4,
    ipv6,
    opts_ext,
    plain,
    routing_ext,
    tcp,
    udp,
    v4_key,
    v6_key,
)

OFF = 14  # decode behind an Ethernet header, so offsets relative to `off` are exercised
PAYLOAD = b"SSH-2.0-OpenSSH_9.6\r\n"


def frame(ip: bytes) -> bytes:
    return ethernet(ETH_IPV6 if ip[0] >> 4 == 6 else ETH_IPV4, ip)


def decode(ip: bytes) -> tuple[int, bytes, int, int, int, bool]:
    data = frame(ip)
    return decode_transport(data, OFF, ETH_IPV6 if ip[0] >> 4 == 6 else ETH_IPV4)


def reason(ip: bytes, *, data: bytes | None = None, ethertype: int | None = None) -> str:
    raw = frame(ip) if data is None else data
    et = (ETH_IPV6 if ip[0] >> 4 == 6 else ETH_IPV4) if ethertype is None else ethertype
    with pytest.raises(DecodeError) as info:
        decode_transport(raw, OFF, et)
    return info.value.reason


def v4(l4: bytes, proto: int = PROTO_TCP, **kw: object) -> bytes:
    return ipv4(V4_SRC, V4_DST, proto, l4, **kw)  # type: ignore[arg-type]


def v6(l4: bytes, proto: int = PROTO_TCP, **kw: object) -> bytes:
    return ipv6(V6_SRC, V6_DST, proto, l4, **kw)  # type: ignore[arg-type]


# --- IPv4 -----------------------------------------------------------------------------------------


def test_ipv4_tcp_fields() -> None:
    ip = v4(tcp(49152, 80, PAYLOAD, options=b"\x02\x04\x05\xb4"))  # MSS option: 24-byte header
    assert decode(ip) == (PROTO_TCP, v4_key(), OFF + 20, OFF + 44, OFF + len(ip), False)
    start, end = decode(ip)[3:5]
    assert frame(ip)[start:end] == PAYLOAD


def test_ipv4_udp_fields() -> None:
    ip = v4(udp(5353, 53, PAYLOAD), PROTO_UDP)
    assert decode(ip) == (
        PROTO_UDP,
        v4_key(5353, 53),
        OFF + 20,
        OFF + 28,
        OFF + 28 + len(PAYLOAD),
        False,
    )


@pytest.mark.parametrize(
    "options",
    [
        b"\x94\x04\x00\x00",  # router alert (ihl 6)
        b"\x01\x01\x01\x00",  # NOPs and end of list
        b"\x07\x07\x04" + b"\x00" * 4 + b"\x00",  # record route with one slot (ihl 7)
        b"\x44\x24\x05\x00" + b"\x00" * 32,  # timestamp option filling ihl 15
    ],
    ids=["router-alert", "nop-eol", "record-route", "timestamp-ihl-15"],
)
@pytest.mark.parametrize("proto", [PROTO_TCP, PROTO_UDP, PROTO_ICMP])
def test_ipv4_options_move_the_transport_header(options: bytes, proto: int) -> None:
    l4 = {PROTO_TCP: tcp(1, 2, PAYLOAD), PROTO_UDP: udp(1, 2, PAYLOAD), PROTO_ICMP: icmp_echo()}
    ip = v4(l4[proto], proto, options=options)
    got = decode(ip)
    header = 20 + len(options)
    assert got[0] == proto and got[2] == OFF + header
    assert got[4] == OFF + len(ip)
    if proto == PROTO_ICMP:
        assert got[1] == b"" and got[3] == got[2]
    else:
        assert got[1] == addr(V4_SRC) + addr(V4_DST) + b"\x00\x01\x00\x02"
        assert frame(ip)[got[3] : got[4]] == PAYLOAD


@pytest.mark.parametrize(
    ("frag", "is_fragment"),
    [
        (0x0000, False),
        (0x4000, False),  # don't fragment
        (0x8000, False),  # the reserved bit is not about fragments
        (0x2000, True),  # first fragment: more fragments, offset 0
        (0x6000, True),  # DF and MF together is nonsense but still a fragment
        (0x0001, True),  # last fragment at offset 8
        (0x00B9, True),
        (0x20B9, True),  # middle fragment
        (0x1FFF, True),  # largest offset
        (0x5FFF, True),
    ],
)
@pytest.mark.parametrize("proto", [PROTO_TCP, PROTO_UDP, PROTO_ICMP])
def test_ipv4_fragments(frag: int, is_fragment: bool, proto: int) -> None:
    l4 = {PROTO_TCP: tcp(1, 2, PAYLOAD), PROTO_UDP: udp(1, 2, PAYLOAD), PROTO_ICMP: icmp_echo()}
    ip = v4(l4[proto], proto, frag=frag)
    if is_fragment:
        assert reason(ip) == "ip_fragment"
    else:
        assert decode(ip)[0] == proto


@pytest.mark.parametrize(
    ("ip", "expected"),
    [
        (v4(tcp(1, 2), ihl=4), "bad_ip_header_length"),
        (v4(tcp(1, 2), ihl=0), "bad_ip_header_length"),
        (v4(tcp(1, 2), total=19), "bad_ip_total_length"),
        (v4(tcp(1, 2), total=1), "bad_ip_total_length"),
        (v4(tcp(1, 2), options=b"\x01" * 8, total=24), "bad_ip_total_length"),  # < ihl 28
        (v4(tcp(1, 2), total=30), "truncated_tcp"),  # 10 bytes left for a 20-byte header
        (v4(udp(1, 2), PROTO_UDP, total=27), "truncated_udp"),
        (v4(tcp(1, 2, doff=4)), "bad_tcp_header_length"),
        (v4(tcp(1, 2, doff=0)), "bad_tcp_header_length"),
        (v4(tcp(1, 2, doff=15)), "truncated_tcp"),  # options promised, not present
        (v4(tcp(1, 2, PAYLOAD, doff=15), total=60), "truncated_tcp"),
        (v6(tcp(1, 2, doff=3)), "bad_tcp_header_length"),
        (v6(tcp(1, 2), plen=10), "truncated_tcp"),
        (v6(udp(1, 2), PROTO_UDP, plen=7), "truncated_udp"),
    ],
    ids=[
        "ihl-4",
        "ihl-0",
        "total-19",
        "total-1",
        "total-below-ihl",
        "tcp-cut-by-total",
        "udp-cut-by-total",
        "doff-4",
        "doff-0",
        "doff-15-missing",
        "doff-15-cut-by-total",
        "v6-doff-3",
        "v6-tcp-cut-by-plen",
        "v6-udp-cut-by-plen",
    ],
)
def test_header_errors(ip: bytes, expected: str) -> None:
    assert reason(ip) == expected


@pytest.mark.parametrize(
    ("data", "ethertype", "expected"),
    [
        (frame(v6(tcp(1, 2))), ETH_IPV4, "bad_ip_version"),
        (frame(v4(tcp(1, 2))), ETH_IPV6, "bad_ip_version"),
        (frame(v4(tcp(1, 2))), ETH_ARP, "not_ip"),
        (frame(v4(tcp(1, 2))), 0, "not_ip"),
        (frame(v4(tcp(1, 2)))[: OFF + 19], ETH_IPV4, "truncated_ip"),
        (frame(v6(tcp(1, 2)))[: OFF + 39], ETH_IPV6, "truncated_ip"),
        (b"", ETH_IPV4, "truncated_ip"),
        (b"", ETH_IPV6, "truncated_ip"),
    ],
    ids=[
        "v6-as-v4",
        "v4-as-v6",
        "arp",
        "zero",
        "v4-19-bytes",
        "v6-39-bytes",
        "v4-empty",
        "v6-empty",
    ],
)
def test_ip_level_errors(data: bytes, ethertype: int, expected: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode_transport(data, OFF, ethertype)
    assert info.value.reason == expected


def test_ipv4_total_length_zero_is_segmentation_offload() -> None:
    """Captured on the sending host before the NIC split it: the frame holds the packet."""
    segment = tcp(49152, 80, b"A" * 3000)
    ip = v4(segment, total=0)
    got = decode(ip)
    assert got == (PROTO_TCP, v4_key(), OFF + 20, OFF + 40, OFF + len(ip), False)


def test_icmp_has_an_empty_key() -> None:
    ip = v4(icmp_echo(7, 9, b"abcdefgh"), PROTO_ICMP)
    assert decode(ip) == (PROTO_ICMP, b"", OFF + 20, OFF + 20, OFF + len(ip), False)
    ip6 = v6(icmp_echo(7, 9, v6=True), PROTO_ICMPV6)
    assert decode(ip6) == (PROTO_ICMPV6, b"", OFF + 40, OFF + 40, OFF + len(ip6), False)


# --- Ethernet padding and snap length ---------------------------------------------------------


@pytest.mark.parametrize(
    ("ip", "payload"),
    [
        (v4(tcp(49152, 80, flags=0x10)), b""),  # bare ACK: 40 bytes, 6 of padding
        (v4(tcp(49152, 80, b"\x00\x01")), b"\x00\x01"),
        (v4(udp(49152, 80, b"hi"), PROTO_UDP), b"hi"),
        (v4(icmp_echo(payload=b""), PROTO_ICMP), icmp_echo(payload=b"")),  # ICMP is the payload
        (v6(b"", 59), b""),  # no next header: 40 bytes, 6 of padding
    ],
    ids=["v4-bare-ack", "v4-tcp-2", "v4-udp-2", "v4-icmp", "v6-no-next"],
)
def test_ethernet_padding_is_not_payload(ip: bytes, payload: bytes) -> None:
    data = frame(ip)
    assert len(data) == 60 and len(ip) < 46  # the frame was padded
    _proto, _key, l4, start, end, truncated = decode_transport(
        data, OFF, ETH_IPV6 if ip[0] >> 4 == 6 else ETH_IPV4
    )
    assert end == OFF + len(ip) and not truncated
    assert data[start:end] == payload and l4 <= start


@pytest.mark.parametrize("keep", [0, 1, 10, len(PAYLOAD) - 1])
@pytest.mark.parametrize("version", [4, 6])
def test_snap_length_marks_the_payload_truncated(keep: int, version: int) -> None:
    ip = v4(tcp(1, 2, PAYLOAD)) if version == 4 else v6(tcp(1, 2, PAYLOAD))
    data = frame(ip)[: OFF + len(ip) - len(PAYLOAD) + keep]
    et = ETH_IPV4 if version == 4 else ETH_IPV6
    _proto, _key, _l4, start, end, truncated = decode_transport(data, OFF, et)
    assert truncated and end == len(data)
    assert data[start:end] == PAYLOAD[:keep]


def test_tcp_options_cut_by_snap_length() -> None:
    ip = v4(tcp(1, 2, PAYLOAD, options=b"\x02\x04\x05\xb4\x01\x03\x03\x07\x04\x02"))  # 32 bytes
    for cut in range(OFF + 20 + 20, OFF + 20 + 32):
        with pytest.raises(DecodeError) as info:
            decode_transport(frame(ip)[:cut], OFF, ETH_IPV4)
        assert info.value.reason == "truncated_tcp"


def test_ipv4_options_cut_by_snap_length() -> None:
    for proto, l4 in [(PROTO_TCP, tcp(1, 2)), (PROTO_UDP, udp(1, 2)), (PROTO_ICMP, icmp_echo())]:
        data = frame(v4(l4, proto, options=b"\x01" * 40))[: OFF + 40]
        expected = {PROTO_TCP: "truncated_tcp", PROTO_UDP: "truncated_udp"}.get(
            proto, "truncated_ip"
        )
        with pytest.raises(DecodeError) as info:
            decode_transport(data, OFF, ETH_IPV4)
        assert info.value.reason == expected


# --- IPv6 extension headers -------------------------------------------------------------------


HBH, ROUTING, DSTOPTS, FRAGMENT, AH, MOBILITY = 0, 43, 60, 44, 51, 135

EXT_CHAINS = {
    "hop-by-hop": [(HBH, opts_ext())],
    "hop-by-hop-16": [(HBH, opts_ext(16))],
    "routing": [(ROUTING, routing_ext())],
    "destination": [(DSTOPTS, opts_ext())],
    "atomic-fragment": [(FRAGMENT, fragment_ext())],
    "atomic-fragment-reserved-bits": [(FRAGMENT, struct.pack("!BBHI", 0, 0, 0x0006, 1))],
    "ah": [(AH, ah_ext())],
    "ah-16": [(AH, ah_ext(16))],
    "mobility": [(MOBILITY, opts_ext())],
    "all": [
        (HBH, opts_ext()),
        (DSTOPTS, opts_ext(16)),
        (ROUTING, routing_ext()),
        (FRAGMENT, fragment_ext()),
        (AH, ah_ext()),
        (DSTOPTS, opts_ext()),
    ],
    "eight": [(DSTOPTS, opts_ext())] * 8,
}


@pytest.mark.parametrize("chain", sorted(EXT_CHAINS))
@pytest.mark.parametrize("proto", [PROTO_TCP, PROTO_UDP, PROTO_ICMPV6])
def test_ipv6_extension_headers_are_skipped(chain: str, proto: int) -> None:
    ext = EXT_CHAINS[chain]
    l4 = {
        PROTO_TCP: tcp(53000, 53, PAYLOAD),
        PROTO_UDP: udp(53000, 53, PAYLOAD),
        PROTO_ICMPV6: icmp_echo(v6=True),
    }[proto]
    ip = v6(l4, proto, ext=ext)
    got = decode(ip)
    l4_at = OFF + 40 + sum(len(body) for _, body in ext)
    assert got[0] == proto and got[2] == l4_at and got[4] == OFF + len(ip) and not got[5]
    if proto == PROTO_ICMPV6:
        assert got[1] == b"" and got[3] == l4_at
    else:
        assert got[1] == v6_key()
        assert frame(ip)[got[3] : got[4]] == PAYLOAD


@pytest.mark.parametrize(
    ("ext", "expected"),
    [
        ([(FRAGMENT, fragment_ext(offset=0, more=True))], "ip_fragment"),
        ([(FRAGMENT, fragment_ext(offset=1))], "ip_fragment"),
        ([(FRAGMENT, fragment_ext(offset=8191, more=True))], "ip_fragment"),
        ([(HBH, opts_ext()), (FRAGMENT, fragment_ext(offset=100))], "ip_fragment"),
        ([(FRAGMENT, fragment_ext()), (FRAGMENT, fragment_ext(more=True))], "ip_fragment"),
        ([(DSTOPTS, opts_ext())] * 9, "too_many_ipv6_extension_headers"),
        ([(HBH, opts_ext())] * 20, "too_many_ipv6_extension_headers"),
    ],
    ids=["first", "later", "last-max-offset", "after-hbh", "second-real", "nine", "twenty"],
)
def test_ipv6_extension_header_errors(ext: list[tuple[int, bytes]], expected: str) -> None:
    assert reason(v6(tcp(1, 2), ext=ext)) == expected


def test_ipv6_esp_and_no_next_header() -> None:
    esp = struct.pack("!II", 0x1000, 1) + b"\xee" * 32
    ip = v6(esp, 50)
    assert decode(ip) == (50, b"", OFF + 40, OFF + 40, OFF + len(ip), False)
    ip = v6(b"", 59, ext=[(DSTOPTS, opts_ext())])
    assert decode(ip) == (59, b"", OFF + 48, OFF + 48, OFF + 48, False)


def test_ipv6_extension_headers_past_the_payload_length() -> None:
    # The payload length says 0, yet a hop-by-hop header follows (read from padding or junk).
    ip = v6(b"", 59, ext=[(HBH, opts_ext())], plen=0)
    assert reason(ip) == "bad_ip_total_length"
    # Cut by the snap length inside the extension headers.
    ip = v6(icmp_echo(v6=True), PROTO_ICMPV6, ext=[(HBH, opts_ext(16))])
    data = frame(ip)[: OFF + 40 + 10]
    assert reason(ip, data=data) == "truncated_ip"
    data = frame(ip)[: OFF + 40 + 1]
    assert reason(ip, data=data) == "truncated_ip"


def test_ipv6_truncated_fragment_header() -> None:
    ip = v6(tcp(1, 2), ext=[(FRAGMENT, fragment_ext())])
    for cut in range(OFF + 40, OFF + 48):
        assert reason(ip, data=frame(ip)[:cut]) == "truncated_ip"


# --- truncation at every length -----------------------------------------------------------------

ALL_EXT = 40 + sum(len(body) for _, body in EXT_CHAINS["all"])  # 128
TRUNCATION_PACKETS = {
    "v4-tcp": (v4(tcp(49152, 443, PAYLOAD)), 20, 20),
    "v4-options-tcp": (v4(tcp(49152, 443, PAYLOAD), options=b"\x94\x04\x00\x00" * 3), 32, 20),
    "v4-udp": (v4(udp(5353, 53, PAYLOAD), PROTO_UDP), 20, 8),
    "v4-icmp": (v4(icmp_echo(payload=PAYLOAD), PROTO_ICMP), 20, 0),
    "v4-options-icmp": (v4(icmp_echo(), PROTO_ICMP, options=b"\x01" * 12), 32, 0),
    "v6-tcp": (v6(tcp(53000, 53, PAYLOAD)), 40, 20),
    "v6-ext-udp": (v6(udp(1, 2, PAYLOAD), PROTO_UDP, ext=EXT_CHAINS["all"]), ALL_EXT, 8),
    "v6-ext-icmp": (v6(icmp_echo(v6=True), PROTO_ICMPV6, ext=EXT_CHAINS["all"]), ALL_EXT, 0),
}


@pytest.mark.parametrize("name", sorted(TRUNCATION_PACKETS))
def test_truncated_at_every_length(name: str) -> None:
    ip, header, l4_header = TRUNCATION_PACKETS[name]
    whole = frame(ip)
    et = ETH_IPV6 if ip[0] >> 4 == 6 else ETH_IPV4
    fixed = 40 if et == ETH_IPV6 else 20
    l4_reason = {20: "truncated_tcp", 8: "truncated_udp", 0: "truncated_ip"}[l4_header]
    for cut in range(OFF + len(ip) + 1):
        data = whole[:cut]
        try:
            _proto, _key, l4, start, end, truncated = decode_transport(data, OFF, et)
        except DecodeError as exc:
            if cut < OFF + fixed:
                assert exc.reason == "truncated_ip", cut
            elif cut < OFF + header:
                assert exc.reason in ("truncated_ip", l4_reason), cut
            else:
                assert cut < OFF + header + l4_header and exc.reason == l4_reason, cut
            continue
        assert cut >= OFF + header + l4_header, cut
        assert l4 == OFF + header and start <= end == min(cut, OFF + len(ip))
        assert truncated == (cut < OFF + len(ip))


# --- random input ---------------------------------------------------------------------------------


def check(data: bytes, off: int, ethertype: int) -> None:
    try:
        proto, key, l4, start, end, truncated = decode_transport(data, off, ethertype)
    except DecodeError as exc:
        assert exc.reason.isidentifier()
        return
    assert off < l4 <= start <= end <= len(data)
    assert 0 <= proto <= 255 and isinstance(truncated, bool)
    if proto in (PROTO_TCP, PROTO_UDP):
        assert len(key) == (12 if ethertype == ETH_IPV4 else 36)
    else:
        assert key == b""


@settings(max_examples=1000, deadline=None)
@given(
    st.binary(max_size=200),
    st.integers(0, 30),
    st.sampled_from([ETH_IPV4, ETH_IPV6, 0, ETH_ARP]),
)
def test_random_bytes_only_raise_decode_error(data: bytes, off: int, ethertype: int) -> None:
    check(data, off, ethertype)


@settings(max_examples=1000, deadline=None)
@given(
    st.integers(0, 15),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFF),
    st.sampled_from([PROTO_TCP, PROTO_UDP, PROTO_ICMP, 0, 41, 255]),
    st.binary(max_size=120),
)
def test_random_ipv4_headers(ihl: int, total: int, frag: int, proto: int, rest: bytes) -> None:
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x40 | ihl, 0, total, 1, frag, 64, proto, 0, addr(V4_SRC), addr(V4_DST)
    )
    check(header + rest, 0, ETH_IPV4)


@settings(max_examples=1000, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([HBH, ROUTING, DSTOPTS, FRAGMENT, AH, MOBILITY, 139, 140]),
            st.binary(min_size=2, max_size=40),
        ),
        max_size=10,
    ),
    st.sampled_from([PROTO_TCP, PROTO_UDP, PROTO_ICMPV6, 59]),
    st.binary(max_size=60),
    st.integers(0, 0xFFFF) | st.none(),
)
def test_random_ipv6_extension_chains(
    ext: list[tuple[int, bytes]], proto: int, l4: bytes, plen: int | None
) -> None:
    check(v6(l4, proto, ext=ext, plen=plen), 0, ETH_IPV6)


# --- the real captures ----------------------------------------------------------------------------

REAL = sorted(p.name for p in CAPTURES.glob("*.pcap*") if not p.name.startswith("bench-"))
FIELDS = [
    "ip.src", "ip.dst", "ipv6.src", "ipv6.dst", "tcp.srcport", "tcp.dstport",
    "udp.srcport", "udp.dstport", "tcp.len", "udp.length", "frame.protocols",
]  # fmt: skip


def test_the_shared_captures_are_there() -> None:
    assert len(REAL) >= 30


@pytest.mark.parametrize("name", REAL)
def test_real_capture_keys_match_tshark(name: str) -> None:
    path = str(CAPTURES / name)
    args = ["tshark", "-n", "-r", path, "--disable-protocol", "vnc", "-T", "fields"]
    args += ["-E", "occurrence=f"] + [a for f in FIELDS for a in ("-e", f)]
    rows = [
        r.split("\t")
        for r in subprocess.run(
            args, capture_output=True, text=True, check=True
        ).stdout.splitlines()
    ]
    frames = plain(read_frames(path))
    assert len(rows) == len(frames)
    decoded = 0
    for (_ts, linktype, data, _wire), row in zip(frames, rows, strict=True):
        fields = dict(zip(FIELDS, row, strict=True))
        layers = fields["frame.protocols"].split(":")
        try:
            off, ethertype = network_offset(linktype, data)
            proto, key, _l4, start, end, truncated = decode_transport(data, off, ethertype)
        except DecodeError as exc:
            assert exc.reason == "not_ip" and "ip" not in layers and "ipv6" not in layers
            continue
        v = "ip" if ethertype == ETH_IPV4 else "ipv6"
        assert v in layers
        if proto not in (PROTO_TCP, PROTO_UDP):
            continue
        t = "tcp" if proto == PROTO_TCP else "udp"
        expected = (
            ipaddress.ip_address(fields[f"{v}.src"]).packed
            + ipaddress.ip_address(fields[f"{v}.dst"]).packed
            + struct.pack("!HH", int(fields[f"{t}.srcport"]), int(fields[f"{t}.dstport"]))
        )
        assert key == expected
        length = int(fields["tcp.len"]) if t == "tcp" else int(fields["udp.length"]) - 8
        assert end - start == length or (truncated and end - start < length)
        decoded += 1
    assert decoded >= len(frames) * 9 // 10
