"""Every dashboard panel query and every alerting expression, run against a real Prometheus.

The test builds its own network namespace with a veth pair: tcpreplay sends a capture into
``veth-a``, a real ``rmm-sensor live`` captures on ``veth-b`` and a real Prometheus (1 s scrape
and evaluation, tmp storage, loading ``deploy/prometheus/rmm-sensor.rules.yml``) scrapes it over
the namespace's loopback. Nothing leaves the namespace. Needs root (namespaces, AF_PACKET) and
Debian's ``prometheus`` and ``tcpreplay``: without them the test fails, it does not skip.

The replay is ``pcaps/demo-mixed.pcap`` and ``pcaps/sc-web-onprem-8040.pcap`` plus what makes the
remaining series exist, so that an empty answer can only mean a wrong query: first more short UDP
flows than the flow table holds (evictions) and a few truncated IPv4 packets (decode errors),
last ``pcaps/ad-relay-tls.pcap`` moved onto the ScreenConnect guest's address (that host then
uses two tools: a chain) and one CVE-2024-1709 request to the on-prem server.

How each query is run:

- Dashboard targets (``deploy/grafana/dashboards/rmm-sensor.json``, every ``targets[].expr``):
  Grafana's variables are replaced first: ``$instance`` by the variable's "All" value,
  ``$__range`` by 5m, ``$__interval`` by the scrape interval and ``$__rate_interval`` by what
  Grafana computes for it, max(interval + scrape interval, 4 x scrape interval). Each must answer
  ``success`` with a non-empty result.
- Alerting expressions (the rules file, the Grafana alert rule): each must answer ``success`` as
  written. A comparison legitimately returns nothing while nothing fires, so for "returns data"
  the expression is run once more with every comparison turned into a ``bool`` comparison
  (``x > 0`` becomes ``x > bool 0``): that keeps every series the un-thresholded query returns
  (with 0 or 1 as the value), so a misspelt metric or label, which matches nothing, still gives
  an empty answer and fails. Set operators (``and``, ``or``, ``unless``) stay as they are.
- And end to end: the detection alerts this replay must raise are firing in Prometheus, the
  health alerts are not, and every rule evaluates without error.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import dpkt
import pytest
import yaml

from bench.netns import Namespace
from sensor.capture.files import read_frames
from tests.capbuild import plain

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
RULES = DEPLOY / "prometheus" / "rmm-sensor.rules.yml"
PROMETHEUS_EXAMPLE = DEPLOY / "prometheus" / "prometheus.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "rmm-sensor.json"
GRAFANA_ALERTING = DEPLOY / "grafana" / "provisioning" / "alerting" / "rmm-sensor.yml"
PCAPS = REPO / "pcaps"
COMMANDS = ("ip", "tcpreplay", "tcprewrite", "prometheus")

SCRAPE_S = 1
GRAFANA_VARIABLES = {
    "$__rate_interval": f"{max(SCRAPE_S + SCRAPE_S, 4 * SCRAPE_S)}s",
    "$__interval": f"{SCRAPE_S}s",
    "$__range": "5m",
}
PPS = 1000
WAIT_S = 45.0
LINKTYPE_ETHERNET = 1
UDP = dpkt.ip.IP_PROTO_UDP

# The detection alerts the replay raises, and the health alerts a healthy sensor must not raise.
MUST_FIRE = ("UnexpectedRmmSession", "RmmExploitAttempt", "OutdatedRmmServer", "RmmToolChain")
MUST_NOT_FIRE = (
    "SensorDown",
    "SensorNoTraffic",
    "SensorDroppingPackets",
    "ConfigReloadFailed",
    "SensorAlertOutputFailing",
)

SC_GUEST = "10.20.0.21"  # the on-prem ScreenConnect guest of the project captures
AD_ENDPOINT = "10.20.0.31"  # the AnyDesk endpoint of pcaps/ad-relay-tls.pcap
SC_SERVER = "198.51.100.7"  # support.vendor.example, web on 8040
ATTACKER = "198.51.100.99"
MAX_FLOWS = 64
JUNK_FLOWS = 3 * MAX_FLOWS

# Sanctioning the on-prem ScreenConnect gives both verdicts; short idle timeouts end flows (and
# so make sessions) within seconds; a small flow table makes the junk flows evict.
SENSOR_CONFIG = f"""\
flows:
  max_flows: {MAX_FLOWS}
  tcp_idle_s: 5
  udp_idle_s: 5
