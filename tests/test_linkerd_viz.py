"""`linkerd viz` on the embedded cluster: installed on demand as the docs do, its real Prometheus
scraping emojivoto's linkerd-proxies, and `stat` / `edges` read from it.

Layouts are compared with upstream's golden files, copied into tests/golden/linkerd/ from
linkerd/linkerd2 `viz/cmd/testdata/`: stat_one_output.golden (commit 4c3d0025), stat_all_output.
golden (111fc98d), edges_one_output.golden (a84dd4b0), edges_wide_output.golden (9e2162e6),
routes_one_output.golden (111fc98d), tap_busy_output.golden (111fc98d),
tap_busy_output_wide.golden (a84dd4b0); authz_booksapp_docs.golden is the `linkerd viz authz`
sample of linkerd/website `linkerd.io/content/2-edge/tasks/configuring-per-route-policy.md`
(the docs trim the two spaces upstream's cli/table leaves after the last column).
Live traffic: emojivoto's vote-bot lists and votes through web every second; a vote for
:doughnut: fails (500), so web's SUCCESS is below 100 %.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from conftest import poll
from linkerd_support import LINKERD, kubectl, run

from labs.cluster import ClusterRef
from labs.embedded.mesh.prometheus import linkerd_proxy_labels
from labs.linkerd.viz import authz, edges, routes, stat, tap, top

pytestmark = pytest.mark.usefixtures("linkerd_installed")  # the cluster starts without it

GOLDEN = Path(__file__).resolve().parent / "golden" / "linkerd"
MANIFEST = Path(__file__).resolve().parent.parent / "labs" / "manifests" / "emojivoto.yaml"
TIMEOUT_S = 60
STAT_HEADER = ["NAME", "MESHED", "SUCCESS", "RPS", "LATENCY_P50", "LATENCY_P95",
               "LATENCY_P99", "TCP_CONN"]


# -- layouts against upstream's goldens (no cluster) ----------------------------------------

def golden_row(namespace: str) -> stat.Row:
    """A row that renders as upstream's stat tests' (1 of 2 pods meshed, 120 successes in the
    1m window: 100.00% 2.0rps, latencies 123ms, 123 TCP connections)."""
    return stat.Row(namespace, "emoji", "1/2", success=120, failure=0,
                    latency={"0.5": 123, "0.95": 123, "0.99": 123}, tcp=123)


def options(all_namespaces: bool = False, output: str = "table") -> stat.Options:
    return stat.Options(namespace="emojivoto", all_namespaces=all_namespaces, window="1m",
                        window_s=60.0, output=output)


def test_stat_table_is_upstreams_layout() -> None:
    one = stat.render_table("deployment", [golden_row("emojivoto")], options(), prefix=False)
    assert one == (GOLDEN / "stat_one_output.golden").read_text()
    every = stat.render_table("deployment", [golden_row("emojivoto1"), golden_row("emojivoto2")],
                              options(all_namespaces=True), prefix=False)
    assert every == (GOLDEN / "stat_all_output.golden").read_text()


def golden_edges() -> list[dict[str, str]]:
    rows = [("vote-bot", "web", "emojivoto", "default", "web"),
            ("web", "emoji", "emojivoto", "web", "emoji"),
            ("web", "voting", "emojivoto", "web", "voting"),
            ("linkerd-identity", "linkerd-prometheus", "linkerd", "linkerd-identity",
             "linkerd-prometheus")]
    return [{"src": src, "dst": dst, "src_namespace": ns, "dst_namespace": ns,
             "client_id": f"{client}.{ns}.serviceaccount.identity.linkerd.cluster.local",
             "server_id": f"{server}.{ns}.serviceaccount.identity.linkerd.cluster.local",
             "no_tls_reason": ""} for src, dst, ns, client, server in reversed(rows)]


def test_edges_table_is_upstreams_layout() -> None:
    assert edges.render(golden_edges(), "table") == (
        (GOLDEN / "edges_one_output.golden").read_text(), "")
    assert edges.render(golden_edges(), "wide") == (
        (GOLDEN / "edges_wide_output.golden").read_text(), "")
    assert edges.render([], "table") == ("", "No edges found.\n")
    plain = [{**golden_edges()[0], "no_tls_reason": "Not Provided By Remote"}]
    assert "Not Provided By Remote" in edges.render(plain, "table")[0]


def test_routes_table_is_upstreams_layout() -> None:
    def row(route: str, requests: int) -> routes.RouteRow:
        stats = stat.Row("ns", "foobar", "", success=requests,
                         latency={"0.5": 123, "0.95": 123, "0.99": 123}) if requests else None
        return routes.RouteRow(route, "foobar", stats)
    rows = [row("/a", 90), row("/b", 60), row("/c", 0), row("[DEFAULT]", 30)]
    assert routes.render(rows, 60.0) == (GOLDEN / "routes_one_output.golden").read_text()


def test_authz_table_is_upstreams_layout() -> None:
    golden = (GOLDEN / "authz_booksapp_docs.golden").read_text().splitlines()
    data = [line.split() for line in golden[1:]]
    data = [row if len(row) == 9 else [row[0], row[1], "", *row[2:]] for row in data]
    rendered = authz.render(data).splitlines()
    assert [line.rstrip() for line in rendered] == golden
    assert all(line.endswith("  ") for line in rendered)


def test_top_table_and_durations() -> None:
    """top.go's columns (fixed widths 10/6/12, flexible ones as wide as their cells), rows by
    count, Go's duration strings."""
    assert [top.duration(ms) for ms in (0, 0.5, 0.9996, 3, 999.6, 1500, 65_000)] == [
        "0s", "500µs", "1ms", "3ms", "1s", "2s", "1m5s"]
    rows = [top.Row("vote-bot-1", "web-1", "GET", "/api/list", 2, 1, 3, 3, 2, 0),
            top.Row("vote-bot-1", "web-1", "GET", "/api/vote", 3, 1, 4, 2, 2, 1)]
    assert top.render(rows, hide_sources=False).splitlines() == [
        "Source      Destination  Method      Path        Count    Best   Worst    Last"
        "  Success Rate",
        "vote-bot-1  web-1        GET         /api/vote       3     1ms     4ms     2ms"
        "        66.67%",
        "vote-bot-1  web-1        GET         /api/list       2     1ms     3ms     3ms"
        "       100.00%"]


