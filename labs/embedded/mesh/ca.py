"""The mesh CA: a self-signed root, and short-lived SPIFFE workload certificates for sidecars.

`CertIssuer` is the part every mesh shares (sign a leaf for one identity, write a proxy's SDS
files); `MeshCA` plays istiod's CA role on it, Linkerd's identity issuer (mesh/linkerd/identity.py)
another. Each meshed pod's Envoy reads its certificate and the root through
file-based SDS; rewriting those files (atomically) rotates the certificate without a restart and
without dropping connections. Leaf certificates look like Istio's: an empty subject, the
identity only in a URI SAN `spiffe://cluster.local/ns/<ns>/sa/<sa>` (marked critical, as X.509
requires when the subject is empty), usable for both TLS client and server.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from labs.embedded.paths import write_private

from .kube_state import TRUST_DOMAIN, spiffe_id
from .proxyfiles import ProxyFiles
from .tls import CERT_SECRET, ROOT_SECRET, pem_source

Obj = dict[str, Any]
ROOT_LIFETIME = dt.timedelta(days=3650)
ROOT_CERT_FILE = "root-cert.pem"
ROOT_KEY_FILE = "root-key.pem"
ROOT_CONFIGMAP = "istio-ca-root-cert"
TTL_ENV = "MESHLAB_CERT_TTL"
DEFAULT_TTL = dt.timedelta(hours=24)
MIN_TTL = dt.timedelta(seconds=1)
SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


class MeshCAError(RuntimeError):
    """The CA's files are unusable, or a certificate setting is invalid."""


@dataclass(frozen=True)
class WorkloadCert:
    """One issued workload certificate with its private key (PEM) and validity."""

    cert_pem: str  # the leaf, then the issuer's certificate when that is not the trust root
    key_pem: str
    not_before: dt.datetime
    not_after: dt.datetime
    identity: str  # the SAN: Istio's SPIFFE URI, Linkerd's DNS name

    @property
    def serial_number(self) -> int:
        return x509.load_pem_x509_certificate(self.cert_pem.encode()).serial_number


def parse_ttl(text: str, source: str = TTL_ENV) -> dt.timedelta:
    """A duration like Go's (what Istio's DEFAULT_WORKLOAD_CERT_TTL takes): `24h`, `90s`,
    `10m`, `1h30m`; `d` for days is accepted too."""
    value = text.strip()
    pos, seconds = 0, 0.0
    for match in _DURATION.finditer(value):
        if match.start() != pos:
            break
        seconds += float(match[1]) * _UNITS[match[2]]
        pos = match.end()
    if not value or pos != len(value):
        raise MeshCAError(
            f"{source}={text!r} is not a duration: write a number with a unit (s, m, h, d), "
            "e.g. 24h, 90s, 10m or 1h30m")
    ttl = dt.timedelta(seconds=seconds)
    if ttl < MIN_TTL:
        raise MeshCAError(f"{source}={text!r} is too short: a certificate must live at least "
                          f"{MIN_TTL.total_seconds():g}s (it is rotated at half its life)")
    return ttl


def default_ttl() -> dt.timedelta:
    """The workload certificate lifetime: $MESHLAB_CERT_TTL, else 24h (Istio's default)."""
    raw = os.environ.get(TTL_ENV)
    return DEFAULT_TTL if raw is None or not raw.strip() else parse_ttl(raw)


def needs_rotation(cert: WorkloadCert, now: dt.datetime) -> bool:
    """True from half the certificate's life on (when Istio's agent renews it too)."""
    return now >= cert.not_before + (cert.not_after - cert.not_before) / 2


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def key_usage(*, digital_signature: bool = False, key_encipherment: bool = False,
               cert_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=digital_signature, key_encipherment=key_encipherment,
                         key_cert_sign=cert_sign, crl_sign=cert_sign, content_commitment=False,
                         data_encipherment=False, key_agreement=False, encipher_only=False,
                         decipher_only=False)


def _sds(secret: Obj) -> str:
    """An SDS file: a discovery response with one Secret (JSON is valid YAML)."""
    return json.dumps({"resources": [{"@type": SECRET_TYPE, **secret}]}, indent=1) + "\n"


