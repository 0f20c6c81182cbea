"""JWTs made on this machine, for RequestAuthentication labs that must work offline.

    >>> from labs.tokens import Signer
    >>> signer = Signer()
    >>> signer.jwks                      # what RequestAuthentication `jwks` (inline) holds
    >>> signer.token("alice", iss="https://issuer.example", groups=["dev"])
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Signer:
    """An RS256 key: its JWKS and the tokens it signs (valid for an hour)."""

    def __init__(self, kid: str = "meshlab") -> None:
        self.kid = kid
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    @property
    def jwks(self) -> str:
        numbers = self.key.public_key().public_numbers()

        def encode(value: int) -> str:
            return b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))

        return json.dumps({"keys": [{"kty": "RSA", "alg": "RS256", "use": "sig", "kid": self.kid,
                                     "n": encode(numbers.n), "e": encode(numbers.e)}]})

    def token(self, sub: str = "alice", iss: str = "https://issuer.meshlab.test",
              **claims: Any) -> str:
        header = {"alg": "RS256", "typ": "JWT", "kid": self.kid}
        payload = {"iss": iss, "sub": sub, "exp": int(time.time()) + 3600, **claims}
        signing_input = ".".join(b64url(json.dumps(part).encode()) for part in (header, payload))
        signature = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{b64url(signature)}"
