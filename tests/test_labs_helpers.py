"""Do the learner-facing helpers `labs.traffic` and `labs.proxy` tell the truth about a real
mesh — counts, labels and latencies of real requests; the tables istioctl would print from a
sidecar's real config_dump — and say what to fix when asked something impossible?

One meshed namespace with bookinfo and curl for the whole module (plus one pod without a
sidecar). The kind/existing-cluster path of `labs.proxy` (`pilot-agent request` through
`kubectl exec`) cannot run here; only its selection is checked.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable

import pytest
from conftest import poll
from mesh_support import (
    MeshNamespace,
    destination_rule,
    mesh_namespace_fixture,
    route,
    virtual_service,
    yaml_stream,
)

from labs import proxy
from labs.cluster import ClusterError, ClusterRef
from labs.course import ClusterUnavailable, connect
from labs.traffic import ProbeError, ProbeResult, probe, reviews_version

PLAIN_POD = """
apiVersion: v1
kind: Pod
metadata:
  name: plain
  labels: {app: plain, sidecar.istio.io/inject: "false"}
spec:
  containers:
  - name: httpbin
    image: docker.io/mccutchen/go-httpbin:v2.15.0
    ports:
    - containerPort: 8080
"""

REVIEWS_SUBSETS = yaml_stream(destination_rule("reviews", "v1", "v2"))

mesh = mesh_namespace_fixture("bookinfo", "curl", prefix="helpers", extra_yaml=PLAIN_POD)


# --- labs.traffic --------------------------------------------------------------------------------

def test_probe_counts_versions_codes_and_latency(mesh: MeshNamespace) -> None:
    """Does one probe through productpage see every reviews version, with percentiles?"""
    result = probe("http://productpage:9080/productpage", namespace=mesh.name, n=30,
                   classify=reviews_version, cluster=mesh.cluster)

    assert result.total == 30 and result.codes == {200: 30}
    assert set(result.labels) == {"v1", "v2", "v3"}, result
    assert sum(result.fraction(v) for v in ("v1", "v2", "v3")) == pytest.approx(1.0)
    assert result.fraction(200) == 1.0 and result.error_rate == 0.0
    lat = result.latency_ms
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] == max(result.latencies_ms)
    text = str(result)
    assert "30 requests to http://productpage:9080/productpage from deploy/curl" in text
    assert "v1" in text and "p99" in text
    assert "<table>" in result._repr_html_()


def test_probe_sends_method_and_headers(mesh: MeshNamespace) -> None:
    """Do `headers` and `method` reach the app? (productpage greets a signed-in user, and
    answers POST /login with a redirect but GET /login with 405.)"""
    signed_in = probe("http://productpage:9080/productpage", namespace=mesh.name, n=2,
                      headers={"Cookie": "session=jason"}, cluster=mesh.cluster,
                      classify=lambda body: "jason" if "Welcome jason" in body else None)
    posted = probe("http://productpage:9080/login", namespace=mesh.name, n=2, method="POST",
                   cluster=mesh.cluster)
    got = probe("http://productpage:9080/login", namespace=mesh.name, n=1, cluster=mesh.cluster)

    assert signed_in.labels == {"jason": 2}, signed_in
    assert posted.codes == {302: 2}, posted
    assert got.codes == {405: 1}, got


def test_probe_reports_no_response_as_code_zero(mesh: MeshNamespace) -> None:
    """A name nothing serves: curl gets no HTTP status (000) — counted as 0, an error."""
    result = probe("http://127.0.0.1:1/", namespace=mesh.name, n=2, cluster=mesh.cluster,
                   max_time=5)
    assert result.codes == {0: 2} and result.error_rate == 1.0
    assert all(code != 0 for code in result.exit_codes), result.exit_codes


def test_probe_until_waits_for_the_mesh_to_show_what_is_expected(mesh: MeshNamespace) -> None:
    """Right after a route is applied, does `until` probe until all answers come from v1 and
    return that result — and when what is expected never comes, probe again and again until
    the deadline, then return the last try, saying plainly that it did not settle?"""
    url = "http://reviews:9080/reviews/0"
    tries: list[ProbeResult] = []

    def expecting(version: str) -> Callable[[ProbeResult], bool]:
        def seen(result: ProbeResult) -> bool:
            tries.append(result)
            return result.fraction(version) == 1
        return seen

    try:
        mesh.apply(yaml_stream(destination_rule("reviews", "v1", "v2"),
                               virtual_service("reviews", route("reviews", "v1"))))
        settled = probe(url, from_workload="productpage-v1", namespace=mesh.name, n=10,
                        classify=reviews_version, until=expecting("v1"), interval=0.2,
                        cluster=mesh.cluster)
        assert settled.settled and settled.labels == {"v1": 10} and settled is tries[-1]
        assert "did not settle" not in str(settled) + settled._repr_html_()

        tries.clear()
        start = time.monotonic()
        never = probe(url, from_workload="productpage-v1", namespace=mesh.name, n=3,
                      classify=reviews_version, until=expecting("v2"), deadline=2,
                      interval=0.5, cluster=mesh.cluster)
        assert time.monotonic() - start < 2 + 5  # the deadline, plus one last probe at most
    finally:
        mesh.reset_routing()
    assert len(tries) >= 3 and never is not tries[-1] and never.labels == tries[-1].labels
    assert not never.settled and never.labels == {"v1": 3}
    assert str(never).startswith("did not settle within 2 s: has the change been applied?")
    assert repr(never) == str(never) and "did not settle within 2 s" in never._repr_html_()


def test_probe_explains_a_missing_workload(mesh: MeshNamespace) -> None:
    """Is a client the notebook has not deployed yet named, with what to do — and shown in a
    notebook as that message alone, not a traceback through labs/?"""
    with pytest.raises(ProbeError, match=r"deploy/nope is not in namespace .* yet: run the "
                                         r"cells that create it first.*labs/manifests/curl.yaml"
                       ) as missing:
        probe("http://reviews:9080/", namespace=mesh.name, from_workload="nope", n=1,
              cluster=mesh.cluster)
    assert missing.value._render_traceback_() == [f"ProbeError: {missing.value}"]
    with pytest.raises(ProbeError, match="there is no namespace nowhere yet, so no deploy/curl"):
        probe("http://reviews:9080/", namespace="nowhere", n=1, cluster=mesh.cluster)
    with pytest.raises(ProbeError, match="at least one request"):
        probe("http://reviews:9080/", namespace=mesh.name, n=0, cluster=mesh.cluster)


def test_a_cluster_that_cannot_be_selected_is_one_message() -> None:
    """Is `labs.connect`'s failure a ClusterError (for callers) that a notebook shows as its
    message alone?"""
    with pytest.raises(ClusterUnavailable, match="cannot select a cluster with BOGUS") as raised:
        connect({"BOGUS": "x"})
    assert isinstance(raised.value, ClusterError)
    assert raised.value._render_traceback_() == [f"ClusterUnavailable: {raised.value}"]


def test_reviews_version_reads_real_bodies(mesh: MeshNamespace) -> None:
    """Is every version named right, from the pages and JSON the twins really serve — by the
    serving pod's name, and by the stars alone when the name is hidden?"""
    seen = set()
    for url in ["http://productpage:9080/productpage"] * 6 + ["http://reviews:9080/reviews/0"] * 6:
        code, body = mesh.curl(url)
        assert code == 200, body
        version = reviews_version(body)
        assert version in ("v1", "v2", "v3"), body
        seen.add(version)
        anonymous = re.sub(r"reviews-v\d-[\w-]+", "reviews-pod", body)
        assert reviews_version(anonymous) == version, anonymous
    assert len(seen) >= 2, seen
    # Without the pod name, stars decide: red v3, black v2, reviews without stars v1.
    stars = '<font color="{}">\n  <span class="glyphicon glyphicon-star"></span>\n</font>'
    assert reviews_version("<h4>Book Reviews</h4>" + stars.format("red")) == "v3"
    assert reviews_version("<h4>Book Reviews</h4>" + stars.format("black")) == "v2"
    assert reviews_version("<h4>Book Reviews</h4><blockquote>good</blockquote>") == "v1"
    assert reviews_version('{"id": "0", "reviews": [{"reviewer": "R", "text": "t"}]}') == "v1"
    assert reviews_version("Sorry, product reviews are currently unavailable") is None
    assert reviews_version("<p><i>Ratings service is currently unavailable</i></p>") is None


