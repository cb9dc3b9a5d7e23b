"""Link layers: where the IP header starts for every supported link type, and how they fail."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sensor.decode.inet import decode_transport
from sensor.decode.link import (
    ETH_IPV4,
    ETH_IPV6,
    MAX_VLAN_TAGS,
    DecodeError,
    network_offset,
)
from tests.capbuild import (
    ETH_ARP,
    HTTP_REQUEST,
    LINKTYPE_ETHERNET,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_LOOP,
    LINKTYPE_NULL,
    NS,
    V4_WRAPPERS,
    V6_WRAPPERS,
    WRAPPERS,
    ethernet,
    ethertype_of,
    pcap,
    pppoe_session,
    sll,
    sll2,
    v4_key,
    v4_tcp,
    v6_key,
    v6_udp,
    vlan_frame,
    vlan_tag,
)

V6_PAYLOAD = b"\x12\x34\x01\x00\x00\x01"
CASES = [(n, "v4") for n in V4_WRAPPERS] + [(n, "v6") for n in V6_WRAPPERS]


def _ip(kind: str) -> bytes:
    return v4_tcp() if kind == "v4" else v6_udp()


@pytest.mark.parametrize(("name", "kind"), CASES)
def test_every_link_type_reaches_the_transport(name: str, kind: str) -> None:
    ip = _ip(kind)
    w = WRAPPERS[name](ip)
    off, ethertype = network_offset(w.linktype, w.frame)
    assert (off, ethertype) == (w.offset, ethertype_of(ip))
    assert w.frame[off : off + len(ip)] == ip
    proto, key, l4, start, end, truncated = decode_transport(w.frame, off, ethertype)
    if kind == "v4":
        assert (proto, key, l4 - off) == (6, v4_key(), 20)
        assert w.frame[start:end] == HTTP_REQUEST
    else:
        assert (proto, key, l4 - off) == (17, v6_key(), 40)
        assert w.frame[start:end] == V6_PAYLOAD
    assert not truncated


@pytest.mark.parametrize(("name", "kind"), CASES)
def test_every_truncation_of_every_link_type(name: str, kind: str) -> None:
    """Cut at every length: a specific DecodeError, or a result flagged as truncated."""
    ip = _ip(kind)
    w = WRAPPERS[name](ip)
    l4_header = 20 if kind == "v4" else 8
    ip_header = 20 if kind == "v4" else 40
    ip_end = w.offset + len(ip)
    for cut in range(len(w.frame) + 1):
        data = w.frame[:cut]
        if cut < w.offset:
            expected = "truncated_link"
        elif cut < w.offset + ip_header:
            expected = "truncated_ip"
        elif cut < w.offset + ip_header + l4_header:
            expected = "truncated_tcp" if kind == "v4" else "truncated_udp"
        else:
            expected = ""
        try:
            off, ethertype = network_offset(w.linktype, data)
            result = decode_transport(data, off, ethertype)
        except DecodeError as exc:
            assert exc.reason == expected, cut
            continue
        assert expected == "", cut
        _proto, _key, _l4, start, end, truncated = result
        assert end == min(cut, ip_end) and start <= end
        assert truncated == (cut < ip_end)


# --- tables of link headers -------------------------------------------------------------------


NULL_HEADERS = [
    (b"\x02\x00\x00\x00", ETH_IPV4),
    (b"\x00\x00\x00\x02", ETH_IPV4),
    (b"\x0a\x00\x00\x00", ETH_IPV6),  # Linux AF_INET6
    (b"\x00\x00\x00\x0a", ETH_IPV6),
    (b"\x18\x00\x00\x00", ETH_IPV6),  # NetBSD, OpenBSD, BSD/OS
    (b"\x00\x00\x00\x18", ETH_IPV6),
    (b"\x1c\x00\x00\x00", ETH_IPV6),  # FreeBSD
    (b"\x00\x00\x00\x1c", ETH_IPV6),
    (b"\x1e\x00\x00\x00", ETH_IPV6),  # macOS
    (b"\x00\x00\x00\x1e", ETH_IPV6),
    (b"\x07\x00\x00\x00", 0),  # AF_IPX and friends: not IP
    (b"\x00\x00\x00\x00", 0),
    (b"\xff\xff\xff\xff", 0),
]


@pytest.mark.parametrize("linktype", [LINKTYPE_NULL, LINKTYPE_LOOP])
@pytest.mark.parametrize(
    ("header", "ethertype"), NULL_HEADERS, ids=[h.hex() for h, _ in NULL_HEADERS]
)
def test_null_and_loop_families(linktype: int, header: bytes, ethertype: int) -> None:
    assert network_offset(linktype, header + b"\x45" + b"\x00" * 19) == (4, ethertype)
    assert network_offset(linktype, header) == (4, ethertype)  # the header alone is enough


ETH, SLL, SLL2 = LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2
QINQ = [(0x88A8, 3), (0x8100, 4)]


LINK_HEADERS = {
    "eth-arp": (ETH, ethernet(ETH_ARP, b"\x00\x01" * 14), (14, ETH_ARP)),
    "eth-802.3-llc": (ETH, ethernet(0x0026, b"\x42\x42\x03" + b"\x00" * 35), (14, 0x0026)),
    "vlan-arp": (ETH, vlan_frame(b"\x00" * 28, [(0x8100, 5)], ETH_ARP), (18, ETH_ARP)),
    "vlan-8100-v4": (ETH, vlan_frame(v4_tcp(), [(0x8100, 1)]), (18, ETH_IPV4)),
    "vlan-88a8-v4": (ETH, vlan_frame(v4_tcp(), [(0x88A8, 1)]), (18, ETH_IPV4)),
    "vlan-9100-v6": (ETH, vlan_frame(v6_udp(), [(0x9100, 1)]), (18, ETH_IPV6)),
    "vlan-9200-v6": (ETH, vlan_frame(v6_udp(), [(0x9200, 1)]), (18, ETH_IPV6)),
    "qinq-88a8-v4": (ETH, vlan_frame(v4_tcp(), [(0x88A8, 10), (0x8100, 20)]), (22, ETH_IPV4)),
    "qinq-9100-v6": (ETH, vlan_frame(v6_udp(), [(0x9100, 10), (0x8100, 20)]), (22, ETH_IPV6)),
    "vlan-max-tags": (
        ETH,
        vlan_frame(v4_tcp(), [(0x8100, v) for v in range(MAX_VLAN_TAGS)]),
        (14 + 4 * MAX_VLAN_TAGS, ETH_IPV4),
    ),
    "pppoe-v4": (ETH, ethernet(0x8864, pppoe_session(v4_tcp())), (22, ETH_IPV4)),
    "pppoe-v6": (ETH, ethernet(0x8864, pppoe_session(v6_udp())), (22, ETH_IPV6)),
    "pppoe-lcp": (ETH, ethernet(0x8864, pppoe_session(b"\x01" * 20, ppp_proto=0xC021)), (22, 0)),
    "pppoe-discovery": (ETH, ethernet(0x8863, b"\x11\x09\x00\x00\x00\x00"), (14, 0x8863)),
    "qinq-pppoe-v6": (ETH, vlan_frame(pppoe_session(v6_udp()), QINQ, 0x8864), (30, ETH_IPV6)),
    "sll-arp": (SLL, sll(ETH_ARP, b"\x00" * 28), (16, ETH_ARP)),
    "sll-qinq-v4": (
        SLL,
        sll(0x88A8, vlan_tag(7, 0x8100) + vlan_tag(8, ETH_IPV4) + v4_tcp()),
        (24, ETH_IPV4),
    ),
    "sll-pppoe-v4": (SLL, sll(0x8864, pppoe_session(v4_tcp())), (24, ETH_IPV4)),
    "sll2-arp": (SLL2, sll2(ETH_ARP, b"\x00" * 28), (20, ETH_ARP)),
    "sll2-pppoe-v6": (SLL2, sll2(0x8864, pppoe_session(v6_udp())), (28, ETH_IPV6)),
    "sll2-vlan-v6": (SLL2, sll2(0x8100, vlan_tag(9, ETH_IPV6) + v6_udp()), (24, ETH_IPV6)),
}


@pytest.mark.parametrize("case", sorted(LINK_HEADERS))
def test_link_header_table(case: str) -> None:
    linktype, frame, expected = LINK_HEADERS[case]
    assert network_offset(linktype, frame) == expected


def test_too_many_vlan_tags() -> None:
    frame = vlan_frame(v4_tcp(), [(0x8100, v) for v in range(MAX_VLAN_TAGS + 1)])
    with pytest.raises(DecodeError) as info:
        network_offset(LINKTYPE_ETHERNET, frame)
    assert info.value.reason == "too_many_vlan_tags"
    # A frame of nothing but tags is bounded the same way.
    with pytest.raises(DecodeError) as info:
        network_offset(LINKTYPE_ETHERNET, b"\x00" * 12 + b"\x81\x00\x00\x01" * 400)
    assert info.value.reason == "too_many_vlan_tags"


LINK_ERRORS = {
    "eth-empty": (ETH, b"", "truncated_link"),
    "eth-13-bytes": (ETH, b"\x00" * 13, "truncated_link"),
    "eth-vlan-cut": (ETH, b"\x00" * 12 + b"\x81\x00\x00\x01\x08", "truncated_link"),
    "eth-pppoe-cut": (
        ETH,
        b"\x00" * 12 + b"\x88\x64\x11\x00\x00\x01\x00\x02\x00",
        "truncated_link",
    ),
    "sll-15-bytes": (SLL, b"\x00" * 15, "truncated_link"),
    "sll-vlan-cut": (SLL, b"\x00" * 14 + b"\x81\x00\x00\x01", "truncated_link"),
    "sll2-19-bytes": (SLL2, b"\x08\x00" + b"\x00" * 17, "truncated_link"),
    "sll2-vlan-cut": (SLL2, b"\x81\x00" + b"\x00" * 18 + b"\x00\x01\x08", "truncated_link"),
    "null-3-bytes": (LINKTYPE_NULL, b"\x02\x00\x00", "truncated_link"),
    "loop-empty": (LINKTYPE_LOOP, b"", "truncated_link"),
    "raw-101-empty": (101, b"", "truncated_ip"),
    "raw-12-empty": (12, b"", "truncated_ip"),
    "raw-14-empty": (14, b"", "truncated_ip"),
    "raw-version-5": (101, b"\x50" + b"\x00" * 39, "bad_ip_version"),
    "raw-version-0": (101, b"\x00" * 40, "bad_ip_version"),
    "raw-version-15": (14, b"\xf0" * 40, "bad_ip_version"),
    "802.11": (105, ethernet(ETH_IPV4, v4_tcp()), "unsupported_linktype"),
    "radiotap": (127, b"\x00" * 64, "unsupported_linktype"),
    "unknown-9999": (9999, b"", "unsupported_linktype"),
    "negative": (-1, b"\x45", "unsupported_linktype"),
}


@pytest.mark.parametrize("case", sorted(LINK_ERRORS))
def test_link_errors(case: str) -> None:
    linktype, data, reason = LINK_ERRORS[case]
    with pytest.raises(DecodeError) as info:
        network_offset(linktype, data)
    assert info.value.reason == reason
    assert str(info.value) == reason


@pytest.mark.parametrize(("linktype", "ethertype"), [(228, ETH_IPV4), (229, ETH_IPV6)])
def test_ip_link_types_do_not_look_at_the_data(linktype: int, ethertype: int) -> None:
    assert network_offset(linktype, b"") == (0, ethertype)
    with pytest.raises(DecodeError) as info:
        decode_transport(v6_udp() if linktype == 228 else v4_tcp(), 0, ethertype)
    assert info.value.reason == "bad_ip_version"


# --- an independent dissector agrees with the builders and the decoder ---------------------------


@pytest.mark.parametrize("name", sorted(WRAPPERS))
def test_tshark_agrees_with_the_wrappers(tmp_path: Path, name: str) -> None:
    # Wireshark's NULL dissector knows only the BSD values of AF_INET6, not Linux's 10.
    kinds = [k for n, k in CASES if n == name and not (k == "v6" and name.endswith("-10"))]
    frames = []
    for kind in kinds:
        w = WRAPPERS[name](_ip(kind))
        frames.append((NS, w.linktype, w.frame, len(w.frame)))
    path = tmp_path / "w.pcap"
    path.write_bytes(pcap(frames).data)
    fields = ["-e", "ip.src", "-e", "ipv6.src", "-e", "tcp.srcport", "-e", "udp.srcport"]
    out = subprocess.run(
        ["tshark", "-n", "-r", str(path), "-T", "fields", "-E", "occurrence=f", *fields],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    expected = {"v4": "192.0.2.10\t\t49152\t", "v6": "\t2001:db8::10\t\t53000"}
    assert out.splitlines() == [expected[k] for k in kinds]
    for _, linktype, frame, _ in frames:
        off, ethertype = network_offset(linktype, frame)
        assert decode_transport(frame, off, ethertype)[1] in (v4_key(), v6_key())


# --- random bytes ---------------------------------------------------------------------------------

LINKTYPES = sorted({w(v4_tcp()).linktype for w in WRAPPERS.values()} | {229, 147})


@settings(max_examples=3000, deadline=None)
@given(st.sampled_from(LINKTYPES), st.binary(max_size=160))
def test_random_frames_only_raise_decode_error(linktype: int, data: bytes) -> None:
    check_frame(linktype, data)


@settings(max_examples=2000, deadline=None)
@given(
    st.sampled_from(sorted(WRAPPERS)),
    st.sampled_from(["v4", "v6"]),
    st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), max_size=8),
    st.integers(min_value=0, max_value=200),
)
def test_mutated_frames_only_raise_decode_error(
    name: str, kind: str, edits: list[tuple[int, int]], cut: int
) -> None:
    w = WRAPPERS[name](_ip(kind))
    data = bytearray(w.frame)
    for at, value in edits:
        data[at % len(data)] = value
    check_frame(w.linktype, bytes(data[: len(data) - cut % len(data)]))


def check_frame(linktype: int, data: bytes) -> None:
    """network_offset + decode_transport: a consistent result, or DecodeError, nothing else."""
    try:
        off, ethertype = network_offset(linktype, data)
        assert off >= 0
        proto, key, l4, start, end, truncated = decode_transport(data, off, ethertype)
    except DecodeError as exc:
        assert exc.reason and exc.reason.isidentifier()
        return
    assert off < l4 <= start <= end <= len(data)
    assert ethertype in (ETH_IPV4, ETH_IPV6)
    if proto in (6, 17):
        assert len(key) == (12 if ethertype == ETH_IPV4 else 36)
        assert key[-4:] == data[l4 : l4 + 4]
    else:
        assert key == b""
    assert isinstance(truncated, bool)