def test_scrape_labels_are_upstreams_relabelling() -> None:
    """viz's `linkerd-proxy` job: `linkerd.io/proxy-*` -> `*` (sources dropped), `proxy-job`
    -> `k8s_job`, `linkerd.io/*` -> `*`, other labels sanitized."""
    pod = {"metadata": {"namespace": "emojivoto", "name": "web-1", "labels": {
        "app": "web-svc", "pod-template-hash": "5f86686c4d",
        "linkerd.io/control-plane-ns": "linkerd", "linkerd.io/workload-ns": "emojivoto",
        "linkerd.io/proxy-deployment": "web", "linkerd.io/proxy-job": "nightly"}}}
    assert linkerd_proxy_labels(pod) == {
        "namespace": "emojivoto", "pod": "web-1", "k8s_job": "nightly", "deployment": "web",
        "control_plane_ns": "linkerd", "workload_ns": "emojivoto", "app": "web-svc",
        "pod_template_hash": "5f86686c4d"}


def test_tap_lines_are_upstreams_layout() -> None:
    """The golden's request as a proxy's telemetry line (its `end` has `tls=` because the
    golden's mock event carries no metadata; ours always does)."""
    line = {"direction": "outbound", "src": "0.0.0.1:0", "upstream_host": "[ff01::1]:0",
            "tls": "TLSv1.3", "method": "GET", "host": "localhost", "path": "/some/path",
            "response_code": "200", "latency": "5", "response_tx": "100000",
            "grpc_status": "666", "bytes_sent": "1337"}
    req, _, end = tap.render(line, 1, 0, None)
    golden = (GOLDEN / "tap_busy_output.golden").read_text().splitlines()
    assert req == golden[0]
    assert end == golden[1].replace("tls= ", "tls=true ")
    wide = (GOLDEN / "tap_busy_output_wide.golden").read_text().splitlines()
    assert tap.wide(req, {}, {"tls": "true", "pod": "my-pod"}) == wide[0]
    assert tap.wide(wide[1].rstrip(" "), {}, {}) == wide[1]


def json_documents(text: str) -> list[dict]:
    """The indented JSON objects tap -o json prints one after another."""
    decoder, found, position = json.JSONDecoder(), [], 0
    while position < len(text.rstrip()):
        value, position = decoder.raw_decode(text, position)
        found.append(value)
        position += len(text[position:]) - len(text[position:].lstrip())
    return found


