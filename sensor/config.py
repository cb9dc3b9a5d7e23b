"""Settings from one YAML file: capture, flows, outputs, metrics and the sanctioned-instance policy.

Validated once into frozen dataclasses; every error names the file, the line and the key path
(``sanctioned[0].addresses[1]``). Unknown keys are errors, so a typo cannot silently disable a
policy entry. See ``deploy/rmm-sensor.yaml`` for every key with its default.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sensor.addresses import Network, syslog_target
from sensor.flows.table import FlowSettings
from sensor.yamlsource import Located, SourceError, load_yaml

T = TypeVar("T")

DEFAULT_INTERNAL = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10",
                    "169.254.0.0/16", "fc00::/7", "fe80::/10")  # fmt: skip
SEVERITIES = ("low", "medium", "high", "critical")
CONFIDENCES = ("low", "medium", "high")
_HOST_RE = re.compile(r"^(\*\.)?([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?\.)*[a-z0-9_-]{1,63}\.?$")
_HEX_RE = re.compile(r"^[0-9a-f]+$")


@dataclass(frozen=True, slots=True)
class SanctionedEntry:
    name: str
    tool: str
    hosts: tuple[str, ...] = ()  # exact names, or "*.example.com" for any subdomain
    addresses: tuple[Network, ...] = ()  # server addresses
    ports: tuple[int, ...] = ()  # server ports
    clients: tuple[Network, ...] = ()  # internal hosts allowed to use the tool
    instance_keys: tuple[str, ...] = ()  # ScreenConnect k= key SHA-256 (full or a prefix)
    anydesk_ids: tuple[str, ...] = ()
    client_certs: tuple[str, ...] = ()  # AnyDesk client certificate SHA-1, hex
    expires: dt.date | None = None
    owner: str = ""
    ticket: str = ""
    line: int = 0


@dataclass(frozen=True, slots=True)
class PolicySettings:
    sanctioned: tuple[SanctionedEntry, ...] = ()
    allowed_tools: tuple[str, ...] = ()  # sanctioned everywhere, no entry needed
    forbidden_tools: tuple[str, ...] = ()  # unsanctioned even when an entry matches
    internal_networks: tuple[Network, ...] = field(
        default_factory=lambda: tuple(ipaddress.ip_network(n) for n in DEFAULT_INTERNAL)
    )
    alert_min_confidence: str = "medium"  # weaker sessions get a verdict but no alert
    condense_window_s: int = 3600
    max_alerts_per_minute: int = 60
    # Oldest server version not reported as outdated; 23.9.8 fixed CVE-2024-1709/-1708.
    minimum_versions: dict[str, str] = field(default_factory=lambda: {"screenconnect": "23.9.8"})
    chain_window_s: int = 3600  # a second tool on the same host within this raises rmm_chain


@dataclass(frozen=True, slots=True)
class CaptureSettings:
    interface: str = ""
    snaplen: int = 262_144
    bpf: str = ""
    promiscuous: bool = True
    workers: int = 1


@dataclass(frozen=True, slots=True)
class OutputSettings:
    alerts_file: str = ""
    stdout: bool = False
    syslog: bool = False
    syslog_address: str = "/dev/log"
    spool_max: int = 10_000
    sessions_file: str = ""  # final session records as JSON lines


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    address: str = "127.0.0.1:9808"
    tls_cert: str = ""
    tls_key: str = ""
    basic_auth_user: str = ""
    basic_auth_password_sha256: str = ""


@dataclass(frozen=True, slots=True)
class Settings:
    capture: CaptureSettings = field(default_factory=CaptureSettings)
    flows: FlowSettings = field(default_factory=FlowSettings)
    signatures: str = ""  # directory; empty: the bundled signatures
    output: OutputSettings = field(default_factory=OutputSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    policy: PolicySettings = field(default_factory=PolicySettings)
    path: str = ""


TOP_KEYS = ("capture", "flows", "signatures", "output", "metrics", "policy", "sanctioned")
POLICY_KEYS = ("allowed_tools", "forbidden_tools", "internal_networks", "alert_min_confidence",
               "condense_window_s", "max_alerts_per_minute", "minimum_versions",
               "chain_window_s")  # fmt: skip


class _Ctx:
    """Where we are in the file, for error messages."""

    def __init__(self, path: str) -> None:
        self.path = path

    def fail(self, loc: Located, key: str, message: str) -> SourceError:
        return SourceError(self.path, loc.line, f"{key}: {message}")


def load_settings(path: str, text: str | None = None) -> Settings:
    """Read and validate a configuration file; raises SourceError."""
    doc = load_yaml(path, text)
    ctx = _Ctx(path)
    top = _mapping(ctx, doc, "(top level)")
    _only(ctx, top, "(top level)", TOP_KEYS)
    policy = _policy(ctx, top.get("policy"))
    entries = _sanctioned(ctx, top.get("sanctioned"))
    output = _section(ctx, top.get("output"), "output", OutputSettings)
    try:
        syslog_target(output.syslog_address)
    except ValueError as exc:  # only a configured address can be wrong, so the key exists
        where = top["output"].value["syslog_address"]
        raise ctx.fail(where, "output.syslog_address", str(exc)) from None
    return Settings(
        capture=_section(ctx, top.get("capture"), "capture", CaptureSettings),
        flows=_section(ctx, top.get("flows"), "flows", FlowSettings),
        signatures=_scalar(ctx, top["signatures"], "signatures", str)
        if "signatures" in top
        else "",
        output=output,
        metrics=_section(ctx, top.get("metrics"), "metrics", MetricsSettings),
        policy=_replace_sanctioned(policy, entries),
        path=path,
    )


def _replace_sanctioned(
    policy: PolicySettings, entries: tuple[SanctionedEntry, ...]
) -> PolicySettings:
    return dataclasses.replace(policy, sanctioned=entries)


def _section(ctx: _Ctx, loc: Located | None, name: str, cls: Callable[..., T]) -> T:
    """A flat section whose keys are the dataclass's fields, typed like their defaults."""
    defaults = cls()
    if loc is None:
        return defaults
    m = _mapping(ctx, loc, name)
    known = tuple(f for f in defaults.__dataclass_fields__)  # type: ignore[attr-defined]
    _only(ctx, m, name, known)
    values: dict[str, Any] = {}
    for key, item in m.items():
        want = type(getattr(defaults, key))
        value = _scalar(ctx, item, f"{name}.{key}", want)
        if isinstance(value, int) and not isinstance(value, bool) and value < 0:
            raise ctx.fail(item, f"{name}.{key}", "must not be negative")
        values[key] = value
    return cls(**{**{k: getattr(defaults, k) for k in known}, **values})


