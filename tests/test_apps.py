"""The sample-app twins as real processes on loopback, wired by an in-test forward proxy that
stands in for the sidecar (it maps `details:9080` etc. to the twins' ports and records every
request), plus the manifests and the image catalog."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from labs.embedded.apps.catalog import APPS, SIDECAR, app_for, repository
from labs.embedded.apps.prometheus import IMAGE_REPOSITORY as PROMETHEUS_IMAGE
from labs.embedded.loopback import free_port

MANIFESTS = Path(__file__).resolve().parents[1] / "labs" / "manifests"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())


class ForwardProxy:
    """A minimal HTTP forward proxy: absolute-form requests to `name:port` go to the mapped
    loopback port; an unmapped or dead upstream gets Envoy's 503 `no healthy upstream`."""

    def __init__(self) -> None:
        self.routes: dict[str, int] = {}
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                headers = {k.lower(): v for k, v in self.headers.items()}
                proxy.seen.append((url.netloc, url.path, headers))
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                port = proxy.routes.get(url.netloc)
                status, reply, content_type = 503, b"no healthy upstream", "text/plain"
                if port is not None:
                    target = f"http://127.0.0.1:{port}{url.path}" + (
                        f"?{url.query}" if url.query else "")
                    forwarded = {k: v for k, v in self.headers.items()
                                 if k.lower() not in ("connection", "proxy-connection")}
                    request = urllib.request.Request(target, body, forwarded, method=self.command)
                    try:
                        with DIRECT.open(request, timeout=15) as response:
                            status, reply = response.status, response.read()
                            content_type = response.headers.get("Content-Type", "")
                    except urllib.error.HTTPError as error:
                        status, reply = error.code, error.read()
                    except OSError:
                        pass
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            do_POST = do_GET

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def requests_to(self, authority: str) -> list[dict[str, str]]:
        return [headers for netloc, _, headers in self.seen if netloc == authority]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Twin:
    """One twin process started from its catalog entry, stopped with SIGTERM."""

    def __init__(self, image: str, proxy: ForwardProxy, log: Path, name: str = "pod-0",
                 ports: int = 1) -> None:
        app = app_for(image)
        assert app is not None, image
        self.ports = [free_port() for _ in range(ports)]
        env = {"PATH": os.environ["PATH"], "HOSTNAME": name, "http_proxy": proxy.url,
               "no_proxy": "localhost,127.0.0.1,::1"}
        self.log = log
        self.process = subprocess.Popen(app.argv(self.ports), env=env, stdout=log.open("w"),
                                        stderr=subprocess.STDOUT)

    @property
    def port(self) -> int:
        return self.ports[0]

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.01)
        pytest.fail(f"twin did not listen on {self.port}: {self.log.read_text()}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=10)


@pytest.fixture(scope="module")
def proxy() -> Iterator[ForwardProxy]:
    forward = ForwardProxy()
    yield forward
    forward.close()


class Starter:
    """start(image, service=authority, name=pod name) -> a ready Twin routed by the proxy."""

    def __init__(self, proxy: ForwardProxy, logs: Path) -> None:
        self.proxy, self.logs, self.twins = proxy, logs, list[Twin]()

    def __call__(self, image: str, service: str = "", name: str = "pod-0",
                 ports: int = 1) -> Twin:
        twin = Twin(image, self.proxy, self.logs / f"{len(self.twins)}.log", name, ports)
        self.twins.append(twin)
        twin.wait_ready()
        if service:
            self.proxy.routes[service] = twin.port
        return twin

    def stop_all(self) -> None:
        codes = [twin.stop() for twin in self.twins]
        assert codes == [0] * len(self.twins), "twins must exit cleanly on SIGTERM"


@pytest.fixture
def start(proxy: ForwardProxy, tmp_path: Path) -> Iterator[Starter]:
    starter = Starter(proxy, tmp_path)
    yield starter
    starter.stop_all()
    proxy.routes.clear()


@pytest.fixture(scope="module")
def bookinfo_twins(proxy: ForwardProxy,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, int]]:
    """All Bookinfo twins, started once: details, ratings, reviews v1/v2/v3, productpage."""
    starter = Starter(proxy, tmp_path_factory.mktemp("bookinfo"))
    ports = {"details:9080": starter("istio/examples-bookinfo-details-v1:1.20.1").port,
             "ratings:9080": starter("istio/examples-bookinfo-ratings-v1:1.20.1").port,
             "productpage": starter("docker.io/istio/examples-bookinfo-productpage-v1:1.20.1").port}
    for version in ("v1", "v2", "v3"):
        ports[version] = starter(f"docker.io/istio/examples-bookinfo-reviews-{version}:1.20.1",
                                 name=f"reviews-{version}-5b5d6c5c8-abcde").port
    yield ports
    starter.stop_all()


