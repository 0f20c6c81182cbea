"""Does the embedded Flagger run a Canary as fluxcd/flagger v1.44.0 does, following Flagger's
Istio tutorial (docs/gitbook/tutorials/istio-progressive-delivery.md) with its podinfo and
load tester: bootstrap objects, a healthy release promoted step by step through real Envoys
with its events in upstream's order, a faulty release (the canary answers 500s under the load
tester's `hey`, measured by the real Prometheus) rolled back after `threshold` failed checks, a
closed confirm-rollout gate halting the analysis, config tracking, the A/B, blue/green and
mirroring strategies, and the routers of the other providers (Gateway API HTTPRoute, SMI
TrafficSplit)?

The analysis of the end-to-end tests ticks every 3 s (1 s in the unmeshed namespace) through
the test-only annotation `meshlab.dev/test-only-analysis-interval` (Flagger's own floor, 10 s,
is checked without a cluster below).
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml
from aiohttp import web
from conftest import Kubectl, poll
from mesh_support import MANIFESTS, MeshNamespace, create_meshed_namespace, wait_available

from labs.cluster import ClusterRef
from labs.duration import go_duration_text
from labs.embedded.apiserver.api import ObjectApi
from labs.embedded.apiserver.resources import ResourceRegistry
from labs.embedded.apiserver.store import Store
from labs.embedded.flagger import metrics, spec, webhooks
from labs.embedded.flagger.analysis import go_value
from labs.embedded.flagger.resolve import ResolveError, resolve_url
from labs.embedded.flagger.status import condition_for
from labs.embedded.loopback import free_port

Obj = dict[str, Any]
TARGET = "podinfo"
TICK = "3s"
FAST_TICK = "1s"  # for the unmeshed namespace: no Envoy or Prometheus to wait for
IMAGE = "ghcr.io/stefanprodan/podinfo"

needs_prometheus = pytest.mark.skipif(
    shutil.which("prometheus") is None,
    reason="no `prometheus` binary on PATH (Debian: apt-get install prometheus)")


@pytest.fixture(scope="module")
def mesh(cluster: ClusterRef) -> Iterator[MeshNamespace]:
    """The tutorial's `test` namespace (a fresh name here): meshed, with podinfo and the load
    tester from the course's manifests."""
    ns = MeshNamespace(cluster, create_meshed_namespace(cluster, "flagger"))
    try:
        for manifest in ("podinfo", "flagger-loadtester"):
            text = (MANIFESTS / f"{manifest}.yaml").read_text()
            ns.apply(text.replace("namespace: test", f"namespace: {ns.name}"))
        wait_available(cluster, ns.name)
        yield ns
    finally:
        cluster.kubectl("delete", "namespace", ns.name, "--timeout=60s", timeout=90)


def canary_yaml(namespace: str, *, threshold: int, loads: tuple[str, ...] = ("/",),
                gate: str | None = None, builtin: bool = True, step_weight: int = 20) -> str:
    """The tutorial's Canary (`step_weight` 20 up to 40 to keep it short), its builtin metrics
    (unless `builtin` is False) and MetricTemplate metric, and a `hey` load-test webhook per
    path of `loads` on podinfo-canary."""
    tester = f"http://flagger-loadtester.{namespace}/"
    hooks: list[Obj] = [
        {"name": f"load-test{i}", "url": tester, "timeout": "5s",
         "metadata": {"cmd": f"hey -z 1m -q 10 -c 2 http://{TARGET}-canary.{namespace}:9898"
                             f"{path}"}} for i, path in enumerate(loads)]
    if gate:
        hooks.insert(0, {"name": "gate", "type": "confirm-rollout",
                         "url": f"{tester}gate/{gate}"})
    canary = {
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
        "metadata": {"name": TARGET, "namespace": namespace,
                     "annotations": {spec.TEST_INTERVAL_ANNOTATION: TICK}},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": TARGET},
            "progressDeadlineSeconds": 60,
            "service": {"port": 9898, "targetPort": 9898},
            "analysis": {
                "interval": "10s", "threshold": threshold, "maxWeight": 40,
                "stepWeight": step_weight,
                "metrics": [
                    {"name": "request-success-rate", "thresholdRange": {"min": 99},
                     "interval": "1m"},
                    {"name": "request-duration", "thresholdRange": {"max": 2000},
                     "interval": "30s"},
                    {"name": "404s percentage", "templateRef": {"name": "not-found-percentage"},
                     "thresholdRange": {"max": 5}, "interval": "1m"}][0 if builtin else 2:],
                "webhooks": hooks}}}
    template = {
        "apiVersion": "flagger.app/v1beta1", "kind": "MetricTemplate",
        "metadata": {"name": "not-found-percentage", "namespace": namespace},
        "spec": {"provider": {"type": "prometheus",
                              "address": "http://prometheus.istio-system:9090"},
                 "query": NOT_FOUND_QUERY}}
    return yaml.safe_dump_all([template, canary])