def test_tap_json_is_upstreams_layout() -> None:
    """-o json: the golden's request-init and response-end events, key for key, in Go's
    MarshalIndent layout; the emulation records no headers or trailers (null), and names the
    destination by what it knows (here only the TLS status)."""
    line = {"direction": "outbound", "src": "0.0.0.1:0", "upstream_host": "[ff01::1]:0",
            "tls": "TLSv1.3", "method": "GET", "host": "localhost", "path": "/some/path",
            "response_code": "200", "latency": "5", "duration": "10000",
            "response_tx": "100000", "grpc_status": "666", "bytes_sent": "1337"}
    req, rsp, end = tap.render_json(line, 1, 0, tap.Peers())
    golden_text = (GOLDEN / "tap_busy_output_json.golden").read_text()
    golden_req, golden_end = json_documents(golden_text)
    # Go's layout, byte for byte: each event re-rendered from the golden's own values
    rendered = [tap.go_marshal_indent(doc) + "\n" for doc in (golden_req, golden_end)]
    assert "".join(rendered) == golden_text
    ours = json.loads(req)
    assert list(ours) == list(golden_req)
    assert ours["destination"]["metadata"] == {"tls": "true"}
    assert ours["requestInitEvent"].pop("headers") is None
    assert ours["requestInitEvent"].pop("scheme") == "HTTP"
    golden_req["requestInitEvent"].pop("headers")
    golden_req["requestInitEvent"].pop("scheme")
    for doc in (ours, golden_req):
        doc["destination"].pop("metadata")
    assert ours == golden_req
    ours = json.loads(end)
    assert ours["responseEndEvent"].pop("trailers") is None
    golden_end["responseEndEvent"].pop("trailers")
    ours["destination"]["metadata"] = None
    assert ours == golden_end
    assert json.loads(rsp)["responseInitEvent"] == {
        "id": {"base": 1, "stream": 0}, "sinceRequestInit": {"nanos": 5_000_000},
        "httpStatus": 200, "headers": None}
    assert "\\u0026" in tap.render_json({**line, "path": "/a?b=1&c=2"}, 1, 0, tap.Peers())[0]


# -- on the cluster -------------------------------------------------------------------------

@dataclass(frozen=True)
class Viz:
    cluster: ClusterRef
    namespace: str  # emojivoto, meshed


def emojivoto_in(namespace: str) -> str:
    """emojivoto's manifest moved into `namespace` (its Namespace object left out, and the
    services' addresses, `web-svc.emojivoto:80`..., in the new namespace)."""
    text = MANIFEST.read_text().replace("-svc.emojivoto:", f"-svc.{namespace}:")
    docs = [d for d in yaml.safe_load_all(text) if d and d["kind"] != "Namespace"]
    for doc in docs:
        doc["metadata"]["namespace"] = namespace
    return yaml.safe_dump_all(docs)


def stat_rows(text: str) -> dict[str, list[str]]:
    lines = text.splitlines()
    assert lines and lines[0].split() == STAT_HEADER, text
    return {line.split()[0]: line.split()[1:] for line in lines[1:]}


@pytest.fixture(scope="module")
def viz(cluster: ClusterRef) -> Iterator[Viz]:
    installed = run(cluster, "viz", "install")
    assert installed.returncode == 0, installed.stderr
    kubectl(cluster, "apply", "-f", "-", input=installed.stdout)
    namespace = f"l5d-viz-{uuid.uuid4().hex[:6]}"
    kubectl(cluster, "create", "namespace", namespace)
    kubectl(cluster, "annotate", "namespace", namespace, "linkerd.io/inject=enabled")
    kubectl(cluster, "apply", "-f", "-", input=emojivoto_in(namespace))
    try:
        # two scrapes of web's proxy with vote-bot's traffic in between: stat has a rate
        poll(lambda: stat_rows(run(cluster, "viz", "stat", "deploy", "-n", namespace).stdout
                               or "NAME MESHED SUCCESS RPS LATENCY_P50 LATENCY_P95 LATENCY_P99 "
                               "TCP_CONN").get("web", ["", "-"])[1] != "-",
             "web's stats in linkerd-viz's Prometheus", timeout=120, interval=2)
        yield Viz(cluster, namespace)
    finally:
        cluster.kubectl("delete", "namespace", namespace, "--wait=false")
        removal = run(cluster, "viz", "uninstall")
        if removal.returncode == 0:
            cluster.kubectl("delete", "-f", "-", "--wait=false", input=removal.stdout,
                            timeout=TIMEOUT_S)


