"""The container and cluster files, linted offline (no container engine runs here): hadolint on the Dockerfiles,
kubernetes-validate on the manifests, and compose.yaml against the compose specification schema kept in the
repository (deploy/schemas; nothing is downloaded)."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    path = BIN / name if (BIN / name).exists() else shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed (it is in requirements.txt)")
    return str(path)


@pytest.mark.parametrize("dockerfile", ["docker/Dockerfile", "docker/Dockerfile.cuda"])
def test_dockerfiles_pass_hadolint(dockerfile):
    result = subprocess.run([_tool("hadolint"), "--failure-threshold", "warning", str(ROOT / dockerfile)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    text = (ROOT / dockerfile).read_text()
    assert "USER cnnmode" in text and "HEALTHCHECK" in text and "/healthz" in text and text.count("FROM ") == 2


def test_kubernetes_manifests_validate():
    manifests = sorted(str(p) for p in (ROOT / "deploy" / "k8s").glob("*.yaml"))
    assert len(manifests) == 3
    result = subprocess.run([_tool("kubernetes-validate"), "--strict", *manifests], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    text = (ROOT / "deploy" / "k8s" / "deployment.yaml").read_text()
    assert "/readyz" in text and "/healthz" in text and "limits:" in text


def test_compose_file_matches_the_compose_specification():
    result = subprocess.run([_tool("check-jsonschema"), "--schemafile", str(ROOT / "deploy" / "schemas" /
                             "compose-spec.json"), str(ROOT / "compose.yaml")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