# The tutorial's MetricTemplate query (istio-progressive-delivery.md, "Custom metrics")
NOT_FOUND_QUERY = """100 - sum(
    rate(
        istio_requests_total{
          reporter="destination",
          destination_workload_namespace="{{ namespace }}",
          destination_workload="{{ target }}",
          response_code!="404"
        }[{{ interval }}]
    )
)
/
sum(
    rate(
        istio_requests_total{
          reporter="destination",
          destination_workload_namespace="{{ namespace }}",
          destination_workload="{{ target }}"
        }[{{ interval }}]
    )
) * 100
"""


def get(kubectl: Kubectl, kind: str, name: str) -> Obj:
    return dict(json.loads(kubectl("get", kind, name, "-o", "json")))


def canary_events(kubectl: Kubectl) -> list[tuple[str, str, str]]:
    """(type, reason, message) of the Canary's events, oldest first (the embedded API names
    events `<object>.<time in ns, hex>`)."""
    items = json.loads(kubectl("get", "events", "-o", "json",
                               "--field-selector", "involvedObject.kind=Canary"))["items"]
    items.sort(key=lambda e: (e["metadata"]["creationTimestamp"], e["metadata"]["name"]))
    return [(e["type"], e["reason"], e["message"]) for e in items]


def messages(kubectl: Kubectl) -> list[str]:
    return [message for _, _, message in canary_events(kubectl)]


def first_route(kubectl: Kubectl, apex: str = TARGET) -> Obj:
    """The first http route of the VirtualService Flagger writes (the weighted one)."""
    return dict(get(kubectl, "virtualservices.networking.istio.io", apex)["spec"]["http"][0])


def weights(kubectl: Kubectl, apex: str = TARGET) -> tuple[int, int]:
    """(primary, canary) weights of the VirtualService Flagger writes."""
    route = first_route(kubectl, apex)
    found = {r["destination"]["host"]: r["weight"] for r in route["route"]}
    return found[f"{apex}-primary"], found[f"{apex}-canary"]


def wait_phase(kubectl: Kubectl, phase: str, timeout: float,
               order: list[tuple[int, int]] | None = None, name: str = TARGET) -> Obj:
    """The Canary once its phase is `phase`; meanwhile each VirtualService weight pair is
    appended to `order` when it differs from the last one seen."""
    def check() -> Obj | None:
        if order is not None:
            pair = weights(kubectl, name)
            if not order or order[-1] != pair:
                order.append(pair)
        cd = get(kubectl, "canary", name)
        return cd if (cd.get("status") or {}).get("phase") == phase else None
    return poll(check, f"Canary {name} phase {phase} (events: {messages(kubectl)[-6:]})",
                timeout=timeout, interval=0.2)


def wait_message(kubectl: Kubectl, matches: Callable[[str], bool], what: str,
                 timeout: float) -> str:
    """The first Canary event message `matches` accepts; a timeout names the last events."""
    seen: list[str] = []

    def check() -> str | None:
        seen[:] = messages(kubectl)
        return next((m for m in seen if matches(m)), None)
    try:
        return poll(check, what, timeout=timeout)
    except pytest.fail.Exception:
        pytest.fail(f"timed out after {timeout:g}s waiting for {what}; the Canary's last "
                    f"events: {seen[-8:]}")


def subsequence(wanted: list[str], got: list[str]) -> bool:
    it = iter(got)
    return all(any(w == g for g in it) for w in wanted)


def release(mesh: MeshNamespace, tag: str) -> None:
    """The tutorial's trigger: `kubectl set image deployment/podinfo podinfod=...:<tag>`."""
    mesh.kubectl("set", "image", f"deployment/{TARGET}", f"podinfod={IMAGE}:{tag}")


def primary_image(kubectl: Kubectl) -> str:
    primary = get(kubectl, "deployment", f"{TARGET}-primary")
    return str(primary["spec"]["template"]["spec"]["containers"][0]["image"])


# --- without a cluster ------------------------------------------------------------------------

