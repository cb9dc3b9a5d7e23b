"""Small helpers for addresses and host names taken from the wire or the configuration."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def in_networks(address: str, networks: Iterable[Network]) -> bool:
    """True when ``address`` parses and lies in one of ``networks``."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


def strip_port(host: str) -> str:
    """'example.com:8040' -> 'example.com'; IPv6 literals in brackets keep their colons."""
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host
