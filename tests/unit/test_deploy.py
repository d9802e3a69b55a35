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
