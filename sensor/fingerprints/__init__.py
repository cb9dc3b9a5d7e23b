"""Tool-specific knowledge the signature files refer to by name.

``DECODERS`` are named conditions a signature can require (``decoder: {equals: NAME}``);
``ENRICHERS`` read the facts that identify an instance once a flow is known to be a tool's.
Both are explicit tables so what runs can be read here at a glance.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

from sensor.fingerprints import anydesk, screenconnect
from sensor.model import FlowRecord
from sensor.signatures.index import Decoded, Decoder

DECODERS: Mapping[str, Decoder] = MappingProxyType(
    {
        "anydesk-discovery": anydesk.discovery_decoder,
        "screenconnect-relay-m3": screenconnect.relay_m3,
        "screenconnect-relay-legacy": screenconnect.relay_legacy,
    }
)

ENRICHERS: Mapping[str, Callable[[FlowRecord], Decoded]] = MappingProxyType(
    {
        "anydesk": anydesk.enrich,
        "screenconnect": screenconnect.enrich,
    }
)
