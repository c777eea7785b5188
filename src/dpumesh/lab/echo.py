"""The lab's built-in workload (stdlib only): one process per pod, serving every declared port.

HTTP ports answer any request with JSON describing the pod and the request;
with upstream URLs configured (annotation lab.dpumesh.io/upstream) each request
also calls them, forwarding end-user and x-request-id, and includes their
answers.  TCP ports echo each received line back prefixed with the version.
Every request is logged to stdout as one JSON line.

Run as `python -m dpumesh.lab.echo CONFIG.json`.
"""

from __future__ import annotations

import json
import socketserver
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

FORWARDED_HEADERS = ("end-user", "x-request-id", "traceparent", "x-b3-traceid", "x-b3-spanid", "x-b3-sampled")
UPSTREAM_TIMEOUT = 5.0
_log_lock = threading.Lock()


def log(record: dict[str, Any]) -> None:
    with _log_lock:
        print(json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **record}), flush=True)


def call_upstream(url: str, headers: dict[str, str]) -> dict[str, Any]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=UPSTREAM_TIMEOUT) as answer:
            status, raw = answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        return {"url": url, "status": 0, "error": str(getattr(exc, "reason", exc))}
    try:
        body: Any = json.loads(raw)
    except ValueError:
        body = raw.decode(errors="replace")
    return {"url": url, "status": status, "body": body}


def make_http_handler(identity: dict[str, str], upstreams: list[str]) -> type[BaseHTTPRequestHandler]:
    class EchoHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in two writes: with Nagle on, a reused connection waits a delayed ACK (~40 ms).
        disable_nagle_algorithm = True

        def handle_any(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            if length:
                self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            answer: dict[str, Any] = {
                **identity,
                "method": self.command,
                "path": self.path,
                "headers": headers,
                "source": f"{self.client_address[0]}:{self.client_address[1]}",
            }
            if upstreams:
                forwarded = {h: headers[h] for h in FORWARDED_HEADERS if h in headers}
                answer["upstreams"] = [call_upstream(url, forwarded) for url in upstreams]
            body = json.dumps(answer, indent=1).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
            log(
                {
                    "kind": "http",
                    "port": self.server.server_address[1],
                    "method": self.command,
                    "path": self.path,
                    "source": answer["source"],
                    "x-request-id": headers.get("x-request-id", ""),
                    "status": 200,
                }
            )

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = handle_any

        def log_message(self, format: str, *args: Any) -> None:
            pass  # every request is logged once, as JSON, by handle_any

    return EchoHandler


def make_tcp_handler(version: str) -> type[socketserver.StreamRequestHandler]:
    class LineEchoHandler(socketserver.StreamRequestHandler):
        disable_nagle_algorithm = True

        def handle(self) -> None:
            source = f"{self.client_address[0]}:{self.client_address[1]}"
            for line in self.rfile:
                self.wfile.write(f"{version} ".encode() + line)
                self.wfile.flush()
                log({"kind": "tcp", "port": self.server.server_address[1], "source": source, "bytes": len(line)})

    return LineEchoHandler


class _TcpServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def serve(config: dict[str, Any]) -> None:
    identity = {k: config[k] for k in ("pod", "namespace", "node", "version")}
    servers: list[socketserver.BaseServer] = []
    for port in config.get("http_ports", []):
        servers.append(_HttpServer(("0.0.0.0", port), make_http_handler(identity, config.get("upstreams", []))))
    for port in config.get("tcp_ports", []):
        servers.append(_TcpServer(("0.0.0.0", port), make_tcp_handler(config["version"])))
    if not servers:
        log({"kind": "start", "message": "no ports declared; idling"})
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    log({"kind": "start", "http_ports": config.get("http_ports", []), "tcp_ports": config.get("tcp_ports", [])})
    threading.Event().wait()


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m dpumesh.lab.echo CONFIG.json", file=sys.stderr)
        return 2
    with open(argv[0]) as handle:
        serve(json.load(handle))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
