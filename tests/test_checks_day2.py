"""Do the day-2 public checks judge a real cluster correctly — day2.authz and day2.jwt failing
fatally without their workloads, failing with a reason that names the offending request while a
policy is missing or too broad, and passing with the notebooks' own solutions?

Real session cluster, real kubectl, real Envoy sidecars. The namespaces are the labs' own
(`bookinfo`, `foo`), so the tests run in file order and delete both at the start and the end.
The solutions applied are read from the notebooks' solution cells, so the checks are proven
against exactly what the notebooks teach. Failing behavioural checks would retry for their
whole deadline (20 s); "still failing" runs use a short deadline, passing runs the real one.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from typing import Any

import nbformat
import pytest
from conftest import without_namespaces
from mesh_support import MeshNamespace, yaml_stream
from notebook_support import COURSE

from labs.checks import Check, CheckContext, Report, Retry, Status, find, run_checks
from labs.checks.public.day2.jwt import ISSUER, share_signer
from labs.cluster import ClusterRef
from labs.tokens import Signer

BOOKINFO = "bookinfo"
FOO = "foo"
QUICK = Retry(consecutive=2, deadline=2.5, interval=0.5)
SOLUTION = re.compile(r'labs\.apply\(f?"""(?P<yaml>.*?)""", namespace="(?P<ns>[a-z]+)"\)',
                      re.DOTALL)


def solution(notebook: str, grade_id: str, **values: Any) -> str:
    """The YAML a notebook's solution cell applies; `values` fill an f-string's fields."""
    cells = nbformat.read(COURSE / "day2" / notebook, as_version=4).cells
    source = next(c.source for c in cells
                  if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)
    found = SOLUTION.search(source)
    assert found, f"no labs.apply(...) in {notebook} cell {grade_id}"
    return found["yaml"].format(**values) if values else found["yaml"]


def policy(name: str, app: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": {"name": name},
            "spec": {"selector": {"matchLabels": {"app": app}}, **spec}}


@pytest.fixture(scope="module")
def labs_namespaces(cluster: ClusterRef) -> Iterator[ClusterRef]:
    yield from without_namespaces(cluster, BOOKINFO, FOO)


def judge(cluster: ClusterRef, lab: str, expected: dict[str, Status]) -> Report:
    """Run the named checks of `lab` and assert their statuses. A check expected to pass keeps
    its own retry (the mesh may still be converging); one expected to fail gets a short
    deadline instead of retrying for its whole one."""
    checks: list[Check] = [c if expected[name] is Status.PASS or not c.retry
                           else dataclasses.replace(c, retry=QUICK)
                           for c in find(lab) if (name := c.id.rpartition(".")[2]) in expected]
    report = run_checks(lab, checks, CheckContext(cluster))
    assert statuses(report) == expected, report
    return report


def statuses(report: Report) -> dict[str, Status]:
    return {r.check.id.rpartition(".")[2]: r.outcome.status for r in report.results}


def reason(report: Report, name: str) -> str:
    return next(r.outcome.reason for r in report.results if r.check.id.endswith("." + name))


def meshed(cluster: ClusterRef, name: str) -> MeshNamespace:
    """The lab's namespace `name`, labelled for injection (as the notebooks' setup does)."""
    for args in (("create", "namespace", name),
                 ("label", "namespace", name, "istio-injection=enabled")):
        result = cluster.kubectl(*args)
        assert result.returncode == 0, result.stderr
    return MeshNamespace(cluster, name)


# --- day2.authz ----------------------------------------------------------------------------------

PASS, FAIL, SKIP = Status.PASS, Status.FAIL, Status.SKIP
AUTHZ_BOOK = "01-authorization.ipynb"


def test_authz_without_bookinfo_fails_fatally(labs_namespaces: ClusterRef) -> None:
    report = judge(labs_namespaces, "day2.authz", {
        "workloads": FAIL, "allow-nothing": SKIP, "productpage-viewer": SKIP,
        "details-reviews": SKIP, "ratings": SKIP, "deny-api": SKIP})
    assert reason(report, "workloads") == (
        "in namespace bookinfo: no Ready pod for app productpage, details, reviews, ratings, curl")
    assert report.possible == 5  # the fatal setup check is worth nothing


def test_authz_fails_on_an_open_namespace(labs_namespaces: ClusterRef) -> None:
    """No policy: everything is allowed, so each check names the request that got too much."""
    meshed(labs_namespaces, BOOKINFO).deploy("bookinfo", "curl")
    report = judge(labs_namespaces, "day2.authz", {
        "workloads": PASS, "allow-nothing": FAIL, "productpage-viewer": FAIL,
        "details-reviews": FAIL, "deny-api": FAIL})
    assert reason(report, "allow-nothing") == ("no policy in bookinfo is an ALLOW without "
                                               "selector and rules (policies there: none)")
    assert reason(report, "productpage-viewer") == (
        "POST productpage/login from curl: expected 403, got 302 ×2")
    assert reason(report, "details-reviews") == (
        "GET details/details/0 from curl: expected 403, got 200 ×2; "
        "GET reviews/reviews/0 from curl: expected 403, got 200 ×2")
    assert reason(report, "deny-api").startswith("GET /api/v1/products from curl: 200, ALLOWED")


def test_authz_names_a_missing_and_a_too_broad_policy(labs_namespaces: ClusterRef) -> None:
    """allow-nothing + productpage-viewer: productpage may not call details yet; then details
    and reviews opened to the whole namespace instead of productpage's identity."""
    space = MeshNamespace(labs_namespaces, BOOKINFO)
    space.apply(solution(AUTHZ_BOOK, "answer-allow-nothing"))
    space.apply(solution(AUTHZ_BOOK, "answer-productpage"))
    judge(labs_namespaces, "day2.authz", {"allow-nothing": PASS, "productpage-viewer": PASS})
    report = judge(labs_namespaces, "day2.authz", {"details-reviews": FAIL})
    assert reason(report, "details-reviews").startswith(
        "GET details/details/0 from productpage-v1: expected 200, got 403 ×2")

    whole_namespace = {"rules": [{"from": [{"source": {"namespaces": [BOOKINFO]}}]}]}
    space.apply(yaml_stream(policy("details-viewer", "details", **whole_namespace),
                            policy("reviews-viewer", "reviews", **whole_namespace)))
    report = judge(labs_namespaces, "day2.authz", {"details-reviews": FAIL})
    assert reason(report, "details-reviews") == (
        "GET details/details/0 from curl: expected 403, got 200 ×2; "
        "GET reviews/reviews/0 from curl: expected 403, got 200 ×2")


