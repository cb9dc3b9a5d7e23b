"""Configuration files: every mistake is one clear `FILE:LINE: KEY: problem` line, and the
documented example in deploy/ lists every key with its default."""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from sensor.cli import main
from sensor.config import (
    ENTRY_KEYS,
    POLICY_KEYS,
    TOP_KEYS,
    CaptureSettings,
    MetricsSettings,
    OutputSettings,
    PolicySettings,
    SanctionedEntry,
    Settings,
    load_settings,
)
from sensor.flows.table import FlowSettings
from sensor.yamlsource import SourceError

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "deploy" / "rmm-sensor.yaml"

ENTRY = "sanctioned:\n  - name: Vendor\n    tool: screenconnect\n"

# name, file text, line, key path, start of the problem text
BROKEN = [
    # bad YAML
    ("yaml-indent", "policy:\n  allowed_tools: []\n bad: 1\n", 3, "invalid YAML", "expected"),
    ("yaml-tab", "policy:\n\tallowed_tools: []\n", 2, "invalid YAML", "found character"),
    ("yaml-mapping", "capture:\n  bpf: a: b\n", 2, "invalid YAML", "mapping values"),
    ("yaml-duplicate-key", "policy:\n  allowed_tools: []\n  allowed_tools: [x]\n", 3,
     "policy.allowed_tools", "duplicate key"),
    # unknown keys
    ("unknown-top", "capture: {}\nsanctionned: []\n", 2, "sanctionned", "unknown key"),
    ("unknown-policy", "policy:\n  condense_window_s: 60\n  alowed_tools: []\n", 3,
     "policy.alowed_tools", "unknown key"),
    ("unknown-flows", "flows:\n  tcp_idle: 5\n", 2, "flows.tcp_idle", "unknown key"),
    ("unknown-output", "output:\n  stdout: true\n  syslog_addr: x\n", 3, "output.syslog_addr",
     "unknown key"),
    ("unknown-entry", ENTRY + "    host: [support.vendor.example]\n", 4, "sanctioned[0].host",
     "unknown key"),
    # wrong types
    ("type-int", "capture:\n  snaplen: big\n", 2, "capture.snaplen",
     "expected an integer, got str"),
    ("type-float", "policy:\n  condense_window_s: 1.5\n", 2, "policy.condense_window_s",
     "expected an integer, got float"),
    ("type-bool-for-int", "flows:\n  max_flows: yes\n", 2, "flows.max_flows",
     "expected an integer, got a boolean"),
    ("type-int-for-bool", "capture:\n  promiscuous: 1\n", 2, "capture.promiscuous",
     "expected true or false, got int"),
    ("type-str", "metrics:\n  address: 9808\n", 2, "metrics.address",
     "expected a string, got int"),
    ("type-null", "flows:\n  tcp_idle_s:\n", 2, "flows.tcp_idle_s", "expected an integer"),
    ("type-signatures", "signatures: [a]\n", 1, "signatures", "expected a string, got list"),
    ("type-section", "policy: [allowed_tools]\n", 1, "policy", "a mapping is required"),
    ("type-sanctioned", "sanctioned:\n  name: Vendor\n", 2, "sanctioned",
     "a list of entries is required"),
    ("type-entry", "sanctioned:\n  - Vendor\n", 2, "sanctioned[0]", "a mapping is required"),
    ("type-list", ENTRY + "    ports: 8041\n", 4, "sanctioned[0].ports", "a list is required"),
    ("type-tools", "policy:\n  allowed_tools: [anydesk, 7]\n", 2, "policy.allowed_tools[1]",
     "expected a string, got int"),
    ("type-anydesk-id", ENTRY + "    anydesk_ids: [123 456 789]\n", 4,
     "sanctioned[0].anydesk_ids[0]", "expected an integer, got str"),
    ("type-confidence", "policy:\n  alert_min_confidence: very\n", 2,
     "policy.alert_min_confidence", "must be one of low, medium, high"),
    ("missing-tool", "sanctioned:\n  - name: Vendor\n    hosts: [a.example]\n", 2,
     "sanctioned[0]", "tool is required"),
    ("missing-name", "sanctioned:\n  - tool: anydesk\n", 2, "sanctioned[0]", "name is required"),
    # addresses
    ("cidr-octet", ENTRY + "    addresses: [198.51.100.7/32, 198.51.100.300/32]\n", 4,
     "sanctioned[0].addresses[1]", "'198.51.100.300/32' is not an IP address or CIDR"),
    ("cidr-prefix", ENTRY + "    clients:\n      - 10.20.0.0/24\n      - 10.20.0.0/33\n", 6,
     "sanctioned[0].clients[1]", "'10.20.0.0/33' is not an IP address or CIDR"),
    ("cidr-name", "policy:\n  internal_networks: [10.0.0.0/8, intranet]\n", 2,
     "policy.internal_networks[1]", "'intranet' is not an IP address or CIDR"),
    ("cidr-v6", ENTRY + "    addresses: ['2001:db8::/129']\n", 4, "sanctioned[0].addresses[0]",
     "'2001:db8::/129' is not"),
    # host names and wildcards
    ("wildcard-middle", ENTRY + "    hosts: [support.*.example]\n", 4, "sanctioned[0].hosts[0]",
     "'support.*.example': a wildcard may only be a leading '*.' label"),
    ("wildcard-glued", ENTRY + "    hosts: ['*vendor.example']\n", 4, "sanctioned[0].hosts[0]",
     "'*vendor.example': a wildcard may only be a leading '*.' label"),
    ("wildcard-twice", ENTRY + "    hosts: ['*.*.example']\n", 4, "sanctioned[0].hosts[0]",
     "'*.*.example': a wildcard may only be a leading '*.' label"),
    ("wildcard-alone", ENTRY + "    hosts: ['*']\n", 4, "sanctioned[0].hosts[0]",
     "'*': a wildcard may only be a leading '*.' label"),
    ("host-space", ENTRY + "    hosts:\n      - a.example\n      - vendor .example\n", 6,
     "sanctioned[0].hosts[1]", "'vendor .example' is not a host name"),
    ("host-url", ENTRY + "    hosts: ['https://support.vendor.example/']\n", 4,
     "sanctioned[0].hosts[0]", "'https://support.vendor.example/' is not a host name"),
    # ports
    ("port-zero", ENTRY + "    ports: [0]\n", 4, "sanctioned[0].ports[0]",
     "0 is not a port (1-65535)"),
    ("port-big", ENTRY + "    ports: [8040, 65536]\n", 4, "sanctioned[0].ports[1]",
     "65536 is not a port (1-65535)"),
    ("port-negative", ENTRY + "    ports: [-8041]\n", 4, "sanctioned[0].ports[0]",
     "-8041 is not a port"),
    ("port-string", ENTRY + "    ports: ['8041']\n", 4, "sanctioned[0].ports[0]",
     "expected an integer, got str"),
    # duplicate entry names
    ("duplicate-name", ENTRY + "    ports: [8041]\n  - name: Other\n    tool: anydesk\n"
     "  - name: Vendor\n    tool: anydesk\n", 7, "sanctioned[2].name",
     "duplicate entry name 'Vendor'"),
    # expiry dates
    ("expires-word", ENTRY + "    expires: soon\n", 4, "sanctioned[0].expires",
     "a date YYYY-MM-DD is required"),
    ("expires-int", ENTRY + "    expires: 20241231\n", 4, "sanctioned[0].expires",
     "a date YYYY-MM-DD is required"),
    ("expires-day", ENTRY + "    expires: 2024-02-30\n", 4, "sanctioned[0].expires",
     "bad value '2024-02-30'"),
    ("expires-month", ENTRY + "    expires: 2024-13-01\n", 4, "sanctioned[0].expires",
     "bad value '2024-13-01'"),
    ("expires-us", ENTRY + "    expires: 12/31/2024\n", 4, "sanctioned[0].expires",
     "a date YYYY-MM-DD is required"),
    # hex keys
    ("hex-letters", ENTRY + "    instance_keys: [fea249e33df7a46z]\n", 4,
     "sanctioned[0].instance_keys[0]", "hex digits expected (at least 8)"),
    ("hex-short", ENTRY + "    instance_keys: [fea249e]\n", 4, "sanctioned[0].instance_keys[0]",
     "hex digits expected (at least 8)"),
    ("hex-cert", "sanctioned:\n  - name: AD\n    tool: anydesk\n    client_certs:\n"
     "      - 28cdd73f9b2e0ff4\n      - '28:cd:d7:3f:9b:2e:0f:g4'\n", 6,
     "sanctioned[0].client_certs[1]", "hex digits expected (at least 8)"),
    # negative numbers
    ("negative-window", "policy:\n  condense_window_s: -1\n", 2, "policy.condense_window_s",
     "must not be negative"),
    ("negative-rate", "policy:\n  max_alerts_per_minute: -60\n", 2,
     "policy.max_alerts_per_minute", "must not be negative"),
    ("negative-flows", "flows:\n  tcp_idle_s: 600\n  udp_idle_s: -120\n", 3, "flows.udp_idle_s",
     "must not be negative"),
    ("negative-workers", "capture:\n  workers: -2\n", 2, "capture.workers",
     "must not be negative"),
    ("negative-spool", "output:\n  spool_max: -1\n", 2, "output.spool_max",
     "must not be negative"),
    # syslog receiver
    ("syslog-scheme", "output:\n  syslog: true\n  syslog_address: tls://logs.example:6514\n", 3,
     "output.syslog_address", "'tls://logs.example:6514': the scheme must be udp:// or tcp://"),
    ("syslog-no-port", "output:\n  syslog_address: logs.example\n", 2, "output.syslog_address",
     "'logs.example' is not /path, host:port"),
    # allowed and forbidden at once
    ("tools-overlap", "policy:\n  allowed_tools: [anydesk]\n  forbidden_tools: [AnyDesk, x]\n",
     3, "policy.forbidden_tools", "anydesk also allowed"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "line", "key", "problem"),
    [pytest.param(*case[1:], id=case[0]) for case in BROKEN],
)
def test_check_config_reports_one_located_error(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    text: str,
    line: int,
    key: str,
    problem: str,
) -> None:
    path = tmp_path / "rmm-sensor.yaml"
    path.write_text(text, encoding="utf-8")
    assert main(["check-config", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    head = f"rmm-sensor: error: {path}:{line}: {key}: "
    assert lines[0].startswith(head), lines[0]
    assert lines[0][len(head) :].startswith(problem), lines[0]


@pytest.mark.parametrize(
    ("text", "line", "key", "problem"),
    [pytest.param(*case[1:], id=case[0]) for case in BROKEN],
)
def test_load_settings_raises_source_error(text: str, line: int, key: str, problem: str) -> None:
    with pytest.raises(SourceError) as info:
        load_settings("cfg.yaml", text)
    assert (info.value.path, info.value.line) == ("cfg.yaml", line)
    assert info.value.message.startswith(f"{key}: {problem}")
    assert str(info.value) == f"cfg.yaml:{line}: {info.value.message}"


def test_missing_file_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "absent.yaml"
    assert main(["check-config", str(path)]) == 2
    _, err = capsys.readouterr()
    assert err == f"rmm-sensor: error: {path}:0: No such file or directory\n"


def test_file_that_is_not_text_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"policy:\n  allowed_tools: [\xff\xfe]\n")
    assert main(["check-config", str(path)]) == 2
    _, err = capsys.readouterr()
    assert err.startswith(f"rmm-sensor: error: {path}:0: not UTF-8 text")
    assert len(err.splitlines()) == 1


def test_analyze_refuses_a_broken_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text(ENTRY + "    ports: [0]\n", encoding="utf-8")
    capture = str(REPO / "pcaps" / "sc-relay-m1-8041.pcap")
    assert main(["analyze", "--format", "json", "--config", str(path), capture]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        f"rmm-sensor: error: {path}:4: sanctioned[0].ports[0]: 0 is not a port (1-65535)\n"
    )


# --------------------------------------------------------------------------------------------
# Valid files


def test_check_config_accepts_the_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(EXAMPLE)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert re.fullmatch(
        rf"ok: {re.escape(str(EXAMPLE))}: 0 sanctioned entries, \d+ signatures for \d+ tools\n", out
    )


def test_check_config_warns_about_tools_without_signatures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text("sanctioned:\n  - {name: FD, tool: FleetDeck}\n", encoding="utf-8")
    assert main(["check-config", str(path)]) == 0
    out, err = capsys.readouterr()
    assert err == (
        "rmm-sensor: warning: sanctioned entries name tools without signatures: fleetdeck\n"
    )
    assert out.startswith(f"ok: {path}: 1 sanctioned entries, ")


@pytest.mark.parametrize("text", ["", "# only a comment\n", "sanctioned:\n", "policy: {}\n"])
def test_empty_files_give_the_defaults(text: str) -> None:
    assert load_settings("cfg.yaml", text) == Settings(path="cfg.yaml")


def test_a_full_entry_is_normalised() -> None:
    text = textwrap.dedent(
        """\
        sanctioned:
          - name: Vendor support
            tool: ScreenConnect
            hosts: [Support.Vendor.Example., "*.Vendor.Example"]
            addresses: [198.51.100.7, 2001:db8::/32]
            ports: [8040, 8041]
            clients: [10.20.0.1/24]
            instance_keys: ["FE:A2:49:E3:3D:F7:A4:66"]
            anydesk_ids: [123456789]
            client_certs: [28CDD73F9B2E0FF4]
            expires: 2026-12-31
            owner: it-ops@example.com
            ticket: 1234
        policy:
          allowed_tools: [TeamViewer]
          forbidden_tools: [RustDesk]
          internal_networks: [10.0.0.0/8]
          alert_min_confidence: high
          condense_window_s: 0
          max_alerts_per_minute: 0
        """
    )
    settings = load_settings("cfg.yaml", text)
    assert settings.policy == PolicySettings(
        sanctioned=(
            SanctionedEntry(
                name="Vendor support",
                tool="screenconnect",
                hosts=("support.vendor.example", "*.vendor.example"),
                addresses=(
                    ipaddress.ip_network("198.51.100.7/32"),
                    ipaddress.ip_network("2001:db8::/32"),
                ),
                ports=(8040, 8041),
                clients=(ipaddress.ip_network("10.20.0.0/24"),),  # host bits dropped
                instance_keys=("fea249e33df7a466",),
                anydesk_ids=("123456789",),
                client_certs=("28cdd73f9b2e0ff4",),
                expires=dt.date(2026, 12, 31),
                owner="it-ops@example.com",
                ticket="1234",
                line=2,
            ),
        ),
        allowed_tools=("teamviewer",),
        forbidden_tools=("rustdesk",),
        internal_networks=(ipaddress.ip_network("10.0.0.0/8"),),
        alert_min_confidence="high",
        condense_window_s=0,
        max_alerts_per_minute=0,
    )


def test_sections_override_only_what_they_name() -> None:
    settings = load_settings("cfg.yaml", "flows:\n  udp_idle_s: 5\ncapture:\n  bpf: not port 22\n")
    assert settings.flows == dataclasses.replace(FlowSettings(), udp_idle_s=5)
    assert settings.capture == dataclasses.replace(CaptureSettings(), bpf="not port 22")
    assert settings.policy == PolicySettings()


# --------------------------------------------------------------------------------------------
# The documented example cannot drift from the code.

SECTIONS: dict[str, type[Any]] = {
    "capture": CaptureSettings,
    "flows": FlowSettings,
    "output": OutputSettings,
    "metrics": MetricsSettings,
    "policy": PolicySettings,
}


def _documented(value: Any) -> Any:
    """A default as the example file writes it (networks as text, tuples as lists)."""
    if isinstance(value, tuple):
        return [_documented(v) for v in value]
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return str(value)
    return value


def _example() -> dict[str, Any]:
    doc = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return doc


def test_example_has_exactly_the_top_level_keys() -> None:
    assert list(_example()) == list(TOP_KEYS)
    settings_fields = {f.name for f in dataclasses.fields(Settings)} - {"path"}
    assert settings_fields | {"sanctioned"} == set(TOP_KEYS)


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_example_documents_every_key_with_its_default(section: str) -> None:
    cls = SECTIONS[section]
    documented = _example()[section]
    defaults = cls()
    names = [f.name for f in dataclasses.fields(cls) if f.name != "sanctioned"]
    assert sorted(documented) == sorted(names)
    for name in names:
        assert documented[name] == _documented(getattr(defaults, name)), f"{section}.{name}"


def test_example_top_level_defaults() -> None:
    doc = _example()
    assert doc["signatures"] == Settings().signatures
    assert doc["sanctioned"] == []
    assert set(POLICY_KEYS) == {f.name for f in dataclasses.fields(PolicySettings)} - {"sanctioned"}


def test_example_loads_as_the_defaults() -> None:
    assert load_settings(str(EXAMPLE)) == Settings(path=str(EXAMPLE))


def test_commented_entry_examples_are_valid_and_use_every_entry_key() -> None:
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    start = lines.index("# Examples (uncomment and adapt):")
    body = [line[1:] for line in lines[start + 1 :] if line.startswith("#  ")]
    assert body, "no commented sanctioned entries after the Examples line"
    settings = load_settings("example.yaml", "sanctioned:\n" + "\n".join(body) + "\n")
    entries = settings.policy.sanctioned
    assert len(entries) >= 3
    used = set().union(*(yaml.safe_load("\n".join(body))[i].keys() for i in range(len(entries))))
    assert used == set(ENTRY_KEYS)
    assert {f.name for f in dataclasses.fields(SanctionedEntry)} - {"line"} == set(ENTRY_KEYS)


def test_all_digit_hex_keys_read_as_text(tmp_path: Path) -> None:
    """YAML reads an unquoted all-digit key as an integer: it still means the hex text."""
    cfg = tmp_path / "digits.yaml"
    cfg.write_text(ENTRY + "    instance_keys: [12345678]\n")
    (entry,) = load_settings(str(cfg)).policy.sanctioned
    assert entry.instance_keys == ("12345678",)
