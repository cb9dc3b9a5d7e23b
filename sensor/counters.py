"""Engine counters as plain values, without the Prometheus library.

A snapshot is what one engine's counters read at one moment; worker processes send theirs to the
supervisor, and ``sensor.metrics`` sums them at scrape time. Kept apart from ``sensor.metrics`` so
that a run which writes no metrics never imports ``prometheus_client`` (about 60 ms of start-up).
"""

from __future__ import annotations

from dataclasses import dataclass

IP_PROTOCOL_NAMES = {1: "icmp", 2: "igmp", 47: "gre", 50: "esp", 58: "icmpv6", 132: "sctp"}


@dataclass(frozen=True, slots=True)
class EngineSnapshot:
    """What one engine's counters read at one moment; summed across worker processes."""

    packets: int
    bytes: int
    non_ip: int
    decode_errors: tuple[tuple[str, int], ...]
    other_protocols: tuple[tuple[str, int], ...]
    parse_errors: tuple[tuple[str, int], ...]
    flows_created: int
    flows_active: int
    flows_ended: tuple[tuple[str, int], ...]
    last_packet_ns: int
    kernel_packets: int = 0  # live capture: what the kernel counted (PACKET_STATISTICS)
    kernel_drops: int = 0


def protocol_label(proto: int) -> str:
    """A bounded label for an IP protocol number: a known name, or "other"."""
    return IP_PROTOCOL_NAMES.get(proto, "other")