def test_authz_deny_api_wants_a_deny_policy(labs_namespaces: ClusterRef) -> None:
    """Narrowing productpage-viewer also refuses the API, but not by a DENY policy — the check
    tells the two apart from the proxy's own record. The notebook's solutions pass it all."""
    space = MeshNamespace(labs_namespaces, BOOKINFO)
    space.apply(solution(AUTHZ_BOOK, "answer-details-reviews"))
    space.apply(solution(AUTHZ_BOOK, "answer-ratings"))
    space.apply(yaml_stream(policy("productpage-viewer", "productpage", rules=[
        {"to": [{"operation": {"methods": ["GET"], "paths": ["/productpage"]}}]}])))
    judge(labs_namespaces, "day2.authz", {"ratings": PASS})  # also: the new policies are in
    report = judge(labs_namespaces, "day2.authz", {"deny-api": FAIL})
    assert reason(report, "deny-api") == (
        "GET /api/v1/products from curl: 403, DENIED: no ALLOW policy matched")

    space.apply(solution(AUTHZ_BOOK, "answer-productpage"))
    space.apply(solution(AUTHZ_BOOK, "answer-deny"))
    report = judge(labs_namespaces, "day2.authz", dict.fromkeys(
        ("workloads", "allow-nothing", "productpage-viewer", "details-reviews", "ratings",
         "deny-api"), PASS))
    assert report.earned == report.possible == 5


# --- day2.jwt ------------------------------------------------------------------------------------

JWT_BOOK = "02-jwt.ipynb"


def test_jwt_without_workloads_fails_fatally(labs_namespaces: ClusterRef) -> None:
    judge(labs_namespaces, "day2.jwt", {
        "workloads": FAIL, "request-authentication": SKIP, "invalid-token": SKIP,
        "require-jwt": SKIP, "groups-claim": SKIP})


def test_jwt_steps_fail_until_done(labs_namespaces: ClusterRef) -> None:
    """Each step of the lab, in order: the first failing check names what is missing."""
    space = meshed(labs_namespaces, FOO)
    space.deploy("httpbin", "curl")
    report = judge(labs_namespaces, "day2.jwt", {
        "workloads": PASS, "request-authentication": FAIL, "invalid-token": FAIL,
        "require-jwt": FAIL})
    assert reason(report, "request-authentication") == (
        f"no RequestAuthentication selecting httpbin in foo has a jwtRule with issuer {ISSUER}")
    assert reason(report, "invalid-token").startswith(
        "GET httpbin.foo/headers with a malformed token from curl: expected 401, got 200 ×2")
    assert reason(report, "require-jwt") == (
        "Secret foo/jwt-issuer with the lab's signing key is missing: run the notebook cell "
        "that calls share_signer(signer)")

    signer = Signer()
    space.apply(solution(JWT_BOOK, "answer-ra", ISSUER=ISSUER, signer=signer))
    share_signer(Signer(), labs_namespaces)  # a key the RequestAuthentication does not know
    judge(labs_namespaces, "day2.jwt", {"request-authentication": PASS, "invalid-token": PASS})
    report = judge(labs_namespaces, "day2.jwt", {"require-jwt": FAIL})
    assert reason(report, "require-jwt") == (
        "GET httpbin.foo/headers with no token from curl: expected 403, got 200 ×2; "
        "GET httpbin.foo/headers with a valid token from curl: expected 200, got 401 ×2")

    share_signer(signer, labs_namespaces)
    space.apply(solution(JWT_BOOK, "answer-require"))
    judge(labs_namespaces, "day2.jwt", {"require-jwt": PASS})
    report = judge(labs_namespaces, "day2.jwt", {"groups-claim": FAIL})
    assert reason(report, "groups-claim") == (
        "GET httpbin.foo/headers with a valid token, no groups from curl: expected 403, "
        "got 200 ×2")

    space.apply(solution(JWT_BOOK, "answer-groups"))
    report = judge(labs_namespaces, "day2.jwt", dict.fromkeys(
        ("workloads", "request-authentication", "invalid-token", "require-jwt",
         "groups-claim"), PASS))
    assert report.earned == report.possible == 4