@pytest.fixture
def bookinfo(proxy: ForwardProxy, bookinfo_twins: dict[str, int]) -> Iterator[Any]:
    """bookinfo(reviews version or None, ratings=True) -> productpage's port, routes set."""

    def route(reviews: str | None, ratings: bool = True) -> int:
        proxy.routes.clear()
        proxy.routes["details:9080"] = bookinfo_twins["details:9080"]
        if ratings:
            proxy.routes["ratings:9080"] = bookinfo_twins["ratings:9080"]
        if reviews:
            proxy.routes["reviews:9080"] = bookinfo_twins[reviews]
        return bookinfo_twins["productpage"]

    yield route
    proxy.routes.clear()
    proxy.seen.clear()


def get(port: int, path: str, headers: dict[str, str] | None = None,
        data: bytes | None = None) -> tuple[int, str, Any]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data, headers or {})
    try:
        with DIRECT.open(request, timeout=15) as response:
            return response.status, response.read().decode(), response.headers
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(), error.headers


# --- bookinfo ------------------------------------------------------------------------------

@pytest.mark.parametrize(("version", "color"), [("v1", None), ("v2", "black"), ("v3", "red")])
def test_productpage_shows_the_stars_of_each_reviews_version(bookinfo: Any, version: str,
                                                             color: str | None) -> None:
    """Does each reviews version give the page no stars, black stars or red stars?"""
    port = bookinfo(version)
    status, html, _ = get(port, "/productpage")
    assert status == 200
    assert "<title>Simple Bookstore App</title>" in html
    assert "The Comedy of Errors" in html
    assert "PublisherA" in html and "1234567890" in html
    assert "An extremely entertaining play by Shakespeare" in html
    assert f"Reviews served by: reviews-{version}-5b5d6c5c8-abcde" in html
    if color is None:
        assert "glyphicon-star" not in html
    else:
        assert html.count('<span class="glyphicon glyphicon-star"></span>') == 9  # 5 + 4
        assert f'<font color="{color}">' in html


def test_reviews_json_is_the_java_services(bookinfo: Any, proxy: ForwardProxy) -> None:
    """Is the reviews body the real service's JSON, with ratings fetched from ratings?"""
    bookinfo("v2")
    reviews = proxy.routes["reviews:9080"]
    status, body, _ = get(reviews, "/reviews/0")
    assert status == 200
    assert json.loads(body) == {
        "id": "0", "podname": "reviews-v2-5b5d6c5c8-abcde", "clustername": "null",
        "reviews": [
            {"reviewer": "Reviewer1", "text": "An extremely entertaining play by Shakespeare. "
             "The slapstick humour is refreshing!", "rating": {"stars": 5, "color": "black"}},
            {"reviewer": "Reviewer2", "text": "Absolutely fun and entertaining. The play lacks "
             "thematic depth when compared to other plays by Shakespeare.",
             "rating": {"stars": 4, "color": "black"}},
        ]}
    assert get(reviews, "/health")[0] == 200
    assert get(proxy.routes["details:9080"], "/details/0")[1] == (
        '{"id":0,"author":"William Shakespeare","year":1595,"type":"paperback","pages":200,'
        '"publisher":"PublisherA","language":"English","ISBN-10":"1234567890",'
        '"ISBN-13":"123-1234567890"}')
    assert get(proxy.routes["ratings:9080"], "/ratings/0")[1] == (
        '{"id":0,"ratings":{"Reviewer1":5,"Reviewer2":4}}')


