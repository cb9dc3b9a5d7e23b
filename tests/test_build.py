"""The compiled hot path: what setup.py compiles is what runs, and it behaves as the source does.

The modules listed in setup.py are compiled with mypyc. The sources stay the reference: a copy of
the package without the compiled files must give byte-identical output.
"""

from __future__ import annotations

import copyreg
import dataclasses
import importlib
import os
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sensor.capture.files import read_frames
from sensor.flows.table import FlowSettings
from sensor.model import FlowRecord
from sensor.pipeline import Engine

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT / ".." / "shared" / "captures"


def compiled_modules() -> list[str]:
    """Module names from setup.py's list (one place says what is compiled)."""
    paths = re.findall(r'^\s+"(sensor/[\w/]+)\.py",$', (ROOT / "setup.py").read_text(), re.M)
    assert len(paths) >= 20, "setup.py's COMPILED list was not found"
    return [p.replace("/", ".") for p in paths]


@pytest.mark.skipif(bool(os.environ.get("RMM_SENSOR_PURE")), reason="installed without compiling")
@pytest.mark.parametrize("name", compiled_modules())
def test_module_runs_compiled(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__file__ is not None
    assert module.__file__.endswith(".so"), f"{name} runs from {module.__file__}: run make"


def analyze(pythonpath: Path, captures: list[Path], tmp_path: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, sensor.pipeline as p; from sensor.cli import main;"
            "print(p.__file__, file=sys.stderr); sys.exit(main())",
            "analyze",
            "--signatures",
            str(ROOT / "signatures"),
            "--format",
            "json",
            "--flows",
            *map(str, captures),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
        check=False,
    )
    assert done.returncode in (0, 1), done.stderr
    return done.stdout + "\n# engine: " + done.stderr.splitlines()[0]


def test_source_and_compiled_build_give_identical_output(tmp_path: Path) -> None:
    pure = tmp_path / "pure"
    shutil.copytree(ROOT / "sensor", pure / "sensor", ignore=shutil.ignore_patterns("*.so"))
    captures = [
        SHARED / "anydesk-2022-ndpi.pcapng",
        SHARED / "bg-ndpi-1kxun.pcap",
        SHARED / "bg-ndpi-dns.pcap",
        SHARED / "bg-ja4-tls-handshake.pcapng",
        SHARED / "bg-zeek-wikipedia.pcap",
        SHARED / "bg-zeek-workshop_2011_browse.pcap",
        ROOT / "pcaps" / "incident-2023.pcap",
        ROOT / "pcaps" / "demo-mixed.pcap",
    ]
    source, source_engine = analyze(pure, captures, tmp_path).split("\n# engine: ")
    built, built_engine = analyze(ROOT, captures, tmp_path).split("\n# engine: ")
    assert source_engine.endswith("pipeline.py")
    if not os.environ.get("RMM_SENSOR_PURE"):
        assert built_engine.endswith(".so")
    assert source.count('"event_type":"flow"') >= 300
    assert source.count('"event_type":"session"') >= 5
    assert source == built


def test_every_frozen_dataclass_of_the_compiled_modules_can_be_pickled() -> None:
    missing = [
        f"{name}.{cls.__name__}"
        for name in compiled_modules()
        for cls in vars(importlib.import_module(name)).values()
        if isinstance(cls, type)
        and cls.__module__ == name
        and dataclasses.is_dataclass(cls)
        and cls.__dataclass_params__.frozen  # type: ignore[attr-defined]
        and cls not in copyreg.dispatch_table
    ]
    assert not missing, f"not registered with sensor.frozen.picklable: {missing}"


def test_flow_records_cross_a_process_boundary_unchanged() -> None:
    records: list[FlowRecord] = []
    engine = Engine(FlowSettings(), records.append)
    engine.run(read_frames(str(SHARED / "anydesk-2022-ndpi.pcapng")))
    engine.flush()
    assert any(r.tls is not None and r.tls.server_certificates for r in records)
    assert any(r.dns is not None and r.dns.answers for r in records)
    assert pickle.loads(pickle.dumps(records)) == records
    assert pickle.loads(pickle.dumps(FlowSettings(max_flows=7))) == FlowSettings(max_flows=7)