# --- labs.proxy ----------------------------------------------------------------------------------

def test_views_show_the_sidecar_config(mesh: MeshNamespace) -> None:
    """Do listeners / routes / clusters / secrets show what productpage's Envoy runs?"""
    pod = mesh.pod("productpage")
    fqdn = f"reviews.{mesh.name}.svc.cluster.local"

    listeners = proxy.listeners(pod, mesh.name, cluster=mesh.cluster)
    assert {"outbound", "inbound|9080||"} <= set(listeners.column("NAME")), listeners
    assert all(row["ADDRESSES"] == "127.0.0.1" for row in listeners)
    assert "Route: outbound" in listeners.column("DESTINATION")

    routes = proxy.routes(pod, mesh.name, cluster=mesh.cluster)
    reviews = [row for row in routes if row["VHOST NAME"] == f"{fqdn}:9080"]
    assert len(reviews) == 1 and reviews[0]["MATCH"] == "/*", routes
    # istioctl's unexpandDomains: the .svc / .svc.cluster.local forms are dropped
    assert reviews[0]["DOMAINS"] == f"reviews, reviews.{mesh.name} + 1 more...", reviews
    assert reviews[0]["DESTINATION"] == f"outbound|9080||{fqdn}"

    clusters = proxy.clusters(pod, mesh.name, cluster=mesh.cluster)
    assert {"SERVICE FQDN": fqdn, "PORT": "9080", "SUBSET": "-", "DIRECTION": "outbound",
            "TYPE": "STATIC", "DESTINATION RULE": ""} in clusters, clusters
    assert "SERVICE FQDN" in str(clusters).splitlines()[0]

    secrets = {row["RESOURCE NAME"]: row for row in proxy.secrets(pod, mesh.name,
                                                                  cluster=mesh.cluster)}
    assert secrets["default"]["TYPE"] == "Cert Chain"
    assert secrets["ROOTCA"]["TYPE"] == "CA"
    assert all(row["STATUS"] == "ACTIVE" and row["VALID CERT"] == "true"
               for row in secrets.values()), secrets
    served = json.loads(proxy.admin(pod, mesh.name, "certs", cluster=mesh.cluster))
    serials = {c["serial_number"].lower().lstrip("0")
               for cert in served["certificates"] for c in cert["cert_chain"]}
    assert secrets["default"]["SERIAL NUMBER"].lstrip("0") in serials, (secrets, served)


