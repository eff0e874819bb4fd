"""docker-compose.yml: pinned images, mounted files that exist, ports on 127.0.0.1 that match the configs.

There is no Docker engine here, so the compose file is checked against the files it wires together: the
collector config, prometheus.yml, the Grafana provisioning, examples/Dockerfile and examples/loadgen.py.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
COLLECTOR_CONFIG = ROOT / "collector" / "otel-collector.yaml"
PROMETHEUS_CONFIG = ROOT / "collector" / "prometheus" / "prometheus.yml"
DATASOURCES = ROOT / "collector" / "grafana" / "provisioning" / "datasources" / "datasources.yaml"
DASHBOARD_PROVIDERS = ROOT / "collector" / "grafana" / "provisioning" / "dashboards" / "dashboards.yaml"
DOCKERFILE = ROOT / "examples" / "Dockerfile"
LOADGEN = ROOT / "examples" / "loadgen.py"

# container port → what listens there (the configs below are checked to agree)
EXPECTED_PUBLISHED = {
    "otel-collector": {4317, 4318, 13133},
    "jaeger": {16686},
    "prometheus": {9090},
    "grafana": {3000},
    "model-stable": {8000},
    "model-canary": {8000},
}
PINNED_TAG = re.compile(r"^v?\d+(\.\d+){1,2}([.-][0-9A-Za-z.-]+)?$")  # 0.114.0, v3.0.1, 3.11.10-slim-bookworm


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = load(COMPOSE)
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = compose["services"]
    return result


def mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path → host path of every bind mount (all of them read-only)."""
    out = {}
    for volume in service.get("volumes", []):
        host, container, mode = volume.split(":")
        assert mode == "ro", volume
        out[container] = (ROOT / host).resolve()
    return out


def published(service: dict[str, Any]) -> dict[int, int]:
    """Container port → host port; every entry must be ``127.0.0.1:HOST:CONTAINER``."""
    out = {}
    for entry in service.get("ports", []):
        match = re.fullmatch(r"127\.0\.0\.1:(\d+):(\d+)", str(entry))
        assert match, f"port {entry!r} is not published on 127.0.0.1 only"
        out[int(match[2])] = int(match[1])
    return out


def env(service: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in (service.get("environment") or {}).items()}


def loadgen_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("otel_ml_example_loadgen", LOADGEN)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve the module's annotations through sys.modules
    spec.loader.exec_module(module)
    return module


# ============================================================================ images


def test_every_image_is_pinned_to_an_explicit_version(services: dict[str, Any]) -> None:
    assert set(services) == {*EXPECTED_PUBLISHED, "loadgen"}
    for name, service in services.items():
        image = service["image"]
        assert "@" not in image
        repository, _, tag = image.rpartition(":")
        assert repository and "/" not in tag, f"{name}: {image} has no tag"
        assert tag != "latest" and PINNED_TAG.fullmatch(tag), f"{name}: {image} is not pinned to a version"
    assert services["otel-collector"]["image"] == "otel/opentelemetry-collector-contrib:0.114.0"
    assert services["prometheus"]["image"] == "prom/prometheus:v3.0.1"
    assert services["grafana"]["image"] == "grafana/grafana:11.3.1"
    assert services["jaeger"]["image"] == "jaegertracing/all-in-one:1.63.0"


def test_the_example_image_is_built_from_a_pinned_base(services: dict[str, Any]) -> None:
    built = {name: s for name, s in services.items() if "build" in s}
    assert set(built) == {"model-stable", "model-canary", "loadgen"}
    for name, service in built.items():
        assert service["build"] == {"context": ".", "dockerfile": "examples/Dockerfile"}, name
        assert service["image"] == "otel-ml-example:0.1.0", name
    dockerfile = DOCKERFILE.read_text(encoding="utf-8")
    (base,) = re.findall(r"^FROM (\S+)", dockerfile, flags=re.M)
    assert base.startswith("python:3.11.") and PINNED_TAG.fullmatch(base.split(":")[1]), base
    assert 'pip install ".[sklearn]"' in dockerfile
    for copied in re.findall(r"^COPY (.+) \S+$", dockerfile, flags=re.M):
        for path in copied.split():
            assert (ROOT / path).exists(), f"Dockerfile copies {path}, which does not exist"
    # the service's command: uvicorn on the port the compose file publishes
    cmd = re.search(r"^CMD (\[.+\])$", dockerfile, flags=re.M)
    assert cmd and yaml.safe_load(cmd[1]) == [
        "uvicorn", "examples.service.app:app", "--host", "0.0.0.0", "--port", "8000",
    ]  # fmt: skip
    assert (ROOT / "examples" / "service" / "app.py").is_file()
    assert services["loadgen"]["command"] == ["python", "examples/loadgen.py"]


