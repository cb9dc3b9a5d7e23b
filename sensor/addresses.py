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


def syslog_target(address: str) -> tuple[str, str | tuple[str, int]]:
    """Where syslog goes: ``/path`` (a local datagram socket), ``[udp://]host:port``, or
    ``tcp://host:port``. Returns (transport, target); raises ValueError naming what is wrong.
    """
    if address.startswith("/"):
        return "unix", address
    transport, sep, rest = address.partition("://")
    if not sep:
        transport, rest = "udp", address
    if transport not in ("udp", "tcp"):
        raise ValueError(f"{address!r}: the scheme must be udp:// or tcp://")
    host, _, port = rest.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{address!r} is not /path, host:port, udp://host:port or tcp://host:port")
    return transport, (host, int(port))
