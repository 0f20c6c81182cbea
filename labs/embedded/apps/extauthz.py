"""Twin of Istio's sample external authorizer (samples/extauthz, image `istio/ext-authz`).

What the CUSTOM-action task relies on, as the sample's HTTP check server does it: a request that
carries the header `x-ext-authz: allow` is allowed (200, `x-ext-authz-check-result: allowed`),
any other is denied (403, `x-ext-authz-check-result: denied` and the sample's body). The
`x-ext-authz-additional-header-override` header is echoed back and
`x-ext-authz-check-received` describes the check request, like the sample. Any path is a check
(Envoy appends the request path to the provider's `pathPrefix`).

The sample also serves the ext_authz gRPC API on its second port; this twin does not (stdlib
only): it answers the HTTP check on every port (so the pod turns Ready, as the runtime waits for
each declared port) and says at start that the second one is not gRPC.

    python -m labs.embedded.apps.extauthz --port 8000 --port 9000
"""

from __future__ import annotations

import argparse
import sys

from .http import TwinHandler, add_port_option, serve

CHECK_HEADER, ALLOWED_VALUE = "x-ext-authz", "allow"
RESULT_HEADER = "x-ext-authz-check-result"
RECEIVED_HEADER = "x-ext-authz-check-received"
OVERRIDE_HEADER = "x-ext-authz-additional-header-override"
DENY_BODY = (f"denied by ext_authz for not found header `{CHECK_HEADER}: {ALLOWED_VALUE}` "
             "in the request")
MAX_ECHOED = 60_000  # the sample's limit: Envoy rejects response headers over 60 KiB


class ExtAuthzHandler(TwinHandler):
    def _check(self) -> None:
        body = self.read_body().decode("utf-8", "replace")
        received = (f"{self.command} {self.headers.get('Host', '')}{self.path}, headers: "
                    f"{dict(self.headers.items())}, body: [{body}]")
        received = received if len(received) <= MAX_ECHOED else "<too-long>"
        allowed = self.headers.get(CHECK_HEADER) == ALLOWED_VALUE
        verdict = "allowed" if allowed else "denied"
        sys.stdout.write(f"[HTTP][{verdict}]: {received}\n")
        sys.stdout.flush()
        headers = [(RESULT_HEADER, verdict),
                   (OVERRIDE_HEADER, self.headers.get(OVERRIDE_HEADER, "")),
                   (RECEIVED_HEADER, received.replace("\r", " ").replace("\n", " "))]
        self.reply(200 if allowed else 403, "" if allowed else DENY_BODY, headers=headers)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _check

    def log_message(self, format: str, *args: object) -> None:
        """The check line above is the access log (as in the sample)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_port_option(parser)
    args = parser.parse_args()
    for grpc_port in args.port[1:]:
        print(f"ext-authz twin: port {grpc_port} answers the HTTP check, not the gRPC check API "
              "of the sample (use an envoyExtAuthzHttp provider)", flush=True)
    serve(ExtAuthzHandler, args.port, "ext-authz twin (HTTP check)")


if __name__ == "__main__":
    main()
