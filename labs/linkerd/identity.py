"""`linkerd identity`: each selected pod's proxy certificate, printed as linkerd/linkerd2
`cli/cmd/identity.go` prints it (github.com/grantae/certinfo `CertificateText`, golden
`test_certs/leaf1.cert.text` in grantae/certinfo).

Upstream port-forwards to the proxy's admin port and reads the certificate it presents in a TLS
handshake. On the embedded cluster the proxy is an Envoy whose certificate the Linkerd control
plane delivers as an SDS file in the proxy container's directory
(labs/embedded/mesh/linkerd/controlplane.py); that file is what Envoy serves, so it is read
instead. A proxy without one yet gets an error saying so — no certificate is made up.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from labs.embedded.mesh.proxyfiles import ProxyFiles
from labs.embedded.workload import LINKERD_PROXY_CONTAINER, pod_dir_name
from labs.linkerd.kube import Kube

Obj = dict[str, Any]
ADMIN_PORT_NAME = "linkerd-admin"
NOT_MESHED = ("Could not fetch Certificate. Ensure that the pod(s) are meshed by running "
              "`linkerd inject`\n")
NAMES = {NameOID.COMMON_NAME: "CN", NameOID.COUNTRY_NAME: "C", NameOID.LOCALITY_NAME: "L",
         NameOID.STATE_OR_PROVINCE_NAME: "ST", NameOID.ORGANIZATION_NAME: "O",
         NameOID.ORGANIZATIONAL_UNIT_NAME: "OU", NameOID.EMAIL_ADDRESS: "emailAddress"}
SIGNATURES = {"ecdsa-with-SHA256": "ECDSA-SHA256", "ecdsa-with-SHA384": "ECDSA-SHA384",
              "sha256WithRSAEncryption": "SHA256-RSA"}
EXT_USAGES = {ExtendedKeyUsageOID.SERVER_AUTH: "TLS Web Server Authentication",
              ExtendedKeyUsageOID.CLIENT_AUTH: "TLS Web Client Authentication"}


class IdentityError(Exception):
    """The pods cannot be listed; the message is kubectl's or upstream's."""


def _container_with_admin_port(pod: Obj) -> str | None:
    """getContainerWithPort: the error upstream reports for this pod, or None."""
    meta, spec = pod["metadata"], pod.get("spec") or {}
    if (pod.get("status") or {}).get("phase") != "Running":
        return f"pod not running: {meta['name']}"
    for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        if container.get("name") == LINKERD_PROXY_CONTAINER and any(
                p.get("name") == ADMIN_PORT_NAME for p in container.get("ports") or []):
            return None
    return (f"failed to find {ADMIN_PORT_NAME} port in {LINKERD_PROXY_CONTAINER} container for "
            "given pod spec")


def proxy_certificate(pods_dir: Path, pod: Obj) -> x509.Certificate:
    """The leaf certificate the pod's proxy serves (its SDS secret `default`)."""
    path = ProxyFiles(pods_dir / pod_dir_name(pod) / LINKERD_PROXY_CONTAINER / "xds").cert_sds
    try:
        secret = json.loads(path.read_text())["resources"][0]
        chain = secret["tls_certificate"]["certificate_chain"]["inline_bytes"]
        return x509.load_pem_x509_certificates(base64.b64decode(chain))[0]
    except (OSError, ValueError, KeyError, IndexError):
        name = pod["metadata"]["name"]
        raise IdentityError(f"the proxy of pod {name} has no certificate yet: the Linkerd "
                            "control plane issues it once linkerd-proxy runs (see `kubectl get "
                            f"pod {name}` and `linkerd check --proxy`)") from None


def _hex_lines(data: bytes, per_line: int, indent: int, upper: bool = False) -> str:
    fmt = "{:02X}" if upper else "{:02x}"
    rows = [":".join(fmt.format(b) for b in data[i:i + per_line])
            for i in range(0, len(data), per_line)]
    return ":\n".join(" " * indent + row for row in rows)


def _name(name: x509.Name) -> str:
    return ",".join(f"{NAMES.get(a.oid, 'UnknownOID=' + a.oid.dotted_string)}={a.value}"
                    if a.oid in NAMES else f"UnknownOID={a.oid.dotted_string}"
                    for a in name)


def _when(value: dt.datetime) -> str:
    text = value.strftime("%b %d %H:%M:%S %Y UTC")
    return text[:4] + text[4:6].lstrip("0") + text[6:]  # Go's "Jan 2" day, no padding


def _key_lines(cert: x509.Certificate) -> list[str]:
    key = cert.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        numbers, size = key.public_numbers(), key.curve.key_size
        coordinate = (size + 7) // 8
        curve = {"secp256r1": "P-256", "secp384r1": "P-384"}.get(key.curve.name, key.curve.name)
        return ["            Public Key Algorithm: ECDSA",
                f"                Public-Key: ({size} bit)",
                "                X:\n" + _hex_lines(numbers.x.to_bytes(coordinate, "big"), 15, 20),
                "                Y:\n" + _hex_lines(numbers.y.to_bytes(coordinate, "big"), 15, 20),
                f"                Curve: {curve}"]
    if isinstance(key, rsa.RSAPublicKey):
        n = key.public_numbers().n
        return ["            Public Key Algorithm: RSA",
                f"                Public-Key: ({key.key_size} bit)",
                "                Modulus:\n" + _hex_lines(n.to_bytes((n.bit_length() + 7) // 8,
                                                               "big"), 15, 20),
                f"                Exponent: {key.public_numbers().e} "
                f"({key.public_numbers().e:#x})"]
    return ["            Public Key Algorithm: unknown"]


