"""`rmm-sensor signatures export --format suricata`: rules that parse, stable sids, one field each.

The syntax is checked with suricataparser (a rule parser from PyPI) and, since it is lenient,
with a stricter reading of the options here. Payload patterns are also checked for meaning: a
small evaluator of content/offset/depth/distance/within/isdataat must agree with the sensor's
own pattern matching on any bytes.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from suricataparser import parse_rule

from sensor.cli import main
from sensor.signatures.index import SignatureIndex
from sensor.signatures.loader import load_index
from sensor.signatures.schema import load_tool_file, pattern_tokens
from sensor.signatures.suricata import (
    SID_BASE,
    SID_SPAN,
    SuricataExport,
    export_suricata,
)

SIGNATURES = Path(__file__).resolve().parents[2] / "signatures"
KEYWORDS = frozenset(
    ("msg", "flow", "content", "offset", "depth", "distance", "within", "isdataat", "nocase",
     "startswith", "endswith", "dotprefix", "pcre", "dsize", "stream_size", "metadata",
     "reference", "classtype", "sid", "rev", "dns.query", "tls.sni", "tls.cert_subject",
     "tls.cert_issuer", "http.host", "http.uri", "http.user_agent", "http.server")
)  # fmt: skip
HEADER = re.compile(
    r"^alert (dns|tls|http|tcp|udp) (any|\$HOME_NET|\$EXTERNAL_NET) (\S+) -> "
    r"(any|\$HOME_NET|\$EXTERNAL_NET) (\S+) \($"
)
PORTS = re.compile(r"^(any|\d{1,5}(:\d{1,5})?|\[\d{1,5}(:\d{1,5})?(,\d{1,5}(:\d{1,5})?)*\])$")


def shipped() -> SuricataExport:
    return export_suricata(load_index(SIGNATURES).files)


def options(text: str) -> list[tuple[str, str | None]]:
    """Split the option list the way Suricata does: ';' ends an option unless escaped,
    and a quoted value must close before it. Fails on anything else."""
    body = text[text.index("(") + 1 :]
    assert body.endswith(")"), text
    body = body[:-1].strip()
    out: list[tuple[str, str | None]] = []
    i = 0
    while i < len(body):
        while body[i] == " ":
            i += 1
        end = i
        quoted = False
        while True:
            assert end < len(body), f"option not ended by ';': {body[i:]!r}"
            ch = body[end]
            if ch == "\\":
                end += 2
                continue
            if ch == '"':
                quoted = not quoted
            elif ch == ";" and not quoted:
                break
            end += 1
        option = body[i:end]
        name, sep, value = option.partition(":")
        out.append((name.strip(), value.strip() if sep else None))
        i = end + 1
    return out


def check_rule(text: str) -> dict[str, list[str | None]]:
    rule = parse_rule(text)
    assert rule is not None, text
    assert rule.action == "alert"
    head = text[: text.index("(") + 1]
    m = HEADER.match(head)
    assert m is not None, head
    assert PORTS.match(m.group(3)) and PORTS.match(m.group(5)), head
    seen: dict[str, list[str | None]] = {}
    for name, value in options(text):
        assert name in KEYWORDS, (name, text)
        seen.setdefault(name, []).append(value)
        if name in ("msg", "content", "pcre"):
            assert value is not None and value.startswith('"') and value.endswith('"'), text
        if name == "content":
            assert value is not None
            hex_parts = value[1:-1].split("|")[1::2]
            assert len(value[1:-1].split("|")) % 2 == 1, f"unbalanced | in {value}"
            for part in hex_parts:
                assert re.fullmatch(r"[0-9A-F]{2}( [0-9A-F]{2})*", part), value
    assert [o.name for o in rule.options][-2:] == ["sid", "rev"]
    assert len(seen["sid"]) == 1 and len(seen["msg"]) == 1 and len(seen["classtype"]) == 1
    return seen


# --------------------------------------------------------------------------------------------
# The shipped signatures


def test_every_rule_parses_and_has_the_required_options() -> None:
    export = shipped()
    assert len(export.rules) > 90
    for rule in export.rules:
        seen = check_rule(rule.text)
        assert seen["sid"] == [str(rule.sid)]
        meta = seen["metadata"][0]
        assert meta is not None and f"rmm_signature {rule.signature}" in meta
        assert seen["reference"], rule.text  # every tool file names a web reference


def test_the_whole_file_parses_rule_by_rule() -> None:
    text = shipped().text()
    lines = text.splitlines()
    rules = [line for line in lines if not line.startswith("#")]
    assert all(line.startswith("alert ") for line in rules)
    assert len([r for r in rules if parse_rule(r) is not None]) == len(shipped().rules)
    assert text.endswith("\n")


def test_sids_are_unique_in_the_local_range() -> None:
    sids = [r.sid for r in shipped().rules]
    assert len(sids) == len(set(sids))
    assert all(SID_BASE <= s < SID_BASE + SID_SPAN for s in sids)


def test_sids_are_stable() -> None:
    """A sid depends on the signature id only: pinned values, and the same in any file order."""
    export = shipped()
    by_key = {(r.signature, "inbound" in r.text): r.sid for r in export.rules}
    assert by_key[("anydesk-dns-relay", False)] == 9457147
    assert by_key[("teamviewer-tcp-5938", False)] == 9336465
    assert by_key[("rdp-x224-cr", True)] == 9268649  # the inbound half of a boundary pair
    reordered = export_suricata(reversed(load_index(SIGNATURES).files))
    assert {(r.signature, r.text) for r in reordered.rules} == {
        (r.signature, r.text) for r in export.rules
    }


def test_every_signature_is_exported_or_skipped_once() -> None:
    export = shipped()
    index = load_index(SIGNATURES)
    rules_per_id: dict[str, int] = {}
    for r in export.rules:
        rules_per_id[r.signature] = rules_per_id.get(r.signature, 0) + 1
    skipped = [s.signature for s in export.skipped]
    assert len(skipped) == len(set(skipped))
    assert set(rules_per_id).isdisjoint(skipped)
    assert set(rules_per_id) | set(skipped) == {s.id for s in index.signatures}
    for s in index.signatures:
        crossing = any(c.field == "boundary" for c in s.conditions)
        if s.id in rules_per_id:
            assert rules_per_id[s.id] == (2 if crossing else 1), s.id
    text = export.text()
    for sig_id in skipped:
        assert text.count(f"# skipped {sig_id}: ") == 1


def test_skipped_signatures_and_why() -> None:
    reasons = {s.signature: s.reason for s in shipped().skipped}
    assert reasons == {
        "anydesk-tls-alpn": "Suricata 7 has no buffer for the ALPN protocols a client offers",
        "anydesk-tls-client-cert": "Suricata has no buffer for the client certificate",
        "anydesk-discovery": "needs the anydesk-discovery decoder",
        "screenconnect-relay-87-12": "needs the screenconnect-relay-m3 decoder",
        "screenconnect-relay-legacy": "needs the screenconnect-relay-legacy decoder",
        "teamviewer-tcp-magic": "its conditions are on both directions of the flow",
        "teamviewer-udp-p2p": "its conditions are on both directions of the flow",
    }


# --------------------------------------------------------------------------------------------
# Field by field


def export_one(match: str, extra: str = "") -> SuricataExport:
    body = "".join(f"      {line.strip()}\n" for line in match.strip().splitlines())
    text = (
        "tool: demo\nname: Demo\nreferences: [https://example.org/demo]\nsignatures:\n"
        f"  - id: demo-sig\n    channel: relay\n    confidence: high\n{extra}    match:\n{body}"
    )
    return export_suricata([load_tool_file("demo.yaml", text)])


def rule_of(match: str) -> str:
    export = export_one(match)
    assert export.skipped == ()
    (rule,) = export.rules
    check_rule(rule.text)
    return rule.text


@pytest.mark.parametrize(
    ("match", "head", "body"),
    [
        ("dns.query: {suffix: Net.AnyDesk.com}", "alert dns any any -> any any (",
         'dns.query; dotprefix; content:".net.anydesk.com"; endswith; nocase;'),
        ("dns.query: {equals: control.connectwise.com}", "alert dns any any -> any any (",
         'dns.query; content:"control.connectwise.com"; startswith; endswith; nocase;'),
        ("dns.query: {suffix: [a.example, b.example]}", "alert dns",
         r'dns.query; pcre:"/(?:^|\.)(?:a\.example|b\.example)$/i";'),
        ("dns.query: {equals: [a.example, b.example]}", "alert dns",
         r'pcre:"/^(?:a\.example|b\.example)$/i";'),
        (r"tls.sni: {regex: '^instance-[a-z0-9]+-relay\.screenconnect\.com$'}",
         "alert tls any any -> any any (",
         r'flow:established,to_server; tls.sni; '
         r'pcre:"/^instance-[a-z0-9]+-relay\.screenconnect\.com$/i";'),
        ("tls.server_cert.subject: {contains: 'CN=AnyNet Relay'}\ndest_port: {in: [443, 6568]}",
         "alert tls any [443,6568] -> any any (",
         'flow:established,to_client; tls.cert_subject; content:"CN=AnyNet Relay";'),
        ("tls.server_cert.issuer: {equals: 'CN=x'}", "alert tls",
         'tls.cert_issuer; content:"CN=x"; startswith; endswith;'),
        ("tls.server_cert.issuer: {regex: 'O=(A|B);'}", "alert tls",
         r'tls.cert_issuer; pcre:"/O=(A|B)\;/";'),
        ("http.user_agent: {prefix: 'AnyDesk'}", "alert http",
         'flow:established,to_server; http.user_agent; content:"AnyDesk"; startswith;'),
        ("http.user_agent: {equals: 'A (b; c)'}", "alert http",
         'http.user_agent; content:"A (b|3B| c)"; startswith; endswith;'),
        ("http.server: {prefix: 'ScreenConnect/'}", "alert http",
         'flow:established,to_client; http.server; content:"ScreenConnect/"; startswith;'),
        ("http.host: {suffix: anydesk.com}\nhttp.path: {prefix: /Bin/}", "alert http",
         'http.host; dotprefix; content:".anydesk.com"; endswith; http.uri; content:"/Bin/"; '
         "startswith;"),
        ("http.path: {equals: /location/loca.asp}", "alert http",
         r'http.uri; pcre:"/^(?:\/location\/loca\.asp)(?:\?|$)/";'),
        (r"http.path: {regex: '(?i)x[^/]*\.exe$'}", "alert http",
         r'http.uri; pcre:"/^[^?]*?(?:x[^\/]*\.exe(?:\?|$))/i";'),
        ("http.path: {regex: '^/m$'}\nhttp.query: {has: [id, k]}", "alert http",
         r'http.uri; pcre:"/^\/m(?:\?|$)/"; pcre:"/[?&]id(?:[=&]|$)/"; pcre:"/[?&]k(?:[=&]|$)/";'),
        ("payload.client: {pattern: '87 ?? 10 00 00*12'}\nfirst_speaker: {equals: client}\n"
         "first_size.client: {range: {max: 599}}", "alert tcp any any -> any any (",
         'flow:established,to_server; content:"|87|"; offset:0; depth:1; '
         'content:"|10 00 00 00 00 00 00 00 00 00 00 00 00 00|"; distance:1; within:15; '
         "stream_size:server,<,5; dsize:<600;"),
        ("payload.client: {pattern: '?? 73 10 ??*2', offset: 2, depth: 8}\nproto: {equals: udp}\n"
         "dest_port: {in: ['50001-50003', 7070]}", "alert udp any any -> any [50001:50003,7070] (",
         'flow:to_server; content:"s|10|"; offset:3; depth:10; isdataat:2,relative;'),
        ("payload.server: {pattern: '52 46 42 20'}\n"
         "first_size.server: {range: {min: 12, max: 12}}\nfirst_speaker: {equals: server}",
         "alert tcp any any -> any any (",
         'flow:established,to_client; content:"RFB "; offset:0; depth:4; dsize:12; '
         "stream_size:client,<,5;"),
        ("payload.client: {pattern: '4e 58'}\nfirst_size.client: {range: {min: 11, max: 14}}",
         "alert tcp", "dsize:10<>15;"),
        ("payload.client: {pattern: '4e 58'}\nfirst_size.client: {range: {min: 600}}",
         "alert tcp", "dsize:>599;"),
        ("dest_port: {in: [3389]}\nproto: {equals: tcp}", "alert tcp any any -> any 3389 (",
         "flow:established,to_server; metadata:"),
    ],
)  # fmt: skip
def test_field_translation(match: str, head: str, body: str) -> None:
    rule = rule_of(match)
    assert rule.startswith(head), rule
    assert body in rule, rule
    assert 'msg:"RMM Demo relay demo-sig"' in rule
    assert "reference:url,example.org/demo;" in rule


def test_boundary_becomes_an_inbound_and_an_outbound_rule() -> None:
    export = export_one("payload.client: {pattern: '03 00'}\nboundary: {equals: crossing}")
    inbound, outbound = (r.text for r in export.rules)
    assert inbound.startswith("alert tcp $EXTERNAL_NET any -> $HOME_NET any (")
    assert outbound.startswith("alert tcp $HOME_NET any -> $EXTERNAL_NET any (")
    assert "rmm_boundary inbound" in inbound and "(inbound)" in inbound
    assert "rmm_boundary outbound" in outbound
    server_side = export_one("payload.server: {pattern: '52 46'}\nboundary: {equals: crossing}")
    inbound, outbound = (r.text for r in server_side.rules)
    # a to_client rule names the server first: inbound means the server is inside
    assert inbound.startswith("alert tcp $HOME_NET any -> $EXTERNAL_NET any (")
    assert export.rules[0].sid != export.rules[1].sid


@pytest.mark.parametrize(
    ("match", "extra", "reason"),
    [
        ("tls.alpn: {prefix: anydesk/}", "", "ALPN"),
        ("tls.ja4: {equals: t13d1516h2_8daaf6152771_02713d6af862}", "", "JA4"),
        ("tls.client_cert.subject: {contains: CN=x}", "", "client certificate"),
        ("tls.sni: {absent: true}\ntls.server_cert.subject: {contains: CN=x}", "",
         "both directions"),
        ("tls.sni: {absent: true}\ndest_port: {in: [443]}", "", "without SNI"),
        ("payload.client: {pattern: '3e d1'}\ndecoder: {equals: anydesk-discovery}", "",
         "needs the anydesk-discovery decoder"),
        ("payload.client: {pattern: '01'}\npayload.server: {pattern: '02'}", "",
         "both directions"),
        ("payload.client: {pattern: '01'}\nproto: {equals: udp}\nfirst_speaker: {equals: client}",
         "", "TCP streams"),
        ("payload.server: {pattern: '01'}\nfirst_speaker: {equals: client}", "",
         "other direction"),
        ("payload.client: {pattern: '?? ??'}", "", "wildcards only"),
        ("dns.query: {suffix: x.example}\nhttp.host: {suffix: x.example}", "",
         "more than one protocol"),
        ("http.path: {regex: [a, b]}", "", "several path regexes"),
    ],
)  # fmt: skip
def test_what_suricata_cannot_express_is_skipped_with_a_reason(
    match: str, extra: str, reason: str
) -> None:
    export = export_one(match, extra)
    assert export.rules == ()
    (skipped,) = export.skipped
    assert skipped.signature == "demo-sig"
    assert reason in skipped.reason
    assert f"# skipped demo-sig: {skipped.reason}\n" in export.text()


# --------------------------------------------------------------------------------------------
# Payload patterns mean the same thing in both engines


def suricata_matches(rule: str, data: bytes) -> bool:
    """Evaluate the content chain of a payload rule (offset, depth, distance, within,
    isdataat relative) with Suricata's backtracking over the first content."""
    chain: list[dict[str, object]] = []
    for name, value in options(rule):
        if name == "content":
            assert value is not None
            raw = value[1:-1]
            parts = raw.split("|")
            literal = b"".join(
                bytes.fromhex(p) if i % 2 else p.encode() for i, p in enumerate(parts)
            )
            chain.append({"bytes": literal})
        elif name in ("offset", "depth", "distance", "within"):
            chain[-1][name] = int(value or 0)
        elif name == "isdataat":
            chain.append({"isdataat": int((value or "0").split(",")[0])})

    def match_from(i: int, prev_end: int) -> bool:
        if i == len(chain):
            return True
        step = chain[i]
        if "isdataat" in step:
            return prev_end + int(str(step["isdataat"])) <= len(data) and match_from(
                i + 1, prev_end
            )
        pat = step["bytes"]
        assert isinstance(pat, bytes)
        if i == 0:
            lo = int(str(step.get("offset", 0)))
            hi = lo + int(str(step["depth"])) - len(pat)
        else:
            lo = prev_end + int(str(step.get("distance", 0)))
            hi = prev_end + int(str(step["within"])) - len(pat)
        for start in range(lo, hi + 1):
            if data[start : start + len(pat)] == pat and match_from(i + 1, start + len(pat)):
                return True
        return False

    return match_from(0, 0)


