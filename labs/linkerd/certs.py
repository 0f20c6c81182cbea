"""Certificate checks `linkerd check` runs on the trust anchors and the issuer, with upstream's
messages (linkerd/linkerd2 `pkg/issuercerts/issuercerts.go`)."""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, rsa

EXPIRY_WARNING = dt.timedelta(days=60)  # expirationWarningThresholdInDays


def _rfc3339(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _algorithm(cert: x509.Certificate) -> str:
    """Go's x509.PublicKeyAlgorithm names."""
    key = cert.public_key()
    return ("ECDSA" if isinstance(key, ec.EllipticCurvePublicKey)
            else "RSA" if isinstance(key, rsa.RSAPublicKey) else type(key).__name__)


def _signature_ok(cert: x509.Certificate) -> bool:
    """ECDSAWithSHA256 or SHA256WithRSA, the two checkECDSACertRequirements accepts."""
    name = cert.signature_algorithm_oid._name  # e.g. ecdsa-with-SHA256, sha256WithRSAEncryption
    return name in ("ecdsa-with-SHA256", "sha256WithRSAEncryption")


def ecdsa_problem(cert: x509.Certificate) -> str | None:
    """checkECDSACertRequirements."""
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        return f"expected ecdsa.PublicKey but got something {_algorithm(cert)}"
    if key.curve.key_size != 256:
        return f"must use P-256 curve for public key, instead P-{key.curve.key_size} was used"
    if not _signature_ok(cert):
        return (f"must be signed by an ECDSA P-256 key, instead "
                f"{cert.signature_algorithm_oid._name} was used")
    return None


def trust_anchor_algo_problem(cert: x509.Certificate) -> str | None:
    """CheckTrustAnchorAlgoRequirements: ECDSA P-256 or RSA 2048/4096."""
    key = cert.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        return ecdsa_problem(cert)
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size not in (2048, 4096):
            return (f"RSA must use a 2048 or 4096 bit public key, instead {key.key_size} bit "
                    "public key was used")
        return None
    return ("trust anchor must use ECDSA or RSA for public key algorithm, instead "
            f"{_algorithm(cert)} was used")


def issuer_algo_problem(cert: x509.Certificate) -> str | None:
    """CheckIssuerCertAlgoRequirements: ECDSA P-256 only."""
    if not isinstance(cert.public_key(), ec.EllipticCurvePublicKey):
        return ("issuer certificate must use ECDSA for public key algorithm, instead "
                f"{_algorithm(cert)} was used")
    return ecdsa_problem(cert)


def validity_problem(cert: x509.Certificate, now: dt.datetime) -> str | None:
    """CheckCertValidityPeriod."""
    if cert.not_valid_before_utc > now:
        return f"not valid before: {_rfc3339(cert.not_valid_before_utc)}"
    if cert.not_valid_after_utc < now:
        return f"not valid anymore. Expired on {_rfc3339(cert.not_valid_after_utc)}"
    return None


def expiry_problem(cert: x509.Certificate, now: dt.datetime) -> str | None:
    """CheckExpiringSoon."""
    if now + EXPIRY_WARNING > cert.not_valid_after_utc:
        return f"will expire on {_rfc3339(cert.not_valid_after_utc)}"
    return None


def issued_by(cert: x509.Certificate, anchors: list[x509.Certificate]) -> bool:
    """The certificate's signature verifies with one of the anchors' keys."""
    for anchor in anchors:
        try:
            cert.verify_directly_issued_by(anchor)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return True
    return False


def describe(cert: x509.Certificate) -> str:
    """`* <serial> <CN>` as the trust-anchor checks list offending anchors."""
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return f"* {cert.serial_number} {names[0].value if names else ''}"
