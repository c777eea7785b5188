"""The lab echo workload with two misbehaviours the behaviour tests need.

- `/fail/<n>/<token>`: the first n requests for a token answer 503, later ones are echoed.
- `/sleep/<seconds>/<token>`: echoed after sleeping that long (logged as it arrives, kind "sleep").

Everything else is `dpumesh.lab.echo` unchanged, including its JSON log of
each request on stdout.  Run as `python echo_server.py CONFIG.json` (the lab
echo's config: pod, namespace, node, version, http_ports).
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from http.server import ThreadingHTTPServer
from typing import Any

from dpumesh.lab.echo import log, make_http_handler

FAIL = re.compile(r"^/fail/(\d+)/([\w.-]+)$")
SLEEP = re.compile(r"^/sleep/([\d.]+)/([\w.-]+)$")


def make_handler(identity: dict[str, str]) -> type:
    echo = make_http_handler(identity, [])
    failures: dict[str, int] = {}
    lock = threading.Lock()

    class MisbehavingEcho(echo):
        def handle_any(self) -> None:
            fail = FAIL.match(self.path)
            if fail:
                with lock:
                    seen = failures.get(fail.group(2), 0)
                    failures[fail.group(2)] = seen + 1
                if seen < int(fail.group(1)):
                    self.refuse()
                    return
            sleep = SLEEP.match(self.path)
            if sleep:
                log({"kind": "sleep", "path": self.path})  # the echo is logged only once answered
                time.sleep(float(sleep.group(1)))
            echo.handle_any(self)

        def refuse(self) -> None:
            body = b"failing on purpose\n"
            self.send_response(503)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            source = f"{self.client_address[0]}:{self.client_address[1]}"
            log({"kind": "http", "method": self.command, "path": self.path, "source": source, "status": 503})

        do_GET = do_POST = do_HEAD = handle_any

    return MisbehavingEcho


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main(argv: list[str]) -> int:
    with open(argv[0]) as handle:
        config: dict[str, Any] = json.load(handle)
    identity = {k: config[k] for k in ("pod", "namespace", "node", "version")}
    ports = config.get("http_ports", [])
    for port in ports:
        server = _Server(("0.0.0.0", port), make_handler(identity))
        threading.Thread(target=server.serve_forever, daemon=True).start()
    log({"kind": "start", "http_ports": ports})
    threading.Event().wait()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
