"""deploy/ manifests validate against the Kubernetes schemas (pinned kubernetes-validate)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

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


def compose_command() -> list[str]:
    """`docker compose` (v2) when present, else `docker-compose` (v1); both validate offline."""
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
    if probe.returncode == 0:
        return ["docker", "compose"]
    return ["docker-compose"]


def test_compose_file_validates_offline(tmp_path: Path) -> None:
    compose = DEPLOY / "docker-compose.yml"
    try:
        result = subprocess.run(
            [*compose_command(), "-f", str(compose), "config", "-q"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
    except FileNotFoundError:
        pytest.fail("no docker compose / docker-compose: scripts/test installs docker-compose")
    assert result.returncode == 0, result.stdout + result.stderr
    text = compose.read_text()
    assert "--maxmemory-policy" in text and "noeviction" in text and "--appendonly" in text
    assert "driver: nvidia" in text
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(text.replace("service_healthy", "service_whenever"))
    bad = subprocess.run(
        [*compose_command(), "-f", str(broken), "config", "-q"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert bad.returncode != 0