def test_login_as_jason_sends_end_user_to_reviews(bookinfo: Any, proxy: ForwardProxy) -> None:
    """After signing in, does productpage greet the user and send `end-user` to reviews?"""
    port = bookinfo("v1")
    status, _, headers = get(port, "/login", data=b"username=jason&passwd=jason")
    assert status == 302 and headers["Location"] == "/productpage"
    cookie = headers["Set-Cookie"].split(";")[0]
    assert cookie == "session=jason"
    status, html, _ = get(port, "/productpage", {"Cookie": cookie})
    assert "Welcome jason" in html and "Sign out" in html
    assert proxy.requests_to("reviews:9080")[-1]["end-user"] == "jason"
    status, html, headers = get(port, "/logout", {"Cookie": cookie})
    assert "Max-Age=0" in headers["Set-Cookie"]


def test_reviews_down_shows_the_sorry_text(bookinfo: Any, proxy: ForwardProxy) -> None:
    """With reviews unreachable, does the page say so after trying twice, like the real app?"""
    port = bookinfo(None)
    status, html, _ = get(port, "/productpage")
    assert status == 200
    assert "Sorry, product reviews are currently unavailable for this book." in html
    assert "PublisherA" in html
    assert len(proxy.requests_to("reviews:9080")) == 2


def test_ratings_down_with_v2_says_ratings_unavailable(bookinfo: Any) -> None:
    """With ratings unreachable, does reviews v2 report it inside the page?"""
    port = bookinfo("v2", ratings=False)
    html = get(port, "/productpage")[1]
    assert "Ratings service is currently unavailable" in html
    assert "glyphicon-star" not in html


def test_details_down_shows_its_sorry_text(bookinfo: Any, proxy: ForwardProxy) -> None:
    port = bookinfo("v1")
    del proxy.routes["details:9080"]
    html = get(port, "/productpage")[1]
    assert "Sorry, product details are currently unavailable for this book." in html


def test_tracing_headers_reach_ratings(bookinfo: Any, proxy: ForwardProxy) -> None:
    """Are the trace and request ids carried productpage -> reviews -> ratings?"""
    port = bookinfo("v3")
    trace = {"x-request-id": "3f1c-req", "x-b3-traceid": "463ac35c9f6413ad48485a3953bb6124",
             "x-b3-spanid": "a2fb4a1d1a96d312", "x-b3-sampled": "1",
             "traceparent": "00-463ac35c9f6413ad48485a3953bb6124-a2fb4a1d1a96d312-01"}
    get(port, "/productpage", trace)
    for service in ("details:9080", "reviews:9080", "ratings:9080"):
        seen = proxy.requests_to(service)[-1]
        assert {k: seen.get(k) for k in trace} == trace, service


def test_productpage_api(bookinfo: Any) -> None:
    port = bookinfo("v2")
    products = json.loads(get(port, "/api/v1/products")[1])
    assert products[0]["title"] == "The Comedy of Errors"
    assert json.loads(get(port, "/api/v1/products/0")[1])["pages"] == 200
    assert len(json.loads(get(port, "/api/v1/products/0/reviews")[1])["reviews"]) == 2
    assert json.loads(get(port, "/api/v1/products/0/ratings")[1])["ratings"] == {
        "Reviewer1": 5, "Reviewer2": 4}
    assert get(port, "/health")[:2] == (200, "Product page is healthy")


# --- httpbin -------------------------------------------------------------------------------

