"""deploy/: the container image, compose stack, Alertmanager, systemd unit, Kubernetes DaemonSet
and Grafana provisioning, each checked by the tool or schema that knows its format.

- compose.yaml: the Compose Specification JSON schema that check-jsonschema ships
  (``check_jsonschema/builtin_schemas/vendor/compose-spec.json``). ``docker compose config`` is
  not used: the docker CLI here has no compose plugin and no engine.
- alertmanager.yml: ``amtool check-config`` (Debian ``prometheus-alertmanager``).
- Dockerfile: parsed by the ``dockerfile`` package (BuildKit's own parser).
- rmm-sensor.service: ``systemd-analyze verify`` on a copy whose ``/usr/bin/rmm-sensor`` points
  at this checkout's entry point (verify insists that executables exist), then
  ``systemd-analyze security --offline`` for the exposure score.
- daemonset.yaml: ``kubernetes-validate`` (the Kubernetes OpenAPI schemas, strict: unknown
  fields are errors).
- Configuration files that reach the sensor (deploy/rmm-sensor.yaml, the ConfigMap) go through
  ``rmm-sensor check-config``.
Missing tools fail the tests (``make system-deps``); nothing is skipped.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
from importlib.resources import files
from pathlib import Path
from typing import Any

import dockerfile
import jsonschema
import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
ALERTMANAGER = DEPLOY / "alertmanager" / "alertmanager.yml"
UNIT = DEPLOY / "systemd" / "rmm-sensor.service"
DAEMONSET = DEPLOY / "kubernetes" / "daemonset.yaml"
SENSOR_CONFIG = DEPLOY / "rmm-sensor.yaml"
GRAFANA = DEPLOY / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "rmm-sensor.json"
PROVISIONING = GRAFANA / "provisioning"
KUBERNETES_VERSION = "1.30"
SENSOR_MAIN = "import sys; from sensor.cli import main; sys.exit(main())"


def tool(name: str) -> str:
    exe = shutil.which(name)
    if exe is None:
        pytest.fail(f"{name} not found: run `make system-deps`", pytrace=False)
    return exe


def check_config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", SENSOR_MAIN, "check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# --- compose ------------------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return doc


def compose_validator() -> jsonschema.protocols.Validator:
    schema = json.loads(
        (files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json").read_text()
    )
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def test_compose_matches_the_compose_specification() -> None:
    errors = [f"{list(e.path)}: {e.message}" for e in compose_validator().iter_errors(compose())]
    assert errors == []


@pytest.mark.parametrize(
    ("service", "key", "value"),
    [
        ("sensor", "cap_add", "NET_RAW"),  # a string where a list belongs
        ("sensor", "read_onyl", True),  # a misspelt key
        ("grafana", "network_mode", ["host"]),
    ],
)
def test_compose_schema_rejects_mistakes(service: str, key: str, value: object) -> None:
    doc = copy.deepcopy(compose())
    doc["services"][service][key] = value
    assert list(compose_validator().iter_errors(doc))


def test_compose_sensor_is_locked_down() -> None:
    sensor = compose()["services"]["sensor"]
    assert sensor["network_mode"] == "host"
    assert sensor["cap_drop"] == ["ALL"]
    assert sorted(sensor["cap_add"]) == ["NET_ADMIN", "NET_RAW"]
    assert sensor["read_only"] is True
    assert "privileged" not in sensor
    assert "./rmm-sensor.yaml:/etc/rmm-sensor/rmm-sensor.yaml:ro" in sensor["volumes"]
    assert sensor["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
    args = sensor["command"]
    assert args[0] == "live"
    assert args[args.index("--config") + 1] == "/etc/rmm-sensor/rmm-sensor.yaml"


def test_compose_wires_prometheus_alertmanager_and_grafana() -> None:
    services = compose()["services"]
    assert set(services) == {"sensor", "prometheus", "alertmanager", "grafana"}
    prom = services["prometheus"]
    assert (
        "./prometheus/rmm-sensor.rules.yml:/etc/prometheus/rmm-sensor.rules.yml:ro"
        in prom["volumes"]
    )
    assert "--config.file=/etc/prometheus/prometheus.yml" in prom["command"]
    prometheus_yml = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    (am,) = prometheus_yml["alerting"]["alertmanagers"]
    assert am["static_configs"][0]["targets"] == ["127.0.0.1:9093"]
    assert "--web.listen-address=127.0.0.1:9093" in services["alertmanager"]["command"]
    grafana_mounts = {v.split(":")[1] for v in services["grafana"]["volumes"]}
    assert {
        "/etc/grafana/provisioning/datasources",
        "/etc/grafana/provisioning/dashboards",
        "/etc/grafana/provisioning/alerting",
    } <= grafana_mounts
    provider = yaml.safe_load((PROVISIONING / "dashboards" / "rmm-sensor.yml").read_text())
    assert provider["providers"][0]["options"]["path"] in grafana_mounts
    assert "RMM_SENSOR_WEBHOOK_URL" in services["grafana"]["environment"]


def test_compose_mounts_files_that_exist() -> None:
    for name, service in compose()["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source}"


def test_the_mounted_sensor_configuration_is_valid() -> None:
    done = check_config(SENSOR_CONFIG)
    assert done.returncode == 0, done.stderr


# --- Alertmanager -------------------------------------------------------------------------------


def test_amtool_accepts_the_alertmanager_config() -> None:
    done = subprocess.run(
        [tool("amtool"), "check-config", str(ALERTMANAGER)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_amtool_rejects_a_broken_copy(tmp_path: Path) -> None:
    broken = tmp_path / "alertmanager.yml"
    broken.write_text(
        ALERTMANAGER.read_text().replace(
            "receiver: rmm-sensor-ticket", "receiver: no-such-receiver"
        )
    )
    done = subprocess.run(
        [tool("amtool"), "check-config", str(broken)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "no-such-receiver" in done.stdout + done.stderr


def test_alertmanager_routes_by_the_rules_severities() -> None:
    config = yaml.safe_load(ALERTMANAGER.read_text())
    receivers = {r["name"] for r in config["receivers"]}
    assert config["route"]["receiver"] in receivers
    assert config["route"]["routes"][0]["matchers"] == ['severity="warning"']
    for receiver in config["receivers"]:
        assert receiver["webhook_configs"][0]["url"].startswith("http")


# --- Dockerfile ---------------------------------------------------------------------------------


def instructions() -> list[Any]:
    return list(dockerfile.parse_file(str(DOCKERFILE)))


def test_dockerfile_compiles_in_a_build_stage_and_runs_from_python_311_slim() -> None:
    cmds = instructions()
    froms = [c.value for c in cmds if c.cmd == "FROM"]
    assert froms == [("python:3.11", "AS", "build"), ("python:3.11-slim",)]
    # The wheel is built (setup.py compiles with mypyc) in the stage that has a compiler.
    runs = [" ".join(c.value) for c in cmds if c.cmd == "RUN"]
    assert any(re.search(r"pip wheel [^&]*--wheel-dir /wheels \.$", r) for r in runs), runs
    copies = [c.value for c in cmds if c.cmd == "COPY"]
    assert ("pyproject.toml", "setup.py", "README.md", "./") in copies


def test_dockerfile_runs_as_a_non_root_user() -> None:
    users = [c.value[0] for c in instructions() if c.cmd == "USER"]
    assert users, "no USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")


def test_dockerfile_installs_the_package_libpcap_and_capabilities() -> None:
    runs = " ".join(" ".join(c.value) for c in instructions() if c.cmd == "RUN")
    assert re.search(r"pip install [^&]*\s/wheels/\*\.whl\s", runs)
    staged = [(c.flags, c.value) for c in instructions() if c.cmd == "COPY" and c.flags]
    assert staged == [(("--from=build",), ("/wheels", "/wheels"))]
    assert "libpcap0.8" in runs
    assert "setcap cap_net_raw,cap_net_admin+ep" in runs
    copies = [c.value for c in instructions() if c.cmd == "COPY"]
    assert ("signatures", "/usr/local/share/rmm-sensor/signatures") in copies


def test_dockerfile_healthcheck_and_entrypoint() -> None:
    cmds = {c.cmd: c for c in instructions()}
    health = cmds["HEALTHCHECK"]
    assert "CMD" in health.value and "RMM_SENSOR_HEALTHZ" in " ".join(health.value)
    env = " ".join(c.original for c in instructions() if c.cmd == "ENV")
    assert "RMM_SENSOR_HEALTHZ=http://127.0.0.1:9808/healthz" in env
    assert cmds["ENTRYPOINT"].json and cmds["ENTRYPOINT"].value[0] == (
        "/usr/local/bin/rmm-sensor-python"
    )
    assert cmds["CMD"].value[0] == "live"


def test_dockerfile_copies_only_what_exists() -> None:
    for c in instructions():
        if c.cmd == "COPY" and not c.flags:
            for source in c.value[:-1]:
                assert (REPO / source).exists(), source


# --- systemd ------------------------------------------------------------------------------------


def unit_copy(tmp_path: Path) -> Path:
    """The unit with /usr/bin/rmm-sensor replaced by this checkout's entry point."""
    entry = Path(sys.executable).parent / "rmm-sensor"
    assert entry.exists(), "the package is not installed in this interpreter's environment"
    copy_path = tmp_path / UNIT.name
    copy_path.write_text(UNIT.read_text().replace("/usr/bin/rmm-sensor", str(entry)))
    return copy_path