def _policy(ctx: _Ctx, loc: Located | None) -> PolicySettings:
    defaults = PolicySettings()
    if loc is None:
        return defaults
    m = _mapping(ctx, loc, "policy")
    _only(ctx, m, "policy", POLICY_KEYS)
    allowed = _strings(ctx, m.get("allowed_tools"), "policy.allowed_tools")
    forbidden = _strings(ctx, m.get("forbidden_tools"), "policy.forbidden_tools")
    both = set(allowed) & set(forbidden)
    if both:
        overlap = ", ".join(sorted(both))
        raise ctx.fail(m["forbidden_tools"], "policy.forbidden_tools", f"{overlap} also allowed")
    internal = defaults.internal_networks
    if "internal_networks" in m:
        internal = _networks(ctx, m["internal_networks"], "policy.internal_networks")
    confidence = defaults.alert_min_confidence
    if "alert_min_confidence" in m:
        confidence = _choice(
            ctx, m["alert_min_confidence"], "policy.alert_min_confidence", CONFIDENCES
        )
    window = defaults.condense_window_s
    if "condense_window_s" in m:
        window = _non_negative(ctx, m["condense_window_s"], "policy.condense_window_s")
    rate = defaults.max_alerts_per_minute
    if "max_alerts_per_minute" in m:
        rate = _non_negative(ctx, m["max_alerts_per_minute"], "policy.max_alerts_per_minute")
    chain = defaults.chain_window_s
    if "chain_window_s" in m:
        chain = _non_negative(ctx, m["chain_window_s"], "policy.chain_window_s")
    versions = defaults.minimum_versions
    if "minimum_versions" in m:
        versions = _versions(ctx, m["minimum_versions"], "policy.minimum_versions")
    return PolicySettings(
        allowed_tools=allowed,
        forbidden_tools=forbidden,
        internal_networks=internal,
        alert_min_confidence=confidence,
        condense_window_s=window,
        max_alerts_per_minute=rate,
        minimum_versions=versions,
        chain_window_s=chain,
    )


