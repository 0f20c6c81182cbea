"""Structural-schema validation: does the embedded API server judge objects like a real one?"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import yaml

from labs.embedded.apiserver.builtin_schemas import KINDS, builtin_schema
from labs.embedded.apiserver.validation import (
    FieldIssue,
    check,
    prune_unknown,
    strict_decoding_error,
    to_causes,
    unknown_field_warnings,
    validate,
)

# --- bookinfo objects as the course applies them ------------------------------------------


def reviews_deployment() -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "reviews-v1", "labels": {"app": "reviews", "version": "v1"}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "reviews", "version": "v1"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%",
                                                                     "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": {"app": "reviews", "version": "v1"}},
                "spec": {
                    "serviceAccountName": "bookinfo-reviews",
                    "containers": [
                        {
                            "name": "reviews",
                            "image": "docker.io/istio/examples-bookinfo-reviews-v1:1.20.3",
                            "imagePullPolicy": "IfNotPresent",
                            "env": [{"name": "LOG_DIR", "value": "/tmp/logs"}],
                            "ports": [{"containerPort": 9080}],
                            "resources": {"limits": {"cpu": 1, "memory": "128Mi"},
                                          "requests": {"cpu": 0.5}},
                            "readinessProbe": {"httpGet": {"path": "/health", "port": 9080}},
                            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                            "securityContext": {"runAsUser": 1000},
                        }
                    ],
                    "volumes": [{"name": "tmp", "emptyDir": {}}],
                },
            },
        },
    }


REVIEWS_SERVICE = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "reviews", "labels": {"app": "reviews", "service": "reviews"}},
    "spec": {"ports": [{"port": 9080, "name": "http", "targetPort": "http"}],
             "selector": {"app": "reviews"}},
}

REVIEWS_ACCOUNT = {
    "apiVersion": "v1",
    "kind": "ServiceAccount",
    "metadata": {"name": "bookinfo-reviews", "labels": {"account": "reviews"}},
}


def deployment_schema() -> dict[str, Any]:
    schema = builtin_schema("apps/v1", "Deployment")
    assert schema is not None
    return schema


def test_valid_bookinfo_objects_have_no_issues() -> None:
    """Do the bookinfo Deployment, Service and ServiceAccount pass unchanged?"""
    assert validate(deployment_schema(), reviews_deployment()) == []
    assert validate(builtin_schema("v1", "Service"), REVIEWS_SERVICE) == []  # type: ignore[arg-type]
    assert validate(builtin_schema("v1", "ServiceAccount"), REVIEWS_ACCOUNT) == []  # type: ignore[arg-type]


def test_typo_in_container_field_is_one_unknown_issue_with_the_exact_path() -> None:
    """Is `imagee` reported once, at the path kubectl users see in the real error?"""
    dep = reviews_deployment()
    container = dep["spec"]["template"]["spec"]["containers"][0]
    container["imagee"] = container.pop("image")
    issues = validate(deployment_schema(), dep)
    assert issues == [
        FieldIssue(
            "spec.template.spec.containers[0].imagee",
            "unknown",
            'unknown field "spec.template.spec.containers[0].imagee"',
        )
    ]


def test_string_replicas_is_a_type_issue_worded_like_the_server() -> None:
    dep = reviews_deployment()
    dep["spec"]["replicas"] = "3"
    assert validate(deployment_schema(), dep) == [
        FieldIssue(
            "spec.replicas",
            "type",
            'Invalid value: "string": spec.replicas in body must be of type integer: "string"',
        )
    ]


def test_all_issues_are_reported_not_only_the_first() -> None:
    """Are an enum, a missing required field and an unknown metadata field all reported?"""
    dep = reviews_deployment()
    container = dep["spec"]["template"]["spec"]["containers"][0]
    container["imagePullPolicy"] = "Sometimes"
    del container["name"]
    dep["metadata"]["lables"] = {"app": "reviews"}
    dep["spec"]["strategy"]["type"] = "Rolling"
    by_path = {i.path: i for i in validate(deployment_schema(), dep)}
    assert by_path["spec.template.spec.containers[0].imagePullPolicy"].message == (
        'Unsupported value: "Sometimes": supported values: "Always", "IfNotPresent", "Never"'
    )
    assert by_path["spec.template.spec.containers[0].name"].kind == "required"
    assert by_path["spec.template.spec.containers[0].name"].message == "Required value"
    assert by_path["metadata.lables"].kind == "unknown"
    assert by_path["spec.strategy.type"].kind == "enum"
    assert len(by_path) == 4


def test_int_or_string_and_quantities_accept_what_kubectl_users_write() -> None:
    """Are `targetPort: 9080`/`"http"` and `cpu: 1`/`0.5`/`"500m"` accepted, `true` not?"""
    service_schema = builtin_schema("v1", "Service")
    assert service_schema is not None
    numeric = copy.deepcopy(REVIEWS_SERVICE)
    numeric["spec"]["ports"][0]["targetPort"] = 9080
    assert validate(service_schema, numeric) == []
    wrong = copy.deepcopy(REVIEWS_SERVICE)
    wrong["spec"]["ports"][0]["targetPort"] = True
    [issue] = validate(service_schema, wrong)
    assert issue.path == "spec.ports[0].targetPort"
    assert issue.message.endswith('must be of type integer,string: "boolean"')
    dep = reviews_deployment()
    dep["spec"]["template"]["spec"]["containers"][0]["resources"] = {
        "limits": {"cpu": "500m", "memory": 134217728}
    }
    assert validate(deployment_schema(), dep) == []


def test_secret_data_must_be_base64() -> None:
    schema = builtin_schema("v1", "Secret")
    assert schema is not None
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
              "data": {"ok": "aGVsbG8=", "bad": "not base64!"}}
    [issue] = validate(schema, secret)
    assert (issue.path, issue.kind) == ("data.bad", "format")


def test_every_listed_builtin_kind_has_a_json_serialisable_schema() -> None:
    """Can each schema be served as JSON (the recursive JSONSchemaProps goes by $ref)?"""
    for api_version, kind in KINDS:
        schema = builtin_schema(api_version, kind)
        assert schema is not None, (api_version, kind)
        json.dumps(schema)
    crd = builtin_schema("apiextensions.k8s.io/v1", "CustomResourceDefinition")
    assert crd is not None and "V1JSONSchemaProps" in crd["definitions"]
    assert builtin_schema("v1", "NoSuchKind") is None
    assert builtin_schema("apps/v1", "Deployment") is builtin_schema("apps/v1", "Deployment")


def test_crd_objects_are_validated_through_the_recursive_schema() -> None:
    """Is a typo deep inside a CRD's openAPIV3Schema caught (JSONSchemaProps recursion)?"""
    schema = builtin_schema("apiextensions.k8s.io/v1", "CustomResourceDefinition")
    assert schema is not None
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "pets.zoo.example.com"},
        "spec": {
            "group": "zoo.example.com",
            "names": {"kind": "Pet", "plural": "pets"},
            "scope": "Namespaced",
            "versions": [{
                "name": "v1", "served": True, "storage": True,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": {
                        "age": {"type": "integer", "minimum": 0},
                        "toys": {"type": "array", "items": {"type": "string"}},
                        "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                    }}}}},
            }],
        },
    }
    assert validate(schema, crd) == []
    props = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
    props["spec"]["properties"]["age"]["minimumm"] = 1
    assert [i.path for i in validate(schema, crd)] == [
        "spec.versions[0].schema.openAPIV3Schema.properties.spec.properties.age.minimumm"
    ]


