"""Open one TCP connection from inside a pod's network namespace: optionally send bytes, then read until the
server closes or `timeout` passes.

Reads one JSON request on stdin, {"ip", "port", "send" (text, may be empty), "timeout"}, and prints
{"received" (text), "elapsed" (seconds to the first byte, or to giving up), "error"}.
"""

from __future__ import annotations

import json
import socket
import sys
import time


def main() -> int:
    request = json.load(sys.stdin)
    start = time.monotonic()
    received, first, error = b"", None, ""
    try:
        with socket.create_connection((request["ip"], request["port"]), timeout=request["timeout"]) as conn:
            if request.get("send"):
                conn.sendall(request["send"].encode())
            while chunk := conn.recv(4096):
                first = first if first is not None else time.monotonic() - start
                received += chunk
    except OSError as exc:
        error = repr(exc)
    elapsed = first if first is not None else time.monotonic() - start
    json.dump({"received": received.decode(errors="replace"), "elapsed": elapsed, "error": error}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