def test_stat_deployments_from_prometheus(viz: Viz) -> None:
    def failing() -> dict[str, list[str]] | None:  # vote-bot votes :doughnut: 15 % of the time
        done = run(viz.cluster, "viz", "stat", "deploy", "-n", viz.namespace)
        assert done.returncode == 0, done.stderr
        found = stat_rows(done.stdout)
        return found if found["web"][1] not in ("-", "100.00%") else None
    rows = poll(failing, "a failed :doughnut: vote in web's SUCCESS", timeout=150, interval=3)
    assert set(rows) == {"emoji", "vote-bot", "voting", "web"}
    meshed, success, rps, p50, p95, p99, tcp = rows["web"]
    assert meshed == "1/1" and tcp == "-"
    assert re.fullmatch(r"\d+\.\drps", rps)
    assert float(rps.removesuffix("rps")) > 0
    assert float(success.removesuffix("%")) < 100  # web answers 500 for :doughnut:
    assert all(re.fullmatch(r"\d+ms", v) for v in (p50, p95, p99))
    assert rows["vote-bot"] == ["1/1", "-", "-", "-", "-", "-", "-"]  # nobody calls vote-bot


def test_stat_json_pods_and_namespaces(viz: Viz) -> None:
    done = run(viz.cluster, "viz", "stat", "deploy/web", "-n", viz.namespace, "-o", "json")
    [entry] = json.loads(done.stdout)
    assert entry["kind"] == "deployment" and entry["name"] == "web"
    assert 0 <= entry["success"] < 1 and entry["rps"] > 0
    pods = run(viz.cluster, "viz", "stat", "po", "-n", viz.namespace).stdout.splitlines()
    assert pods[0].split()[:3] == ["NAME", "STATUS", "MESHED"]
    assert all(line.split()[1:3] == ["Running", "1/1"] for line in pods[1:])
    namespaces = run(viz.cluster, "viz", "stat", f"ns/{viz.namespace}").stdout
    assert stat_rows(namespaces)[viz.namespace][0] == "4/4"


def test_stat_from_uses_the_clients_outbound_metrics(viz: Viz) -> None:
    done = run(viz.cluster, "viz", "stat", "deploy", "--from", "deploy/vote-bot", "-n",
               viz.namespace)
    rows = stat_rows(done.stdout)
    assert rows["web"][1] != "-" and rows["web"][-1] != "-"  # outbound: TCP_CONN is known
    assert rows["emoji"][1:] == ["-"] * 6  # vote-bot only calls web
    to = run(viz.cluster, "viz", "stat", "deploy/vote-bot", "--to", "svc/web-svc", "-n",
             viz.namespace)
    assert stat_rows(to.stdout)["vote-bot"][2].endswith("rps"), to.stdout
    services = run(viz.cluster, "viz", "stat", "svc", "-n", viz.namespace)
    assert services.returncode == 1 and "not emulated" in services.stderr


def test_prometheus_scrapes_the_proxies_as_upstream_labels_them(viz: Viz) -> None:
    """Through the `prometheus.linkerd-viz:9090` Service, as Flagger's Linkerd tutorials."""
    promql = f'count(up{{job="linkerd-proxy", namespace="{viz.namespace}"}}) by (deployment)'
    url = "http://prometheus.linkerd-viz:9090/api/v1/query?" + urllib.parse.urlencode(
        {"query": promql})


    def answer() -> str | None:  # once the pod is Ready (its probe waits 30 s, as upstream's)
        text = kubectl(viz.cluster, "exec", "-n", viz.namespace, "deploy/vote-bot", "-c",
                       "vote-bot", "--", "curl", "-s", url)
        return text if text.startswith("{") else None
    result = json.loads(poll(answer, "prometheus.linkerd-viz:9090 answering", timeout=60,
                             interval=2))["data"]["result"]
    assert {r["metric"]["deployment"]: r["value"][1] for r in result} == {
        "emoji": "1", "vote-bot": "1", "voting": "1", "web": "1"}