# --- custom resources: a real fragment of Istio's VirtualService schema ---------------------
# From istio/istio manifests/charts/base/files/crd-all.gen.yaml (networking.istio.io/v1),
# trimmed to the fields the labs use; keywords and values unchanged.

STRING_MATCH = """
oneOf:
- not:
    anyOf:
    - required: [exact]
    - required: [prefix]
    - required: [regex]
- required: [exact]
- required: [prefix]
- required: [regex]
properties:
  exact: {type: string}
  prefix: {type: string}
  regex: {type: string}
type: object
"""

VIRTUAL_SERVICE_SCHEMA = yaml.safe_load("""
properties:
  spec:
    properties:
      hosts:
        items: {type: string}
        type: array
      http:
        items:
          properties:
            fault:
              properties:
                abort:
                  oneOf:
                  - not:
                      anyOf:
                      - required: [httpStatus]
                      - required: [grpcStatus]
                      - required: [http2Error]
                  - required: [httpStatus]
                  - required: [grpcStatus]
                  - required: [http2Error]
                  properties:
                    grpcStatus: {type: string}
                    http2Error: {type: string}
                    httpStatus: {format: int32, type: integer}
                    percentage:
                      properties:
                        value: {format: double, type: number}
                      type: object
                  type: object
                delay:
                  properties:
                    fixedDelay:
                      type: string
                      x-kubernetes-validations:
                      - message: must be a valid duration greater than 1ms
                        rule: duration(self) >= duration('1ms')
                    percentage:
                      properties:
                        value: {format: double, type: number}
                      type: object
                  type: object
              type: object
            match:
              items:
                properties:
                  headers:
                    additionalProperties: {}  # STRING_MATCH, filled in below
                    type: object
                  uri: {}  # STRING_MATCH, filled in below
                type: object
              type: array
            route:
              items:
                properties:
                  destination:
                    properties:
                      host: {type: string}
                      port:
                        properties:
                          number: {maximum: 4294967295, minimum: 0, type: integer}
                        type: object
                      subset: {type: string}
                    required: [host]
                    type: object
                  weight: {format: int32, type: integer}
                required: [destination]
                type: object
              type: array
          type: object
        type: array
    type: object
  status:
    properties:
      observedGeneration:
        anyOf:
        - type: integer
        - type: string
        x-kubernetes-int-or-string: true
    type: object
    x-kubernetes-preserve-unknown-fields: true
required: [spec]
type: object
""")
_HTTP = VIRTUAL_SERVICE_SCHEMA["properties"]["spec"]["properties"]["http"]["items"]
_MATCH = _HTTP["properties"]["match"]["items"]["properties"]
_MATCH["headers"]["additionalProperties"] = yaml.safe_load(STRING_MATCH)
_MATCH["uri"] = yaml.safe_load(STRING_MATCH)


