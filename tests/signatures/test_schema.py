"""Signature files: validation errors name file, line and signature; the CLI lints and lists."""

from __future__ import annotations

import contextlib
import io
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from sensor.cli import main
from sensor.signatures.loader import ENV_VAR, load_index
from sensor.signatures.schema import CHANNELS, Condition, load_tool_file
from sensor.yamlsource import SourceError

ROOT = Path(__file__).resolve().parents[2]
SIGNATURES = ROOT / "signatures"

HEAD = "tool: demo\nname: Demo tool\nreferences: [https://example.org/demo]\nsignatures:\n"


def sig(match: str, *, sig_id: str = "demo-sig", extra: str = "", channel: str = "relay") -> str:
    """One signature; ``match`` is the indented body under ``match:`` (or "" for none)."""
    text = f"  - id: {sig_id}\n    channel: {channel}\n    confidence: high\n{extra}"
    if match:
        text += "    match:\n" + match
    return text


def line_of(text: str, needle: str) -> int:
    """1-based number of the first line containing ``needle``."""
    for number, line in enumerate(text.splitlines(), 1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} not in the text")


def error(path: str, text: str) -> SourceError:
    with pytest.raises(SourceError) as info:
        load_tool_file(path, text)
    return info.value


GOOD = "      tls.sni: {suffix: example.com}\n"

# name, signature text, the text on the line the error must name, words the message must hold
INVALID: list[tuple[Any, ...]] = [
    ("unknown-key", sig(GOOD, extra="    severity: high\n"), "severity:", "unknown key 'severity'"),
    ("unknown-field", sig("      tls.cipher: {equals: x}\n"), "tls.cipher",
     "unknown field 'tls.cipher'"),
    ("two-operators", sig("      tls.sni: {suffix: a.example, equals: b.example}\n"), "tls.sni",
     "exactly one of: suffix, equals, regex, absent"),
    ("wrong-operator", sig("      tls.alpn: {suffix: anydesk}\n"), "tls.alpn",
     "exactly one of: prefix, equals"),
    ("no-operator", sig("      tls.sni: {offset: 2}\n"), "tls.sni", "exactly one of"),
    ("pattern-on-name", sig("      dns.query: {pattern: '87 15'}\n"), "dns.query",
     "exactly one of"),
    ("bad-regex", sig("      tls.sni: {regex: '^instance-(['}\n"), "regex", "bad regex"),
    ("bad-regex-in-list", sig("      http.path:\n        regex:\n          - '^/ok$'\n"
                              "          - '(?P<x'\n"), "(?P<x", "bad regex"),
    ("hex-token-not-hex", sig("      payload.client: {pattern: '87 zz 10'}\n"), "pattern",
     "bad pattern token 'zz'"),
    ("hex-token-one-digit", sig("      payload.client: {pattern: '87 1 10'}\n"), "pattern",
     "bad pattern token '1'"),
    ("hex-token-repeat-zero", sig("      payload.client: {pattern: '00*0'}\n"), "pattern",
     "bad pattern token '00*0'"),
    ("hex-token-repeat-huge", sig("      payload.client: {pattern: '00*1000'}\n"), "pattern",
     "bad pattern token '00*1000'"),
    ("hex-single-wildcard", sig("      payload.client: {pattern: '87 ? 10'}\n"), "pattern",
     "bad pattern token '?'"),
    ("hex-empty", sig("      payload.client: {pattern: '  '}\n"), "pattern", "empty pattern"),
    ("hex-not-a-string", sig("      payload.client: {pattern: 8715}\n"), "pattern",
     "a hex string"),
    ("offset-without-pattern", sig("      tls.sni: {suffix: a.example, offset: 2}\n"), "tls.sni",
     "offset/depth only go with pattern"),
    ("negative-offset", sig("      payload.client: {pattern: '87', offset: -1}\n"), "pattern",
     "non-negative integer"),
    ("port-out-of-range", sig("      dest_port: {in: [70000]}\n" + GOOD), "70000",
     "out of 0-65535"),
    ("port-range-out", sig("      dest_port: {in: ['65000-65536']}\n" + GOOD), "65536",
     "out of 0-65535"),
    ("port-range-reversed", sig("      dest_port: {in: ['9000-8000']}\n" + GOOD), "9000-8000",
     "9000-8000"),
    ("port-not-a-number", sig("      dest_port: {in: [http]}\n" + GOOD), "[http]",
     "numbers or 'low-high' ranges"),
    ("port-boolean", sig("      dest_port: {in: [true]}\n" + GOOD), "true",
     "numbers or 'low-high' ranges"),
    ("port-list-empty", sig("      dest_port: {in: []}\n" + GOOD), "dest_port", "empty"),
    ("range-unknown-key", sig("      first_size.client: {range: {min: 1, most: 5}}\n" + GOOD),
     "first_size", "unknown key 'most'"),
    ("absent-false", sig("      tls.sni: {absent: false}\n      tls.alpn: {prefix: x}\n"),
     "tls.sni", "must be true"),
    ("empty-value", sig("      tls.sni: {suffix: ''}\n"), "tls.sni", "non-empty strings"),
    ("number-value", sig("      tls.alpn: {equals: 7}\n"), "tls.alpn", "non-empty strings"),
    ("missing-match", sig(""), "- id: demo-sig", "match is required"),
    ("empty-match", sig("      {}\n").replace("match:\n      {}", "match: {}"), "match:",
     "match is required"),
    ("attribute-without-dns", sig(GOOD, extra="    attribute: relay\n"), "attribute:",
     "attribute needs a dns.query match"),
    ("attribute-bad-channel", sig("      dns.query: {suffix: a.example}\n",
                                  extra="    attribute: tunnel\n"), "attribute:",
     "attribute must be one of"),
    ("bad-channel", sig(GOOD, channel="tunnel"), "channel:", "channel must be one of"),
    ("bad-confidence", sig(GOOD).replace("confidence: high", "confidence: certain"),
     "confidence:", "confidence must be one of"),
    ("missing-channel", sig(GOOD).replace("    channel: relay\n", ""), "- id: demo-sig",
     "channel is required"),
    ("description-not-text", sig(GOOD, extra="    description: [a, b]\n"), "description:",
     "description must be a non-empty string"),
    ("bad-id", sig(GOOD, sig_id="Demo_Sig"), "Demo_Sig", "id must match"),
    ("field-not-mapping", sig("      tls.sni: example.com\n"), "tls.sni", "a mapping is required"),
]  # fmt: skip