def test_edges_are_secured(viz: Viz) -> None:
    done = run(viz.cluster, "viz", "edges", "deploy", "-n", viz.namespace)
    assert done.returncode == 0, done.stderr
    lines = [line.split() for line in done.stdout.splitlines()]
    assert lines[0] == ["SRC", "DST", "SRC_NS", "DST_NS", "SECURED"]
    assert ["vote-bot", "web", viz.namespace, viz.namespace, "\u221a"] in lines
    wide = run(viz.cluster, "viz", "edges", "po", "-n", viz.namespace, "-o", "wide").stdout
    assert f"default.{viz.namespace}" in wide and f"web.{viz.namespace}" in wide
    found = json.loads(run(viz.cluster, "viz", "edges", "deploy", "-n", viz.namespace,
                           "-o", "json").stdout)
    bot = next(e for e in found if e["src"] == "vote-bot")
    assert bot == {"src": "vote-bot", "src_namespace": viz.namespace, "dst": "web",
                   "dst_namespace": viz.namespace, "client_id": f"default.{viz.namespace}",
                   "server_id": f"web.{viz.namespace}", "no_tls_reason": ""}


@pytest.mark.parametrize(("args", "message"), [
    (["stat", "foo"], "Error: cannot find Kubernetes canonical name from friendly name [foo]\n"),
    (["stat", "deploy", "-t", "10s"], "Error: metrics time window needs to be at least 15s\n"),
    (["stat", "deploy", "--to", "deploy/web", "--from", "deploy/vote-bot"],
     "Error: --to and --from flags are mutually exclusive\n"),
    (["edges", "deploy/web"],
     "Error: Edges cannot be returned for a specific resource name; remove web from query\n"),
    (["edges", "svc"], "Error: Resource type is not supported: service\n"),
])
def test_bad_input_gets_upstreams_message(viz: Viz, args: list[str], message: str) -> None:
    done = run(viz.cluster, "viz", *args, "-n", viz.namespace)
    assert (done.returncode, done.stderr) == (1, message)


def test_no_traffic_found(viz: Viz) -> None:
    done = run(viz.cluster, "viz", "stat", "deploy", "-n", "kube-system")
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "No traffic found.\n")


