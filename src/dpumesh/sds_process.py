"""Starting the node's SDS service (`dpumesh.sds`) as its own process.

Kept apart from the service so that what only launches it (the lab, the tests) does not load grpc and the
Envoy protobufs.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from dpumesh.errors import DpumeshError


def command(socket_path: str | Path, cert_dir: str | Path) -> list[str]:
    """The argv that runs the service with this interpreter."""
    return [sys.executable, "-m", "dpumesh.cli", "sds", "--socket", str(socket_path), "--cert-dir", str(cert_dir)]


def wait_until_serving(socket_path: str | Path, process: subprocess.Popen, timeout: float = 15.0) -> None:
    """Until `process` (started from `command`) has opened its socket; raise if it exits or takes too long."""
    deadline = time.monotonic() + timeout
    while not Path(socket_path).is_socket():
        if process.poll() is not None:
            raise DpumeshError(f"dpumesh sds exited with status {process.returncode} before opening {socket_path}")
        if time.monotonic() > deadline:
            raise DpumeshError(f"dpumesh sds did not open {socket_path} in {timeout:.0f} s")
        time.sleep(0.05)