sanctioned:
  - name: Vendor support
    tool: screenconnect
    hosts: [support.vendor.example]
"""

SENSOR_MAIN = "import sys; from sensor.cli import main; sys.exit(main())"

# Runs inside the namespace for the whole test: one URL per input line, one JSON line out,
# [status, body]; status 0 = no answer.
HTTP_CLIENT = """\
import json, sys, urllib.error, urllib.request
for url in sys.stdin:
    try:
        with urllib.request.urlopen(url.strip(), timeout=5) as reply:
            status, body = reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    except OSError as exc:
        status, body = 0, str(exc).encode()
    sys.stdout.write(json.dumps([status, body.decode("utf-8", "replace")]) + "\\n")
    sys.stdout.flush()
"""

FREE_PORT = """\
import socket
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    print(s.getsockname()[1])
"""


# --- what is queried ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Query:
    name: str  # test id
    expr: str  # as written
    threshold: bool  # an alerting expression: data is checked on unthreshold(expr)


def dashboard_queries() -> list[Query]:
    dashboard = json.loads(DASHBOARD.read_text())
    all_values = {
        f"${v['name']}": v["allValue"]
        for v in dashboard["templating"]["list"]
        if v.get("includeAll")
    }
    queries = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in {**GRAFANA_VARIABLES, **all_values}.items():
                expr = expr.replace(variable, value)
            name = f"panel-{panel['id']}-{target['refId']}-{panel['title']}"
            queries.append(Query(name, expr, threshold=False))
    return queries


def rule_queries() -> list[Query]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [
        Query(f"rule-{rule.get('alert') or rule['record']}", rule["expr"], "alert" in rule)
        for group in groups
        for rule in group["rules"]
    ]


def grafana_alert_queries() -> list[Query]:
    provisioning = yaml.safe_load(GRAFANA_ALERTING.read_text())
    return [
        Query(f"grafana-{rule['uid']}-{data['refId']}", data["model"]["expr"], threshold=False)
        for group in provisioning["groups"]
        for rule in group["rules"]
        for data in rule["data"]
        if data["datasourceUid"] != "__expr__"
    ]


def variable_queries() -> list[tuple[str, str]]:
    """Grafana's ``label_values(metric, label)`` variables, as (label, metric)."""
    dashboard = json.loads(DASHBOARD.read_text())
    found = []
    for v in dashboard["templating"]["list"]:
        if v["type"] == "query":
            m = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", v["query"]["query"])
            assert m is not None, f"variable {v['name']}: not label_values(metric, label)"
            found.append((m.group(2), m.group(1)))
    return found


COMPARISON = re.compile(r"==|!=|>=|<=|>|<")


