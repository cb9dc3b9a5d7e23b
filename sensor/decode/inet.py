"""IPv4/IPv6 and TCP/UDP: just enough of each header to key a flow and find its payload.

``decode_transport`` returns a flat tuple instead of an object because it runs for every packet.
The flow key is the raw bytes ``src_addr + dst_addr + src_port + dst_port`` (12 bytes for IPv4,
36 for IPv6), so a flow is found with one slice and one dict lookup; the protocol selects the dict.
"""

from __future__ import annotations

from typing import Final

from sensor.decode.link import ETH_IPV4, ETH_IPV6, DecodeError

PROTO_TCP: Final = 6
PROTO_UDP: Final = 17

# IPv6 extension headers that can be skipped with the generic (len + 1) * 8 rule.
_IPV6_EXT: Final = frozenset((0, 43, 60, 135, 139, 140))
_IPV6_FRAGMENT: Final = 44
_IPV6_AH: Final = 51
_MAX_EXT_HEADERS: Final = 8

# (proto, key, l4_offset, payload_offset, payload_end, truncated)
Transport = tuple[int, bytes, int, int, int, bool]


def decode_transport(data: bytes, off: int, ethertype: int) -> Transport:
    """Decode the IP and TCP/UDP headers at ``off``.

    For protocols other than TCP and UDP the key is empty. ``truncated`` is true when the
    capture holds fewer bytes than the IP header promised (snap length), so the payload is cut.
    """
    if ethertype == ETH_IPV4:
        if len(data) < off + 20:
            raise DecodeError("truncated_ip")
        b0 = data[off]
        if b0 >> 4 != 4:
            raise DecodeError("bad_ip_version")
        ihl = (b0 & 15) << 2
        if ihl < 20:
            raise DecodeError("bad_ip_header_length")
        total = (data[off + 2] << 8) | data[off + 3]
        if total < ihl:
            if total:
                raise DecodeError("bad_ip_total_length")
            # Zero: segmentation offload on the capturing host left the field for the NIC to
            # fill in; the frame holds the whole packet (Wireshark reads it the same way).
            total = len(data) - off
        if ((data[off + 6] << 8) | data[off + 7]) & 0x3FFF:
            raise DecodeError("ip_fragment")
        proto = data[off + 9]
        addrs = data[off + 12 : off + 20]
        l4 = off + ihl
        end = off + total
    elif ethertype == ETH_IPV6:
        if len(data) < off + 40:
            raise DecodeError("truncated_ip")
        if data[off] >> 4 != 6:
            raise DecodeError("bad_ip_version")
        end = off + 40 + ((data[off + 4] << 8) | data[off + 5])
        addrs = data[off + 8 : off + 40]
        proto, l4 = _ipv6_extensions(data, data[off + 6], off + 40)
    else:
        raise DecodeError("not_ip")
    size = len(data)
    truncated = end > size
    if truncated:
        end = size
    if proto == PROTO_TCP:
        if end < l4 + 20:
            raise DecodeError("truncated_tcp")
        doff = (data[l4 + 12] >> 4) << 2
        if doff < 20:
            raise DecodeError("bad_tcp_header_length")
        start = l4 + doff
        if start > end:
            raise DecodeError("truncated_tcp")
        return proto, addrs + data[l4 : l4 + 4], l4, start, end, truncated
    if proto == PROTO_UDP:
        if end < l4 + 8:
            raise DecodeError("truncated_udp")
        return proto, addrs + data[l4 : l4 + 4], l4, l4 + 8, end, truncated
    if l4 > end:
        # The IPv4 options were cut by the snap length, or IPv6 extension headers ran past the
        # payload length: there is no upper-layer header to point at.
        raise DecodeError("truncated_ip" if truncated else "bad_ip_total_length")
    return proto, b"", l4, l4, end, truncated


def _ipv6_extensions(data: bytes, nxt: int, pos: int) -> tuple[int, int]:
    """Skip IPv6 extension headers; return the upper-layer protocol and its offset."""
    # One pass more than the limit: the last pass only recognises the upper-layer protocol.
    for _ in range(_MAX_EXT_HEADERS + 1):
        if nxt in _IPV6_EXT:
            if len(data) < pos + 2:
                raise DecodeError("truncated_ip")
            nxt, pos = data[pos], pos + ((data[pos + 1] + 1) << 3)
        elif nxt == _IPV6_AH:
            if len(data) < pos + 2:
                raise DecodeError("truncated_ip")
            nxt, pos = data[pos], pos + ((data[pos + 1] + 2) << 2)
        elif nxt == _IPV6_FRAGMENT:
            if len(data) < pos + 8:
                raise DecodeError("truncated_ip")
            # An atomic fragment (offset 0, no more fragments) is a whole packet.
            if ((data[pos + 2] << 8) | data[pos + 3]) & 0xFFF9:
                raise DecodeError("ip_fragment")
            nxt, pos = data[pos], pos + 8
        else:
            return nxt, pos
    raise DecodeError("too_many_ipv6_extension_headers")
