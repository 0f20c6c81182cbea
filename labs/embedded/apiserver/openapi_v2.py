"""`/openapi/v2`: the Swagger 2.0 document kubectl asks for when it validates a `kind: List`.

kubectl leaves validation to the server (`fieldValidation`, learned from `/openapi/v3`) for every
kind except `v1/List`, which no server endpoint accepts: for a List it validates the items itself
against `/openapi/v2`, fetched as gnostic's `openapi.v2.Document` protobuf (kubectl's
pkg/validation/schema.go, paramVerifyingSchema; client-go discovery `OpenAPISchema`), and fails
the whole apply if that document is missing. This server publishes no model definitions (its
`/openapi/v3` schemas are open objects too), so kubectl finds no model for an item and skips its
client-side check, as it does for any kind without one; kubectl then sends each item with
`fieldValidation=Strict`, and the server's own validation answers for it. The document's
description says so to anyone who reads it.
"""

from __future__ import annotations

from typing import Any

# kubectl asks for the deprecated "...spec.v2@v1.0+protobuf"; kube-openapi answers with this
# name (pkg/handler/handler.go, RegisterOpenAPIVersionedService), which Go's mime parser accepts.
PROTOBUF_CONTENT_TYPE = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
SWAGGER_VERSION = "2.0"
TITLE = "Kubernetes"
DESCRIPTION = ("meshlab's embedded API server publishes no model definitions: objects are "
               "validated by the server (fieldValidation).")
# Field numbers of gnostic's openapiv2/OpenAPIv2.proto (message Document, message Info).
_DOCUMENT_SWAGGER, _DOCUMENT_INFO = 1, 2
_INFO_TITLE, _INFO_VERSION, _INFO_DESCRIPTION = 1, 2, 3
_LENGTH_DELIMITED = 2


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """One length-delimited field (a string or an embedded message) in protobuf wire format."""
    return _varint(number << 3 | _LENGTH_DELIMITED) + _varint(len(payload)) + payload


def document_json(version: str) -> dict[str, Any]:
    """The document as JSON (what `Accept: application/json` gets): swagger and info, no paths
    or definitions."""
    return {"swagger": SWAGGER_VERSION,
            "info": {"title": TITLE, "version": version, "description": DESCRIPTION},
            "paths": {}}


def document_protobuf(version: str) -> bytes:
    """The same document as gnostic's `openapi.v2.Document` message."""
    info = (_field(_INFO_TITLE, TITLE.encode()) + _field(_INFO_VERSION, version.encode())
            + _field(_INFO_DESCRIPTION, DESCRIPTION.encode()))
    return _field(_DOCUMENT_SWAGGER, SWAGGER_VERSION.encode()) + _field(_DOCUMENT_INFO, info)
