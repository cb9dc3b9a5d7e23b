"""Find and load the signature files into one compiled index."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from sensor.fingerprints import DECODERS
from sensor.signatures.index import SignatureIndex
from sensor.signatures.schema import load_tool_file
from sensor.yamlsource import SourceError

ENV_VAR = "RMM_SENSOR_SIGNATURES"


def default_directory() -> Path:
    """$RMM_SENSOR_SIGNATURES, the source checkout's signatures/, or the installed copy."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    checkout = Path(__file__).resolve().parents[2] / "signatures"
    if checkout.is_dir():
        return checkout
    return Path(sys.prefix) / "share" / "rmm-sensor" / "signatures"


def load_index(directory: str | Path | None = None) -> SignatureIndex:
    """Load every ``*.yaml`` file of the directory (sorted by name); raises SourceError."""
    path = Path(directory) if directory is not None else default_directory()
    if not path.is_dir():
        raise SourceError(str(path), 0, "signature directory not found")
    files = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml"))
    if not files:
        raise SourceError(str(path), 0, "no signature files (*.yaml) in the directory")
    return SignatureIndex((load_tool_file(str(f)) for f in files), DECODERS)
