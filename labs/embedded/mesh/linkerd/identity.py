"""Linkerd's identity: the trust anchor and issuer `linkerd install` sets up, and the 24 h leaf
certificates linkerd-identity issues to each proxy.

Objects, as the control-plane chart writes them (linkerd/linkerd2
`charts/linkerd-control-plane/templates/identity.yaml`, default issuer scheme `linkerd.io/tls`):
ConfigMap `linkerd/linkerd-identity-trust-roots` key `ca-bundle.crt` (the trust anchor PEM) and
Secret `linkerd/linkerd-identity-issuer` keys `crt.pem`/`key.pem` (the chart gives it no `type`,
so it is `Opaque`). The certificates follow the docs' "Generating your own mTLS root
certificates" (linkerd/website `2-edge/tasks/generate-certificates.md`): an ECDSA P-256 trust
anchor `root.linkerd.cluster.local` signing the issuer `identity.linkerd.cluster.local`, both for
365 days. (`linkerd install` without certificates makes a single self-signed
`identity.linkerd.cluster.local` serve as both, linkerd2 `cli/cmd/options.go`; the two-tier chain
is what production installs and the course's contract use.)

Leaves follow linkerd2 `pkg/tls/ca.go` `GenerateEndEntityCred`: subject CN and the only DNS SAN
are the identity name `<sa>.<ns>.serviceaccount.identity.linkerd.cluster.local`, key usage
digital signature + key encipherment, server and client auth, issued for
`identity.issuer.issuanceLifetime` (24h; `MESHLAB_CERT_TTL` shortens it as for Istio). The
emulation does not widen the window by the issuer's 20 s `clockSkewAllowance`, and the control
plane signs the key itself instead of answering the proxy's CSR (no token review).
"""

from __future__ import annotations

import base64
import datetime as dt
import warnings
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from labs.versions import version

from ..ca import CertIssuer, MeshCAError, WorkloadCert, cert_pem, key_pem, key_usage
from ..kube_state import TRUST_DOMAIN, service_account

Obj = dict[str, Any]

NAMESPACE = "linkerd"  # the control plane's namespace, part of every identity name
TRUST_ROOTS_CONFIGMAP = "linkerd-identity-trust-roots"
TRUST_ROOTS_KEY = "ca-bundle.crt"
ISSUER_SECRET = "linkerd-identity-issuer"
ISSUER_CERT_KEY, ISSUER_KEY_KEY = "crt.pem", "key.pem"
TRUST_ANCHOR_CN = f"root.{NAMESPACE}.{TRUST_DOMAIN}"
ISSUER_CN = f"identity.{NAMESPACE}.{TRUST_DOMAIN}"
CA_LIFETIME = dt.timedelta(days=365)


class IdentityError(RuntimeError):
    """The identity objects are missing or unusable; the message says how to repair them."""


def identity_name(namespace: str, service_account_name: str) -> str:
    """A proxy's identity, as linkerd2 `charts/partials/templates/_proxy.tpl` sets
    LINKERD2_PROXY_IDENTITY_LOCAL_NAME and the destination controller names servers."""
    return (f"{service_account_name}.{namespace}.serviceaccount.identity."
            f"{NAMESPACE}.{TRUST_DOMAIN}")


def pod_identity_name(pod: Obj) -> str:
    return identity_name(pod["metadata"].get("namespace", ""), service_account(pod))


def _ca_cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name,
             signer: ec.EllipticCurvePrivateKey, path_length: int | None) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(signer, hashes.SHA256())
    )


def generate_credentials() -> tuple[str, str, str]:
    """A fresh trust anchor and issuer: (trust anchor PEM, issuer cert PEM, issuer key PEM).
    The trust anchor's key is not kept, as after `step certificate create --profile root-ca`
    an operator keeps it offline."""
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = _ca_cert(TRUST_ANCHOR_CN, root_key,
                    x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, TRUST_ANCHOR_CN)]),
                    root_key, 1)
    issuer_key = ec.generate_private_key(ec.SECP256R1())
    issuer = _ca_cert(ISSUER_CN, issuer_key, root.subject, root_key, 0)
    return cert_pem(root), cert_pem(issuer), key_pem(issuer_key)