def _case(case_id: str, text: str, needle: str, words: str, *marks: Any) -> Any:
    return pytest.param(text, needle, words, id=case_id, marks=marks)


@pytest.mark.parametrize(("text", "needle", "words"), [_case(*c) for c in INVALID])
def test_error_names_file_line_and_signature(text: str, needle: str, words: str) -> None:
    full = HEAD + text
    err = error("/etc/rmm/demo.yaml", full)
    sig_id = "Demo_Sig" if "Demo_Sig" in text else "demo-sig"
    line = line_of(full, needle)
    assert (err.path, err.line) == ("/etc/rmm/demo.yaml", line)
    assert str(err).startswith(f"/etc/rmm/demo.yaml:{line}: signature '{sig_id}'"), str(err)
    assert words in err.message


def test_error_names_the_signature_among_several() -> None:
    text = HEAD + sig(GOOD, sig_id="demo-one") + sig(GOOD, sig_id="demo-two")
    text += sig("      http.server: {contains: x}\n", sig_id="demo-three")
    err = error("demo.yaml", text)
    assert err.line == line_of(text, "http.server")
    assert "signature 'demo-three'" in str(err)


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (HEAD + sig("      tls.sni: {suffix: [a.example\n"), 10),  # unclosed: at the end
        (HEAD + "  - id: demo-sig\n   channel: relay\n", 6),  # bad indentation
        ("tool: demo\nsignatures: [\n", 3),
        ("tool: demo\n\tname: x\n", 2),  # a tab
    ],
)
def test_bad_yaml_names_file_and_line(text: str, line: int) -> None:
    err = error("/etc/rmm/demo.yaml", text)
    assert (err.path, err.line) == ("/etc/rmm/demo.yaml", line)
    assert str(err).startswith(f"/etc/rmm/demo.yaml:{line}: invalid YAML")