ENTRY_KEYS = ("name", "tool", "hosts", "addresses", "ports", "clients", "instance_keys",
              "anydesk_ids", "client_certs", "expires", "owner", "ticket")  # fmt: skip


def _sanctioned(ctx: _Ctx, loc: Located | None) -> tuple[SanctionedEntry, ...]:
    if loc is None or loc.value is None:
        return ()
    if not isinstance(loc.value, list):
        raise ctx.fail(loc, "sanctioned", "a list of entries is required")
    entries = []
    names: set[str] = set()
    for i, item in enumerate(loc.value):
        key = f"sanctioned[{i}]"
        m = _mapping(ctx, item, key)
        _only(ctx, m, key, ENTRY_KEYS)
        for required in ("name", "tool"):
            if required not in m:
                raise ctx.fail(item, key, f"{required} is required")
        name = _scalar(ctx, m["name"], f"{key}.name", str)
        if name in names:
            raise ctx.fail(m["name"], f"{key}.name", f"duplicate entry name {name!r}")
        names.add(name)
        tool = _scalar(ctx, m["tool"], f"{key}.tool", str).lower()
        expires = None
        if "expires" in m:
            raw = m["expires"].value
            if isinstance(raw, dt.datetime):
                raw = raw.date()
            if not isinstance(raw, dt.date):
                raise ctx.fail(m["expires"], f"{key}.expires", "a date YYYY-MM-DD is required")
            expires = raw
        entries.append(
            SanctionedEntry(
                name=name,
                tool=tool,
                hosts=_each(ctx, m.get("hosts"), f"{key}.hosts", _host),
                addresses=_networks(ctx, m.get("addresses"), f"{key}.addresses"),
                ports=_each(ctx, m.get("ports"), f"{key}.ports", _port),
                clients=_networks(ctx, m.get("clients"), f"{key}.clients"),
                instance_keys=_hexes(ctx, m.get("instance_keys"), f"{key}.instance_keys"),
                anydesk_ids=_each(ctx, m.get("anydesk_ids"), f"{key}.anydesk_ids", _anydesk_id),
                client_certs=_hexes(ctx, m.get("client_certs"), f"{key}.client_certs"),
                expires=expires,
                owner=str(_scalar(ctx, m["owner"], f"{key}.owner", str)) if "owner" in m else "",
                ticket=_ticket(ctx, m.get("ticket"), f"{key}.ticket"),
                line=item.line,
            )
        )
    return tuple(entries)