def test_go_httpbin_endpoints(start: Starter) -> None:
    """Do /headers, /get, /ip, /status and /delay answer like go-httpbin?"""
    port = start("docker.io/mccutchen/go-httpbin:v2.15.0").port
    _, body, _ = get(port, "/headers", {"X-B3-Sampled": "1", "user-agent": "curl/8.5.0"})
    headers = json.loads(body)["headers"]
    assert headers["X-B3-Sampled"] == ["1"] and headers["User-Agent"] == ["curl/8.5.0"]
    got = json.loads(get(port, "/get?show=1")[1])
    assert got["args"] == {"show": ["1"]} and got["method"] == "GET"
    assert got["url"].endswith("/get?show=1")
    assert json.loads(get(port, "/ip")[1]) == {"origin": "127.0.0.1"}
    assert get(port, "/status/418")[0] == 418
    assert get(port, "/status/503")[0] == 503
    assert get(port, "/status/200,201")[0] in (200, 201)
    started = time.monotonic()
    assert get(port, "/delay/0.3")[0] == 200
    assert time.monotonic() - started >= 0.3
    assert get(port, "/delay/11")[0] == 400
    posted = json.loads(get(port, "/post", {"Content-Type": "application/json"}, b'{"a":1}')[1])
    assert posted["json"] == {"a": 1}
    assert get(port, "/response-headers?X-Lab=yes")[2]["X-Lab"] == "yes"
    assert get(port, "/anything/x")[0] == 200


def test_python_httpbin_headers_are_strings(start: Starter) -> None:
    port = start("kennethreitz/httpbin").port
    headers = json.loads(get(port, "/headers", {"X-Test": "a"})[1])["headers"]
    assert headers["X-Test"] == "a"


# --- fortio and the curl client -----------------------------------------------------------

