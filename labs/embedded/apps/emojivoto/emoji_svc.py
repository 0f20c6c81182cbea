"""emojivoto `emoji-svc` twin (`docker.l5d.io/buoyantio/emojivoto-emoji-svc`): the gRPC
`emojivoto.v1.EmojiService` on GRPC_PORT — `ListAll` (the 99 emoji in upstream's order) and
`FindByShortcode` (an empty response for an unknown shortcode), as BuoyantIO/emojivoto
`emojivoto-emoji-svc/api/api.go`. PROM_PORT serves `/metrics` (upstream's grpc_prometheus
series are not emulated: the page says so).

    GRPC_PORT=8080 python -m labs.embedded.apps.emojivoto.emoji_svc
"""

from __future__ import annotations

from .api import (
    EMOJI,
    EMOJI_SERVICE,
    emoji_message,
    field_bytes,
    pod_port,
    serve_grpc,
    string_field,
)
from .metrics import go_log, start_metrics


def list_all(request: bytes, context: object) -> bytes:
    return b"".join(field_bytes(1, emoji_message(shortcode)) for shortcode, _, _ in EMOJI)


def find_by_shortcode(request: bytes, context: object) -> bytes:
    shortcode = string_field(request, 1)
    return field_bytes(1, emoji_message(shortcode)) if any(
        shortcode == known for known, _, _ in EMOJI) else b""


def main() -> None:
    declared, port = pod_port("GRPC_PORT")
    start_metrics(lambda: "")
    go_log(f"Starting grpc server on GRPC_PORT=[{declared}]")
    serve_grpc(EMOJI_SERVICE, {"ListAll": list_all, "FindByShortcode": find_by_shortcode},
               port, "emoji-svc")


if __name__ == "__main__":
    main()
