"""The node's SDS service over a real gRPC Unix socket: answers, pushes on rotation, refuses what is not a secret."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import grpc
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.secret.v3 import sds_pb2_grpc

from dpumesh import sds
from dpumesh.certs import LabCA, ensure_workload_certs

TRUST_DOMAIN = "cluster.local"


def secrets_of(response) -> dict[str, secret_pb2.Secret]:
    found = {}
    for resource in response.resources:
        secret = secret_pb2.Secret()
        resource.Unpack(secret)
        found[secret.name] = secret
    return found


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 20))


def test_a_subscription_gets_the_certificate_and_then_its_rotation(tmp_path: Path):
    certs = tmp_path / "certs"
    ca = LabCA.ensure(tmp_path / "ca", TRUST_DOMAIN)
    ensure_workload_certs(certs, ca, TRUST_DOMAIN, [("shop", "web")])
    issued = {name: (certs / "spiffe~shop~web" / name).read_bytes() for name in ("cert.pem", "key.pem")}

    async def scenario():
        server = await sds.start(tmp_path / "sds.sock", certs, poll_interval=0.1)
        try:
            async with grpc.aio.insecure_channel(f"unix:{tmp_path / 'sds.sock'}") as channel:
                requests: asyncio.Queue = asyncio.Queue()

                async def outgoing():
                    while (request := await requests.get()) is not None:
                        yield request

                stream = sds_pb2_grpc.SecretDiscoveryServiceStub(channel).StreamSecrets(outgoing())
                await requests.put(
                    discovery_pb2.DiscoveryRequest(resource_names=["spiffe~shop~web"], type_url=sds.SECRET_TYPE_URL)
                )
                first = await stream.read()
                await requests.put(
                    discovery_pb2.DiscoveryRequest(
                        resource_names=["spiffe~shop~web"],
                        type_url=sds.SECRET_TYPE_URL,
                        version_info=first.version_info,
                        response_nonce=first.nonce,
                    )
                )
                # Reissue the certificate (a later "now" makes it due), as the certificate role does.
                later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=20)
                ensure_workload_certs(certs, ca, TRUST_DOMAIN, [("shop", "web")], now=later)
                pushed = await stream.read()
                await requests.put(None)
                return first, pushed
        finally:
            await server.stop(grace=0)

    first, pushed = run(scenario())
    assert first.type_url == sds.SECRET_TYPE_URL
    cert = secrets_of(first)["spiffe~shop~web"].tls_certificate
    assert cert.certificate_chain.inline_bytes == issued["cert.pem"]
    assert cert.private_key.inline_bytes == issued["key.pem"]
    assert pushed.version_info != first.version_info
    rotated = secrets_of(pushed)["spiffe~shop~web"].tls_certificate.certificate_chain.inline_bytes
    assert rotated != cert.certificate_chain.inline_bytes
    assert rotated == (certs / "spiffe~shop~web" / "cert.pem").read_bytes()


def test_unknown_and_out_of_layout_names_get_nothing(tmp_path: Path):
    certs = tmp_path / "certs"
    ensure_workload_certs(certs, LabCA.ensure(tmp_path / "ca", TRUST_DOMAIN), TRUST_DOMAIN, [("shop", "web")])
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "cert.pem").write_text("not for the proxy")

    async def scenario():
        server = await sds.start(tmp_path / "sds.sock", certs)
        try:
            async with grpc.aio.insecure_channel(f"unix:{tmp_path / 'sds.sock'}") as channel:
                names = ["spiffe~shop~nobody", "../outside", "spiffe~shop~web/../../outside", "ROOTCA"]
                request = discovery_pb2.DiscoveryRequest(resource_names=names, type_url=sds.SECRET_TYPE_URL)
                return await sds_pb2_grpc.SecretDiscoveryServiceStub(channel).FetchSecrets(request)
        finally:
            await server.stop(grace=0)

    found = secrets_of(run(scenario()))
    assert list(found) == ["ROOTCA"]
    assert found["ROOTCA"].validation_context.trusted_ca.inline_bytes == (certs / "root-cert.pem").read_bytes()


def test_the_socket_is_private_and_a_stale_one_is_replaced(tmp_path: Path):
    certs = tmp_path / "certs"
    certs.mkdir()

    async def twice():
        first = await sds.start(tmp_path / "sds.sock", certs)
        await first.stop(grace=0)
        second = await sds.start(tmp_path / "sds.sock", certs)  # the first left its socket behind
        mode = (tmp_path / "sds.sock").stat().st_mode & 0o777
        await second.stop(grace=0)
        return mode

    assert run(twice()) & 0o077 == 0
