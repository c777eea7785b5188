"""Tiny servers and clients for traffic tests, run inside network namespaces.

    probe.py serve-http IP PORT            HTTP/1.1 server; replies 200 with the request headers as JSON
    probe.py serve-echo IP PORT            TCP server; echoes what it reads
    probe.py serve-tls IP PORT CERT KEY    TLS server; sends "app-tls" after the handshake
    probe.py serve-file IP PORT FILE       HTTP/1.1 server; replies 200 with FILE's content (read per request)
    probe.py connect IP PORT [options]     client; prints one JSON line with what happened

Client options: --source IP, --cert/--key/--ca (TLS), --alpn a,b, --http PATH (--header 'NAME: VALUE'),
--send TEXT.
"""

from __future__ import annotations

import argparse
import http.server
import json
import socket
import socketserver
import ssl
import sys


class _JsonReply(http.server.BaseHTTPRequestHandler):
    """Answers every GET with 200 and the JSON body `body()` gives."""

    protocol_version = "HTTP/1.1"

    def body(self) -> bytes:
        raise NotImplementedError

    def do_GET(self) -> None:
        body = self.body()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


class _Headers(_JsonReply):
    def body(self) -> bytes:
        return json.dumps({"path": self.path, "headers": dict(self.headers)}).encode()


def _file_handler(path: str) -> type[http.server.BaseHTTPRequestHandler]:
    class _File(_JsonReply):
        def body(self) -> bytes:  # read per request: the file may change between requests
            with open(path, "rb") as f:
                return f.read()

    return _File


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(4096):
            self.request.sendall(data)


class _Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def serve(kind: str, ip: str, port: int, *files: str) -> None:
    """Serve until killed; `files`: the certificate and key (tls), the file to serve (file)."""
    if kind == "http":
        server = _Server((ip, port), _Headers)
    elif kind == "echo":
        server = _Server((ip, port), _Echo)
    elif kind == "file":
        server = _Server((ip, port), _file_handler(files[0]))
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*files)

        class _Tls(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                with context.wrap_socket(self.request, server_side=True) as tls:
                    tls.sendall(b"app-tls")

        server = _Server((ip, port), _Tls)
    print("ready", flush=True)
    server.serve_forever()


def connect(args: argparse.Namespace) -> dict:
    result: dict = {"connected": False}
    sock = socket.socket()
    sock.settimeout(5)
    if args.source:
        sock.bind((args.source, 0))
    try:
        sock.connect((args.ip, args.port))
        result["connected"] = True
        if args.cert or args.ca or args.alpn:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            if args.ca:
                context.load_verify_locations(args.ca)
            else:
                context.verify_mode = ssl.CERT_NONE
            if args.cert:
                context.load_cert_chain(args.cert, args.key)
            if args.alpn:
                context.set_alpn_protocols(args.alpn.split(","))
            sock = context.wrap_socket(sock)
            result["peer_uris"] = _uris(sock.getpeercert(binary_form=True))
        if args.http:
            extra = f"{args.header}\r\n" if args.header else ""
            sock.sendall(f"GET {args.http} HTTP/1.1\r\nhost: test\r\n{extra}connection: close\r\n\r\n".encode())
        elif args.send:
            sock.sendall(args.send.encode())
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            if args.send and not args.http and len(data) >= len(args.send):
                break
            if not args.http and not args.send:
                break
        result["data"] = data.decode(errors="replace")
        if args.http and data.startswith(b"HTTP/"):
            head, _, body = result["data"].partition("\r\n\r\n")
            result["status"] = int(head.split()[1])
            result["body"] = body
    except (OSError, ssl.SSLError) as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        sock.close()
    return result


def _uris(der: bytes | None) -> list[str]:
    """URI SANs of the peer certificate, read even when the client did not verify it."""
    from cryptography import x509

    if not der:
        return []
    try:
        sans = x509.load_der_x509_certificate(der).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return sans.value.get_values_for_type(x509.UniformResourceIdentifier)


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    for kind in ("http", "echo", "tls", "file"):
        p = sub.add_parser(f"serve-{kind}")
        p.add_argument("ip")
        p.add_argument("port", type=int)
        for name in {"tls": ("cert", "key"), "file": ("file",)}.get(kind, ()):
            p.add_argument(name)
    c = sub.add_parser("connect")
    c.add_argument("ip")
    c.add_argument("port", type=int)
    for opt in ("--source", "--cert", "--key", "--ca", "--alpn", "--http", "--header", "--send"):
        c.add_argument(opt, default="")
    args = parser.parse_args()
    if args.command == "connect":
        print(json.dumps(connect(args)))
    else:
        files = [getattr(args, name) for name in ("cert", "key", "file") if hasattr(args, name)]
        serve(args.command.removeprefix("serve-"), args.ip, args.port, *files)


if __name__ == "__main__":
    sys.exit(main())