def test_interval_threshold_and_step_defaults() -> None:
    """GetAnalysisInterval clamps to 10 s, threshold defaults to 1, stepWeights step by the
    listed values and maxWeight overshoot promotes (deployment-strategies.md examples)."""
    assert spec.analysis_interval({"spec": {"analysis": {"interval": "1s"}}}) == 10
    assert spec.analysis_interval({"spec": {"analysis": {"interval": "30s"}}}) == 30
    assert spec.analysis_interval({"spec": {"analysis": {"interval": "bogus"}}}) == 60
    assert spec.threshold({"spec": {"analysis": {}}}) == 1
    steps = {"spec": {"analysis": {"stepWeights": [1, 2, 10, 80]}}}
    weight, seen = 0, []
    while weight < spec.max_weight(steps):
        weight += spec.next_step_weight(steps, weight)
        seen.append(weight)
    assert seen == [1, 2, 10, 80]
    fifty = {"spec": {"analysis": {"maxWeight": 50, "stepWeight": 20}}}
    weight, seen = 0, []
    while weight < spec.max_weight(fifty):
        weight += spec.next_step_weight(fifty, weight)
        seen.append(weight)
    assert seen == [20, 40, 60]


def test_messages_render_as_upstream() -> None:
    """Go formatting in Flagger's messages and a MetricTemplate's query rendering."""
    assert go_duration_text(1.2) == "1.2s" and go_duration_text(0.5) == "500ms"
    assert go_value(99) == "99" and go_value(99.5) == "99.5"
    model = metrics.TemplateModel("podinfo", "test", "podinfo", "podinfo", "podinfo", "podinfo",
                                  "1m", {"direction": "inbound"})
    assert metrics.render('rate(x{ns="{{ namespace }}",d="{{ variables.direction }}"}'
                          '[{{ interval }}])', model) == 'rate(x{ns="test",d="inbound"}[1m])'
    with pytest.raises(metrics.MetricError, match='map has no entry for key "missing"'):
        metrics.render("{{ variables.missing }}", model)
    assert condition_for("Deployment", "Failed") == (
        "False", "Canary analysis failed, Deployment scaled to zero.")