def _metadata(name: str) -> Obj:
    return {"name": name, "namespace": NAMESPACE,
            "labels": {"linkerd.io/control-plane-component": "identity",
                       "linkerd.io/control-plane-ns": NAMESPACE},
            "annotations": {"linkerd.io/created-by": f"linkerd/cli {version('LINKERD_VERSION')}"}}


def identity_objects(anchor: str, issuer_crt: str, issuer_key: str) -> list[Obj]:
    """The trust-roots ConfigMap and issuer Secret as `linkerd install` renders them."""
    return [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _metadata(TRUST_ROOTS_CONFIGMAP),
         "data": {TRUST_ROOTS_KEY: anchor}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": _metadata(ISSUER_SECRET),
         "data": {ISSUER_CERT_KEY: base64.b64encode(issuer_crt.encode()).decode(),
                  ISSUER_KEY_KEY: base64.b64encode(issuer_key.encode()).decode()}}]


class LinkerdIssuer(CertIssuer):
    """linkerd-identity's signer: the issuer key and certificate from the Secret, the trust
    anchors from the ConfigMap."""

    @classmethod
    def from_objects(cls, trust_roots: Obj | None, issuer: Obj | None) -> LinkerdIssuer:
        """Read the ConfigMap and Secret (None when missing); IdentityError says what to fix."""
        where = f"{NAMESPACE}/{ISSUER_SECRET}"
        if trust_roots is None or issuer is None:
            missing = TRUST_ROOTS_CONFIGMAP if trust_roots is None else ISSUER_SECRET
            raise IdentityError(f"ConfigMap/Secret {NAMESPACE}/{missing} is missing: Linkerd's "
                                "control plane is not installed (`linkerd install --crds | "
                                "kubectl apply -f -`, then `linkerd install | kubectl apply "
                                "-f -`)")
        bundle = str((trust_roots.get("data") or {}).get(TRUST_ROOTS_KEY) or "")
        data = issuer.get("data") or {}
        try:
            crt = x509.load_pem_x509_certificate(base64.b64decode(data[ISSUER_CERT_KEY]))
            key = serialization.load_pem_private_key(base64.b64decode(data[ISSUER_KEY_KEY]),
                                                     None)
            anchors = x509.load_pem_x509_certificates(bundle.encode())
        except (KeyError, ValueError, TypeError) as exc:
            raise IdentityError(
                f"{where} or {NAMESPACE}/{TRUST_ROOTS_CONFIGMAP} cannot be read ({exc}): it "
                f"needs PEM `{ISSUER_CERT_KEY}`/`{ISSUER_KEY_KEY}` and `{TRUST_ROOTS_KEY}`"
            ) from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != crt.public_key():
            raise IdentityError(f"{where}: `{ISSUER_KEY_KEY}` is not the ECDSA key of "
                                f"`{ISSUER_CERT_KEY}`")
        if not any(_signed_by(crt, anchor) for anchor in anchors):
            raise IdentityError(f"{where}: the issuer certificate is not signed by a trust "
                                f"anchor in {NAMESPACE}/{TRUST_ROOTS_CONFIGMAP}")
        return cls(key, crt, bundle)

    def trusted_by(self, anchors_pem: str) -> bool:
        """Whether a proxy holding `anchors_pem` (its LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS)
        can verify this issuer's certificates: one of them signed the issuer."""
        try:
            anchors = x509.load_pem_x509_certificates(anchors_pem.encode())
        except ValueError:
            return False
        return any(_signed_by(self._signer, anchor) for anchor in anchors)

    def issue(self, namespace: str, service_account_name: str,
              ttl: dt.timedelta | None = None) -> WorkloadCert:
        """The leaf for a proxy running as `service_account_name` in `namespace`."""
        name = identity_name(namespace, service_account_name)
        try:
            return self.issue_leaf(x509.DNSName(name), _common_name(name), ttl)
        except MeshCAError as err:
            raise IdentityError(str(err)) from None


def _common_name(name: str) -> x509.Name:
    """The subject linkerd2 `proxy-identity/main.go` puts in the proxy's CSR: CN = the identity
    name. Go does not hold it to X.509's 64-character bound and identity names are often longer
    (`linkerd-destination.linkerd.serviceaccount.identity.linkerd.cluster.local`), so neither
    does this (the bound is a warning in `cryptography`, silenced here)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name, _validate=False)])


def _signed_by(cert: x509.Certificate, anchor: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(anchor)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True
