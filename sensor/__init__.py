"""rmm-sensor: fingerprint remote-access tools on the wire."""

__version__ = "0.1.0"