async def _hooks_against_loopback() -> None:
    received: list[Obj] = []

    async def handle(request: web.Request) -> web.Response:
        received.append(await request.json())
        code = int(request.match_info["code"])
        return web.Response(status=code, text="denied" if code == 403 else "")
    app = web.Application()
    app.router.add_post("/{code}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    api = ObjectApi(Store(None), ResourceRegistry())
    cd = {"metadata": {"name": "podinfo", "namespace": "test"},
          "status": {"lastAppliedSpec": "abc"}}
    base = f"http://127.0.0.1:{port}"
    try:
        await webhooks.call_webhook(api, cd, "Progressing", {
            "name": "load", "url": f"{base}/200", "metadata": {"cmd": "hey -z 1m"}})
        assert received[-1] == {"name": "podinfo", "namespace": "test", "phase": "Progressing",
                                "checksum": webhooks.checksum(cd),
                                "metadata": {"cmd": "hey -z 1m"}}
        with pytest.raises(webhooks.WebhookError, match=r"^denied$"):
            await webhooks.call_webhook(api, cd, "Progressing", {"url": f"{base}/403"})
        with pytest.raises(webhooks.WebhookError) as failed:
            await webhooks.call_webhook(api, cd, "Progressing", {"url": f"{base}/500",
                                                                 "retries": 1})
        assert str(failed.value) == f"POST {base}/500 giving up after 2 attempt(s)"
        await webhooks.call_event_webhook(api, cd, {"url": f"{base}/202",
                                                    "metadata": {"eventType": "kept out"}},
                                          "Advance podinfo.test canary weight 10", "Normal")
        event = received[-1]["metadata"]
        assert (event["eventMessage"], event["eventType"]) == (
            "Advance podinfo.test canary weight 10", "Normal")
        assert event["timestamp"].isdigit()
        with pytest.raises(webhooks.WebhookError, match="no such host"):
            await webhooks.call_webhook(api, cd, "Progressing",
                                        {"url": "http://flagger-loadtester.test/"})
    finally:
        await runner.cleanup()


def test_webhook_payload_answers_and_retries() -> None:
    """Flagger's payload is POSTed; ≤ 202 passes, a 4xx fails with its body, a 5xx is retried
    `retries` times then fails as go-retryablehttp says; an event webhook gets the message in
    its metadata; an unknown Service is no such host."""
    asyncio.run(asyncio.wait_for(_hooks_against_loopback(), 30))


def test_service_urls_resolve_to_endpoint_host_ports() -> None:
    """`http://svc.ns:port/path` goes to the Endpoints' host port of the Service port;
    a bare name is looked up in Flagger's namespace; no endpoint is connection refused."""
    api = ObjectApi(Store(None), ResourceRegistry())
    for namespace in ("test", "istio-system"):
        api.create(api.registry.lookup("", "v1", "namespaces"), "",
                   {"metadata": {"name": namespace}})
    services = api.registry.lookup("", "v1", "services")
    api.create(services, "test", {"metadata": {"name": "loadtester"}, "spec": {
        "selector": {"app": "loadtester"},
        "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}})
    api.create(services, "istio-system", {"metadata": {"name": "prometheus"}, "spec": {
        "selector": {"app": "prometheus"}, "ports": [{"name": "http", "port": 9090}]}})
    api.create(api.registry.lookup("", "v1", "endpoints"), "test", {
        "metadata": {"name": "loadtester"},
        "subsets": [{"addresses": [{"ip": "127.0.0.1"}],
                     "ports": [{"name": "http", "port": 41234}]}]})
    assert resolve_url(api, "http://loadtester.test/gate?x=1") == \
        "http://127.0.0.1:41234/gate?x=1"
    assert resolve_url(api, "http://loadtester.test.svc.cluster.local:80/") == \
        "http://127.0.0.1:41234/"
    with pytest.raises(ResolveError, match="connect: connection refused"):
        resolve_url(api, "http://prometheus:9090/api/v1/query")
    with pytest.raises(ResolveError, match=r"lookup nothing\.test: no such host"):
        resolve_url(api, "http://nothing.test/")


# --- on the embedded cluster ------------------------------------------------------------------

# --- on the embedded cluster ------------------------------------------------------------------

def test_bootstrap_objects_and_initialized(mesh: MeshNamespace) -> None:
    """The primary Deployment, the three Services, DestinationRules and a VirtualService at
    100/0, the target scaled to 0, `Initialized` with upstream's condition and event."""
    kubectl = mesh.kubectl
    mesh.apply(canary_yaml(mesh.name, threshold=5))
    cd = wait_phase(kubectl, "Initialized", timeout=90)
    condition = cd["status"]["conditions"][0]
    assert (condition["type"], condition["status"], condition["reason"], condition["message"]) \
        == ("Promoted", "True", "Initialized", "Deployment initialization completed.")
    primary = get(kubectl, "deployment", f"{TARGET}-primary")
    assert primary["spec"]["selector"]["matchLabels"] == {"app": f"{TARGET}-primary"}
    assert primary["spec"]["template"]["metadata"]["labels"]["app"] == f"{TARGET}-primary"
    assert "flagger-id" in primary["spec"]["template"]["metadata"]["annotations"]
    assert primary["metadata"]["ownerReferences"][0]["kind"] == "Canary"
    selectors = {name: get(kubectl, "service", name)["spec"]["selector"]
                 for name in (TARGET, f"{TARGET}-primary", f"{TARGET}-canary")}
    assert selectors == {TARGET: {"app": f"{TARGET}-primary"},
                         f"{TARGET}-primary": {"app": f"{TARGET}-primary"},
                         f"{TARGET}-canary": {"app": TARGET}}
    for name in (f"{TARGET}-primary", f"{TARGET}-canary"):
        assert get(kubectl, "destinationrules.networking.istio.io", name)["spec"] == {
            "host": name}
    vs = get(kubectl, "virtualservices.networking.istio.io", TARGET)
    assert vs["spec"]["hosts"] == [TARGET] and vs["spec"]["gateways"] == ["mesh"]
    assert weights(kubectl) == (100, 0)
    assert get(kubectl, "deployment", TARGET)["spec"]["replicas"] == 0
    events = canary_events(kubectl)
    assert ("Normal", "Synced", f"Initialization done! {TARGET}.{mesh.name}") in events
    # the apex Service reaches the primary through the load tester's Envoy
    result = mesh.exec("flagger-loadtester", "hey", "-n", "4", "-c", "1",
                       f"http://{TARGET}:9898/")
    assert "[200]\t4 responses" in result.stdout, result


@needs_prometheus
def test_healthy_release_promoted_step_by_step(mesh: MeshNamespace) -> None:
    """A new revision is scaled up, analysed (no metric check at weight 0; builtin and
    MetricTemplate metrics after), shifted 20 → 40, copied to the primary, routed back to it
    and scaled down, with upstream's events in order and the VirtualService weights observed at
    every step."""
    kubectl = mesh.kubectl
    wait_phase(kubectl, "Initialized", timeout=90)
    release(mesh, "6.0.1")
    order: list[tuple[int, int]] = []
    cd = wait_phase(kubectl, "Succeeded", timeout=150, order=order)
    assert order == [(100, 0), (80, 20), (60, 40), (100, 0)], order
    key = f"{TARGET}.{mesh.name}"
    assert subsequence([
        f"New revision detected! Scaling up {key}",
        f"Starting canary analysis for {key}",
        f"Advance {key} canary weight 20",
        f"Advance {key} canary weight 40",
        f"Copying {key} template spec to {TARGET}-primary.{mesh.name}",
        "Routing all traffic to primary",
        f"Promotion completed! Scaling down {key}",
    ], messages(kubectl)), messages(kubectl)
    assert cd["status"]["canaryWeight"] == 0
    assert cd["status"]["lastPromotedSpec"] == cd["status"]["lastAppliedSpec"]
    assert primary_image(kubectl) == f"{IMAGE}:6.0.1"
    assert get(kubectl, "deployment", TARGET)["spec"]["replicas"] == 0


@needs_prometheus
def test_faulty_release_rolled_back_after_threshold(mesh: MeshNamespace) -> None:
    """The canary answers 500s under load (the tutorial's `/status/500`): each analysis step
    fails on the success rate read from Prometheus, and at `threshold` failed checks Flagger
    routes everything back to the primary, scales the canary to zero and marks it Failed."""
    kubectl = mesh.kubectl
    mesh.apply(canary_yaml(mesh.name, threshold=2, loads=("/status/500",)))
    wait_phase(kubectl, "Succeeded", timeout=30)
    release(mesh, "6.0.2")
    cd = wait_phase(kubectl, "Failed", timeout=150)
    key = f"{TARGET}.{mesh.name}"
    events = canary_events(kubectl)
    start = max(i for i, e in enumerate(events)
                if e[2] == f"New revision detected! Scaling up {key}")
    run = events[start:]
    halts = [m for t, r, m in run if t == "Warning" and r == "Synced" and "Halt" in m]
    rates = [m for m in halts if m.startswith(f"Halt {key} advancement success rate ")]
    assert rates and all(m.endswith("% < 99%") for m in rates), run
    assert subsequence([
        f"Advance {key} canary weight 20",
        rates[-1],
        f"Rolling back {key} failed checks threshold reached 2",
        f"Canary failed! Scaling down {key}",
    ], [m for _, _, m in run]), run
    assert ("Warning", "Synced", f"Canary failed! Scaling down {key}") in run
    assert weights(kubectl) == (100, 0)
    assert get(kubectl, "deployment", TARGET)["spec"]["replicas"] == 0
    condition = cd["status"]["conditions"][0]
    assert (condition["status"], condition["message"]) == (
        "False", "Canary analysis failed, Deployment scaled to zero.")
    assert primary_image(kubectl) == f"{IMAGE}:6.0.1"  # the faulty release never landed


@needs_prometheus
def test_closed_gate_halts_until_approved(mesh: MeshNamespace) -> None:
    """A confirm-rollout webhook on the load tester's `/gate/halt` (403) keeps a new revision
    `Waiting` with upstream's Warning; switched to `/gate/approve` the rollout starts, and the
    MetricTemplate metric halts it once the canary answers 404s."""
    kubectl = mesh.kubectl
    # threshold 30: under a loaded CI machine the canary's first series can take tens of seconds
    # to reach Prometheus, and each tick without them is a failed check ("no values found")
    mesh.apply(canary_yaml(mesh.name, threshold=30, gate="halt"))
    release(mesh, "6.0.3")
    key = f"{TARGET}.{mesh.name}"
    cd = wait_phase(kubectl, "Waiting", timeout=60)
    assert cd["status"]["conditions"][0]["message"] == "Waiting for approval."
    assert ("Warning", "Synced", f"Halt {key} advancement waiting for approval gate") in \
        canary_events(kubectl)
    assert get(kubectl, "deployment", TARGET)["spec"]["replicas"] == 0
    assert weights(kubectl) == (100, 0)
    # (only the MetricTemplate: the faulty test's 500s still fill the builtin's 1m window).
    # Steps of 5 give the analysis 8 ticks before promotion: until the new canary pod is Ready
    # no 404 reaches it, while the faulty test's 500s still fill the template's 1m window, so
    # the first ticks read 0 % and pass (a CI run promoted after 3 ticks of 20).
    mesh.apply(canary_yaml(mesh.name, threshold=30, gate="approve", loads=("/status/404",),
                           builtin=False, step_weight=5))
    wait_phase(kubectl, "Progressing", timeout=60)
    assert subsequence(["Confirm-rollout check gate passed",
                        f"New revision detected! Scaling up {key}"], messages(kubectl))
    # 404s pass the builtin success rate (5xx only) but not the tutorial's MetricTemplate
    wait_message(kubectl, lambda m: m.startswith(f"Halt {key} advancement 404s percentage ")
                 and m.endswith(" > 5"), "the MetricTemplate's halt event", timeout=150)


def test_kubectl_get_canaries_columns_and_suspend(mesh: MeshNamespace) -> None:
    """`kubectl get canaries` (and metrictemplates) print upstream's printer columns (`-o wide`
    the priority-1 ones); a suspended Canary is skipped with upstream's event."""
    out = mesh.kubectl("get", "canaries")
    header, row = out.splitlines()[:2]
    assert header.split() == ["NAME", "STATUS", "WEIGHT", "LASTTRANSITIONTIME"]
    templates = mesh.kubectl("get", "metrictemplates").splitlines()
    assert [line.split() for line in templates] == [["NAME", "PROVIDER"],
                                                     ["not-found-percentage", "prometheus"]]
    status = get(mesh.kubectl, "canary", TARGET)["status"]
    assert row.split()[:3] == [TARGET, status["phase"], str(status["canaryWeight"])]
    described = mesh.kubectl("describe", "canary", TARGET)  # the tutorials' way to follow
    line = next((x for x in described.splitlines()
                 if f"Initialization done! {TARGET}.{mesh.name}" in x), "")
    assert line.split()[:2] == ["Normal", "Synced"], described
    mesh.kubectl("patch", "canary", TARGET, "--type=merge", "-p", '{"spec":{"suspend":true}}')
    poll(lambda: "skipping canary run as object is suspended" in messages(mesh.kubectl),
         "the suspended Canary's event", timeout=30)
    wide = mesh.kubectl("get", "canaries", "-o", "wide").splitlines()
    assert wide[0].split() == ["NAME", "STATUS", "WEIGHT", "SUSPENDED", "FAILEDCHECKS",
                               "INTERVAL", "MIRROR", "STEPWEIGHT", "STEPWEIGHTS", "MAXWEIGHT",
                               "LASTTRANSITIONTIME"]
    assert wide[1].split()[3] == "true"


PLAIN_YAML = """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  selector:
    matchLabels:
      app: {name}
  template:
    metadata:
      labels:
        app: {name}
    spec:
      containers:
      - name: app
        image: docker.io/mccutchen/go-httpbin:v2.15.0
        ports:
        - containerPort: 8080
"""


@pytest.fixture(scope="module")
def plain(cluster: ClusterRef) -> Iterator[str]:
    """An unmeshed namespace (no sidecars to wait for) for the router objects."""
    name = create_meshed_namespace(cluster, "flagger-plain")
    cluster.kubectl("label", "namespace", name, "istio-injection-")
    try:
        yield name
    finally:
        cluster.kubectl("delete", "namespace", name, "--timeout=60s", timeout=90)


@pytest.mark.parametrize("provider", ["gatewayapi:v1beta1", "linkerd"])
def test_other_providers_write_upstreams_routes(cluster: ClusterRef, plain: str,
                                                provider: str) -> None:
    """`gatewayapi:v1beta1` writes an HTTPRoute to the Service parent with backendRefs
    primary 100 / canary 0; `linkerd` an SMI TrafficSplit with the same weights."""
    kubectl = Kubectl(cluster, plain)
    name = "gw" if provider.startswith("gateway") else "smi"
    kubectl("apply", "-f", "-", input=PLAIN_YAML.format(name=name))
    service: Obj = {"port": 8000, "targetPort": 8080}
    if name == "gw":
        service["gatewayRefs"] = [{"name": name, "namespace": plain, "group": "core",
                                   "kind": "Service", "port": 8000}]
    kubectl("apply", "-f", "-", input=yaml.safe_dump({
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
        "metadata": {"name": name, "annotations": {spec.TEST_INTERVAL_ANNOTATION: TICK}},
        "spec": {"provider": provider, "skipAnalysis": True,
                 "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                 "service": service,
                 "analysis": {"interval": "10s", "threshold": 1, "stepWeight": 10}}}))
    wait_phase(kubectl, "Initialized", timeout=60, name=name)
    if name == "gw":
        route = get(kubectl, "httproutes.gateway.networking.k8s.io", name)
        assert route["spec"]["parentRefs"] == service["gatewayRefs"]
        rule = route["spec"]["rules"][0]
        assert rule["matches"] == [{"path": {"type": "PathPrefix", "value": "/"}}]
        assert [(b["name"], b["port"], b["weight"]) for b in rule["backendRefs"]] == [
            (f"{name}-primary", 8000, 100), (f"{name}-canary", 8000, 0)]
    else:
        split = get(kubectl, "trafficsplits.split.smi-spec.io", name)
        assert split["spec"]["service"] == name
        assert split["spec"]["backends"] == [{"service": f"{name}-canary", "weight": 0},
                                             {"service": f"{name}-primary", "weight": 100}]


CONFIGURED_YAML = """
apiVersion: v1
kind: ConfigMap
metadata:
  name: cfg-settings
data:
  color: blue
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: cfg
spec:
  selector:
    matchLabels:
      app: cfg
  template:
    metadata:
      labels:
        app: cfg
    spec:
      containers:
      - name: app
        image: ghcr.io/stefanprodan/podinfo:6.0.0
        envFrom:
        - configMapRef:
            name: cfg-settings
        ports:
        - {name: http, containerPort: 9898}
        - {name: http-metrics, containerPort: 9797}
        readinessProbe:
          httpGet: {path: /readyz, port: 9898}
          periodSeconds: 1
        volumeMounts:
        - {name: settings, mountPath: /etc/settings}
      volumes:
      - name: settings
        configMap:
          name: cfg-settings
"""


def test_configs_tracked_ports_discovered_and_skip_analysis(cluster: ClusterRef,
                                                            plain: str) -> None:
    """The target's ConfigMap is copied as `-primary` for the primary (which uses the copy),
    tracked in the status, and a change to it is a new revision; `portDiscovery` adds the
    other container ports to the Services; `skipAnalysis` promotes at once; a canary that
    never gets ready is rolled back after `progressDeadlineSeconds`."""
    kubectl = Kubectl(cluster, plain)
    kubectl("apply", "-f", "-", input=CONFIGURED_YAML)
    kubectl("apply", "-f", "-", input=yaml.safe_dump({
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
        "metadata": {"name": "cfg", "annotations": {spec.TEST_INTERVAL_ANNOTATION: TICK}},
        "spec": {"skipAnalysis": True, "progressDeadlineSeconds": 10,
                 "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "cfg"},
                 "service": {"port": 9898, "targetPort": 9898, "portDiscovery": True},
                 "analysis": {"interval": "10s", "threshold": 1, "stepWeight": 10}}}))

    wait_phase(kubectl, "Initialized", timeout=60, name="cfg")
    copy = get(kubectl, "configmap", "cfg-settings-primary")
    assert copy["data"] == {"color": "blue"}
    assert copy["metadata"]["ownerReferences"][0]["kind"] == "Canary"
    pod_spec = get(kubectl, "deployment", "cfg-primary")["spec"]["template"]["spec"]
    assert pod_spec["containers"][0]["envFrom"] == [{"configMapRef":
                                                     {"name": "cfg-settings-primary"}}]
    assert pod_spec["volumes"][0]["configMap"]["name"] == "cfg-settings-primary"
    tracked = get(kubectl, "canary", "cfg")["status"]["trackedConfigs"]
    assert list(tracked) == ["configmap/cfg-settings"]
    ports = get(kubectl, "service", "cfg-canary")["spec"]["ports"]
    assert [(p["name"], p["port"]) for p in ports] == [("http", 9898), ("http-metrics", 9797)]
    kubectl("patch", "configmap", "cfg-settings", "--type=merge", "-p",
            '{"data":{"color":"green"}}')
    wait_phase(kubectl, "Succeeded", timeout=90, name="cfg")
    assert get(kubectl, "configmap", "cfg-settings-primary")["data"] == {"color": "green"}
    assert get(kubectl, "canary", "cfg")["status"]["trackedConfigs"] != tracked
    assert subsequence([f"New revision detected! Scaling up cfg.{plain}",
                        f"Copying cfg.{plain} template spec to cfg-primary.{plain}",
                        f"Promotion completed! Canary analysis was skipped for cfg.{plain}"],
                       messages(kubectl))
    kubectl("set", "env", "deployment/cfg", "PODINFO_UNREADY=true")
    wait_phase(kubectl, "Failed", timeout=90, name="cfg")  # after its progress deadline
    assert subsequence([
        f"canary deployment cfg.{plain} not ready: waiting for rollout to finish: 0 of 1 "
        "(readyThreshold 100%) updated replicas are available",
        f"Canary failed! Scaling down cfg.{plain}"], messages(kubectl)), messages(kubectl)
    assert get(kubectl, "deployment", "cfg")["spec"]["replicas"] == 0


def test_step_weights_and_promotion_steps(cluster: ClusterRef, plain: str) -> None:
    """`stepWeights` advance by the listed weights and `stepWeightPromotion` hands traffic
    back to the promoted primary in steps (`Advance <canary> primary weight <n>`), as the
    VirtualService weights show; no metrics means every analysis step passes."""
    kubectl = Kubectl(cluster, plain)
    kubectl("apply", "-f", "-", input=PLAIN_YAML.format(name="steps"))
    kubectl("apply", "-f", "-", input=yaml.safe_dump({
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
        "metadata": {"name": "steps", "annotations": {spec.TEST_INTERVAL_ANNOTATION: FAST_TICK}},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "steps"},
                 "service": {"port": 8000, "targetPort": 8080},
                 "analysis": {"interval": "10s", "threshold": 1, "stepWeights": [10, 60],
                              "stepWeightPromotion": 50}}}))

    wait_phase(kubectl, "Initialized", timeout=60, name="steps")
    kubectl("set", "env", "deployment/steps", "RELEASE=2")
    order: list[tuple[int, int]] = []
    wait_phase(kubectl, "Succeeded", timeout=90, order=order, name="steps")
    assert order == [(100, 0), (90, 10), (40, 60), (90, 10), (100, 0)], order
    assert subsequence([f"Advance steps.{plain} canary weight 10",
                        f"Advance steps.{plain} canary weight 60",
                        f"Copying steps.{plain} template spec to steps-primary.{plain}",
                        f"Advance steps.{plain} primary weight 90",
                        f"Advance steps.{plain} primary weight 100",
                        f"Promotion completed! Scaling down steps.{plain}"], messages(kubectl))


INSIDER = {"headers": {"x-canary": {"exact": "insider"}}}


@pytest.mark.parametrize("name", ["ab", "bg", "mirror"])
def test_iteration_strategies(cluster: ClusterRef, plain: str, name: str) -> None:
    """A/B testing (`iterations` + `match`): the matched requests go to the canary, the rest
    to the primary, for each iteration; blue/green (`iterations` only): the iterations run on
    the idle canary (with `mirror`, on a copy of the traffic), then all traffic goes to it,
    then promotion — upstream's events and VirtualService routes."""
    kubectl = Kubectl(cluster, plain)
    analysis: Obj = {"interval": "10s", "threshold": 1, "iterations": 2}
    if name == "ab":
        analysis["match"] = [INSIDER]
    if name == "mirror":
        analysis.update(mirror=True, mirrorWeight=50)
    kubectl("apply", "-f", "-", input=PLAIN_YAML.format(name=name))
    kubectl("apply", "-f", "-", input=yaml.safe_dump({
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
        "metadata": {"name": name, "annotations": {spec.TEST_INTERVAL_ANNOTATION: FAST_TICK}},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                 "service": {"port": 8000, "targetPort": 8080}, "analysis": analysis}}))
    wait_phase(kubectl, "Initialized", timeout=60, name=name)
    http = get(kubectl, "virtualservices.networking.istio.io", name)["spec"]["http"]
    if name == "ab":
        assert [r.get("match") for r in http] == [[INSIDER], None]
        assert http[1]["route"] == [{"destination": {"host": f"{name}-primary"},
                                     "weight": 100}]
    else:
        assert len(http) == 1 and "match" not in http[0]
    kubectl("set", "env", f"deployment/{name}", "RELEASE=2")
    if name == "mirror":
        first = poll(lambda: (route := first_route(kubectl, name)).get("mirror") and route,
                     "the mirrored route", timeout=60)
        assert first["mirror"] == {"host": f"{name}-canary"}
        assert first["mirrorPercentage"] == {"value": 50}
    order: list[tuple[int, int]] = []
    wait_phase(kubectl, "Succeeded", timeout=90, order=order, name=name)
    assert order[-2:] == [(0, 100), (100, 0)] and set(order[:-2]) <= {(100, 0)}, order
    key = f"{name}.{plain}"
    steps = [f"Starting canary analysis for {key}", f"Advance {key} canary iteration 1/2",
             f"Advance {key} canary iteration 2/2"]
    if name == "bg":
        steps.append("Routing all traffic to canary")
    if name == "mirror":
        steps.append("Stop traffic mirroring and route all traffic to canary")
    steps += [f"Copying {key} template spec to {name}-primary.{plain}",
              "Routing all traffic to primary", f"Promotion completed! Scaling down {key}"]
    assert subsequence(steps, messages(kubectl)), messages(kubectl)


def test_canary_without_spec_is_a_warning_not_a_crash(cluster: ClusterRef, plain: str) -> None:
    """The schema does not require `spec`: such a Canary gets a Warning saying what is missing,
    and the controller (and the cluster) go on serving."""
    kubectl = Kubectl(cluster, plain)
    kubectl("apply", "-f", "-", input="apiVersion: flagger.app/v1beta1\nkind: Canary\n"
            "metadata:\n  name: empty\n")
    poll(lambda: any("has no spec.targetRef.name" in m for m in messages(kubectl)),
         "the Warning about the missing targetRef", timeout=30)
    assert get(kubectl, "canary", "empty")["status"]["phase"] == "Initializing"
    kubectl("delete", "canary", "empty")
    assert cluster.kubectl("get", "ns", plain).returncode == 0  # the API still serves
