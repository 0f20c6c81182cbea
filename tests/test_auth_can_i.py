"""`kubectl auth can-i` against the embedded cluster prints what it prints against a
kube-apiserver with `--authorization-mode=AlwaysAllow`, which is what the embedded server
enforces (one bearer token, no RBAC): kubectl sends protobuf SelfSubjectAccessReviews and
SelfSubjectRulesReviews, found through discovery."""

from __future__ import annotations

import json

import pytest

from labs.cluster import ClusterRef


@pytest.mark.parametrize("args", [("create", "pods"), ("*", "*"), ("get", "pods", "--as=alice"),
                                  ("delete", "deployments.apps", "-n", "kube-system"),
                                  ("list", "secrets", "--all-namespaces"),
                                  ("get", "/healthz")])
def test_can_i_answers_yes(cluster: ClusterRef, args: tuple[str, ...]) -> None:
    """Does `kubectl auth can-i VERB RESOURCE` print `yes` and exit 0, as on an AlwaysAllow
    cluster (impersonation included)?"""
    result = cluster.kubectl("auth", "can-i", *args)
    assert (result.returncode, result.stdout, result.stderr) == (0, "yes\n", "")


def test_can_i_list_prints_the_rules(cluster: ClusterRef) -> None:
    """Does `kubectl auth can-i --list` print AlwaysAllow's rules: everything on everything?"""
    result = cluster.kubectl("auth", "can-i", "--list")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "Resources   Non-Resource URLs   Resource Names   Verbs",
        "*.*         []                  []               [*]",
        "            [*]                 []               [*]"]


def test_can_i_warns_about_an_unknown_resource(cluster: ClusterRef) -> None:
    """Does kubectl find the served resources through discovery (and warn about others)?"""
    result = cluster.kubectl("auth", "can-i", "get", "frobnicators")
    assert result.stdout == "yes\n"
    assert "Warning: the server doesn't have a resource type 'frobnicators'" in result.stderr


def test_reviews_are_in_discovery_and_create_only(cluster: ClusterRef) -> None:
    """Are the review kinds listed (verb create only), and is a review answered 201 with its
    status, an empty spec refused with the real validation message, a GET refused 405?"""
    result = cluster.kubectl("api-resources", "--api-group=authorization.k8s.io", "-o", "wide")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()[1:]
    assert [line.split()[0] for line in lines] == ["selfsubjectaccessreviews",
                                                   "selfsubjectrulesreviews"]
    assert all(line.split()[-1] == "create" for line in lines), lines
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
              "spec": {"resourceAttributes": {"verb": "get", "resource": "pods"}}}
    result = cluster.kubectl("create", "-f", "-", "-o", "json", input=json.dumps(review))
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)["status"]
    assert status["allowed"] is True
    assert "AlwaysAllow" in status["reason"]
    result = cluster.kubectl("create", "-f", "-", input=json.dumps({**review, "spec": {}}))
    assert result.returncode != 0
    assert ('The SelfSubjectAccessReview "" is invalid: '
            'spec.resourceAttributes: Invalid value: "null": exactly one of '
            "nonResourceAttributes or resourceAttributes must be specified") in result.stderr
    result = cluster.kubectl("get", "--raw",
                             "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews")
    assert result.returncode != 0
    assert "MethodNotAllowed" in result.stderr or "not allowed" in result.stderr
