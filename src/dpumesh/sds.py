"""The node's SDS service: workload certificates by secret name, over gRPC on a Unix socket.

dpu-proxy fetches the client certificate of each outbound Istio mTLS connection from
here, by the secret name its class chain gave the connection (`spiffe~<ns>~<sa>`, see
`dpumesh.compiler.tls`). Secrets are read from the certificate layout of
`dpumesh.certs` (the lab CA or the cluster's Istio CA writes it) and sent inline, so
Envoy needs no file watch per identity. A changed certificate is pushed to the proxy
within one poll interval; an unknown name gets an empty answer, and a handshake
waiting for it fails at the cluster's connect timeout rather than borrowing another
identity.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.secret.v3 import sds_pb2_grpc
from google.protobuf import any_pb2

from dpumesh.certs import CREDENTIALS_DIR, ROOT_CERT
from dpumesh.compiler.context import ROOT_CA_SECRET
from dpumesh.compiler.tls import CREDENTIAL_PREFIX
from dpumesh.errors import DpumeshError

SECRET_TYPE_URL = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
_NAME = r"[a-z0-9]([-.a-z0-9]*[a-z0-9])?"  # Kubernetes object names: no "/" and no ".." can get through
WORKLOAD_SECRET = re.compile(rf"spiffe~{_NAME}~{_NAME}")
CREDENTIAL_SECRET = re.compile(rf"{CREDENTIAL_PREFIX}(?P<ns>{_NAME})~(?P<name>{_NAME})")
CA_SUFFIX = "-cacert"  # Istio's name for the CA of a credential
log = logging.getLogger("dpumesh.sds")


@dataclass(frozen=True)
class SecretStore:
    """Secrets as files under `cert_dir`, in the layout of `dpumesh.certs`."""

    cert_dir: Path

    def files(self, name: str) -> list[Path]:
        """The files secret `name` is made of; none for a name outside the layout (no path tricks).

        A certificate is [chain, key]; a validation context is [trusted CA].
        """
        if name == ROOT_CA_SECRET:
            return [self.cert_dir / ROOT_CERT]
        if WORKLOAD_SECRET.fullmatch(name):
            return [self.cert_dir / name / "cert.pem", self.cert_dir / name / "key.pem"]
        credential = CREDENTIAL_SECRET.fullmatch(name.removesuffix(CA_SUFFIX))
        if credential:
            directory = self.cert_dir / CREDENTIALS_DIR / credential["ns"] / credential["name"]
            return (
                [directory / "ca.crt"] if name.endswith(CA_SUFFIX) else [directory / "tls.crt", directory / "tls.key"]
            )
        return []

    def fingerprint(self, name: str) -> tuple:
        """Changes whenever a file of the secret is replaced (the layout is written by rename)."""
        marks = []
        for path in self.files(name):
            try:
                st = path.stat()
            except OSError:
                return ()
            marks.append((st.st_ino, st.st_mtime_ns, st.st_size))
        return tuple(marks)

    def load(self, name: str) -> secret_pb2.Secret | None:
        files = self.files(name)
        try:
            data = [path.read_bytes() for path in files]
        except OSError:
            return None
        if not data:
            return None
        secret = secret_pb2.Secret(name=name)
        if len(data) == 1:
            secret.validation_context.trusted_ca.inline_bytes = data[0]
        else:
            secret.tls_certificate.certificate_chain.inline_bytes = data[0]
            secret.tls_certificate.private_key.inline_bytes = data[1]
        return secret


class SecretDiscovery(sds_pb2_grpc.SecretDiscoveryServiceServicer):
    """State-of-the-world SDS: answer each subscription, then push when its files change."""

    def __init__(self, store: SecretStore, poll_interval: float = 1.0):
        self.store = store
        self.poll_interval = poll_interval

    def _response(self, names: list[str], version: str, nonce: str) -> discovery_pb2.DiscoveryResponse:
        resources = []
        for name in names:
            secret = self.store.load(name)
            if secret is None:
                log.warning("secret %r is not in %s", name, self.store.cert_dir)
                continue
            packed = any_pb2.Any()
            packed.Pack(secret)
            resources.append(packed)
        return discovery_pb2.DiscoveryResponse(
            version_info=version, resources=resources, type_url=SECRET_TYPE_URL, nonce=nonce
        )

    async def StreamSecrets(self, request_iterator, context) -> AsyncIterator[discovery_pb2.DiscoveryResponse]:
        requests: asyncio.Queue = asyncio.Queue()

        async def read() -> None:
            async for request in request_iterator:
                await requests.put(request)
            await requests.put(None)

        reader = asyncio.ensure_future(read())
        names: list[str] = []
        sent: dict[str, tuple] = {}
        count = 0
        try:
            while True:
                try:
                    request = await asyncio.wait_for(requests.get(), self.poll_interval)
                except TimeoutError:
                    request = False  # poll: has a subscribed secret changed on disk?
                if request is None:
                    return
                if request:
                    if request.error_detail.message:
                        log.warning("proxy refused secrets %s: %s", list(names), request.error_detail.message)
                    if request.response_nonce and list(request.resource_names) == names:
                        continue  # the proxy's acknowledgement of what it has
                    names = list(request.resource_names)
                current = {name: self.store.fingerprint(name) for name in names}
                if request or current != sent:
                    count += 1
                    sent = current
                    yield self._response(names, version=str(count), nonce=str(count))
        finally:
            reader.cancel()

    async def FetchSecrets(self, request, context) -> discovery_pb2.DiscoveryResponse:
        return self._response(list(request.resource_names), version="0", nonce="0")


async def start(socket_path: str | Path, cert_dir: str | Path, poll_interval: float = 1.0) -> grpc.aio.Server:
    """A started server. The socket is replaced if a previous run left it behind."""
    socket_path = Path(socket_path)
    if not Path(cert_dir).is_dir():
        raise DpumeshError(f"sds: certificate directory {cert_dir} does not exist")
    socket_path.parent.mkdir(parents=True, exist_ok=True)
    if socket_path.is_socket():
        socket_path.unlink()
    elif socket_path.exists():
        raise DpumeshError(f"sds: {socket_path} exists and is not a socket")
    server = grpc.aio.server()
    sds_pb2_grpc.add_SecretDiscoveryServiceServicer_to_server(
        SecretDiscovery(SecretStore(Path(cert_dir)), poll_interval), server
    )
    server.add_insecure_port(f"unix:{socket_path}")
    await server.start()
    os.chmod(socket_path, 0o600)  # only the proxy's user may ask for private keys
    return server


async def serve(socket_path: str | Path, cert_dir: str | Path, poll_interval: float = 1.0) -> None:
    """Serve until SIGTERM/SIGINT, then remove the socket."""
    server = await start(socket_path, cert_dir, poll_interval)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    log.info("serving secrets from %s on %s", cert_dir, socket_path)
    await stop.wait()
    await server.stop(grace=1)
    Path(socket_path).unlink(missing_ok=True)


def run(socket_path: str, cert_dir: str, poll_interval: float = 1.0) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s dpumesh-sds %(levelname)s %(message)s")
    asyncio.run(serve(socket_path, cert_dir, poll_interval))
    return 0