def _versions(ctx: _Ctx, loc: Located, key: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for tool, item in _mapping(ctx, loc, key).items():
        text = str(_scalar(ctx, item, f"{key}.{tool}", (str, int, float)))
        if not re.fullmatch(r"\d+(\.\d+)*", text):
            raise ctx.fail(item, f"{key}.{tool}", f"{text!r} is not a dotted version like 23.9.8")
        out[tool.lower()] = text
    return out


def _each(
    ctx: _Ctx, loc: Located | None, key: str, parse: Callable[[_Ctx, Located, str], T]
) -> tuple[T, ...]:
    return tuple(parse(ctx, item, f"{key}[{i}]") for i, item in enumerate(_items(ctx, loc, key)))


def _anydesk_id(ctx: _Ctx, loc: Located, key: str) -> str:
    return str(_scalar(ctx, loc, key, int))


def _ticket(ctx: _Ctx, loc: Located | None, key: str) -> str:
    return "" if loc is None else str(_scalar(ctx, loc, key, (str, int)))


def _mapping(ctx: _Ctx, loc: Located, key: str) -> dict[str, Located]:
    if not isinstance(loc.value, dict):
        raise ctx.fail(loc, key, "a mapping is required")
    return loc.value


def _only(ctx: _Ctx, m: dict[str, Located], where: str, keys: tuple[str, ...]) -> None:
    for key, loc in m.items():
        if key not in keys:
            path = key if where == "(top level)" else f"{where}.{key}"
            raise ctx.fail(loc, path, f"unknown key (known: {', '.join(keys)})")


def _scalar(ctx: _Ctx, loc: Located, key: str, want: type | tuple[type, ...]) -> Any:
    value = loc.value
    if isinstance(value, bool) and want is not bool:
        raise ctx.fail(loc, key, f"expected {_type_name(want)}, got a boolean")
    if not isinstance(value, want):
        raise ctx.fail(loc, key, f"expected {_type_name(want)}, got {type(value).__name__}")
    return value


def _type_name(want: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", bool: "true or false", float: "a number"}
    if isinstance(want, tuple):
        return " or ".join(names.get(w, w.__name__) for w in want)
    return names.get(want, want.__name__)


def _items(ctx: _Ctx, loc: Located | None, key: str) -> list[Located]:
    if loc is None:
        return []
    if not isinstance(loc.value, list):
        raise ctx.fail(loc, key, "a list is required")
    return loc.value


def _strings(ctx: _Ctx, loc: Located | None, key: str) -> tuple[str, ...]:
    return tuple(
        _scalar(ctx, x, f"{key}[{i}]", str).lower() for i, x in enumerate(_items(ctx, loc, key))
    )


def _networks(ctx: _Ctx, loc: Located | None, key: str) -> tuple[Network, ...]:
    out = []
    for i, item in enumerate(_items(ctx, loc, key)):
        text = _scalar(ctx, item, f"{key}[{i}]", str)
        try:
            out.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ctx.fail(item, f"{key}[{i}]", f"{text!r} is not an IP address or CIDR") from None
    return tuple(out)


def _host(ctx: _Ctx, loc: Located, key: str) -> str:
    text = str(_scalar(ctx, loc, key, str)).lower().rstrip(".")
    if ("*" in text and not text.startswith("*.")) or text.count("*") > 1:
        raise ctx.fail(loc, key, f"{text!r}: a wildcard may only be a leading '*.' label")
    if not _HOST_RE.match(text) or len(text) > 253:
        raise ctx.fail(loc, key, f"{text!r} is not a host name")
    return text


def _port(ctx: _Ctx, loc: Located, key: str) -> int:
    value = _scalar(ctx, loc, key, int)
    if not 0 < value <= 65535:
        raise ctx.fail(loc, key, f"{value} is not a port (1-65535)")
    return int(value)


def _hexes(ctx: _Ctx, loc: Located | None, key: str) -> tuple[str, ...]:
    out = []
    for i, item in enumerate(_items(ctx, loc, key)):
        # An all-digit hex string reads as a YAML integer; take it back as text.
        text = str(_scalar(ctx, item, f"{key}[{i}]", (str, int))).lower().replace(":", "")
        if len(text) < 8 or not _HEX_RE.match(text):
            raise ctx.fail(item, f"{key}[{i}]", "hex digits expected (at least 8)")
        out.append(text)
    return tuple(out)


def _choice(ctx: _Ctx, loc: Located, key: str, allowed: tuple[str, ...]) -> str:
    value = str(_scalar(ctx, loc, key, str))
    if value not in allowed:
        raise ctx.fail(loc, key, f"must be one of {', '.join(allowed)}")
    return value


def _non_negative(ctx: _Ctx, loc: Located, key: str) -> int:
    value = _scalar(ctx, loc, key, int)
    if value < 0:
        raise ctx.fail(loc, key, "must not be negative")
    return int(value)