def virtual_service(http: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "reviews", "namespace": "default"},
        "spec": {"hosts": ["reviews"], "http": http},
    }


def test_valid_virtual_service_has_no_issues() -> None:
    vs = virtual_service([
        {"match": [{"headers": {"end-user": {"exact": "jason"}}, "uri": {"prefix": "/"}}],
         "route": [{"destination": {"host": "reviews", "subset": "v2"}}]},
        {"route": [{"destination": {"host": "reviews", "subset": "v1"}, "weight": 100}]},
    ])
    vs["status"] = {"observedGeneration": 3, "conditions": [{"type": "Reconciled"}]}
    assert validate(VIRTUAL_SERVICE_SCHEMA, vs) == []


def test_one_of_required_allows_at_most_one_match_kind() -> None:
    """Is `uri` with both `exact` and `prefix` rejected the way kube-openapi words it?"""
    vs = virtual_service([{"match": [{"uri": {"exact": "/a", "prefix": "/"}}],
                           "route": [{"destination": {"host": "reviews"}}]}])
    [issue] = validate(VIRTUAL_SERVICE_SCHEMA, vs)
    assert issue.kind == "oneOf"
    assert issue.path == "spec.http[0].match[0].uri"
    assert issue.message == (
        'Invalid value: "": "spec.http[0].match[0].uri" must validate one and only one '
        "schema (oneOf). Found 2 valid alternatives"
    )
    [cause] = to_causes([issue])
    assert (cause.field, cause.reason) == ("<nil>", "FieldValueInvalid")


def test_maps_validate_their_values_and_report_unknown_keys_inside() -> None:
    """Is a typo inside a header match (a map value) an unknown field at `headers.<key>`?"""
    vs = virtual_service([{"match": [{"headers": {"end-user": {"exac": "jason"}}}],
                           "route": [{"destination": {"host": "reviews"}}]}])
    assert [(i.path, i.kind) for i in validate(VIRTUAL_SERVICE_SCHEMA, vs)] == [
        ("spec.http[0].match[0].headers.end-user.exac", "unknown")
    ]


def test_required_range_and_type_issues_in_custom_resources() -> None:
    vs = virtual_service([{"route": [{"destination": {"subset": "v1",
                                                      "port": {"number": 5_000_000_000}},
                                      "weight": "50"}]}])
    issues = {i.path: i for i in validate(VIRTUAL_SERVICE_SCHEMA, vs)}
    assert issues["spec.http[0].route[0].destination.host"].message == "Required value"
    assert issues["spec.http[0].route[0].destination.port.number"].message == (
        "Invalid value: 5000000000: spec.http[0].route[0].destination.port.number in body "
        "should be less than or equal to 4.294967295e+09"
    )
    assert issues["spec.http[0].route[0].weight"].kind == "type"
    causes = {c.field: c.reason for c in to_causes(list(issues.values()))}
    assert causes == {
        "spec.http[0].route[0].destination.host": "FieldValueRequired",
        "spec.http[0].route[0].destination.port.number": "FieldValueInvalid",
        "spec.http[0].route[0].weight": "FieldValueTypeInvalid",
    }


def test_preserve_unknown_fields_and_int_or_string() -> None:
    """Does status keep unknown fields, and does int-or-string refuse a list?"""
    vs = virtual_service([])
    vs["status"] = {"observedGeneration": "7", "anything": {"goes": [1, 2]}}
    assert validate(VIRTUAL_SERVICE_SCHEMA, vs) == []
    vs["status"]["observedGeneration"] = [1]
    [issue] = validate(VIRTUAL_SERVICE_SCHEMA, vs)
    assert issue.message == (
        'Invalid value: "array": status.observedGeneration in body must be of type '
        'integer,string: "array"'
    )


