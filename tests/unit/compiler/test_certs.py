"""The lab CA: workload certificates in the proxy's layout, idempotent, rotated in time."""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

from cryptography import x509

from dpumesh.certs import WORKLOAD_LIFETIME, LabCA, ensure_workload_certs

TD = "cluster.local"
IDENTITIES = [("shop", "web"), ("shop", "db")]


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_issues_one_certificate_per_identity(tmp_path: Path):
    ca = LabCA.ensure(tmp_path / "ca", TD)
    changed = ensure_workload_certs(tmp_path / "certs", ca, TD, IDENTITIES)
    certs = tmp_path / "certs"
    assert sorted(snapshot(certs)) == [
        "root-cert.pem",
        "spiffe~shop~db/cert.pem",
        "spiffe~shop~db/key.pem",
        "spiffe~shop~web/cert.pem",
        "spiffe~shop~web/key.pem",
    ]
    assert len(changed) == 5
    cert = x509.load_pem_x509_certificate((certs / "spiffe~shop~web/cert.pem").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical
    assert san.value.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://cluster.local/ns/shop/sa/web"]
    assert (certs / "spiffe~shop~web/key.pem").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "ca" / "ca-key.pem").stat().st_mode & 0o777 == 0o600
    # the real openssl accepts the chain for both TLS roles
    for purpose in ("sslclient", "sslserver"):
        result = subprocess.run(
            [
                "openssl",
                "verify",
                "-purpose",
                purpose,
                "-CAfile",
                str(certs / "root-cert.pem"),
                str(certs / "spiffe~shop~web/cert.pem"),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr


def test_second_run_changes_nothing(tmp_path: Path):
    ca = LabCA.ensure(tmp_path / "ca", TD)
    ensure_workload_certs(tmp_path / "certs", ca, TD, IDENTITIES)
    before = snapshot(tmp_path)
    again = LabCA.ensure(tmp_path / "ca", TD)
    assert ensure_workload_certs(tmp_path / "certs", again, TD, IDENTITIES) == []
    assert snapshot(tmp_path) == before
    assert not [p for p in tmp_path.rglob(".*") if p.is_file()], "no temporary files left behind"


def test_rotates_when_less_than_a_third_of_the_lifetime_is_left(tmp_path: Path):
    ca = LabCA.ensure(tmp_path / "ca", TD)
    now = dt.datetime.now(dt.UTC)
    ensure_workload_certs(tmp_path / "certs", ca, TD, IDENTITIES, now=now)
    two_thirds = now + WORKLOAD_LIFETIME * 2 / 3
    assert (
        ensure_workload_certs(tmp_path / "certs", ca, TD, IDENTITIES, now=two_thirds - dt.timedelta(minutes=10)) == []
    )
    changed = ensure_workload_certs(tmp_path / "certs", ca, TD, IDENTITIES, now=two_thirds + dt.timedelta(minutes=10))
    assert sorted(Path(p).name for p in changed) == ["cert.pem", "cert.pem", "key.pem", "key.pem"]


def test_reissues_certificates_of_another_ca_or_identity(tmp_path: Path):
    ca = LabCA.ensure(tmp_path / "ca", TD)
    ensure_workload_certs(tmp_path / "certs", ca, TD, IDENTITIES)
    web = tmp_path / "certs" / "spiffe~shop~web"
    (web / "cert.pem").write_bytes((tmp_path / "certs" / "spiffe~shop~db" / "cert.pem").read_bytes())
    assert ensure_workload_certs(tmp_path / "certs", ca, TD, IDENTITIES) == [
        str(web / "key.pem"),
        str(web / "cert.pem"),
    ]
    other = LabCA.ensure(tmp_path / "other-ca", TD)
    assert len(ensure_workload_certs(tmp_path / "certs", other, TD, IDENTITIES)) == 5  # root + 2 x (key, cert)


def test_ca_is_kept_and_replaced_only_near_expiry(tmp_path: Path):
    first = LabCA.ensure(tmp_path / "ca", TD)
    assert LabCA.ensure(tmp_path / "ca", TD).cert == first.cert
    late = first.cert.not_valid_after_utc - dt.timedelta(days=30)
    assert LabCA.ensure(tmp_path / "ca", TD, now=late).cert != first.cert


def test_key_mode_is_restored(tmp_path: Path):
    ca = LabCA.ensure(tmp_path / "ca", TD)
    ensure_workload_certs(tmp_path / "certs", ca, TD, IDENTITIES)
    key = tmp_path / "certs" / "spiffe~shop~web" / "key.pem"
    key.chmod(0o644)
    assert ensure_workload_certs(tmp_path / "certs", ca, TD, IDENTITIES) == [str(key)]
    assert key.stat().st_mode & 0o777 == 0o600