TOKENS = st.sampled_from(["87", "10", "00", "??", "00*3", "??*2", "2e", "5c", "ff"])


@settings(max_examples=300, deadline=None)
@given(
    tokens=st.lists(TOKENS, min_size=1, max_size=6),
    offset=st.integers(0, 3),
    depth=st.integers(0, 3),
    data=st.lists(st.sampled_from([0x87, 0x10, 0x00, 0x2E, 0x5C, 0xFF]), max_size=16).map(bytes),
)
def test_pattern_rules_agree_with_the_sensor(
    tokens: list[str], offset: int, depth: int, data: bytes
) -> None:
    pattern = " ".join(tokens)
    match = f"payload.client: {{pattern: '{pattern}', offset: {offset}, depth: {depth}}}"
    export = export_one(match)
    index = SignatureIndex([load_tool_file("demo.yaml", _demo(match))], {})
    cond = index.signatures[0].conditions[0]
    ours = index.check(cond, (data,)) is not None
    if not export.rules:  # wildcards only: nothing to anchor a content on
        assert all(t.startswith("??") for t in tokens)
        return
    assert suricata_matches(export.rules[0].text, data) == ours


def _demo(match: str) -> str:
    return (
        "tool: demo\nsignatures:\n  - id: demo-sig\n    channel: relay\n    confidence: high\n"
        f"    match:\n      {match}\n"
    )