# ============================================================================ mounts


def test_every_mounted_file_exists(services: dict[str, Any]) -> None:
    count = 0
    for name, service in services.items():
        for container, host in mounts(service).items():
            assert host.exists(), f"{name}: mounts missing {host}"
            assert host.is_relative_to(ROOT / "collector"), f"{name}: {host} is outside collector/"
            assert PurePosixPath(container).is_absolute()
            count += 1
    assert count == 6


def test_the_collector_reads_the_mounted_config(services: dict[str, Any]) -> None:
    collector = services["otel-collector"]
    (config_arg,) = collector["command"]
    path = config_arg.removeprefix("--config=")
    assert mounts(collector) == {path: COLLECTOR_CONFIG}


def test_prometheus_reads_the_mounted_config_and_rules(services: dict[str, Any]) -> None:
    prometheus = services["prometheus"]
    flags = {flag.removeprefix("--").partition("=")[0]: flag.partition("=")[2] for flag in prometheus["command"]}
    assert "web.enable-otlp-receiver" in flags  # the collector pushes metrics over OTLP
    assert flags["enable-feature"] == "exemplar-storage"
    config_path = PurePosixPath(flags["config.file"])
    volumes = mounts(prometheus)
    assert volumes[str(config_path)] == PROMETHEUS_CONFIG
    (rule_glob,) = load(PROMETHEUS_CONFIG)["rule_files"]
    rules_dir = config_path.parent / PurePosixPath(rule_glob).parent  # relative to the config file
    assert volumes[str(rules_dir)] == PROMETHEUS_CONFIG.parent / PurePosixPath(rule_glob).parent
    assert sorted(p.name for p in volumes[str(rules_dir)].glob(PurePosixPath(rule_glob).name)) == [
        "ml-alerts.rules.yml", "ml-psi.rules.yml", "ml-recording.rules.yml",
    ]  # fmt: skip