def unthreshold(expr: str) -> str:
    """``expr`` with every comparison made a ``bool`` comparison (see the module docstring).

    Label matchers (``{a!="b"}``) and string literals are left alone.
    """
    out: list[str] = []
    i, depth, quote = 0, 0, ""
    while i < len(expr):
        c = expr[i]
        if quote:
            out.append(c)
            if c == "\\" and quote != "`" and i + 1 < len(expr):
                out.append(expr[i + 1])
                i += 1
            elif c == quote:
                quote = ""
            i += 1
            continue
        if c in "\"'`":
            quote = c
        elif c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
        elif depth == 0:
            op = COMPARISON.match(expr, i)
            if op is not None:
                rest = expr[op.end() :]
                out.append(op.group())
                if not re.match(r"\s*bool\b", rest):
                    out.append(" bool")
                i = op.end()
                continue
        out.append(c)
        i += 1
    return "".join(out)


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("x > 0", "x > bool 0"),
        ("x>0", "x> bool0"),
        ("x > bool 0", "x > bool 0"),
        ('up{job="a"} == 0 or absent(up{job="a"})', 'up{job="a"} == bool 0 or absent(up{job="a"})'),
        ('m{a!="b",c=~"d"} != 1', 'm{a!="b",c=~"d"} != bool 1'),
        ("a >= on () group_left () b", "a >= bool on () group_left () b"),
        ("a <= 1 and on (i) b < 2", "a <= bool 1 and on (i) b < bool 2"),
        ('label_replace(x, "y", ">", "z", "<")', 'label_replace(x, "y", ">", "z", "<")'),
        ('m{a="x\\"}>"} > 1', 'm{a="x\\"}>"} > bool 1'),
        ("sum(rate(m[5m]))", "sum(rate(m[5m]))"),
    ],
)
def test_unthreshold(expr: str, expected: str) -> None:
    assert unthreshold(expr) == expected


def test_every_alerting_rule_has_a_comparison_to_remove() -> None:
    """Otherwise "returns data" would be checked on an expression that can stay empty."""
    for q in rule_queries():
        if q.threshold:
            assert unthreshold(q.expr) != q.expr, q.name


# --- the replayed capture -----------------------------------------------------------------------


def _mac(last: int) -> bytes:
    return bytes([0x02, 0, 0x0A, 0x14, 0, last])


def _frame(src: str, dst: str, transport: dpkt.Packet, proto: int) -> bytes:
    ip = dpkt.ip.IP(
        src=bytes(map(int, src.split("."))),
        dst=bytes(map(int, dst.split("."))),
        p=proto,
        ttl=64,
        data=transport,
    )
    ip.len = 20 + len(bytes(transport))
    return bytes(dpkt.ethernet.Ethernet(src=_mac(1), dst=_mac(2), type=0x0800, data=ip))


def _tcp(sport: int, dport: int, seq: int, ack: int, flags: int, payload: bytes = b"") -> Any:
    return dpkt.tcp.TCP(
        sport=sport, dport=dport, seq=seq, ack=ack, flags=flags, win=64240, data=payload
    )


def exploit_flow() -> list[bytes]:
    """A complete TCP connection carrying one CVE-2024-1709 request (setup wizard + a segment)."""
    syn, ack, psh, fin = dpkt.tcp.TH_SYN, dpkt.tcp.TH_ACK, dpkt.tcp.TH_PUSH, dpkt.tcp.TH_FIN
    request = (
        b"GET /SetupWizard.aspx/literally-anything HTTP/1.1\r\n"
        b"Host: support.vendor.example:8040\r\nUser-Agent: python-requests/2.31.0\r\n\r\n"
    )
    response = b"HTTP/1.1 200 OK\r\nServer: ScreenConnect/23.9.7.8804\r\nContent-Length: 0\r\n\r\n"
    c, s, cp, sp = ATTACKER, SC_SERVER, 40123, 8040
    cs, ss = 1000, 5000
    segments = [
        (c, s, _tcp(cp, sp, cs, 0, syn)),
        (s, c, _tcp(sp, cp, ss, cs + 1, syn | ack)),
        (c, s, _tcp(cp, sp, cs + 1, ss + 1, ack)),
        (c, s, _tcp(cp, sp, cs + 1, ss + 1, psh | ack, request)),
        (s, c, _tcp(sp, cp, ss + 1, cs + 1 + len(request), psh | ack, response)),
        (c, s, _tcp(cp, sp, cs + 1 + len(request), ss + 1 + len(response), fin | ack)),
        (s, c, _tcp(sp, cp, ss + 1 + len(response), cs + 2 + len(request), fin | ack)),
        (c, s, _tcp(cp, sp, cs + 2 + len(request), ss + 2 + len(response), ack)),
    ]
    return [_frame(src, dst, seg, dpkt.ip.IP_PROTO_TCP) for src, dst, seg in segments]


