"""Flagger's `linkerd` provider end to end on a Linkerd-meshed namespace, as Flagger's Linkerd
tutorial ran it before Gateway API (fluxcd/flagger docs/gitbook/tutorials/
linkerd-progressive-delivery.md, SMI era): podinfo and the load tester injected at admission
(`linkerd.io/inject: enabled`), a Canary with `provider: linkerd` whose SmiRouter
(`pkg/router/smi.go`) writes the TrafficSplit `podinfo` (backends canary first, then primary),
which linkerd-smi turns into the ServiceProfile's dstOverrides that the meshed client's proxy
routes by. The tutorial's pre-rollout acceptance test (`type: bash`, the load tester's curl to
podinfo-canary's `/token`) gates the analysis. The release is held at maxWeight by a
`confirm-promotion` webhook (`pkg/controller/scheduler_hooks.go` runConfirmPromotionHooks:
phase `WaitingPromotion`, "Halt <name>.<ns> advancement waiting for promotion approval <hook>")
while the client's requests are counted per podinfo version; approved, the canary is promoted
and the `post-rollout` webhook is called once with Flagger's CanaryWebhookPayload
(`pkg/controller/webhook.go`).

The Canary has no metrics (every analysis step passes): Flagger's builtin Linkerd metrics need
linkerd-viz's Prometheus, which this file does not install to stay short. Analysis ticks every
2 s through the test-only annotation `meshlab.dev/test-only-analysis-interval`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import yaml
from conftest import Kubectl, poll
from mesh_support import MANIFESTS, MeshNamespace, wait_available
from test_flagger import (
    IMAGE,
    TARGET,
    canary_events,
    get,
    messages,
    primary_image,
    release,
    subsequence,
)
from test_linkerd_dataplane import curl, plain

from labs.cluster import ClusterRef
from labs.embedded.flagger import spec, webhooks
from labs.embedded.loopback import free_port

pytestmark = pytest.mark.usefixtures("linkerd_installed")  # the cluster starts without it

Obj = dict[str, Any]
TICK_S = 2
TICK = f"{TICK_S}s"
PORT = 9898
VERSION = re.compile(r'"version":\s*"([^"]+)"')
SPLIT = "trafficsplits.split.smi-spec.io"
# stefanprodan/podinfo cmd/podinfo/main.go: viper.SetDefault("jwt-secret", ...)
PODINFO_JWT_SECRET = b"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"


@dataclass
class HookServer:
    """The webhook receiver: `/promotion` answers 200 once `approved`, 403 before (as the load
    tester's closed gate does); `/post-rollout` answers 200. Every call is recorded."""

    port: int = 0
    approved: bool = False
    calls: list[tuple[str, Obj]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def bodies(self, path: str) -> list[Obj]:
        with self.lock:
            return [body for p, body in self.calls if p == path]


def _handler(hooks: HookServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = 5  # per connection (socket timeout)

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
            with hooks.lock:
                hooks.calls.append((self.path, body))
            code = 403 if self.path == "/promotion" and not hooks.approved else 200
            text = b"Forbidden" if code == 403 else b"Approved"
            self.send_response(code)
            self.send_header("Content-Length", str(len(text)))
            self.end_headers()
            self.wfile.write(text)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the test reads `calls`, not a log."""
    return Handler


@pytest.fixture(scope="module")
def hooks() -> Iterator[HookServer]:
    """The webhook receiver on 127.0.0.1 (the embedded Flagger posts to it as written)."""
    state = HookServer(port=free_port())
    server = ThreadingHTTPServer(("127.0.0.1", state.port), _handler(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def l5d(cluster: ClusterRef, hooks: HookServer) -> Iterator[MeshNamespace]:
    """A namespace annotated `linkerd.io/inject: enabled` with podinfo, the load tester and a
    `curl` client (all injected at admission), and the Canary `podinfo` (provider linkerd,
    stepWeight 25 up to 50, a confirm-promotion and a post-rollout webhook)."""
    name = f"flagger-l5d-{uuid.uuid4().hex[:6]}"
    for args in (("create", "namespace", name),
                 ("annotate", "namespace", name, "linkerd.io/inject=enabled")):
        assert cluster.kubectl(*args).returncode == 0
    ns = MeshNamespace(cluster, name)
    try:
        for manifest in ("podinfo", "flagger-loadtester"):
            text = (MANIFESTS / f"{manifest}.yaml").read_text()
            ns.apply(text.replace("namespace: test", f"namespace: {name}"))
        ns.apply(yaml.safe_dump(plain("curl", name, curl())))
        wait_available(cluster, name, timeout=120)
        pod = json.loads(ns.kubectl("get", "pods", "-l", "app=curl", "-o", "json"))["items"][0]
        containers = pod["spec"]["containers"] + pod["spec"].get("initContainers", [])
        assert "linkerd-proxy" in [c["name"] for c in containers], "curl was not injected"
        ns.apply(canary_yaml(name, hooks.port))
        yield ns
    finally:
        cluster.kubectl("delete", "namespace", name, "--timeout=60s", timeout=90)


def canary_yaml(namespace: str, port: int) -> str:
    base = f"http://127.0.0.1:{port}"
    return yaml.safe_dump({
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
        "metadata": {"name": TARGET, "namespace": namespace,
                     "annotations": {spec.TEST_INTERVAL_ANNOTATION: TICK}},
        "spec": {
            "provider": "linkerd",
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": TARGET},
            "progressDeadlineSeconds": 60,
            "service": {"port": PORT, "targetPort": PORT},
            "analysis": {
                "interval": "10s", "threshold": 5, "maxWeight": 50, "stepWeight": 25,
                "webhooks": [
                    {"name": "acceptance-test", "type": "pre-rollout",  # the tutorial's
                     "url": f"http://flagger-loadtester.{namespace}/", "timeout": "30s",
                     "metadata": {"type": "bash",
                                  "cmd": f"curl -sd 'test' http://{TARGET}-canary."
                                         f"{namespace}:{PORT}/token | grep token"}},
                    {"name": "promotion-gate", "type": "confirm-promotion",
                     "url": f"{base}/promotion"},
                    {"name": "notify", "type": "post-rollout", "url": f"{base}/post-rollout",
                     "metadata": {"channel": "releases"}}]}}})


def split_weights(kubectl: Kubectl) -> tuple[int, int]:
    """(primary, canary) weights of the TrafficSplit Flagger writes."""
    backends = get(kubectl, SPLIT, TARGET)["spec"]["backends"]
    found = {b["service"]: int(b["weight"]) for b in backends}
    return found[f"{TARGET}-primary"], found[f"{TARGET}-canary"]


def wait_phase(kubectl: Kubectl, phase: str, timeout: float,
               order: list[tuple[int, int]] | None = None) -> Obj:
    """The Canary once its phase is `phase`; meanwhile each TrafficSplit weight pair is
    appended to `order` when it differs from the last one seen."""
    def check() -> Obj | None:
        if order is not None:
            pair = split_weights(kubectl)
            if not order or order[-1] != pair:
                order.append(pair)
        cd = get(kubectl, "canary", TARGET)
        return cd if (cd.get("status") or {}).get("phase") == phase else None
    return poll(check, f"Canary {TARGET} phase {phase} (events: {messages(kubectl)[-6:]})",
                timeout=timeout, interval=0.2)


def served(mesh: MeshNamespace, n: int) -> Counter[str]:
    """The podinfo version that answered each of `n` requests from the meshed `curl` to the
    apex Service (one curl, kept alive, its URL glob making the `n` URLs)."""
    url = f"http://{TARGET}.{mesh.name}:{PORT}/?n=[1-{n}]"
    result = mesh.exec("curl", "curl", "-s", url, timeout=120)
    counts = Counter(VERSION.findall(result.stdout))
    assert sum(counts.values()) == n, result.stdout[-2000:] + result.stderr
    return counts


def profile_overrides(kubectl: Kubectl) -> list[tuple[str, str]]:
    """(authority, weight) of the ServiceProfile linkerd-smi made of the TrafficSplit."""
    name = f"{TARGET}.{kubectl.namespace}.svc.cluster.local"
    found = kubectl.run("get", "serviceprofiles.linkerd.io", name, "-o", "json")
    if found.returncode != 0:
        return []
    overrides = json.loads(found.stdout)["spec"].get("dstOverrides") or []
    return [(o["authority"], str(o["weight"])) for o in overrides]


def test_bootstrap_writes_the_traffic_split(l5d: MeshNamespace) -> None:
    """Initialized: the TrafficSplit `podinfo` (split.smi-spec.io/v1alpha1) for the apex with
    smi.go's backends canary 0 / primary 100, linkerd-smi's ServiceProfile with the same
    dstOverrides, and the meshed client's requests all served by the primary."""
    kubectl = l5d.kubectl
    wait_phase(kubectl, "Initialized", timeout=90)
    split = get(kubectl, "trafficsplits.v1alpha1.split.smi-spec.io", TARGET)  # as written
    assert split["metadata"]["ownerReferences"][0]["kind"] == "Canary"
    assert split["spec"] == {"service": TARGET, "backends": [
        {"service": f"{TARGET}-canary", "weight": 0},
        {"service": f"{TARGET}-primary", "weight": 100}]}
    domain = f"{l5d.name}.svc.cluster.local"
    poll(lambda: profile_overrides(kubectl) == [(f"{TARGET}-canary.{domain}", "0"),
                                                (f"{TARGET}-primary.{domain}", "100")],
         "linkerd-smi's ServiceProfile", timeout=30)
    assert served(l5d, 20) == {"6.0.0": 20}


def test_podinfo_issues_the_token_the_acceptance_test_greps(l5d: MeshNamespace) -> None:
    """The tutorial's pre-rollout acceptance test posts to podinfo's `/token`: an HS256 JWT
    (stefanprodan/podinfo `pkg/api/http/token.go`) for the posted user, issuer podinfo, one
    minute to live, signed with podinfo's default secret."""
    code, body = l5d.curl(f"http://{TARGET}-primary.{l5d.name}:{PORT}/token", "-d", "test")
    assert code == 200, body
    answer = json.loads(body)
    header, claims, signature = answer["token"].split(".")
    signed = hmac.new(PODINFO_JWT_SECRET, f"{header}.{claims}".encode(), hashlib.sha256)
    assert base64.urlsafe_b64encode(signed.digest()).rstrip(b"=").decode() == signature
    decoded = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))
    assert (decoded["name"], decoded["iss"]) == ("test", "podinfo")
    expires = datetime.fromisoformat(answer["expires_at"]).timestamp()
    assert expires == decoded["exp"] and 0 < expires - time.time() <= 60


def test_release_steps_the_split_and_waits_for_promotion_approval(
        l5d: MeshNamespace, hooks: HookServer) -> None:
    """A new image shifts the split 25 → 50 (stepWeight up to maxWeight); at maxWeight the
    closed confirm-promotion webhook halts it in `WaitingPromotion` with upstream's Warning,
    the split stays at 50/50 and the meshed client's requests reach the canary in about that
    proportion."""
    kubectl = l5d.kubectl
    release(l5d, "6.0.1")
    order: list[tuple[int, int]] = []
    cd = wait_phase(kubectl, "WaitingPromotion", timeout=90, order=order)
    assert order == [(100, 0), (75, 25), (50, 50)], order
    condition = cd["status"]["conditions"][0]
    assert (condition["status"], condition["reason"], condition["message"]) == (
        "Unknown", "WaitingPromotion", "Waiting for approval.")
    # (upstream's setStatusPhase zeroes status.canaryWeight for WaitingPromotion; the split
    # is what holds the weight)
    assert cd["status"]["canaryWeight"] == 0
    key = f"{TARGET}.{l5d.name}"
    halt = ("Warning", "Synced",
            f"Halt {key} advancement waiting for promotion approval promotion-gate")
    assert subsequence([f"Starting canary analysis for {key}",
                        "Pre-rollout check acceptance-test passed",
                        f"Advance {key} canary weight 25", f"Advance {key} canary weight 50",
                        halt[2]], messages(kubectl)), messages(kubectl)
    gate_calls = hooks.bodies("/promotion")
    assert gate_calls and all(b["phase"] == "Progressing" and b["name"] == TARGET
                              and b["namespace"] == l5d.name for b in gate_calls), gate_calls
    domain = f"{l5d.name}.svc.cluster.local"
    poll(lambda: profile_overrides(kubectl) == [(f"{TARGET}-canary.{domain}", "50"),
                                                (f"{TARGET}-primary.{domain}", "50")],
         "linkerd-smi's ServiceProfile at 50/50", timeout=30)
    poll(lambda: served(l5d, 10)["6.0.1"] > 0, "the client's proxy routing to the canary",
         timeout=30, interval=0.5)
    n = 200
    counts = served(l5d, n)
    assert set(counts) == {"6.0.0", "6.0.1"}, counts
    sd = math.sqrt(n * 0.5 * 0.5)  # within 4.5 standard deviations: ~1 in 150 000 by chance
    assert abs(counts["6.0.1"] - n * 0.5) <= 4.5 * sd, counts
    # still held: the gate keeps being asked, the weights do not move
    asked = len(gate_calls)
    poll(lambda: len(hooks.bodies("/promotion")) > asked, "another confirm-promotion call",
         timeout=20)
    assert split_weights(kubectl) == (50, 50)
    assert get(kubectl, "canary", TARGET)["status"]["phase"] == "WaitingPromotion"
    assert canary_events(kubectl).count(halt) == 1  # only on entering WaitingPromotion
    assert not hooks.bodies("/post-rollout")


def test_approval_promotes_and_post_rollout_is_called_once(l5d: MeshNamespace,
                                                           hooks: HookServer) -> None:
    """Once the webhook answers 200: `Confirm-promotion check ... passed`, the template copied
    to the primary, the split back to primary 100, `Succeeded`; the post-rollout webhook gets
    one call with Flagger's payload (name, namespace, phase Succeeded, the Canary's checksum,
    the hook's metadata); the client's requests all reach the promoted 6.0.1."""
    kubectl = l5d.kubectl
    hooks.approved = True
    order: list[tuple[int, int]] = []
    cd = wait_phase(kubectl, "Succeeded", timeout=60, order=order)
    assert order[-1] == (100, 0) and set(order) <= {(50, 50), (100, 0)}, order
    key = f"{TARGET}.{l5d.name}"
    assert subsequence([
        "Confirm-promotion check promotion-gate passed",
        f"Copying {key} template spec to {TARGET}-primary.{l5d.name}",
        "Routing all traffic to primary",
        "Post-rollout check notify passed",
        f"Promotion completed! Scaling down {key}"], messages(kubectl)), messages(kubectl)
    assert primary_image(kubectl) == f"{IMAGE}:6.0.1"
    assert cd["status"]["canaryWeight"] == 0
    assert get(kubectl, "deployment", TARGET)["spec"]["replicas"] == 0
    posts = hooks.bodies("/post-rollout")
    assert posts == [{"name": TARGET, "namespace": l5d.name, "phase": "Succeeded",
                      "checksum": webhooks.checksum(cd),
                      "metadata": {"channel": "releases"}}], posts
    domain = f"{l5d.name}.svc.cluster.local"
    poll(lambda: profile_overrides(kubectl) == [(f"{TARGET}-canary.{domain}", "0"),
                                                (f"{TARGET}-primary.{domain}", "100")],
         "linkerd-smi's ServiceProfile back at 0/100", timeout=30)
    poll(lambda: served(l5d, 20) == {"6.0.1": 20}, "all requests served by the new primary",
         timeout=30, interval=0.5)
    # later ticks of the Succeeded Canary call no hook again
    calls = len(hooks.calls)
    time.sleep(3 * TICK_S)
    assert len(hooks.bodies("/post-rollout")) == 1 and len(hooks.calls) == calls