def test_grafana_provisioning_is_mounted_where_grafana_and_the_provider_look(services: dict[str, Any]) -> None:
    grafana = services["grafana"]
    volumes = mounts(grafana)
    assert volumes["/etc/grafana/provisioning/datasources"] == DATASOURCES.parent
    assert volumes["/etc/grafana/provisioning/dashboards"] == DASHBOARD_PROVIDERS.parent
    (provider,) = load(DASHBOARD_PROVIDERS)["providers"]
    dashboards_dir = volumes[provider["options"]["path"]]
    assert sorted(p.name for p in dashboards_dir.glob("*.json")) == ["ml-model-overview.json"]
    home = PurePosixPath(env(grafana)["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    assert (volumes[str(home.parent)] / home.name).is_file()
    # anonymous, read-only access
    assert env(grafana)["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert env(grafana)["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    assert env(grafana)["GF_USERS_ALLOW_SIGN_UP"] == "false"
    assert provider["allowUiUpdates"] is False


# ============================================================================ ports


def test_ports_are_published_on_loopback_and_match_the_configs(services: dict[str, Any]) -> None:
    host_ports: list[int] = []
    for name, service in services.items():
        ports = published(service)
        assert set(ports) == EXPECTED_PUBLISHED.get(name, set()), name
        host_ports += ports.values()
        if name not in ("model-stable", "model-canary"):
            assert all(host == container for container, host in ports.items()), name
    assert len(host_ports) == len(set(host_ports)), "two services publish the same host port"
    assert published(services["model-stable"]) == {8000: 8000}
    assert published(services["model-canary"]) == {8000: 8001}

    collector = load(COLLECTOR_CONFIG)
    listens = {
        int(collector["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"].rsplit(":", 1)[1]),
        int(collector["receivers"]["otlp"]["protocols"]["http"]["endpoint"].rsplit(":", 1)[1]),
        int(collector["extensions"]["health_check"]["endpoint"].rsplit(":", 1)[1]),
    }
    assert listens == EXPECTED_PUBLISHED["otel-collector"]


def test_service_to_service_addresses_match_the_listeners(services: dict[str, Any]) -> None:
    collector = load(COLLECTOR_CONFIG)
    # collector → Jaeger over OTLP/gRPC (Jaeger's OTLP receiver on 4317, not published)
    assert collector["exporters"]["otlp/jaeger"]["endpoint"] == "jaeger:4317"
    assert env(services["jaeger"])["COLLECTOR_OTLP_ENABLED"] == "true"
    # collector → Prometheus's OTLP receiver
    target = urlparse(collector["exporters"]["otlphttp/prometheus"]["endpoint"])
    assert (target.hostname, target.port, target.path) == ("prometheus", 9090, "/api/v1/otlp")
    # Prometheus scrapes itself and the collector's own metrics
    targets = {
        job["job_name"]: job["static_configs"][0]["targets"] for job in load(PROMETHEUS_CONFIG)["scrape_configs"]
    }
    telemetry = collector["service"]["telemetry"]["metrics"]["readers"][0]["pull"]["exporter"]["prometheus"]
    assert targets == {"prometheus": ["localhost:9090"], "otel-collector": [f"otel-collector:{telemetry['port']}"]}
    # Grafana → Prometheus and Jaeger
    datasources = {d["uid"]: d for d in load(DATASOURCES)["datasources"]}
    assert datasources["prometheus"]["url"] == "http://prometheus:9090"
    assert datasources["jaeger"]["url"] == "http://jaeger:16686"
    # the model services → the collector's OTLP/gRPC receiver, exporting as often as the datasource expects
    interval_s = int(datasources["prometheus"]["jsonData"]["timeInterval"].removesuffix("s"))
    for name in ("model-stable", "model-canary"):
        variables = env(services[name])
        endpoint = urlparse(variables["OTEL_EXPORTER_OTLP_ENDPOINT"])
        assert (endpoint.scheme, endpoint.hostname, endpoint.port) == ("http", "otel-collector", 4317), name
        assert variables["OTEL_METRIC_EXPORT_INTERVAL"] == str(interval_s * 1000), name
        assert variables["OTEL_SERVICE_NAME"] == "cancer-api"
    assert {env(services[n])["MODEL_VERSION"] for n in ("model-stable", "model-canary")} == {"1.0.0", "1.1.0"}
    # depends_on refers to services that exist
    for name, service in services.items():
        assert set(service.get("depends_on") or {}) <= set(services), name


def test_the_load_generator_targets_the_model_services(services: dict[str, Any]) -> None:
    loadgen = loadgen_module()
    variables = env(services["loadgen"])
    targets = loadgen.parse_targets(variables["TARGET_URLS"])
    assert {(urlparse(t.url).hostname, urlparse(t.url).port) for t in targets} == {
        ("model-stable", 8000),
        ("model-canary", 8000),
    }
    assert sum(t.weight for t in targets) == pytest.approx(1.0)
    assert {urlparse(t.url).hostname: t.weight for t in targets}["model-canary"] == pytest.approx(0.2)
    args = loadgen.parse_args([])  # defaults; the compose values are checked against the same parser next
    assert args.shift_after == 180 and args.shift_features == ["mean radius", "mean texture", "worst area"]
    from sklearn.datasets import load_breast_cancer

    names = [str(n) for n in load_breast_cancer().feature_names]
    assert loadgen.shift_columns(names, args.shift_features) == [0, 1, 23]
    assert float(variables["SHIFT_AFTER_S"]) < float(variables["DURATION_S"])
    with pytest.raises(ValueError, match="unknown feature"):
        loadgen.shift_columns(names, ["mean radius", "no such feature"])
    with pytest.raises(ValueError, match="weight"):
        loadgen.parse_targets("http://a:1=0")