def test_fortio_load_reports_codes_and_percentiles(start: Starter, proxy: ForwardProxy) -> None:
    """Does `fortio load -c 2 -qps 0 -n 20` through the proxy print fortio's report?"""
    start("mccutchen/go-httpbin", "httpbin:8000")
    fortio = app_for("fortio/fortio:latest_release")
    assert fortio is not None
    env = {"PATH": os.environ["PATH"], "http_proxy": proxy.url}
    run = subprocess.run([*fortio.commands["/usr/bin/fortio"], "load", "-c", "2", "-qps", "0",
                          "-n", "20", "-loglevel", "Warning", "http://httpbin:8000/get"],
                         env=env, capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert "Starting at max qps with 2 thread(s)" in out
    assert "for exactly 20 calls (10 per thread + 0)" in out
    assert "Code 200 : 20 (100.0 %)" in out
    assert re.search(r"^# target 50% [0-9.e-]+$", out, re.M)
    assert re.search(r"^# target 99.9% [0-9.e-]+$", out, re.M)
    assert "Sockets used: 2 (for perfect keepalive, would be 2)" in out
    assert re.search(r"^All done 20 calls \(plus 0 warmup\) [0-9.]+ ms avg, [0-9.]+ qps$", out,
                     re.M)
    assert len(proxy.requests_to("httpbin:8000")) == 20
    assert proxy.requests_to("httpbin:8000")[0]["user-agent"].startswith("fortio.org/fortio-")


def test_fortio_counts_error_codes_and_curl(start: Starter, proxy: ForwardProxy) -> None:
    start("mccutchen/go-httpbin", "httpbin:8000")
    fortio = app_for("fortio/fortio")
    assert fortio is not None
    env = {"PATH": os.environ["PATH"], "http_proxy": proxy.url}
    run = subprocess.run([*fortio.commands["fortio"], "load", "-c", "1", "-qps", "0", "-n",
                          "4", "-H", "X-Lab: 1", "http://httpbin:8000/status/503"],
                         env=env, capture_output=True, text=True, timeout=30)
    assert "Code 503 : 4 (100.0 %)" in run.stdout
    assert "Non ok http code" in run.stderr
    assert proxy.requests_to("httpbin:8000")[-1]["x-lab"] == "1"
    curl = subprocess.run([*fortio.commands["fortio"], "curl", "http://httpbin:8000/headers"],
                          env=env, capture_output=True, text=True, timeout=30)
    assert curl.stdout.startswith("HTTP/1.1 200 OK") and '"Host": [' in curl.stdout
    bad = subprocess.run([*fortio.commands["fortio"], "load", "-bogus", "http://x"],
                         env=env, capture_output=True, text=True, timeout=30)
    assert bad.returncode == 1 and "flag provided but not defined: -bogus" in bad.stderr


def test_fortio_server_echoes(start: Starter) -> None:
    """Does the fortio container echo bodies with fortio's ?status= option on both ports?"""
    server = start("fortio/fortio", ports=2)
    assert get(server.port, "/echo?status=429", data=b"ping")[:2] == (429, "ping")
    assert get(server.ports[1], "/", data=b"x")[:2] == (200, "x")


def test_curl_client_stays_alive_until_sigterm(proxy: ForwardProxy, tmp_path: Path) -> None:
    twin = Twin("curlimages/curl", proxy, tmp_path / "curl.log", ports=0)
    time.sleep(0.3)
    assert twin.process.poll() is None
    assert twin.stop() == 0


# --- catalog and manifests -----------------------------------------------------------------

def test_catalog_matches_repositories_with_any_registry_and_tag() -> None:
    assert repository("docker.io/istio/examples-bookinfo-reviews-v2:1.20.1") == (
        "istio/examples-bookinfo-reviews-v2")
    assert repository("localhost:5000/fortio/fortio@sha256:abc") == "fortio/fortio"
    assert repository("docker.io/library/nginx") == "nginx"
    reviews = app_for("istio/examples-bookinfo-reviews-v3")
    assert reviews is not None and "v3" in reviews.description
    assert reviews.argv([9999])[-4:] == ["--version", "v3", "--port", "9999"]
    assert app_for("nginx:1.27") is None
    assert app_for("istio/proxyv2:1.30.0") is SIDECAR  # the sidecar runs Envoy


def manifest_images() -> list[tuple[str, str]]:
    out = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc["kind"] == "Deployment":
                for container in doc["spec"]["template"]["spec"]["containers"]:
                    out.append((path.name, container["image"]))
    return out


def test_manifests_parse_and_every_image_is_in_the_catalog() -> None:
    """Does every image the course's manifests name run a twin written for it?"""
    names = {p.name for p in MANIFESTS.glob("*.yaml")}
    assert {"bookinfo.yaml", "httpbin.yaml", "curl.yaml", "fortio.yaml",
            "ext-authz.yaml"} <= names
    # Prometheus (Istio's addon, linkerd-viz's) runs the real Prometheus
    # (labs.embedded.apps.prometheus), not a catalog app.
    images = [(n, i) for n, i in manifest_images() if repository(i) != PROMETHEUS_IMAGE]
    expected = {
        "bookinfo.yaml": 6, "httpbin.yaml": 1, "curl.yaml": 1, "fortio.yaml": 1,
        "ext-authz.yaml": 1, "istio-ingressgateway.yaml": 1,  # the gateway's proxyv2
        "jaeger.yaml": 1, "grafana.yaml": 1, "kiali.yaml": 1,  # Istio's addons
        "podinfo.yaml": 1, "flagger-loadtester.yaml": 1, "emojivoto.yaml": 4,
        "linkerd-control-plane.yaml": 5, "linkerd-viz.yaml": 4}
    assert Counter(n for n, _ in images) == expected
    for name, image in images:
        assert app_for(image) is not None, f"{name}: {image}"
    assert {repository(image) for _, image in images} <= set(APPS)


def test_bookinfo_manifest_has_service_accounts_and_versions() -> None:
    docs = [d for d in yaml.safe_load_all((MANIFESTS / "bookinfo.yaml").read_text()) if d]
    accounts = {d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount"}
    assert accounts == {"bookinfo-details", "bookinfo-ratings", "bookinfo-reviews",
                        "bookinfo-productpage"}
    versions = {(d["metadata"]["labels"]["app"], d["metadata"]["labels"]["version"])
                for d in docs if d["kind"] == "Deployment"}
    assert ("reviews", "v3") in versions and len(versions) == 6