def _extension_lines(ext: x509.Extension[x509.ExtensionType]) -> list[str]:
    critical = " critical" if ext.critical else ""
    value = ext.value
    if isinstance(value, x509.KeyUsage):
        usages = [label for label, on in (
            ("Digital Signature", value.digital_signature),
            ("Content Commitment", value.content_commitment),
            ("Key Encipherment", value.key_encipherment),
            ("Data Encipherment", value.data_encipherment),
            ("Key Agreement", value.key_agreement),
            ("Certificate Sign", value.key_cert_sign), ("CRL Sign", value.crl_sign)) if on]
        return [f"            X509v3 Key Usage:{critical}",
                f"                {', '.join(usages) or 'None'}"]
    if isinstance(value, x509.ExtendedKeyUsage):
        return [f"            X509v3 Extended Key Usage:{critical}",
                "                " + ", ".join(EXT_USAGES.get(u, "UNKNOWN") for u in value)]
    if isinstance(value, x509.BasicConstraints):
        path = f", pathlen:{value.path_length}" if value.path_length is not None else ""
        return [f"            X509v3 Basic Constraints:{critical}",
                f"                CA:{'TRUE' if value.ca else 'FALSE'}{path}"]
    if isinstance(value, x509.SubjectKeyIdentifier):
        return [f"            X509v3 Subject Key Identifier:{critical}",
                "                " + ":".join(f"{b:02X}" for b in value.digest)]
    if isinstance(value, x509.AuthorityKeyIdentifier):
        return [f"            X509v3 Authority Key Identifier:{critical}",
                "                keyid" + "".join(f":{b:02X}" for b in value.key_identifier or b"")]
    if isinstance(value, x509.SubjectAlternativeName):
        dns = value.get_values_for_type(x509.DNSName)
        return [f"            X509v3 Subject Alternative Name:{critical}",
                "                " + ", ".join(f"DNS:{d}" for d in dns)]
    return [f"            {ext.oid.dotted_string}:{critical}"]


def certificate_text(cert: x509.Certificate) -> str:
    """certinfo.CertificateText for the fields a Linkerd leaf certificate has."""
    signature = SIGNATURES.get(cert.signature_algorithm_oid._name,
                               cert.signature_algorithm_oid._name)
    lines = ["Certificate:", "    Data:",
             f"        Version: {cert.version.value + 1} ({cert.version.value:#x})",
             f"        Serial Number: {cert.serial_number} ({cert.serial_number:#x})",
             f"        Signature Algorithm: {signature}",
             f"        Issuer: {_name(cert.issuer)}", "        Validity",
             f"            Not Before: {_when(cert.not_valid_before_utc)}",
             f"            Not After : {_when(cert.not_valid_after_utc)}",
             f"        Subject: {_name(cert.subject)}", "        Subject Public Key Info:",
             *_key_lines(cert)]
    if cert.extensions:
        lines.append("        X509v3 extensions:")
        for ext in cert.extensions:
            lines.extend(_extension_lines(ext))
        lines.append("")
    lines.append(f"    Signature Algorithm: {signature}\n"
                 + _hex_lines(cert.signature, 18, 9))
    return "\n".join(lines) + "\n"


def cmd_identity(kube: Kube, names: list[str], namespace: str, selector: str) -> int:
    """Print each pod's certificate; stop at the first pod that cannot give one, as upstream."""
    if not names and not selector:
        raise IdentityError("Provide the pod name argument or use the selector flag")
    pods: list[Obj] = []
    for name in names:
        pod = kube.get("pods", name, namespace)
        if pod is None:
            raise IdentityError(f'pods "{name}" not found')
        pods.append(pod)
    if not names:
        pods = list(kube.items("pods", namespace, selector))
    if not pods:
        sys.stdout.write(NOT_MESHED)
        return 0
    embedded = kube.ref.embedded
    for i, pod in enumerate(pods):
        sys.stdout.write(f"\nPOD {pod['metadata']['name']} ({i + 1} of {len(pods)})\n\n")
        problem = _container_with_admin_port(pod)
        if problem is None and embedded is None:
            problem = "linkerd identity reads proxy certificates on the embedded cluster only"
        if problem is None:
            assert embedded is not None
            try:
                cert = proxy_certificate(embedded.paths.pods_dir, pod)
            except IdentityError as err:
                problem = str(err)
        if problem is not None:
            sys.stdout.write(f"\n{problem}\n")
            return 0
        sys.stdout.write(certificate_text(cert))
    return 0