def test_unknown_metadata_and_top_level_fields_of_a_custom_resource() -> None:
    vs = virtual_service([])
    vs["metadata"]["labels"] = {"app": "reviews"}
    vs["metadata"]["lables"] = {}
    vs["sepc"] = {}
    assert sorted(i.path for i in validate(VIRTUAL_SERVICE_SCHEMA, vs)) == [
        "metadata.lables", "sepc"
    ]


def test_null_for_a_non_nullable_field_counts_as_absent() -> None:
    vs = virtual_service([{"route": [{"destination": {"host": "reviews", "subset": None}}]}])
    assert validate(VIRTUAL_SERVICE_SCHEMA, vs) == []
    vs["spec"]["http"][0]["route"][0]["destination"]["host"] = None
    assert [i.kind for i in validate(VIRTUAL_SERVICE_SCHEMA, vs)] == ["required"]


def test_prune_unknown_drops_what_the_server_would_and_keeps_the_rest() -> None:
    vs = virtual_service([{"route": [{"destination": {"host": "reviews", "subsett": "v1"}}],
                           "retires": {"attempts": 3}}])
    vs["metadata"]["foo"] = "bar"
    vs["status"] = {"kept": True}
    original = copy.deepcopy(vs)
    pruned = prune_unknown(VIRTUAL_SERVICE_SCHEMA, vs)
    assert vs == original  # the input is not modified
    assert pruned["spec"]["http"] == [{"route": [{"destination": {"host": "reviews"}}]}]
    assert pruned["metadata"] == {"name": "reviews", "namespace": "default"}
    assert pruned["status"] == {"kept": True}
    assert pruned["apiVersion"] == "networking.istio.io/v1"
    assert validate(VIRTUAL_SERVICE_SCHEMA, pruned) == []


def test_unknown_fields_become_the_real_strict_error_and_warn_headers() -> None:
    """Are unknown fields worded as kubectl prints them for Strict (400) and Warn?"""
    dep = reviews_deployment()
    dep["spec"]["foo"] = 1
    dep["spec"]["bar"] = 2
    issues = validate(deployment_schema(), dep)
    assert unknown_field_warnings(issues) == [
        'unknown field "spec.foo"',
        'unknown field "spec.bar"',
    ]
    error = strict_decoding_error("apps/v1", "Deployment", issues)
    assert error.code == 400
    assert error.reason == "BadRequest"
    assert error.message == (
        'Deployment in version "v1" cannot be handled as a Deployment: strict decoding error: '
        'unknown field "spec.foo", unknown field "spec.bar"'
    )
    assert to_causes(issues)[0].message == "field not declared in schema"


def test_cel_rules_are_evaluated_or_listed_as_not_evaluated() -> None:
    """Does a failing CEL rule give its message, and is an unsupported one named, not guessed?"""
    pytest.importorskip("celpy")
    vs = virtual_service([{"fault": {"delay": {"fixedDelay": "0s"}},
                           "route": [{"destination": {"host": "reviews"}}]}])
    [issue] = validate(VIRTUAL_SERVICE_SCHEMA, vs)
    assert issue.path == "spec.http[0].fault.delay.fixedDelay"
    assert issue.message == 'Invalid value: "string": must be a valid duration greater than 1ms'
    vs["spec"]["http"][0]["fault"]["delay"]["fixedDelay"] = "5s"
    assert validate(VIRTUAL_SERVICE_SCHEMA, vs) == []
    schema = {"type": "object", "properties": {"spec": {"type": "object", "properties": {
        "url": {"type": "string", "x-kubernetes-validations": [{"rule": "isURL(self)"}]},
        "size": {"type": "integer", "x-kubernetes-validations": [{"rule": "self >= oldSelf"}]},
    }}}}
    report = check(schema, {"spec": {"url": "http://x", "size": 1}})
    assert report.issues == []
    assert len(report.unevaluated) == 1
    assert report.unevaluated[0].startswith("spec.url: isURL(self)")


def test_fault_abort_needs_exactly_one_error_kind() -> None:
    vs = virtual_service([{"fault": {"abort": {"httpStatus": 500, "grpcStatus": "UNAVAILABLE",
                                               "percentage": {"value": 50}}},
                           "route": [{"destination": {"host": "reviews"}}]}])
    assert [i.kind for i in validate(VIRTUAL_SERVICE_SCHEMA, vs)] == ["oneOf"]
    del vs["spec"]["http"][0]["fault"]["abort"]["grpcStatus"]
    assert validate(VIRTUAL_SERVICE_SCHEMA, vs) == []
