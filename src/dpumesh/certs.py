"""A lab certificate authority for workload identities.

Real clusters get workload certificates from the cluster's Istio CA; the node's
certificate role writes them in the same layout, which is all the proxy reads:

    <cert_dir>/root-cert.pem                      trust root (SDS secret ROOTCA)
    <cert_dir>/spiffe~<ns>~<sa>/cert.pem          workload certificate chain, URI SAN spiffe://<td>/ns/<ns>/sa/<sa>
    <cert_dir>/spiffe~<ns>~<sa>/key.pem           its private key (mode 0600)
    <cert_dir>/credentials/<ns>/<name>/tls.crt    a DestinationRule credentialName seen from namespace <ns>
    <cert_dir>/credentials/<ns>/<name>/tls.key    (SDS secret kubernetes~<ns>~<name>), and its CA, ca.crt
                                                  (secret kubernetes~<ns>~<name>-cacert)

The node's SDS service (`dpumesh.sds`) serves these files to the proxy by secret name.

Every file is replaced atomically (key before certificate, so Envoy, which reloads on
each move, never keeps a certificate without its key). Certificates are reissued only
when missing, not issued by the current root, for another identity, or past two
thirds of their lifetime.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from dpumesh.compiler.context import secret_name
from dpumesh.errors import DpumeshError

ROOT_CERT = "root-cert.pem"
CREDENTIALS_DIR = "credentials"
CA_CERT = "ca-cert.pem"
CA_KEY = "ca-key.pem"
ROOT_LIFETIME = dt.timedelta(days=3650)
WORKLOAD_LIFETIME = dt.timedelta(hours=24)
CLOCK_SKEW = dt.timedelta(minutes=5)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> bool:
    """Replace `path` with `data` in one rename; False (and no write) when it already holds `data`."""
    if path.is_file() and path.read_bytes() == data and (path.stat().st_mode & 0o777) == mode:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _fresh(cert: x509.Certificate, now: dt.datetime) -> bool:
    """Valid now with more than a third of its lifetime left."""
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    return start <= now + CLOCK_SKEW and end - now > (end - start) / 3


@dataclass
class LabCA:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def ensure(cls, ca_dir: str | Path, trust_domain: str, now: dt.datetime | None = None) -> LabCA:
        """The CA kept in `ca_dir`, created (or replaced when it is due for rotation) if needed."""
        now = now or _now()
        directory = Path(ca_dir)
        cert_path, key_path = directory / CA_CERT, directory / CA_KEY
        if cert_path.is_file() and key_path.is_file():
            try:
                cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
                key = serialization.load_pem_private_key(key_path.read_bytes(), None)
            except ValueError as exc:
                raise DpumeshError(f"lab CA in {directory} is unreadable: {exc}") from exc
            if isinstance(key, ec.EllipticCurvePrivateKey) and _matches(cert, key) and _fresh(cert, now):
                return cls(cert, key)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, trust_domain)])
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(now + ROOT_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_key_usage(cert_sign=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        write_atomic(key_path, _key_pem(key), 0o600)
        write_atomic(cert_path, _cert_pem(cert))
        return cls(cert, key)

    def issued(self, cert: x509.Certificate) -> bool:
        try:
            cert.verify_directly_issued_by(self.cert)
        except (ValueError, TypeError, InvalidSignature):
            return False
        return True

    def issue(
        self, spiffe_id: str, now: dt.datetime | None = None, lifetime: dt.timedelta = WORKLOAD_LIFETIME
    ) -> tuple[bytes, bytes]:
        """(certificate PEM, key PEM) for a workload: empty subject, critical URI SAN, client+server use."""
        now = now or _now()
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(now + lifetime)
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]), critical=True)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(cert_sign=False), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.cert.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        return _cert_pem(cert), _key_pem(key)


def _key_usage(cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=not cert_sign,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _matches(cert: x509.Certificate, key: object) -> bool:
    public = getattr(key, "public_key", None)
    if public is None:
        return False
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return public().public_bytes(*fmt) == cert.public_key().public_bytes(*fmt)


def _current(ca: LabCA, spiffe_id: str, cert_path: Path, key_path: Path, now: dt.datetime) -> bool:
    """Whether the files at cert_path/key_path are a usable certificate for `spiffe_id`."""
    if not (cert_path.is_file() and key_path.is_file()):
        return False
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), None)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return False
    uris = sans.get_values_for_type(x509.UniformResourceIdentifier)
    return uris == [spiffe_id] and ca.issued(cert) and _matches(cert, key) and _fresh(cert, now)


def ensure_workload_certs(
    cert_dir: str | Path,
    ca: LabCA,
    trust_domain: str,
    identities: list[tuple[str, str]],
    now: dt.datetime | None = None,
    lifetime: dt.timedelta = WORKLOAD_LIFETIME,
) -> list[str]:
    """Write the root and a certificate per (namespace, service account); returns the files changed."""
    now = now or _now()
    directory = Path(cert_dir)
    changed = []
    if write_atomic(directory / ROOT_CERT, _cert_pem(ca.cert)):
        changed.append(str(directory / ROOT_CERT))
    for namespace, service_account in sorted(set(identities)):
        spiffe_id = f"spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"
        secret_dir = directory / secret_name(namespace, service_account)
        cert_path, key_path = secret_dir / "cert.pem", secret_dir / "key.pem"
        if _current(ca, spiffe_id, cert_path, key_path, now):
            if (key_path.stat().st_mode & 0o777) != 0o600:
                key_path.chmod(0o600)
                changed.append(str(key_path))
            continue
        cert_pem, key_pem = ca.issue(spiffe_id, now, lifetime)
        write_atomic(key_path, key_pem, 0o600)
        write_atomic(cert_path, cert_pem)
        changed += [str(key_path), str(cert_path)]
    return changed
