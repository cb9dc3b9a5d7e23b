"""Verdicts: which sessions the sanctioned-instance policy allows, and how severe the rest are.

The capture tests drive ``rmm-sensor analyze --config`` over the project captures twice, with a
policy that matches and one that does not, so each kind of allowlist entry is shown to flip the
verdict on real detector output. The unit tests judge hand-built sessions for the edge cases no
capture holds (look-alike names, IPv6, severity and confidence tables).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import signal
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sensor.cli import main
from sensor.config import load_settings
from sensor.model import Evidence, Session
from sensor.policy.verdicts import Policy

PCAPS = Path(__file__).resolve().parents[2] / "pcaps"
T0_NS = 1_709_283_600 * 1_000_000_000  # 2024-03-01T09:00:00Z, the start of every capture

Record = dict[str, Any]


@pytest.fixture(autouse=True)
def _keep_sighup() -> Iterator[None]:
    """`analyze --config` installs a SIGHUP handler for reloads; give pytest its own back."""
    before = signal.getsignal(signal.SIGHUP)
    yield
    signal.signal(signal.SIGHUP, before)


@dataclasses.dataclass
class Run:
    code: int
    records: list[Record]

    @property
    def sessions(self) -> list[Record]:
        return [r for r in self.records if r["event_type"] == "session"]

    @property
    def alerts(self) -> list[Record]:
        return [r for r in self.records if r["event_type"] == "alert"]

    def session_keys(self) -> list[tuple[str, str, int, str]]:
        return [
            (r["src_ip"], r["dest_ip"], r["dest_port"], r["rmm"]["channel"]) for r in self.sessions
        ]

    def session(self, channel: str, src_ip: str) -> Record:
        found = [
            r for r in self.sessions if r["rmm"]["channel"] == channel and r["src_ip"] == src_ip
        ]
        assert len(found) == 1, [(r["rmm"]["channel"], r["src_ip"]) for r in self.sessions]
        return found[0]


@pytest.fixture
def analyze(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Callable[[str, str], Run]:
    """Run `analyze --format json --config` on one capture with the given YAML text."""
    counter = itertools.count()

    def run(capture: str, config: str) -> Run:
        cfg = tmp_path / f"policy-{next(counter)}.yaml"
        cfg.write_text(textwrap.dedent(config), encoding="utf-8")
        code = main(["analyze", "--format", "json", "--config", str(cfg), str(PCAPS / capture)])
        out, err = capsys.readouterr()
        assert err == ""
        return Run(code, [json.loads(line) for line in out.splitlines()])

    return run


def entry(tool: str, **criteria: object) -> str:
    """A config with one sanctioned entry named 'E' (flow-style YAML values)."""
    lines = ["sanctioned:", "  - name: E", f"    tool: {tool}"]
    lines += [f"    {key}: {json.dumps(value)}" for key, value in criteria.items()]
    return "\n".join(lines) + "\n"


def verdict(record: Record) -> tuple[str, str, str]:
    rmm = record["rmm"]
    return rmm["verdict"], rmm["verdict_reason"], rmm.get("severity", "")


# --------------------------------------------------------------------------------------------
# One kind of entry at a time: the same capture and session, a matching and a missing entry.

SC_MISS = "none of the 1 sanctioned screenconnect entries matches"
AD_MISS = "none of the 1 sanctioned anydesk entries matches"

# capture, (channel, client) of the session, tool, matching criteria, missing criteria, severity
FLIPS = [
    pytest.param(
        "sc-relay-m1-8041.pcap", ("relay", "10.20.0.21"), "screenconnect",
        {"hosts": ["support.vendor.example"]}, {"hosts": ["other.vendor.example"]}, "high",
        id="hosts-exact",
    ),
    pytest.param(
        "sc-relay-m1-8041.pcap", ("relay", "10.20.0.21"), "screenconnect",
        {"hosts": ["SUPPORT.Vendor.Example."]}, {"hosts": ["vendor.example"]}, "high",
        id="hosts-exact-case-and-root-dot",
    ),
    pytest.param(
        "sc-relay-m1-8041.pcap", ("relay", "10.20.0.21"), "screenconnect",
        {"hosts": ["*.vendor.example"]}, {"hosts": ["*.support.vendor.example"]}, "high",
        id="wildcard-not-the-apex",
    ),
    pytest.param(
        "sc-relay-legacy.pcap", ("relay", "10.20.0.24"), "screenconnect",
        {"hosts": ["*.legacy-vendor.example"]}, {"hosts": ["*.vendor.example"]}, "medium",
        id="wildcard-is-label-aware",
    ),
    pytest.param(
        "sc-relay-m3.pcap", ("relay", "10.20.0.23"), "screenconnect",
        {"addresses": ["198.51.100.16/28"]}, {"addresses": ["198.51.100.0/28", "2001:db8::/32"]},
        "high", id="addresses-cidr",
    ),
    pytest.param(
        "sc-relay-m3.pcap", ("relay", "10.20.0.23"), "screenconnect",
        {"addresses": ["198.51.100.17"]}, {"addresses": ["198.51.100.18"]}, "high",
        id="addresses-single",
    ),
    pytest.param(
        "sc-relay-m1-8041.pcap", ("relay", "10.20.0.21"), "screenconnect",
        {"ports": [8040, 8041]}, {"ports": [8040]}, "high", id="ports",
    ),
    pytest.param(
        "sc-relay-m1-8041.pcap", ("relay", "10.20.0.21"), "screenconnect",
        {"hosts": ["support.vendor.example"], "ports": [8041]},
        {"hosts": ["support.vendor.example"], "ports": [8040]}, "high",
        id="every-criterion-must-hold",
    ),
    pytest.param(
        "ad-relay-6568.pcap", ("relay", "10.20.0.31"), "anydesk",
        {"clients": ["10.20.0.0/27"]}, {"clients": ["10.20.0.32/32", "10.20.1.0/24"]}, "high",
        id="clients",
    ),
    pytest.param(
        "sc-web-onprem-8040.pcap", ("download", "10.20.0.21"), "screenconnect",
        {"instance_keys": ["fea249e33df7a466"]}, {"instance_keys": ["fea249e33df7a467"]},
        "medium", id="instance-key-prefix",
    ),
    pytest.param(
        "sc-web-onprem-8040.pcap", ("download", "10.20.0.21"), "screenconnect",
        {"instance_keys": ["FE:A2:49:E3:3D:F7:A4:66:9C:60:7C:B1"]},
        {"instance_keys": ["a249e33df7a4669c"]}, "medium", id="instance-key-colons-upper",
    ),
    pytest.param(
        "ad-discovery.pcap", ("discovery", "10.20.0.31"), "anydesk",
        {"anydesk_ids": [555000111, 123456789]}, {"anydesk_ids": [987654321]}, "low",
        id="anydesk-ids",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("capture", "which", "tool", "hit", "miss", "severity"), FLIPS)
def test_each_kind_of_entry_flips_the_verdict(
    analyze: Callable[[str, str], Run],
    capture: str,
    which: tuple[str, str],
    tool: str,
    hit: dict[str, object],
    miss: dict[str, object],
    severity: str,
) -> None:
    allowed = analyze(capture, entry(tool, **hit)).session(*which)
    assert verdict(allowed) == ("sanctioned", "sanctioned by entry 'E'", "")

    denied_run = analyze(capture, entry(tool, **miss))
    denied = denied_run.session(*which)
    assert verdict(denied) == ("unsanctioned", SC_MISS if tool == "screenconnect" else AD_MISS,
                               severity)  # fmt: skip
    assert denied_run.code == 1


def test_instance_key_entry_sanctions_only_the_session_carrying_the_key(
    analyze: Callable[[str, str], Run],
) -> None:
    # The installer download carries k=; the console page before it does not.
    run = analyze("sc-web-onprem-8040.pcap", entry("screenconnect", instance_keys=["fea249e3"]))
    assert run.session("download", "10.20.0.21")["rmm"]["verdict"] == "sanctioned"
    web = run.session("web", "10.20.0.21")
    assert verdict(web) == ("unsanctioned", SC_MISS, "medium")
    assert run.code == 1


def test_anydesk_id_entry_leaves_the_other_endpoint_unsanctioned(
    analyze: Callable[[str, str], Run],
) -> None:
    run = analyze("ad-discovery.pcap", entry("anydesk", anydesk_ids=[123456789]))
    assert run.session("discovery", "10.20.0.31")["rmm"]["verdict"] == "sanctioned"
    lab = run.session("discovery", "10.20.0.32")
    assert lab["rmm"]["attributes"]["anydesk_id"] == "987654321"
    assert verdict(lab) == ("unsanctioned", AD_MISS, "low")
    assert [a["src_ip"] for a in run.alerts] == ["10.20.0.32"]


def test_entry_for_another_tool_does_not_apply(analyze: Callable[[str, str], Run]) -> None:
    run = analyze("sc-relay-m1-8041.pcap", entry("anydesk", hosts=["support.vendor.example"]))
    assert verdict(run.session("relay", "10.20.0.21")) == (
        "unsanctioned",
        "no sanctioned entry for tool screenconnect",
        "high",
    )


@pytest.mark.parametrize("capture", ["ad-relay-6568.pcap", "ad-relay-tls.pcap"])
def test_client_certificate_prefix_flips_the_verdict(
    analyze: Callable[[str, str], Run], capture: str
) -> None:
    # The TLS captures get new keys whenever they are regenerated: read the SHA-1 first.
    first = analyze(capture, "sanctioned: []\n").session("relay", "10.20.0.31")
    sha1 = first["rmm"]["attributes"]["client_cert_sha1"]
    hexdigits = sha1.replace(":", "")
    assert len(hexdigits) == 40
    assert first["rmm"]["verdict"] == "unsanctioned"

    for form in (hexdigits[:16], sha1.upper(), hexdigits):
        allowed = analyze(capture, entry("anydesk", client_certs=[form]))
        assert verdict(allowed.session("relay", "10.20.0.31")) == (
            "sanctioned",
            "sanctioned by entry 'E'",
            "",
        )

    other = f"{int(hexdigits[:16], 16) ^ 1:016x}"  # same length, last bit differs
    denied = analyze(capture, entry("anydesk", client_certs=[other]))
    assert verdict(denied.session("relay", "10.20.0.31")) == ("unsanctioned", AD_MISS, "high")


@pytest.mark.parametrize(
    ("expires", "expected"),
    [
        ("2023-12-31", ("unsanctioned", "entry 'E' matches but expired on 2023-12-31", "high")),
        ("2024-02-29", ("unsanctioned", "entry 'E' matches but expired on 2024-02-29", "high")),
        ("2024-03-01", ("sanctioned", "sanctioned by entry 'E'", "")),  # valid through that day
        ("2099-12-31", ("sanctioned", "sanctioned by entry 'E'", "")),
    ],
)
def test_expiry_is_judged_at_the_session_date(
    analyze: Callable[[str, str], Run], expires: str, expected: tuple[str, str, str]
) -> None:
    config = entry("screenconnect", hosts=["support.vendor.example"]) + f"    expires: {expires}\n"
    run = analyze("sc-relay-m1-8041.pcap", config)
    assert verdict(run.session("relay", "10.20.0.21")) == expected
    assert run.code == (1 if expected[0] == "unsanctioned" else 0)


def test_expired_entry_does_not_hide_a_valid_one(analyze: Callable[[str, str], Run]) -> None:
    config = """\
        sanctioned:
          - name: Old contract
            tool: screenconnect
            hosts: [support.vendor.example]
            expires: 2024-01-31
          - name: New contract
            tool: screenconnect
            ports: [8041]
            expires: 2024-12-31
        """
    run = analyze("sc-relay-m1-8041.pcap", config)
    assert verdict(run.session("relay", "10.20.0.21")) == (
        "sanctioned",
        "sanctioned by entry 'New contract'",
        "",
    )


def test_expiry_of_an_entry_that_does_not_match_is_not_the_reason(
    analyze: Callable[[str, str], Run],
) -> None:
    config = entry("screenconnect", hosts=["other.example"]) + "    expires: 2020-01-01\n"
    run = analyze("sc-relay-m1-8041.pcap", config)
    assert verdict(run.session("relay", "10.20.0.21")) == ("unsanctioned", SC_MISS, "high")


@pytest.mark.parametrize(
    ("allowed", "expected_reason", "verdict_"),
    [
        ("[anydesk]", "tool anydesk is allowed everywhere (policy.allowed_tools)", "sanctioned"),
        ("[AnyDesk]", "tool anydesk is allowed everywhere (policy.allowed_tools)", "sanctioned"),
        ("[screenconnect]", "no sanctioned entry for tool anydesk", "unsanctioned"),
        ("[]", "no sanctioned entry for tool anydesk", "unsanctioned"),
    ],
)
def test_allowed_tools_need_no_entry(
    analyze: Callable[[str, str], Run], allowed: str, expected_reason: str, verdict_: str
) -> None:
    run = analyze("ad-discovery.pcap", f"policy:\n  allowed_tools: {allowed}\n")
    assert len(run.sessions) == 2
    for record in run.sessions:
        assert record["rmm"]["verdict"] == verdict_
        assert record["rmm"]["verdict_reason"] == expected_reason
    assert run.code == (0 if verdict_ == "sanctioned" else 1)
    assert len(run.alerts) == (0 if verdict_ == "sanctioned" else 2)


def test_forbidden_tools_override_a_matching_entry(analyze: Callable[[str, str], Run]) -> None:
    allow = entry("anydesk", anydesk_ids=[123456789])
    allowed = analyze("ad-discovery.pcap", allow).session("discovery", "10.20.0.31")
    assert verdict(allowed) == ("sanctioned", "sanctioned by entry 'E'", "")

    run = analyze("ad-discovery.pcap", allow + "policy:\n  forbidden_tools: [anydesk]\n")
    record = run.session("discovery", "10.20.0.31")
    # A forbidden tool is at least "high", even on the low-severity discovery channel.
    assert verdict(record) == (
        "unsanctioned",
        "tool anydesk is never allowed (policy.forbidden_tools)",
        "high",
    )
    assert run.code == 1
    assert {a["alert"]["severity"] for a in run.alerts} == {"high"}


def test_forbidding_another_tool_changes_nothing(analyze: Callable[[str, str], Run]) -> None:
    forbid = "policy:\n  forbidden_tools: [teamviewer]\n"
    config = entry("anydesk", anydesk_ids=[123456789]) + forbid
    run = analyze("ad-discovery.pcap", config)
    assert run.session("discovery", "10.20.0.31")["rmm"]["verdict"] == "sanctioned"


# --------------------------------------------------------------------------------------------
# Every project capture: all unsanctioned without an allowlist, all sanctioned with one.

# Exploitation captures alert whatever the allowlist says (tests/rules covers them).
DETECTING = sorted(
    p.name
    for p in (*PCAPS.glob("sc-*.pcap"), *PCAPS.glob("ad-*.pcap"))
    if not p.name.startswith("sc-exploit-")
)

ALLOWLIST = """\
    sanctioned:
      - name: Vendor support (on-prem)
        tool: screenconnect
        hosts: [support.vendor.example]
        addresses: [198.51.100.7/32]
        ports: [8040, 8041]
        owner: it-ops@example.com
        ticket: CHG-1234
        expires: 2024-12-31
      - name: Legacy vendor relay
        tool: screenconnect
        hosts: ["*.legacy-vendor.example"]
      - name: Our cloud tenant
        tool: screenconnect
        hosts: [acme.screenconnect.com, instance-ab12cd-relay.screenconnect.com]
        clients: [10.20.0.0/24]
      - name: M3 relay by address
        tool: screenconnect
        addresses: [198.51.100.16/28]
        ports: [8041]
      - name: Helpdesk AnyDesk
        tool: anydesk
        clients: [10.20.0.0/24]
      - name: Vendor support into the front desk
        tool: anydesk
        clients: [198.51.100.99/32]
        addresses: [10.20.0.31/32]
        ports: [7070]
    policy:
      # Outdated-server alerts do not depend on the allowlist (a sanctioned 2019 server is the
      # point of that rule); switch them off here to see the allowlist alone.
      minimum_versions: {}
    """


def test_the_project_has_detecting_captures() -> None:
    assert len(DETECTING) >= 12
    assert any(n.startswith("sc-") for n in DETECTING)
    assert any(n.startswith("ad-") for n in DETECTING)


@pytest.mark.parametrize("capture", DETECTING)
def test_empty_allowlist_makes_every_session_unsanctioned(
    analyze: Callable[[str, str], Run], capture: str
) -> None:
    run = analyze(capture, "sanctioned: []\npolicy:\n  allowed_tools: []\n")
    assert run.code == 1
    assert run.sessions
    assert run.alerts
    for record in run.sessions:
        rmm = record["rmm"]
        assert rmm["verdict"] == "unsanctioned"
        assert rmm["verdict_reason"] == f"no sanctioned entry for tool {rmm['tool']}"
        assert rmm["severity"] in ("low", "medium", "high", "critical")


@pytest.mark.parametrize("capture", DETECTING)
def test_matching_allowlist_raises_no_alert(
    analyze: Callable[[str, str], Run], capture: str
) -> None:
    bare = analyze(capture, "")
    run = analyze(capture, ALLOWLIST)
    assert run.alerts == []
    assert run.code == 0
    # The same sessions are found; only their verdict changes.
    assert run.session_keys() == bare.session_keys()
    for record in run.sessions:
        rmm = record["rmm"]
        assert rmm["verdict"] == "sanctioned"
        assert rmm["verdict_reason"].startswith("sanctioned by entry '")
        assert "severity" not in rmm


INBOUND = "ad-direct-inbound.pcap"


def test_direct_anydesk_from_outside_is_critical(analyze: Callable[[str, str], Run]) -> None:
    run = analyze(INBOUND, "sanctioned: []\n")
    record = run.session("direct", "198.51.100.99")
    assert record["dest_ip"] == "10.20.0.31"
    assert record["dest_port"] == 7070
    assert verdict(record) == ("unsanctioned", "no sanctioned entry for tool anydesk", "critical")
    assert [a["alert"]["severity"] for a in run.alerts] == ["critical"]
    assert run.code == 1


def test_helpdesk_entry_does_not_cover_an_outside_client(
    analyze: Callable[[str, str], Run],
) -> None:
    run = analyze(INBOUND, entry("anydesk", clients=["10.20.0.0/16"]))
    assert verdict(run.session("direct", "198.51.100.99")) == ("unsanctioned", AD_MISS, "critical")


@pytest.mark.parametrize(
    "criteria",
    [
        {"clients": ["198.51.100.99/32"], "addresses": ["10.20.0.31/32"], "ports": [7070]},
        {"clients": ["198.51.100.0/24"]},
    ],
)
def test_an_entry_can_allow_inbound_direct_anydesk(
    analyze: Callable[[str, str], Run], criteria: dict[str, object]
) -> None:
    run = analyze(INBOUND, entry("anydesk", **criteria))
    assert verdict(run.session("direct", "198.51.100.99")) == (
        "sanctioned",
        "sanctioned by entry 'E'",
        "",
    )
    assert run.alerts == []
    assert run.code == 0


def test_only_the_connecting_sides_certificate_counts(analyze: Callable[[str, str], Run]) -> None:
    # Inbound: 198.51.100.99 connects to FRONTDESK-PC, which answers with its own certificate.
    attrs = analyze(INBOUND, "").session("direct", "198.51.100.99")["rmm"]["attributes"]
    caller = attrs["client_cert_sha1"].replace(":", "")
    listener = attrs["server_cert_sha1"].replace(":", "")
    assert caller != listener

    run = analyze(INBOUND, entry("anydesk", client_certs=[listener[:16]]))
    assert verdict(run.session("direct", "198.51.100.99")) == ("unsanctioned", AD_MISS, "critical")
    run = analyze(INBOUND, entry("anydesk", client_certs=[caller[:16]]))
    assert verdict(run.session("direct", "198.51.100.99"))[0] == "sanctioned"


def test_inbound_from_a_network_declared_internal_is_not_critical(
    analyze: Callable[[str, str], Run],
) -> None:
    run = analyze(INBOUND, "policy:\n  internal_networks: [10.0.0.0/8, 198.51.100.0/24]\n")
    assert verdict(run.session("direct", "198.51.100.99")) == (
        "unsanctioned",
        "no sanctioned entry for tool anydesk",
        "high",
    )


# --------------------------------------------------------------------------------------------
# Unit tests on hand-built sessions.


def make_session(**changes: Any) -> Session:
    base = Session(
        session_id=1,
        tool="screenconnect",
        channel="relay",
        proto=6,
        src_ip="10.20.0.21",
        src_port=50111,
        dest_ip="198.51.100.7",
        dest_port=8041,
        community_id="1:x",
        start_ns=T0_NS,
        end_ns=T0_NS + 60 * 1_000_000_000,
        bytes_toserver=3534,
        bytes_toclient=1856,
        pkts_toserver=19,
        pkts_toclient=16,
        server_name=None,
        instance=None,
        confidence="high",
        evidence=(),
    )
    return dataclasses.replace(base, **changes)


def policy(text: str) -> Policy:
    return Policy(load_settings("policy.yaml", textwrap.dedent(text)).policy)


def host_policy(*patterns: str) -> Policy:
    return policy(entry("screenconnect", hosts=list(patterns)))


@pytest.mark.parametrize(
    ("pattern", "name", "sanctioned"),
    [
        ("*.vendor.example", "support.vendor.example", True),
        ("*.vendor.example", "a.b.support.vendor.example", True),
        ("*.vendor.example", "SUPPORT.VENDOR.EXAMPLE", True),
        ("*.vendor.example", "vendor.example", False),  # the apex is not a subdomain
        ("*.vendor.example", "evilvendor.example", False),
        ("*.vendor.example", "support.evilvendor.example", False),
        ("*.vendor.example", "vendor.example.evil.test", False),
        ("*.vendor.example", "support.vendor.example.evil.test", False),
        ("*.vendor.example", "support-vendor.example", False),
        ("support.vendor.example", "support.vendor.example", True),
        ("support.vendor.example", "Support.Vendor.Example.", True),
        ("support.vendor.example", "support.vendor.example:8040", True),
        ("support.vendor.example", "support.vendor.example.:8040", True),
        ("support.vendor.example", "www.support.vendor.example", False),
        ("support.vendor.example", "support.vendor.example.evil.test", False),
        ("support.vendor.example", "upport.vendor.example", False),
        ("vendor.example", "support.vendor.example", False),  # exact means exact
    ],
)
def test_host_patterns(pattern: str, name: str, sanctioned: bool) -> None:
    judged = host_policy(pattern).judge(make_session(server_name=name))
    assert (judged.verdict == "sanctioned") is sanctioned
    assert judged.severity == ("" if sanctioned else "high")


@pytest.mark.parametrize(
    "where",
    [
        {"server_name": "support.vendor.example"},
        {"instance": "support.vendor.example"},
        {"attributes": (("relay_host", "support.vendor.example"),)},
        {"attributes": (("resolved_name", "support.vendor.example"),)},
        {"evidence": (Evidence("s", "dns.query", "support.vendor.example", "high"),)},
        {"evidence": (Evidence("s", "tls.sni", "support.vendor.example", "high"),)},
        {"evidence": (Evidence("s", "http.host", "support.vendor.example:8040", "high"),)},
        {"evidence": (Evidence("s", "dns-attribution", "support.vendor.example", "medium"),)},
    ],
)
def test_every_name_source_counts_for_hosts(where: dict[str, Any]) -> None:
    assert host_policy("support.vendor.example").judge(make_session(**where)).verdict == (
        "sanctioned"
    )


@pytest.mark.parametrize(
    "where",
    [
        {},
        {"attributes": (("hostname", "support.vendor.example"),)},  # an endpoint name, no server
        {"evidence": (Evidence("s", "http.user_agent", "support.vendor.example", "high"),)},
        {"evidence": (Evidence("s", "payload.client", "support.vendor.example", "high"),)},
    ],
)
def test_names_that_are_not_server_names_do_not_count(where: dict[str, Any]) -> None:
    judged = host_policy("support.vendor.example").judge(make_session(**where))
    assert judged.verdict == "unsanctioned"
    assert judged.verdict_reason == SC_MISS


@pytest.mark.parametrize(
    ("networks", "dest_ip", "sanctioned"),
    [
        (["2001:db8::/32"], "2001:db8::7", True),
        (["2001:db8::/32"], "2001:db9::7", False),
        (["0.0.0.0/0"], "2001:db8::7", False),
        (["::/0"], "198.51.100.7", False),
        (["198.51.100.7/32"], "198.51.100.7", True),
        (["198.51.100.7/32"], "not-an-address", False),
    ],
)
def test_addresses_by_family(networks: list[str], dest_ip: str, sanctioned: bool) -> None:
    judged = policy(entry("screenconnect", addresses=networks)).judge(make_session(dest_ip=dest_ip))
    assert (judged.verdict == "sanctioned") is sanctioned


def test_reason_counts_only_entries_of_the_tool() -> None:
    p = policy(
        """\
        sanctioned:
          - {name: a, tool: screenconnect, ports: [1]}
          - {name: b, tool: screenconnect, ports: [2]}
          - {name: c, tool: anydesk}
        """
    )
    judged = p.judge(make_session())
    assert judged.verdict_reason == "none of the 2 sanctioned screenconnect entries matches"


def test_first_matching_entry_names_the_verdict() -> None:
    p = policy(
        """\
        sanctioned:
          - {name: by port, tool: screenconnect, ports: [8041]}
          - {name: by host, tool: screenconnect, hosts: [support.vendor.example]}
        """
    )
    judged = p.judge(make_session(server_name="support.vendor.example"))
    assert judged.verdict_reason == "sanctioned by entry 'by port'"


def test_an_entry_with_only_name_and_tool_sanctions_the_whole_tool() -> None:
    p = policy(entry("anydesk"))
    assert p.judge(make_session(tool="anydesk", src_ip="203.0.113.9")).verdict == "sanctioned"
    assert p.judge(make_session()).verdict == "unsanctioned"


@pytest.mark.parametrize(
    ("channel", "confidence", "src_ip", "severity"),
    [
        ("relay", "high", "10.20.0.21", "high"),
        ("relay", "medium", "10.20.0.21", "medium"),
        ("relay", "low", "10.20.0.21", "low"),
        ("direct", "high", "10.20.0.31", "high"),
        ("web", "high", "10.20.0.21", "medium"),
        ("web", "medium", "10.20.0.21", "low"),
        ("download", "high", "10.20.0.21", "medium"),
        ("dns", "high", "10.20.0.21", "medium"),
        ("dns", "medium", "10.20.0.21", "low"),
        ("discovery", "high", "10.20.0.31", "low"),
        ("discovery", "medium", "10.20.0.31", "low"),
        ("something-new", "high", "10.20.0.21", "medium"),
        ("direct", "high", "198.51.100.99", "critical"),  # driven from outside
        ("direct", "low", "198.51.100.99", "critical"),
        ("direct", "high", "2001:db8::99", "critical"),
        ("direct", "high", "fd00::99", "high"),  # unique local: inside
        ("relay", "high", "198.51.100.99", "high"),  # only direct sessions become critical
    ],
)
def test_severity_table(channel: str, confidence: str, src_ip: str, severity: str) -> None:
    s = make_session(channel=channel, confidence=confidence, src_ip=src_ip)
    judged = Policy().judge(s)
    assert (judged.verdict, judged.severity) == ("unsanctioned", severity)


@pytest.mark.parametrize(
    ("confidence", "severity"), [("low", "high"), ("medium", "high"), ("high", "high")]
)
def test_forbidden_tool_is_at_least_high(confidence: str, severity: str) -> None:
    p = policy("policy:\n  forbidden_tools: [screenconnect]\n")
    judged = p.judge(make_session(channel="discovery", confidence=confidence))
    assert judged.severity == severity


def test_judging_keeps_everything_but_the_verdict() -> None:
    s = make_session(server_name="support.vendor.example", tags=("x",))
    judged = Policy().judge(s)
    assert dataclasses.replace(judged, verdict="", verdict_reason="", severity="") == s


@pytest.mark.parametrize(
    ("minimum", "confidence", "alertable"),
    [
        ("medium", "low", False),  # the default: port-only sessions never alert alone
        ("medium", "medium", True),
        ("medium", "high", True),
        ("high", "medium", False),
        ("high", "high", True),
        ("low", "low", True),
    ],
)
def test_alertable_by_confidence(minimum: str, confidence: str, alertable: bool) -> None:
    p = policy(f"policy:\n  alert_min_confidence: {minimum}\n")
    judged = p.judge(make_session(confidence=confidence))
    assert judged.verdict == "unsanctioned"
    assert p.alertable(judged) is alertable


def test_sanctioned_sessions_are_never_alertable() -> None:
    p = policy("policy:\n  alert_min_confidence: low\n  allowed_tools: [screenconnect]\n")
    assert not p.alertable(p.judge(make_session()))


@pytest.mark.parametrize(
    ("address", "internal"),
    [
        ("10.20.0.31", True),
        ("192.168.1.1", True),
        ("172.31.255.255", True),
        ("172.32.0.1", False),
        ("100.64.0.1", True),
        ("fe80::1", True),
        ("198.51.100.99", False),
        ("", False),
        ("garbage", False),
    ],
)
def test_default_internal_networks(address: str, internal: bool) -> None:
    assert Policy().is_internal(address) is internal