def test_duplicate_key_names_file_and_line() -> None:
    text = HEAD + sig(GOOD + "      tls.sni: {suffix: b.example}\n")
    err = error("demo.yaml", text)
    assert err.line == line_of(text, "b.example")
    assert "duplicate key" in err.message
    assert "tls.sni" in err.message


@pytest.mark.parametrize(
    ("text", "needle", "words"),
    [
        ("name: Demo\nsignatures: []\n", "name:", "tool is required"),
        ("tool: Demo Tool\nsignatures: []\n", "tool:", "must match"),
        ("tool: demo\nsignatures: []\n", "signatures:", "non-empty list"),
        ("tool: demo\n", "tool:", "non-empty list"),
        ("tool: demo\nowner: me\nsignatures: []\n", "owner:", "unknown key 'owner'"),
        ("- tool: demo\n", "- tool", "a mapping is required"),
        ("tool: demo\nsignatures:\n  - just a string\n", "just a string", "a mapping"),
    ],
)
def test_file_level_errors_name_file_and_line(text: str, needle: str, words: str) -> None:
    err = error("demo.yaml", text)
    assert err.line == line_of(text, needle)
    assert str(err).startswith(f"demo.yaml:{err.line}: ")
    assert words in err.message


# --------------------------------------------------------------------------------------------
# Errors found when the files are compiled together (load_index on a directory)


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def index_error(directory: Path) -> SourceError:
    with pytest.raises(SourceError) as info:
        load_index(directory)
    return info.value


def test_duplicate_id_across_two_files(tmp_path: Path) -> None:
    first = write(tmp_path, "a.yaml", HEAD + sig(GOOD, sig_id="demo-shared"))
    text = HEAD.replace("demo", "other") + sig(GOOD, sig_id="other-1")
    text += sig(GOOD, sig_id="demo-shared")
    second = write(tmp_path, "b.yaml", text)
    err = index_error(tmp_path)
    assert (err.path, err.line) == (str(second), line_of(text, "- id: demo-shared"))
    assert "signature 'demo-shared'" in err.message
    assert f"{first}:{line_of(first.read_text(), '- id: demo-shared')}" in err.message


