"""Twin of Linkerd's control-plane and viz images (`cr.l5d.io/linkerd/controller`, `metrics-api`,
`tap`, `web`): it answers the probes of the container's admin port as linkerd2's admin server does
(`pkg/admin/admin.go`: `/ping` -> `pong`, `/ready` -> `ok`; the Rust policy controller's `/live`
and `/ready`) on every port of the container, so the pods are Ready and `linkerd check` sees a
healthy control plane.

The components' own APIs (gRPC destination, identity and policy, the injector webhook, tap,
metrics-api, the dashboard) are not served here: on the embedded cluster the daemon does that
work (Linkerd's control plane inside it; the proxy injector as an admission step of its API
server) or it is not emulated, and any other request gets a 404 saying so.

    python -m labs.embedded.apps.linkerd_controller --port 9990 --port 8080
"""

from __future__ import annotations

import argparse
import os

from ..workload import POD_NAME_ENV
from .http import TwinHandler, add_port_option, serve

PROBES = {"/ping": "pong\n", "/ready": "ok\n", "/live": "live\n"}
NOT_HERE = ("{pod}: this Linkerd component only answers its probes (/ping, /ready, /live) on the "
            "embedded cluster; its work is done by the cluster daemon or not emulated (see "
            "labs/embedded/apps/linkerd_controller.py)\n")


class ProbeHandler(TwinHandler):
    def do_GET(self) -> None:
        body = PROBES.get(self.url_path)
        if body is not None:
            self.reply(200, body)
            return
        pod = os.environ.get(POD_NAME_ENV, "linkerd component")
        self.reply(404, NOT_HERE.format(pod=pod))

    do_HEAD = do_GET

    def log_message(self, format: str, *args: object) -> None:
        """No access log: the kubelet's probes would fill it, as upstream keeps them out."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_port_option(parser)
    serve(ProbeHandler, parser.parse_args().port, "linkerd component twin (probes only)")


if __name__ == "__main__":
    main()