def tap_lines(cluster: ClusterRef, *args: str, wanted: int = 6, timeout: float = 30
              ) -> list[str]:
    """Run `linkerd viz tap` until it printed `wanted` lines, then Ctrl-C it (it must exit 0)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MESHLAB_") and k != "KUBECONFIG"}
    env["KUBECONFIG"] = str(cluster.kubeconfig)
    proc = subprocess.Popen([LINKERD, "viz", "tap", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    try:
        assert proc.stdout is not None
        while len(lines) < wanted and time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], deadline - time.monotonic())
            if not ready:
                break
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip("\n"))
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    return lines


def test_tap_shows_requests_with_mtls(viz: Viz) -> None:
    lines = tap_lines(viz.cluster, "deploy/web", "-n", viz.namespace, "--path", "/api/list")
    assert len(lines) == 6, lines
    req, rsp, end = lines[:3]
    assert re.fullmatch(r"req id=0:\d+ proxy=in  src=127\.0\.0\.1:\d+ dst=127\.0\.0\.1:\d+ "
                        rf"tls=true :method=GET :authority=web-svc\.{viz.namespace}:80 "
                        r":path=/api/list", req), req
    assert re.fullmatch(r"rsp id=0:\d+ proxy=in  .* tls=true :status=\d{3} latency=\d+µs", rsp)
    assert re.fullmatch(r"end id=0:\d+ proxy=in  .* tls=true duration=\d+µs "
                        r"response-length=\d+B", end), end
    wide = tap_lines(viz.cluster, "deploy/web", "-n", viz.namespace, "--to", "deploy/emoji",
                     "-o", "wide", wanted=3)
    assert all(" proxy=out " in line and " tls=true " in line for line in wide), wide
    labels = re.fullmatch(r"req .* :path=\S+ (.*) ", wide[0])
    assert labels is not None, wide[0]
    assert re.fullmatch(rf"src_deployment=web src_namespace={viz.namespace} src_pod=web-\S+ "
                        rf"src_serviceaccount=web dst_deployment=emoji "
                        rf"dst_namespace={viz.namespace} dst_pod=emoji-\S+ "
                        r"dst_serviceaccount=emoji dst_tls=true", labels[1]), labels[1]
    # -o json: three indented events per request (each ends with a line "}")
    lines = tap_lines(viz.cluster, "deploy/web", "-n", viz.namespace, "--to", "deploy/emoji",
                      "-o", "json", wanted=200)
    events = json_documents("\n".join(lines[:max(i for i, x in enumerate(lines) if x == "}")
                                             + 1]))
    assert [next(k for k in e if k.endswith("Event")) for e in events[:3]] == [
        "requestInitEvent", "responseInitEvent", "responseEndEvent"], events[:3]
    assert events[0]["proxyDirection"] == "OUTBOUND"
    assert events[0]["destination"]["metadata"]["deployment"] == "emoji"
    assert events[0]["destination"]["metadata"]["tls"] == "true"
    assert events[1]["responseInitEvent"]["httpStatus"] == 200


def test_diagnostics_proxy_metrics(viz: Viz) -> None:
    done = run(viz.cluster, "diagnostics", "proxy-metrics", "-n", viz.namespace, "deploy/web")
    assert done.returncode == 0, done.stderr
    assert re.match(r"#\n# POD web-[a-z0-9]+-[a-z0-9]+ \(1 of 1\)\n#\n", done.stdout), \
        done.stdout[:200]
    assert "# HELP request_total Total count of HTTP requests.\n" in done.stdout
    assert 'response_total{direction="inbound"' in done.stdout
    missing = run(viz.cluster, "diagnostics", "proxy-metrics", "-n", viz.namespace,
                  "deploy/nope")
    assert (missing.returncode, missing.stderr) == (
        1, f"Error: no running pods found for deployment/nope in namespace {viz.namespace}\n")


def test_routes_default_and_service_profile(viz: Viz) -> None:
    done = run(viz.cluster, "viz", "routes", "deploy/web", "-n", viz.namespace)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.split("\n")
    assert lines[0].split() == ["ROUTE", "SERVICE", "SUCCESS", "RPS", "LATENCY_P50",
                                "LATENCY_P95", "LATENCY_P99"]
    default = lines[1].split()
    assert default[:2] == ["[DEFAULT]", "web-svc"] and default[3].endswith("rps"), lines
    assert lines[2:] == ["", ""]  # the table, then upstream's blank line
    profile = {"apiVersion": "linkerd.io/v1alpha2", "kind": "ServiceProfile",
               "metadata": {"name": f"web-svc.{viz.namespace}.svc.cluster.local",
                            "namespace": viz.namespace},
               "spec": {"routes": [{"name": "GET /api/list", "condition": {
                   "method": "GET", "pathRegex": "/api/list"}}]}}
    kubectl(viz.cluster, "apply", "-f", "-", input=json.dumps(profile))
    named = run(viz.cluster, "viz", "routes", "deploy/web", "-n", viz.namespace).stdout
    assert [line.split() for line in named.splitlines()[1:3]] == [
        ["GET", "/api/list", "web-svc", "-", "-", "-", "-", "-"],
        ["[DEFAULT]", "web-svc", "-", "-", "-", "-", "-"]]


def test_authz_default_policy(viz: Viz) -> None:
    done = run(viz.cluster, "viz", "authz", "-n", viz.namespace, "deploy/web")
    assert done.returncode == 0, done.stderr
    lines = [line.split() for line in done.stdout.splitlines()]
    assert lines[0] == list(authz.COLUMNS)
    row = next(line for line in lines[1:] if line[:3] == [
        "default", "default:all-unauthenticated", "default/all-unauthenticated"])
    assert row[3] == "0.0rps" and re.fullmatch(r"\d+\.\d\d%", row[4])
    assert float(row[5].removesuffix("rps")) > 0


def test_top_aggregates_live_requests(viz: Viz) -> None:
    """Without a terminal the table prints once the stream ends (here: SIGTERM)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MESHLAB_") and k != "KUBECONFIG"}
    env["KUBECONFIG"] = str(viz.cluster.kubeconfig)
    proc = subprocess.Popen([LINKERD, "viz", "top", "deploy/web", "-n", viz.namespace],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        time.sleep(6)  # vote-bot calls web every second
        proc.terminate()
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["Source", "Destination", "Method", "Path", "Count", "Best",
                                "Worst", "Last", "Success", "Rate"]
    listing = next(line.split() for line in lines[1:] if "/api/list" in line)
    assert listing[0].startswith("vote-bot-") and listing[1].startswith("web-")
    assert listing[2] == "GET" and int(listing[4]) >= 1 and listing[-1].endswith("%")


def test_viz_check_proxy_finds_the_proxies_in_prometheus(viz: Viz) -> None:
    done = run(viz.cluster, "viz", "check", "--proxy", "-n", viz.namespace, "--wait", "50s")
    assert done.returncode == 0, done.stdout
    assert "\nlinkerd-viz-data-plane\n----------------------\n" in done.stdout
    assert "\u221a data plane proxy metrics are present in Prometheus\n" in done.stdout