def test_same_tool_in_two_files(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", HEAD + sig(GOOD, sig_id="demo-a"))
    second = write(tmp_path, "b.yaml", HEAD + sig(GOOD, sig_id="demo-b"))
    err = index_error(tmp_path)
    assert err.path == str(second)
    assert "tool 'demo' is also defined in" in err.message


def test_unknown_decoder(tmp_path: Path) -> None:
    text = HEAD + sig("      payload.client: {pattern: '3e d1'}\n      decoder: {equals: nope}\n")
    path = write(tmp_path, "demo.yaml", text)
    err = index_error(tmp_path)
    assert (err.path, err.line) == (str(path), line_of(text, "- id: demo-sig"))
    assert "signature 'demo-sig': unknown decoder 'nope'" in err.message
    assert "anydesk-discovery" in err.message  # the known ones are listed


@pytest.mark.parametrize(
    "match",
    [
        "      proto: {equals: udp}\n",
        "      first_speaker: {equals: client}\n      first_size.client: {range: {max: 99}}\n",
        "      tls.sni: {absent: true}\n",
        "      http.query: {has: [h, p, k]}\n",
        "      decoder: {equals: anydesk-discovery}\n      proto: {equals: udp}\n",
    ],
)
def test_signature_with_only_non_indexable_conditions(tmp_path: Path, match: str) -> None:
    text = HEAD + sig(GOOD, sig_id="demo-fine") + sig(match, sig_id="demo-scan")
    path = write(tmp_path, "demo.yaml", text)
    err = index_error(tmp_path)
    assert (err.path, err.line) == (str(path), line_of(text, "- id: demo-scan"))
    assert "signature 'demo-scan': needs at least one indexable condition" in err.message


@pytest.mark.parametrize(
    ("files", "words"),
    [({}, "no signature files"), ({"notes.txt": "x"}, "no signature files")],
)
def test_directory_without_signature_files(
    tmp_path: Path, files: dict[str, str], words: str
) -> None:
    for name, text in files.items():
        write(tmp_path, name, text)
    err = index_error(tmp_path)
    assert err.path == str(tmp_path)
    assert words in err.message


def test_missing_directory(tmp_path: Path) -> None:
    err = index_error(tmp_path / "absent")
    assert "signature directory not found" in err.message


# --------------------------------------------------------------------------------------------
# The typed form


def test_conditions_are_normalised() -> None:
    text = HEAD + sig(
        "      dns.query: {suffix: .Net.AnyDesk.COM.}\n"
        "      tls.sni: {equals: [Relay.Example, other.example]}\n"
        "      http.user_agent: {prefix: AnyDesk}\n"
        "      proto: {equals: UDP}\n"
        "      dest_port: {in: [7070, '50001-50003']}\n"
        "      first_size.client: {range: {max: 599}}\n"
        "      first_size.server: {range: {min: 600}}\n"
        "      payload.client: {pattern: '87 ?? 10 00*3 2e', offset: 2, depth: 8}\n"
    )
    tf = load_tool_file("demo.yaml", text)
    (s,) = tf.signatures
    assert (tf.tool, tf.name, tf.references) == ("demo", "Demo tool", ("https://example.org/demo",))
    assert (s.id, s.tool, s.channel, s.confidence, s.path) == (
        "demo-sig", "demo", "relay", "high", "demo.yaml",
    )  # fmt: skip
    assert s.line == line_of(text, "- id: demo-sig")
    assert s.conditions == (
        Condition("dns.query", "suffix", ("net.anydesk.com",)),
        Condition("tls.sni", "equals", ("relay.example", "other.example")),
        Condition("http.user_agent", "prefix", ("AnyDesk",)),  # not a name: case kept
        Condition("proto", "equals", ("udp",)),
        Condition("dest_port", "in", ((7070, 7070), (50001, 50003))),
        Condition("first_size.client", "range", (0, 599)),
        Condition("first_size.server", "range", (600, 1 << 31)),
        Condition("payload.client", "pattern", (b"\x87.\x10\x00\x00\x00\\.",), 2, 8),
    )


@pytest.mark.parametrize(
    ("pattern", "regex"),
    [
        ("87 ?? 10 00 00*12", b"\x87.\x10\x00" + b"\x00" * 12),
        ("3E d1 01", b">\xd1\x01"),
        ("?? ?? 2a", b"..\\*"),
        ("ff*3 ??*2", b"\xff\xff\xff.."),
        ("5c 0a", b"\\\\\\\n"),
    ],
)
def test_pattern_compiles_to_a_byte_regex(pattern: str, regex: bytes) -> None:
    text = HEAD + sig(f"      payload.server: {{pattern: '{pattern}'}}\n")
    (s,) = load_tool_file("demo.yaml", text).signatures
    assert s.conditions[0].values == (regex,)


def test_shipped_signature_files_load() -> None:
    index = load_index(SIGNATURES)
    assert index.tools == tuple(sorted(p.stem for p in SIGNATURES.glob("*.yaml")))
    assert {"anydesk", "screenconnect", "teamviewer", "rdp", "vnc"} <= set(index.tools)
    ids = [s.id for s in index.signatures]
    assert len(ids) == len(set(ids))
    for s in index.signatures:
        assert s.id.startswith(s.tool + "-"), s.id
        assert s.channel in CHANNELS
        assert s.description, s.id
        assert Path(s.path).parent == SIGNATURES
    attributing = {s.id: s.attribute for s in index.signatures if s.attribute}
    assert attributing == dict.fromkeys(
        ["anydesk-dns-relay", "atera-dns-agent", "beyondtrust-dns", "level-dns-agents",
         "logmein-dns-gateway", "rustdesk-dns-rendezvous", "screenconnect-dns-relay",
         "splashtop-dns-relay", "teamviewer-dns-router", "zoho-assist-dns-gateway"],
        "relay",
    )  # fmt: skip


# --------------------------------------------------------------------------------------------
# rmm-sensor signatures lint | list


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def test_lint_passes_on_the_shipped_files() -> None:
    code, out, err = cli("signatures", "--signatures", str(SIGNATURES), "lint")
    index = load_index(SIGNATURES)
    n, tools = len(index.signatures), len(index.tools)
    assert (code, out, err) == (0, f"ok: {n} signatures for {tools} tools\n", "")


def test_lint_uses_the_checkout_signatures_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    code, out, _ = cli("signatures", "lint")
    index = load_index(SIGNATURES)
    assert (code, out) == (
        0,
        f"ok: {len(index.signatures)} signatures for {len(index.tools)} tools\n",
    )


def test_lint_follows_the_environment_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    code, _, err = cli("signatures", "lint")
    assert code == 2
    assert f"{tmp_path}:0: no signature files" in err


def broken_copy(tmp_path: Path, old: str, new: str) -> tuple[Path, int]:
    """The shipped files with one edit in anydesk.yaml; the edited line's number."""
    for f in SIGNATURES.glob("*.yaml"):
        shutil.copy(f, tmp_path / f.name)
    path = tmp_path / "anydesk.yaml"
    text = path.read_text(encoding="utf-8")
    at = text.index(old)
    path.write_text(text[:at] + new + text[at + len(old) :], encoding="utf-8")
    return path, text.count("\n", 0, at) + 1


@pytest.mark.parametrize("action", ["lint", "list"])
@pytest.mark.parametrize(
    ("old", "new", "words"),
    [
        ('{prefix: "anydesk/"}', '{prefix: "anydesk/", equals: x}', "exactly one of"),
        ("{suffix: net.anydesk.com}", "{suffix: [net.anydesk.com}", "invalid YAML"),
        ("dest_port: {in: [7070]}", "dest_port: {in: [707000]}", "out of 0-65535"),
        ("confidence: medium", "confidence: maybe", "confidence must be one of"),
        ('{pattern: "3e d1 01"}', '{pattern: "3e d1 1"}', "bad pattern token"),
        ("id: anydesk-dns-site", "id: anydesk-dns-relay", "is also defined at"),
    ],
)
def test_lint_and_list_fail_with_file_and_line(
    tmp_path: Path, action: str, old: str, new: str, words: str
) -> None:
    path, line = broken_copy(tmp_path, old, new)
    code, out, err = cli("signatures", "--signatures", str(tmp_path), action)
    assert (code, out) == (2, "")
    m = re.match(rf"rmm-sensor: error: {re.escape(str(path))}:(\d+): ", err)
    assert m is not None, err
    reported = int(m.group(1))
    # YAML syntax errors are found where the parser gives up: at or just after the bad line.
    assert reported == line or (words == "invalid YAML" and line <= reported <= line + 1)
    assert words in err


def test_lint_fails_on_a_missing_directory(tmp_path: Path) -> None:
    code, out, err = cli("signatures", "--signatures", str(tmp_path / "nope"), "lint")
    assert (code, out) == (2, "")
    assert f"{tmp_path / 'nope'}:0: signature directory not found" in err


def test_list_shows_tools_channels_and_counts() -> None:
    code, out, err = cli("signatures", "--signatures", str(SIGNATURES), "list")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].split() == ["tool", "name", "channels", "signatures"]
    rows = {line.split()[0]: line for line in lines[2:]}
    index = load_index(SIGNATURES)
    assert list(rows) == list(index.tools)
    for tool, channels, name in (
        ("anydesk", "direct, discovery, dns, download, relay, web", "AnyDesk"),
        ("screenconnect", "dns, download, relay, web", "ConnectWise ScreenConnect"),
        ("teamviewer", "direct, dns, relay, web", "TeamViewer"),
        ("rdp", "direct", "Remote Desktop (RDP)"),
        ("beyondtrust", "dns, relay", "BeyondTrust Remote Support (Bomgar)"),
    ):
        count = sum(s.tool == tool for s in index.signatures)
        assert count > 0
        assert re.fullmatch(
            rf"{tool}\s+{re.escape(name)}\s+{re.escape(channels)}\s+{count}\s*", rows[tool]
        ), rows[tool]


def test_list_verbose_has_one_row_per_signature() -> None:
    code, out, _ = cli("signatures", "--signatures", str(SIGNATURES), "list", "--verbose")
    assert code == 0
    index = load_index(SIGNATURES)
    rows = [line.split()[:4] for line in out.splitlines()[2:]]
    assert rows == [[s.tool, s.id, s.channel, s.confidence] for s in index.signatures]