@pytest.mark.parametrize(
    ("pattern", "tokens"),
    [
        ("87 ?? 10", [0x87, None, 0x10]),
        ("2e 2a 5c", [0x2E, 0x2A, 0x5C]),
        ("00*3 ??*2 ff", [0, 0, 0, None, None, 0xFF]),
    ],
)
def test_pattern_tokens_read_a_compiled_pattern_back(
    pattern: str, tokens: list[int | None]
) -> None:
    (s,) = load_tool_file(
        "demo.yaml", _demo(f"payload.client: {{pattern: '{pattern}'}}")
    ).signatures
    assert pattern_tokens(s.conditions[0].values[0]) == tokens


# --------------------------------------------------------------------------------------------
# The command


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def test_export_command_writes_the_rules() -> None:
    code, out, err = cli("signatures", "--signatures", str(SIGNATURES), "export", "--format",
                         "suricata")  # fmt: skip
    assert (code, err) == (0, "")
    assert out == shipped().text()


def test_export_command_to_a_file(tmp_path: Path) -> None:
    target = tmp_path / "rmm.rules"
    code, out, err = cli("signatures", "--signatures", str(SIGNATURES), "export", "--format",
                         "suricata", "-o", str(target))  # fmt: skip
    assert (code, out, err) == (0, "", "")
    assert target.read_text(encoding="utf-8") == shipped().text()


def test_export_command_errors(tmp_path: Path) -> None:
    code, out, err = cli("signatures", "--signatures", str(tmp_path / "nope"), "export",
                         "--format", "suricata")  # fmt: skip
    assert (code, out) == (2, "")
    assert "signature directory not found" in err
    code, out, err = cli("signatures", "--signatures", str(SIGNATURES), "export", "--format",
                         "suricata", "-o", str(tmp_path / "missing" / "x.rules"))  # fmt: skip
    assert (code, out) == (2, "")
    assert "rmm-sensor: error:" in err and "x.rules" in err
    with pytest.raises(SystemExit):
        cli("signatures", "export", "--format", "snort")