def test_systemd_analyze_verify_is_clean(tmp_path: Path) -> None:
    done = subprocess.run(
        [tool("systemd-analyze"), "verify", str(unit_copy(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr  # unknown keys are only warnings: none allowed


def test_systemd_analyze_verify_reports_a_mistake(tmp_path: Path) -> None:
    unit = unit_copy(tmp_path)
    unit.write_text(unit.read_text().replace("ProtectHome=yes", "ProtectHome=yes\nProtectHoem=yes"))
    done = subprocess.run(
        [tool("systemd-analyze"), "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "Unknown key 'ProtectHoem'" in done.stderr


def test_systemd_exposure_is_low(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            tool("systemd-analyze"),
            "security",
            "--offline=yes",
            "--threshold=25",
            str(unit_copy(tmp_path)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    score = re.search(r"Overall exposure level for \S+: ([\d.]+)", done.stdout)
    assert score is not None and float(score.group(1)) <= 2.5, done.stdout


def unit_directives() -> dict[str, dict[str, list[str]]]:
    """Section -> key -> values (systemd allows a key more than once, so not configparser)."""
    found: dict[str, dict[str, list[str]]] = {}
    section = ""
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            found.setdefault(section, {})
            continue
        key, _, value = line.partition("=")
        found[section].setdefault(key, []).append(value)
    return found


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("AmbientCapabilities", "CAP_NET_RAW CAP_NET_ADMIN"),
        ("CapabilityBoundingSet", "CAP_NET_RAW CAP_NET_ADMIN"),
        ("NoNewPrivileges", "yes"),
        ("ExecStartPre", "/usr/bin/rmm-sensor check-config /etc/rmm-sensor/rmm-sensor.yaml"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("RestrictAddressFamilies", "AF_PACKET AF_INET AF_INET6 AF_UNIX AF_NETLINK"),
        ("StateDirectory", "rmm-sensor"),
        ("LogsDirectory", "rmm-sensor"),
        ("SystemCallFilter", "@system-service"),
        ("DynamicUser", "yes"),
        ("Restart", "on-failure"),
        ("MemoryMax", "2G"),
    ],
)
def test_unit_has_the_required_directive(key: str, value: str) -> None:
    assert unit_directives()["Service"].get(key) == [value]


def test_unit_writes_alerts_to_its_logs_directory() -> None:
    (start,) = unit_directives()["Service"]["ExecStart"]
    assert start.startswith("/usr/bin/rmm-sensor live --config /etc/rmm-sensor/rmm-sensor.yaml")
    assert "--alerts ${LOGS_DIRECTORY}/alerts.jsonl" in start


# --- Kubernetes ---------------------------------------------------------------------------------


def manifests() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(DAEMONSET.read_text()) if d]


def by_kind(kind: str) -> dict[str, Any]:
    (doc,) = [d for d in manifests() if d["kind"] == kind]
    return doc


@pytest.mark.parametrize("doc", manifests(), ids=lambda d: d["kind"])
def test_manifest_matches_the_kubernetes_schema(doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_kubernetes_schema_rejects_a_misspelt_field() -> None:
    doc = copy.deepcopy(by_kind("DaemonSet"))
    doc["spec"]["template"]["spec"]["hostNetwrok"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_daemonset_is_locked_down_and_probed() -> None:
    pod = by_kind("DaemonSet")["spec"]["template"]
    spec = pod["spec"]
    assert spec["hostNetwork"] is True
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["automountServiceAccountToken"] is False
    (sensor,) = spec["containers"]
    security = sensor["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"], "add": ["NET_RAW", "NET_ADMIN"]}
    assert "privileged" not in security
    for probe in ("livenessProbe", "readinessProbe"):
        assert sensor[probe]["httpGet"]["path"] == "/healthz"
        assert sensor[probe]["httpGet"]["port"] == "metrics"
    assert sensor["ports"][0] == {"name": "metrics", "containerPort": 9808, "protocol": "TCP"}
    assert set(sensor["resources"]["limits"]) == {"cpu", "memory"}
    assert set(sensor["resources"]["requests"]) == {"cpu", "memory"}
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "9808"
    assert annotations["prometheus.io/path"] == "/metrics"


def test_daemonset_mounts_the_configmap_it_defines() -> None:
    config_map = by_kind("ConfigMap")
    spec = by_kind("DaemonSet")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["config"]["configMap"]["name"] == config_map["metadata"]["name"]
    (sensor,) = spec["containers"]
    mounts = {m["name"]: m["mountPath"] for m in sensor["volumeMounts"]}
    assert mounts["config"] == "/etc/rmm-sensor"
    assert sensor["args"] == ["live", "--config", "/etc/rmm-sensor/rmm-sensor.yaml"]


def test_configmap_configuration_is_valid(tmp_path: Path) -> None:
    data = by_kind("ConfigMap")["data"]
    path = tmp_path / "rmm-sensor.yaml"
    path.write_text(data["rmm-sensor.yaml"])
    done = check_config(path)
    assert done.returncode == 0, done.stderr
    settings = yaml.safe_load(data["rmm-sensor.yaml"])
    # Probes and scrapes reach the pod on the node's address: the endpoint must listen there.
    assert settings["metrics"]["address"] == "0.0.0.0:9808"
    assert settings["output"]["stdout"] is True


# --- Grafana ------------------------------------------------------------------------------------


def dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return doc


def test_dashboard_panels_are_well_formed() -> None:
    panels = dashboard()["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in panels:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        xs, ys = range(g["x"], g["x"] + g["w"]), range(g["y"], g["y"] + g["h"])
        mine = {(x, y) for x in xs for y in ys}
        assert not cells & mine, f"{p['title']} overlaps another panel"
        cells |= mine
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"], p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            assert t["expr"].strip() and t["datasource"] == p["datasource"]


@pytest.mark.parametrize(
    "needle",
    [
        "rmm_sensor_sessions_total",
        'verdict="unsanctioned"',
        "topk(",
        "rmm_sensor_servers",
        "rmm_sensor_alerts_total",
        "rmm_sensor_exploit_attempts_total",
        "rmm_sensor_packets_total",
        "rmm_sensor_kernel_drops_total",
        "rmm_sensor_flows_active",
        'reason="evicted"',
        "rmm_sensor_decode_errors_total",
        "rmm_sensor_config_last_reload_successful",
        "rmm_sensor_last_packet_timestamp_seconds",
        "rmm_sensor_workers",
    ],
)
def test_dashboard_shows(needle: str) -> None:
    exprs = [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]
    assert any(needle in e for e in exprs)


def test_grafana_provisioning_fits_together() -> None:
    datasources = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())
    assert datasources["apiVersion"] == 1
    (source,) = datasources["datasources"]
    assert source["type"] == "prometheus"
    alerting = yaml.safe_load((PROVISIONING / "alerting" / "rmm-sensor.yml").read_text())
    assert alerting["apiVersion"] == 1
    (group,) = alerting["groups"]
    (rule,) = group["rules"]
    refs = {d["refId"]: d for d in rule["data"]}
    assert rule["condition"] in refs
    for data in rule["data"]:
        model = data["model"]
        assert model["refId"] == data["refId"]
        if data["datasourceUid"] == "__expr__":
            assert model["expression"] in refs  # reduce/threshold read an earlier query
        else:
            assert data["datasourceUid"] == source["uid"]
            assert "unsanctioned_rmm_session" in model["expr"]
    assert refs[rule["condition"]]["model"]["type"] == "threshold"
    assert rule["labels"]["severity"] == "critical"
    (contact,) = alerting["contactPoints"]
    assert alerting["policies"][0]["receiver"] == contact["name"]
    provider = yaml.safe_load((PROVISIONING / "dashboards" / "rmm-sensor.yml").read_text())
    assert provider["apiVersion"] == 1 and provider["providers"][0]["type"] == "file"