class CertIssuer:
    """A signing key and certificate that issue workload certificates, and the trust root(s)
    peers verify them with (the signer itself, or the root above an intermediate issuer)."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, signer: x509.Certificate,
                 root_pem: str) -> None:
        self._key = key
        self._signer = signer
        self.root_pem = root_pem
        signer_pem = cert_pem(signer)
        # An intermediate issuer travels with each leaf, so peers can reach the root
        self._chain_pem = "" if signer_pem.strip() in root_pem else signer_pem

    def issue_leaf(self, san: x509.GeneralName, subject: x509.Name,
                   ttl: dt.timedelta | None = None) -> WorkloadCert:
        """A fresh P-256 key and certificate for one identity (`san`), usable as TLS client
        and server, valid from now for `ttl` (default: `default_ttl()`)."""
        ttl = default_ttl() if ttl is None else ttl
        if ttl < MIN_TTL:
            raise MeshCAError(f"a certificate TTL of {ttl} is too short: use at least {MIN_TTL}")
        key = ec.generate_private_key(ec.SECP256R1())
        not_before = _now()
        not_after = not_before + ttl
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject).issuer_name(self._signer.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before).not_valid_after(not_after)
            # X.509 requires the SAN to be critical when the subject is empty
            .add_extension(x509.SubjectAlternativeName([san]), critical=not subject)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(key_usage(digital_signature=True, key_encipherment=True),
                           critical=True)
            .add_extension(x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        return WorkloadCert(cert_pem(cert) + self._chain_pem, key_pem(key), not_before, not_after,
                            str(san.value))

    def write_sds(self, files: ProxyFiles, cert: WorkloadCert, roots_pem: str | None = None
                  ) -> None:
        """Write the proxy's SDS files: its certificate (secret `default`) and the trust root(s)
        it verifies peers with (secret `ROOTCA`: `roots_pem`, else this issuer's). Each is
        replaced atomically, so Envoy swaps the secret in place; the root file is left alone
        when unchanged (an identical rewrite still reloads)."""
        write_private(files.cert_sds, _sds({
            "name": CERT_SECRET,
            "tls_certificate": {"certificate_chain": pem_source(cert.cert_pem),
                                "private_key": pem_source(cert.key_pem)},
        }))
        root = _sds({"name": ROOT_SECRET,
                     "validation_context": {"trusted_ca": pem_source(roots_pem or self.root_pem)}})
        try:
            unchanged = files.root_sds.read_text() == root
        except OSError:
            unchanged = False
        if not unchanged:
            write_private(files.root_sds, root)


class MeshCA(CertIssuer):
    """Istio's CA: a self-signed root key and certificate that sign SPIFFE workload
    certificates."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, root: x509.Certificate) -> None:
        super().__init__(key, root, cert_pem(root))

    @classmethod
    def load_or_create(cls, directory: Path) -> MeshCA:
        """Reuse the root kept in `directory` (so certificates survive a daemon restart), or
        create one there (files readable by their owner only)."""
        cert_path, key_path = directory / ROOT_CERT_FILE, directory / ROOT_KEY_FILE
        if not cert_path.exists() and not key_path.exists():
            return cls._create(directory)
        try:
            root = x509.load_pem_x509_certificate(cert_path.read_bytes())
            key = serialization.load_pem_private_key(key_path.read_bytes(), None)
        except (OSError, ValueError) as exc:
            raise MeshCAError(
                f"the mesh CA in {directory} cannot be read ({exc}): delete {cert_path.name} "
                f"and {key_path.name} there to create a new root (running meshed pods then need "
                "a restart)") from None
        problem = cls._check(key, root)
        if problem:
            raise MeshCAError(f"the mesh CA in {directory} is unusable: {problem}; delete "
                              f"{cert_path.name} and {key_path.name} there to create a new root")
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return cls(key, root)

    @staticmethod
    def _check(key: object, root: x509.Certificate) -> str | None:
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            return f"{ROOT_KEY_FILE} is not an EC private key"
        if key.public_key() != root.public_key():
            return f"{ROOT_KEY_FILE} does not belong to {ROOT_CERT_FILE}"
        if root.not_valid_after_utc <= _now() + dt.timedelta(days=1):
            return f"the root certificate expires on {root.not_valid_after_utc:%Y-%m-%d}"
        try:
            root.verify_directly_issued_by(root)
        except (ValueError, TypeError, InvalidSignature):
            return f"{ROOT_CERT_FILE} is not a self-signed root"
        return None

    @classmethod
    def _create(cls, directory: Path) -> MeshCA:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, TRUST_DOMAIN),
                          x509.NameAttribute(NameOID.COMMON_NAME, "meshlab mesh root")])
        now = _now()
        root = (
            x509.CertificateBuilder()
            .subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + ROOT_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(key_usage(digital_signature=True, cert_sign=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256())
        )
        write_private(directory / ROOT_KEY_FILE, key_pem(key))
        write_private(directory / ROOT_CERT_FILE, cert_pem(root))
        return cls(key, root)

    def issue(self, namespace: str, service_account: str,
              ttl: dt.timedelta | None = None) -> WorkloadCert:
        """A fresh key and certificate for the identity of `service_account` in `namespace`,
        valid from now for `ttl` (default: `default_ttl()`): an empty subject, the SPIFFE ID
        as the only (URI) SAN."""
        return self.issue_leaf(x509.UniformResourceIdentifier(
            spiffe_id(namespace, service_account)), x509.Name([]), ttl)

    def root_configmap(self, namespace: str) -> Obj:
        """The `istio-ca-root-cert` ConfigMap istiod publishes in every namespace."""
        return {
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": ROOT_CONFIGMAP, "namespace": namespace,
                         "labels": {"istio.io/config": "true"}},
            "data": {"root-cert.pem": self.root_pem},
        }
