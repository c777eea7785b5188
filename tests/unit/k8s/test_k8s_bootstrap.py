"""The dpu-proxy bootstraps the adapter role renders are accepted by the real Envoy."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ENVOY = shutil.which("envoy") or str(Path(sys.executable).parent / "envoy")


@pytest.mark.envoy
def test_bootstraps_validate_with_envoy(rendered, tmp_path):
    configmap = yaml.safe_load(
        (rendered / "istio_dpu_adapter/configmap.dpumesh-system.dpu-proxy-bootstrap.yaml").read_text()
    )
    assert len(configmap["data"]) >= 2
    for key, text in configmap["data"].items():
        bootstrap = yaml.safe_load(text)
        node = key.removesuffix(".yaml")
        assert bootstrap["node"]["metadata"]["NODE_NAME"] == node
        adapter = bootstrap["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
        assert adapter["endpoint"]["address"]["socket_address"]["port_value"] == 15010
        path = tmp_path / key
        path.write_text(text)
        result = subprocess.run(
            [ENVOY, "--mode", "validate", "-c", str(path)], capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        assert "OK" in result.stdout + result.stderr
