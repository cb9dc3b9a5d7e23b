"""Link layers: find where the network header starts and what it is.

``network_offset`` is called for every frame that is not plain Ethernet+IPv4 (the pipeline
checks that case inline), so it stays a flat chain of byte comparisons.
"""

from __future__ import annotations

from typing import Final

ETH_IPV4: Final = 0x0800
ETH_IPV6: Final = 0x86DD

LINKTYPE_NULL: Final = 0
LINKTYPE_ETHERNET: Final = 1
LINKTYPE_RAW_ALT1: Final = 12  # DLT_RAW on some BSDs
LINKTYPE_RAW_ALT2: Final = 14
LINKTYPE_RAW: Final = 101
LINKTYPE_LOOP: Final = 108
LINKTYPE_LINUX_SLL: Final = 113
LINKTYPE_IPV4: Final = 228
LINKTYPE_IPV6: Final = 229
LINKTYPE_LINUX_SLL2: Final = 276

VLAN_TYPES: Final = frozenset((0x8100, 0x88A8, 0x9100, 0x9200))
PPPOE_SESSION: Final = 0x8864
MAX_VLAN_TAGS: Final = 4

# BSD loopback address families: AF_INET is 2 everywhere; AF_INET6 differs by OS.
NULL_INET: Final = frozenset((2,))
NULL_INET6: Final = frozenset((10, 24, 28, 30))


class DecodeError(Exception):
    """A frame could not be decoded; ``reason`` is a short, bounded label for metrics."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def network_offset(linktype: int, data: bytes) -> tuple[int, int]:
    """Return ``(offset, ethertype)`` of the network header; ethertype may be non-IP."""
    if linktype == LINKTYPE_ETHERNET:
        return _ethernet(data, 12)
    if linktype == LINKTYPE_LINUX_SLL:
        if len(data) < 16:
            raise DecodeError("truncated_link")
        return _after_ethertype(data, (data[14] << 8) | data[15], 16)
    if linktype == LINKTYPE_LINUX_SLL2:
        if len(data) < 20:
            raise DecodeError("truncated_link")
        # The protocol leads the header here; tags and PPPoE still follow the 20 bytes.
        return _after_ethertype(data, (data[0] << 8) | data[1], 20)
    if linktype in (LINKTYPE_RAW, LINKTYPE_RAW_ALT1, LINKTYPE_RAW_ALT2):
        return 0, _version_ethertype(data, 0)
    if linktype == LINKTYPE_IPV4:
        return 0, ETH_IPV4
    if linktype == LINKTYPE_IPV6:
        return 0, ETH_IPV6
    if linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
        if len(data) < 4:
            raise DecodeError("truncated_link")
        # NULL is in the capturing host's byte order, LOOP in network order: accept either.
        family = int.from_bytes(data[:4], "little")
        if family > 0xFFFF:
            family = int.from_bytes(data[:4], "big")
        if family in NULL_INET:
            return 4, ETH_IPV4
        if family in NULL_INET6:
            return 4, ETH_IPV6
        return 4, 0
    raise DecodeError("unsupported_linktype")


def _ethernet(data: bytes, type_at: int) -> tuple[int, int]:
    if len(data) < type_at + 2:
        raise DecodeError("truncated_link")
    return _after_ethertype(data, (data[type_at] << 8) | data[type_at + 1], type_at + 2)


def _after_ethertype(data: bytes, ethertype: int, off: int) -> tuple[int, int]:
    """Walk VLAN tags and a PPPoE session header that follow ``ethertype``, starting at ``off``."""
    tags = 0
    while ethertype in VLAN_TYPES:
        tags += 1
        if tags > MAX_VLAN_TAGS:
            raise DecodeError("too_many_vlan_tags")
        if len(data) < off + 4:
            raise DecodeError("truncated_link")
        ethertype = (data[off + 2] << 8) | data[off + 3]
        off += 4
    if ethertype == PPPOE_SESSION:
        if len(data) < off + 8:
            raise DecodeError("truncated_link")
        ppp = (data[off + 6] << 8) | data[off + 7]
        off += 8
        if ppp == 0x0021:
            return off, ETH_IPV4
        if ppp == 0x0057:
            return off, ETH_IPV6
        return off, 0
    return off, ethertype


def _version_ethertype(data: bytes, off: int) -> int:
    if len(data) <= off:
        raise DecodeError("truncated_ip")
    version = data[off] >> 4
    if version == 4:
        return ETH_IPV4
    if version == 6:
        return ETH_IPV6
    raise DecodeError("bad_ip_version")