def truncated_ipv4() -> list[bytes]:
    """Ethernet frames announcing IPv4 that carry less than an IPv4 header."""
    return [_mac(2) + _mac(1) + b"\x08\x00" + b"\x45\x00\x00\x54\x00\x00" for _ in range(3)]


def junk_flows() -> list[bytes]:
    """One-packet UDP flows, more than the flow table holds."""
    return [
        _frame("10.20.0.41", "10.20.5.10", dpkt.udp.UDP(sport=20000 + i, dport=9, data=b"x"), UDP)
        for i in range(JUNK_FLOWS)
    ]


def write_pcap(frames: list[bytes], out: Path) -> None:
    with out.open("wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262_144, LINKTYPE_ETHERNET))
        for i, data in enumerate(frames):
            f.write(struct.pack("<IIII", 1_700_000_000, i, len(data), len(data)) + data)


def build_replay(tmp: Path) -> Path:
    chain = tmp / "ad-relay-tls-on-sc-guest.pcap"
    done = subprocess.run(
        [
            "tcprewrite",
            f"--pnat={AD_ENDPOINT}/32:{SC_GUEST}/32",
            "--fixcsum",
            f"--infile={PCAPS / 'ad-relay-tls.pcap'}",
            f"--outfile={chain}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    # The junk first: it evicts only itself, and the flows that follow end as they would.
    frames = junk_flows() + truncated_ipv4()
    for capture in (PCAPS / "demo-mixed.pcap", PCAPS / "sc-web-onprem-8040.pcap", chain):
        frames += [data for _ts, _lt, data, _len in plain(read_frames(str(capture)))]
    frames += exploit_flow()
    out = tmp / "replay.pcap"
    write_pcap(frames, out)
    return out


# --- the namespace, the sensor, Prometheus -------------------------------------------------------


class Netns(Namespace):
    """The bench's namespace, with a long-lived HTTP client inside it."""

    def __init__(self, prefix: str) -> None:
        super().__init__(prefix)
        self.client: subprocess.Popen[str] | None = None

    @contextlib.contextmanager
    def created(self) -> Iterator[Self]:
        with super().created():
            try:
                yield self
            finally:
                if self.client is not None:
                    assert self.client.stdin is not None and self.client.stdout is not None
                    self.client.stdin.close()
                    self.client.wait(timeout=10)
                    self.client.stdout.close()

    def get(self, url: str) -> tuple[int, str]:
        if self.client is None:
            self.client = subprocess.Popen(
                self.cmd(sys.executable, "-I", "-c", HTTP_CLIENT),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
        assert self.client.stdin is not None and self.client.stdout is not None
        self.client.stdin.write(url + "\n")
        self.client.stdin.flush()
        status, body = json.loads(self.client.stdout.readline())
        return int(status), str(body)

    def free_port(self) -> int:
        return int(self.run(sys.executable, "-I", "-c", FREE_PORT))


def _require_environment() -> None:
    if os.geteuid() != 0:
        pytest.fail(
            "tests/deploy/test_queries_live.py needs root (network namespaces, veth, AF_PACKET); "
            "run the suite as root, as CI does",
            pytrace=False,
        )
    missing = [c for c in COMMANDS if shutil.which(c) is None]
    if missing:
        pytest.fail(f"needs {', '.join(missing)}: run `make system-deps`", pytrace=False)


def wait_for(condition: Any, what: str, detail: Any = lambda: "") -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"waited {WAIT_S:.0f} s for {what}\n{detail()}", pytrace=False)
        time.sleep(0.25)


def prometheus_config(sensor_port: int) -> dict[str, Any]:
    """deploy/prometheus/prometheus.yml, made fast and pointed at the test's sensor."""
    config = yaml.safe_load(PROMETHEUS_EXAMPLE.read_text())
    interval = f"{SCRAPE_S}s"
    config["global"].update(
        scrape_interval=interval, scrape_timeout=interval, evaluation_interval=interval
    )
    config.pop("alerting", None)
    config["rule_files"] = [str(RULES)]
    jobs = [job for job in config["scrape_configs"] if job["job_name"] == "rmm-sensor"]
    assert len(jobs) == 1, "the example must have one rmm-sensor job"
    job = jobs[0]
    job.update(scrape_interval=interval, scrape_timeout=interval)
    job["static_configs"] = [
        {**static, "targets": [f"127.0.0.1:{sensor_port}"]} for static in job["static_configs"][:1]
    ]
    config["scrape_configs"] = [job]
    return config


@dataclass
class Stack:
    ns: Netns
    prometheus_port: int
    sensor_log: Path
    prometheus_log: Path

    def api(self, path: str, **params: str) -> tuple[int, dict[str, Any]]:
        url = f"http://127.0.0.1:{self.prometheus_port}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        status, body = self.ns.get(url)
        try:
            return status, json.loads(body)
        except json.JSONDecodeError:
            return status, {"status": "unparsable", "body": body}

    def query(self, expr: str) -> tuple[str, list[dict[str, Any]], str]:
        """Instant query: (status, result, error)."""
        status, reply = self.api("query", query=expr)
        result = reply.get("data", {}).get("result", []) if status == 200 else []
        return str(reply.get("status")), result, str(reply.get("error", ""))

    def alerts(self, states: str = "firing") -> set[str]:
        """Names of the alerts in these states (a regex: "firing", "pending|firing")."""
        _, result, _ = self.query(f'ALERTS{{alertstate=~"{states}"}}')
        return {series["metric"]["alertname"] for series in result}

    def logs(self) -> str:
        return (
            "sensor log:\n"
            + self.sensor_log.read_text(errors="replace")[-2000:]
            + "\nprometheus log:\n"
            + self.prometheus_log.read_text(errors="replace")[-2000:]
        )


ALL_QUERIES = dashboard_queries() + rule_queries() + grafana_alert_queries()


def _has_data(stack: Stack, q: Query) -> bool:
    status, result, _ = stack.query(unthreshold(q.expr) if q.threshold else q.expr)
    return status == "success" and bool(result)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    _require_environment()
    tmp = tmp_path_factory.mktemp("deploy-live")
    replay = build_replay(tmp)
    with Netns("rmm-deploy").created() as ns:
        config = tmp / "rmm-sensor.yaml"
        config.write_text(SENSOR_CONFIG)
        sensor_port = ns.free_port()
        sensor_log = tmp / "sensor.log"
        sensor = ns.start(
            [
                sys.executable,
                "-c",
                SENSOR_MAIN,
                "live",
                "--interface",
                "veth-b",
                "--workers",
                "1",
                "--config",
                str(config),
                "--alerts",
                str(tmp / "alerts.jsonl"),
                "--metrics-address",
                f"127.0.0.1:{sensor_port}",
            ],
            sensor_log,
        )
        healthz = f"http://127.0.0.1:{sensor_port}/healthz"
        wait_for(
            lambda: sensor.poll() is None and ns.get(healthz)[0] == 200,
            "the sensor to start",
            lambda: sensor_log.read_text(errors="replace"),
        )

        prometheus_port = ns.free_port()
        prometheus_yml = tmp / "prometheus.yml"
        prometheus_yml.write_text(yaml.safe_dump(prometheus_config(sensor_port)))
        prometheus_log = tmp / "prometheus.log"
        prometheus = ns.start(
            [
                "prometheus",
                f"--config.file={prometheus_yml}",
                f"--storage.tsdb.path={tmp / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prometheus_port}",
                "--log.level=warn",
            ],
            prometheus_log,
        )
        stack = Stack(ns, prometheus_port, sensor_log, prometheus_log)
        ready = f"http://127.0.0.1:{prometheus_port}/-/ready"
        wait_for(
            lambda: prometheus.poll() is None and ns.get(ready)[0] == 200,
            "Prometheus to start",
            stack.logs,
        )
        # A first scrape before any traffic: counters are seen at 0, as on a running sensor,
        # so increase() counts the alerts the replay raises.
        wait_for(
            lambda: bool(stack.query("rmm_sensor_alerts_total")[1]),
            "Prometheus to scrape the sensor",
            stack.logs,
        )

        summary = ns.run("tcpreplay", "-i", "veth-a", "--pps", str(PPS), str(replay), timeout=120)
        assert re.search(r"Failed packets:\s+0\b", summary), summary

        def settled() -> bool:
            return set(MUST_FIRE) <= stack.alerts() and all(
                _has_data(stack, q) for q in ALL_QUERIES
            )

        deadline = time.monotonic() + WAIT_S
        while not settled() and time.monotonic() < deadline:
            time.sleep(1)
        yield stack


# --- the tests -----------------------------------------------------------------------------------


@pytest.mark.parametrize("q", ALL_QUERIES, ids=[q.name for q in ALL_QUERIES])
def test_query_is_valid_and_returns_data(stack: Stack, q: Query) -> None:
    status, _, error = stack.query(q.expr)
    assert status == "success", f"{q.expr}\n{error}"
    checked = unthreshold(q.expr) if q.threshold else q.expr
    status, result, error = stack.query(checked)
    assert status == "success", f"{checked}\n{error}"
    assert result, f"no data for {checked}\n{stack.logs()}"


def test_dashboard_and_rules_were_collected() -> None:
    """The parametrisation above is not vacuous."""
    names = {q.name for q in ALL_QUERIES}
    assert sum(n.startswith("panel-") for n in names) >= 25
    assert sum(n.startswith("rule-") for n in names) == 10
    assert sum(n.startswith("grafana-") for n in names) == 1


@pytest.mark.parametrize(("label", "metric"), variable_queries())
def test_template_variable_has_values(stack: Stack, label: str, metric: str) -> None:
    status, reply = stack.api(f"label/{label}/values", **{"match[]": metric})
    assert status == 200 and reply["status"] == "success", reply
    assert reply["data"], f"label_values({metric}, {label}) is empty"


@pytest.mark.parametrize("alertname", MUST_FIRE)
def test_detection_alert_fires(stack: Stack, alertname: str) -> None:
    assert alertname in stack.alerts(), stack.logs()


@pytest.mark.parametrize("alertname", MUST_NOT_FIRE)
def test_health_alert_stays_quiet(stack: Stack, alertname: str) -> None:
    """Not even pending: the test is shorter than their `for`, so firing alone would prove little.

    (SensorNoTraffic was pending before the replay: no packet yet. It must have cleared.)
    """
    assert alertname not in stack.alerts("pending|firing")


def test_unexpected_session_alert_names_the_sensor_and_tools(stack: Stack) -> None:
    status, reply = stack.api("alerts")
    assert status == 200, reply
    (alert,) = [
        a for a in reply["data"]["alerts"] if a["labels"]["alertname"] == "UnexpectedRmmSession"
    ]
    assert alert["labels"]["severity"] == "critical"
    assert alert["labels"]["site"] == "hq"  # the example config's target label is kept
    description = alert["annotations"]["description"]
    assert alert["labels"]["instance"] in description
    assert "anydesk/relay" in description  # the template's own query found the tool


def test_grafana_alert_condition_is_met(stack: Stack) -> None:
    """Reduce (last) and threshold (> 0) of the Grafana rule, as Grafana would evaluate them."""
    (q,) = grafana_alert_queries()
    _, result, _ = stack.query(q.expr)
    assert any(float(series["value"][1]) > 0 for series in result), result


def test_every_rule_evaluates_without_error(stack: Stack) -> None:
    status, reply = stack.api("rules")
    assert status == 200, reply
    rules = [r for g in reply["data"]["groups"] for r in g["rules"]]
    assert len(rules) == 10
    broken = {r["name"]: r.get("lastError") for r in rules if r["health"] != "ok"}
    assert broken == {}
