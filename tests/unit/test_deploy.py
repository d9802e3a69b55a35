"""deploy/ manifests validate against the Kubernetes schemas (pinned kubernetes-validate); the
compose file is checked for structure in Python (no docker install needed)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
VALIDATOR = str(Path(sys.executable).parent / "kubernetes-validate")


def validate(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [VALIDATOR, "--strict", "-k", "1.31.0", *map(str, paths)],
        capture_output=True,
        text=True,
        check=False,
    )


def test_kubernetes_manifests_validate() -> None:
    manifests = sorted((DEPLOY / "k8s").glob("*.yaml"))
    assert {p.stem for p in manifests} >= {"io", "cpu", "gpu", "config"}
    result = validate(*manifests)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("role", ["io", "cpu", "gpu"])
def test_each_role_runs_its_arq_settings(role: str) -> None:
    text = (DEPLOY / "k8s" / f"{role}.yaml").read_text()
    assert f'"workers.{role}.WorkerSettings"' in text
    assert "HorizontalPodAutoscaler" in text
    assert ("nvidia.com/gpu" in text) == (role == "gpu")


def test_validator_rejects_a_broken_manifest(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        (DEPLOY / "k8s" / "io.yaml").read_text().replace("replicas: 1", "replicas: many", 1)
    )
    assert validate(broken).returncode != 0


# The Compose specification's keys this file may use (compose-spec, services and top level);
# checked here in Python so the suite needs no docker / docker-compose install.
TOP_LEVEL = {"version", "name", "services", "volumes", "networks", "configs", "secrets"}
SERVICE_KEYS = {
    "image",
    "build",
    "command",
    "entrypoint",
    "environment",
    "env_file",
    "restart",
    "stop_grace_period",
    "stop_signal",
    "depends_on",
    "deploy",
    "healthcheck",
    "volumes",
    "ports",
    "expose",
    "networks",
    "labels",
    "working_dir",
    "user",
    "profiles",
    "init",
}
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
RESTART = {"no", "always", "on-failure", "unless-stopped"}
HEALTHCHECK_KEYS = {"test", "interval", "timeout", "retries", "start_period", "disable"}
DURATION = re.compile(r"^(\d+(\.\d+)?(us|ms|s|m|h))+$")
DEFAULTED = re.compile(r"\$\{[A-Z_]+:-([^}]*)\}")  # ${VAR:-default}: what compose uses unset


def compose_problems(text: str) -> list[str]:
    """What is wrong with a compose file's structure (empty when nothing): unknown keys,
    bad depends_on conditions or targets, undeclared volumes, bad durations, a service
    without image or build, worker settings the workers would refuse."""
    from pipeline.errors import InvalidSettings
    from pipeline.settings import Settings

    doc = yaml.safe_load(text)
    problems = [
        f"top-level key {k!r}" for k in doc if k not in TOP_LEVEL and not k.startswith("x-")
    ]
    services: dict[str, Any] = doc.get("services") or {}
    declared = set(doc.get("volumes") or {})
    for name, svc in services.items():
        problems += [f"{name}: unknown key {k!r}" for k in svc if k not in SERVICE_KEYS]
        if "image" not in svc and "build" not in svc:
            problems.append(f"{name}: neither image nor build")
        if svc.get("restart", "no") not in RESTART:
            problems.append(f"{name}: restart {svc['restart']!r}")
        for key in ("stop_grace_period",):
            if key in svc and not DURATION.match(str(svc[key])):
                problems.append(f"{name}: {key} {svc[key]!r} is not a duration")
        for target, spec in (svc.get("depends_on") or {}).items():
            if target not in services:
                problems.append(f"{name}: depends on unknown service {target!r}")
            if (spec or {}).get("condition", "service_started") not in CONDITIONS:
                problems.append(f"{name}: depends_on condition {spec['condition']!r}")
        health = svc.get("healthcheck") or {}
        problems += [f"{name}: healthcheck key {k!r}" for k in health if k not in HEALTHCHECK_KEYS]
        for key in ("interval", "timeout"):
            if key in health and not DURATION.match(str(health[key])):
                problems.append(f"{name}: healthcheck {key} {health[key]!r}")
        for volume in svc.get("volumes") or []:
            source = str(volume).split(":", 1)[0]
            if not source.startswith((".", "/", "~")) and source not in declared:
                problems.append(f"{name}: volume {source!r} is not declared")
        env = svc.get("environment") or {}
        if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
            problems.append(f"{name}: environment values must be strings (quote numbers)")
        elif any(k.startswith("PLANTPIPE_") for k in env):
            settings = {
                k[len("PLANTPIPE_") :].lower(): DEFAULTED.sub(r"\1", v)
                for k, v in env.items()
                if k.startswith("PLANTPIPE_")
            }
            try:
                Settings.model_validate(settings)
            except (InvalidSettings, ValueError) as exc:
                problems.append(f"{name}: {exc}")
    return problems


def test_compose_file_is_well_formed() -> None:
    compose = DEPLOY / "docker-compose.yml"
    text = compose.read_text()
    assert compose_problems(text) == []
    doc = yaml.safe_load(text)
    assert set(doc["services"]) >= {"redis", "localstack", "io", "cpu", "gpu"}
    for role in ("io", "cpu", "gpu"):
        assert doc["services"][role]["command"] == ["arq", f"workers.{role}.WorkerSettings"]
    assert "--maxmemory-policy" in text and "noeviction" in text and "--appendonly" in text
    assert "driver: nvidia" in text


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        ("service_healthy", "service_whenever", "depends_on condition"),
        ("stop_grace_period: 30s", "stop_grace_period: soon", "not a duration"),
        ('PLANTPIPE_METRICS_PORT: "9100"', "PLANTPIPE_METRICS_PORT: 9100", "must be strings"),
        ('PLANTPIPE_METRICS_PORT: "9100"', 'PLANTPIPE_METRICS_PORT: "-1"', "METRICS_PORT"),
        ("- redis-data:/data", "- redis-state:/data", "not declared"),
        ("    restart: unless-stopped", "    restarts: unless-stopped", "unknown key"),
    ],
)
def test_the_compose_check_catches_what_docker_compose_would(
    old: str, new: str, problem: str
) -> None:
    text = (DEPLOY / "docker-compose.yml").read_text()
    assert old in text
    found = compose_problems(text.replace(old, new, 1))
    assert any(problem in p for p in found), found


def test_compose_ha_profile_is_a_sentinel_topology_the_documented_url_reaches() -> None:
    """Profile "ha": a master, a replica of it and three Sentinels monitoring it (quorum 2),
    all with noeviction/AOF; the URL in the file's header names those Sentinels and is one
    plantpipe accepts."""
    from pipeline.runtime.connection import url_settings
    from pipeline.settings import Settings

    text = (DEPLOY / "docker-compose.yml").read_text()
    services = yaml.safe_load(text)["services"]
    ha = {name for name, svc in services.items() if "ha" in (svc.get("profiles") or [])}
    assert ha == {"redis-a", "redis-b", "sentinel-1", "sentinel-2", "sentinel-3"}
    assert services["redis-b"]["command"][-2:] == ["redis-a", "6379"]
    for node in ("redis-a", "redis-b"):
        assert "noeviction" in services[node]["command"]
    for name in ("sentinel-1", "sentinel-2", "sentinel-3"):
        script = " ".join(services[name]["command"])
        assert "sentinel monitor plantpipe redis-a 6379 2" in script and "--sentinel" in script
    url = re.search(r"PLANTPIPE_REDIS_URL=(redis\+sentinel://\S+)", text)
    assert url is not None
    rs = url_settings(Settings(redis_url=url[1]).redis_url)
    assert rs.sentinel and rs.sentinel_master == "plantpipe"
    assert isinstance(rs.host, list)
    assert {address[0] for address in rs.host} == {"sentinel-1", "sentinel-2", "sentinel-3"}


def test_keda_scales_each_role_on_its_queue_depth() -> None:
    """deploy/k8s/keda: a ScaledObject per role (KEDA's CRD, so checked here rather than by
    kubernetes-validate): each targets its role's Deployment and scales on that role's arq
    queue as the workers export it, within sane bounds."""
    docs = [
        d
        for d in yaml.safe_load_all((DEPLOY / "k8s" / "keda" / "scaledobjects.yaml").read_text())
        if d
    ]
    deployments = {
        d["metadata"]["name"]
        for path in (DEPLOY / "k8s").glob("*.yaml")
        for d in yaml.safe_load_all(path.read_text())
        if d and d["kind"] == "Deployment"
    }
    assert {d["kind"] for d in docs} == {"ScaledObject"}
    assert {d["apiVersion"] for d in docs} == {"keda.sh/v1alpha1"}
    by_role = {d["metadata"]["labels"]["app.kubernetes.io/component"]: d for d in docs}
    assert set(by_role) == {"io", "cpu", "gpu"}
    for role, doc in by_role.items():
        spec = doc["spec"]
        assert spec["scaleTargetRef"]["name"] == f"plantpipe-{role}" in deployments
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
        [trigger] = spec["triggers"]
        assert trigger["type"] == "prometheus"
        assert f'queue="plantpipe:queue:{role}"' in trigger["metadata"]["query"]
        assert "plantpipe_queue_depth" in trigger["metadata"]["query"]
        assert float(trigger["metadata"]["threshold"]) > 0
    from pipeline.runtime.metrics import QUEUE_DEPTH

    assert QUEUE_DEPTH._name == "plantpipe_queue_depth"  # the metric the queries read
