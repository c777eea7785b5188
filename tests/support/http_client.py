"""Send HTTP requests from inside a pod's network namespace; one JSON result per request.

Reads a JSON list of requests on stdin, each {"ip", "port", "host", "path",
"headers", "timeout"}, sends them one after the other, each on a new
connection (so each one is captured by the dataplane afresh), and prints a JSON
list of {"status", "headers", "body", "elapsed", "error"} (status 0 when no
HTTP answer came back).  Names are never resolved: the Host header carries them.
"""

from __future__ import annotations

import http.client
import json
import sys
import time
from typing import Any


def send(request: dict[str, Any]) -> dict[str, Any]:
    conn = http.client.HTTPConnection(request["ip"], request["port"], timeout=request.get("timeout", 10))
    headers = {"Host": request.get("host") or request["ip"], **request.get("headers", {})}
    start = time.monotonic()
    try:
        conn.request("GET", request.get("path", "/"), headers=headers)
        answer = conn.getresponse()
        body = answer.read()
        return {
            "status": answer.status,
            "headers": {k.lower(): v for k, v in answer.getheaders()},
            "body": body.decode(errors="replace"),
            "elapsed": time.monotonic() - start,
            "error": "",
        }
    except (OSError, http.client.HTTPException) as exc:
        return {"status": 0, "headers": {}, "body": "", "elapsed": time.monotonic() - start, "error": repr(exc)}
    finally:
        conn.close()


def main() -> int:
    json.dump([send(r) for r in json.load(sys.stdin)], sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