def test_wait_for_config_returns_once_the_proxy_has_it(mesh: MeshNamespace) -> None:
    subset = f"outbound|9080|v2|reviews.{mesh.name}.svc.cluster.local"
    try:
        mesh.apply(REVIEWS_SUBSETS)
        dump = proxy.wait_for_config("deploy/productpage-v1", mesh.name,
                                     proxy.mentions(subset), cluster=mesh.cluster)
        assert subset in json.dumps(dump)
        rows = proxy.cluster_table(dump)
        assert {"v1", "v2"} <= {r["SUBSET"] for r in rows if r["SERVICE FQDN"].startswith(
            "reviews.")}
    finally:
        mesh.reset_routing()
    with pytest.raises(proxy.ProxyError, match="did not get the expected config within"):
        proxy.wait_for_config("deploy/productpage-v1", mesh.name, lambda dump: False,
                              timeout=0.3, cluster=mesh.cluster)


def test_stats_count_requests_per_cluster(mesh: MeshNamespace) -> None:
    stat = f"cluster.outbound|9080||ratings.{mesh.name}.svc.cluster.local.upstream_rq_200"
    before = proxy.stats("deploy/curl", mesh.name, cluster=mesh.cluster).get(stat, 0)
    probe("http://ratings:9080/ratings/0", namespace=mesh.name, n=3, cluster=mesh.cluster)
    poll(lambda: proxy.stats("deploy/curl", mesh.name, cluster=mesh.cluster).get(stat, 0)
         >= before + 3, f"{stat} to grow by 3")


def test_proxy_errors_say_what_to_do(mesh: MeshNamespace) -> None:
    with pytest.raises(proxy.ProxyError, match="no pod 'nope'"):
        proxy.routes("nope", mesh.name, cluster=mesh.cluster)
    with pytest.raises(proxy.ProxyError, match=r"no istio-proxy sidecar.*istio-injection"):
        proxy.routes("plain", mesh.name, cluster=mesh.cluster)
    with pytest.raises(proxy.ProxyError, match="no Deployment 'nope'"):
        proxy.clusters("deploy/nope", mesh.name, cluster=mesh.cluster)


def test_other_backends_go_through_pilot_agent(mesh: MeshNamespace) -> None:
    """Without an embedded cluster the admin API is asked via `kubectl exec ... pilot-agent
    request GET`, as istioctl does: the embedded sidecars have it, and it answers with the same
    Envoy as the admin port does."""
    remote = ClusterRef(mesh.cluster.kubeconfig, mesh.cluster.context)
    direct = proxy.config_dump("deploy/productpage-v1", mesh.name, cluster=mesh.cluster)
    through_exec = proxy.config_dump("deploy/productpage-v1", mesh.name, cluster=remote)
    assert ([c["@type"] for c in through_exec["configs"]]
            == [c["@type"] for c in direct["configs"]])
