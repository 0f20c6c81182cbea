"""Are the course's built-in CRDs sane, and do they accept the projects' own documented samples?"""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest
import yaml

from labs.embedded.apiserver.course_crds import course_crds

jsonschema = pytest.importorskip("jsonschema")

CRDS = {crd["metadata"]["name"]: crd for crd in course_crds()}


def _storage_schema(name: str, version: str) -> dict[str, Any]:
    crd = CRDS[name]
    for v in crd["spec"]["versions"]:
        if v["name"] == version:
            return v["schema"]["openAPIV3Schema"]
    raise AssertionError(f"{name} has no version {version}")


def _errors(crd_name: str, obj: dict[str, Any]) -> list[str]:
    version = obj["apiVersion"].split("/")[1]
    validator = jsonschema.Draft7Validator(_storage_schema(crd_name, version))
    return [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)
    ]


@pytest.mark.parametrize("name", sorted(CRDS))
def test_crd_is_structurally_sane(name: str) -> None:
    """Is each CRD named plural.group, with one storage version and a schema per served one?"""
    crd = CRDS[name]
    spec = crd["spec"]
    names = spec["names"]
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert name == f"{names['plural']}.{spec['group']}"
    assert names["listKind"] == f"{names['kind']}List"
    assert names["singular"] == names["kind"].lower()
    assert spec["scope"] in {"Namespaced", "Cluster"}
    assert [v["storage"] for v in spec["versions"]].count(True) == 1
    for version in spec["versions"]:
        if version["served"]:
            schema = version["schema"]["openAPIV3Schema"]
            assert schema["type"] == "object"
            assert "spec" in schema["properties"]
        for column in version.get("additionalPrinterColumns", []):
            assert column["jsonPath"].startswith(".")
    assert crd["metadata"]["annotations"]["meshlab.dev/schema-source"].count("@") == 1


def test_descriptions_are_stripped() -> None:
    """Were upstream descriptions removed, as crds/README.md says (they dominate file size)?"""

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            assert "description" not in node
            # Keys of `properties` are field names: GatewayClass has a real `spec.description`.
            for value in node.get("properties", {}).values():
                walk(value)
            for key, value in node.items():
                if key != "properties":
                    walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for crd in CRDS.values():
        walk(crd["spec"])


@pytest.mark.parametrize(
    ("name", "short_names", "columns"),
    [
        ("virtualservices.networking.istio.io", ["vs"], ["Gateways", "Hosts", "Age"]),
        ("destinationrules.networking.istio.io", ["dr"], ["Host", "Age"]),
        ("gateways.networking.istio.io", ["gw"], []),
        ("serviceentries.networking.istio.io", ["se"], ["Hosts", "Location", "Resolution", "Age"]),
        ("peerauthentications.security.istio.io", ["pa"], ["Mode", "Age"]),
        ("authorizationpolicies.security.istio.io", ["ap"], ["Action", "Age"]),
        ("requestauthentications.security.istio.io", ["ra"], []),
    ],
)
def test_names_and_columns_match_upstream(
    name: str, short_names: list[str], columns: list[str]
) -> None:
    """Do short names and printer columns match Istio's crd-all.gen.yaml?"""
    crd = CRDS[name]
    assert crd["spec"]["names"]["shortNames"] == short_names
    for version in crd["spec"]["versions"]:
        assert [c["name"] for c in version.get("additionalPrinterColumns", [])] == columns


def test_course_crds_returns_independent_copies() -> None:
    """Can a caller change what it got without changing the next caller's CRDs?"""
    first = course_crds()
    first[0]["spec"]["group"] = "changed.example"
    assert course_crds()[0]["spec"]["group"] != "changed.example"


# Samples from istio.io (bookinfo and the security tasks), as learners apply them.
SAMPLES = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
  - reviews
  http:
  - match:
    - headers:
        end-user:
          exact: jason
    route:
    - destination:
        host: reviews
        subset: v2
  - route:
    - destination:
        host: reviews
        subset: v1
      weight: 50
    - destination:
        host: reviews
        subset: v3
      weight: 50
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
spec:
  host: reviews
  trafficPolicy:
    loadBalancer:
      simple: RANDOM
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
    trafficPolicy:
      loadBalancer:
        simple: ROUND_ROBIN
  - name: v3
    labels:
      version: v3
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: bookinfo-gateway
spec:
  selector:
    istio: ingressgateway
  servers:
  - port:
      number: 8080
      name: http
      protocol: HTTP
    hosts:
    - "*"
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: httpbin-ext
spec:
  hosts:
  - httpbin.org
  ports:
  - number: 80
    name: http
    protocol: HTTP
  resolution: DNS
  location: MESH_EXTERNAL
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: default
  namespace: istio-system
spec:
  mtls:
    mode: STRICT
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: httpbin
  namespace: foo
spec:
  selector:
    matchLabels:
      app: httpbin
      version: v1
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/default/sa/curl"]
    - source:
        namespaces: ["dev"]
    to:
    - operation:
        methods: ["GET"]
    when:
    - key: request.auth.claims[iss]
      values: ["https://accounts.google.com"]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata:
  name: jwt-example
  namespace: istio-system
spec:
  selector:
    matchLabels:
      istio: ingressgateway
  jwtRules:
  - issuer: testing@secure.istio.io
    jwksUri: https://raw.githubusercontent.com/istio/istio/master/security/tools/jwt/samples/jwks.json
"""


def _crd_name(obj: dict[str, Any]) -> str:
    group = obj["apiVersion"].split("/")[0]
    for name, crd in CRDS.items():
        if crd["spec"]["group"] == group and crd["spec"]["names"]["kind"] == obj["kind"]:
            return name
    raise AssertionError(f"no CRD for {obj['apiVersion']} {obj['kind']}")


@pytest.mark.parametrize("sample", list(yaml.safe_load_all(SAMPLES)), ids=lambda s: s["kind"])
def test_documented_samples_are_accepted(sample: dict[str, Any]) -> None:
    """Does each schema accept the projects' own documented example?"""
    assert _errors(_crd_name(sample), sample) == []


@pytest.mark.parametrize(
    ("crd_name", "obj", "path"),
    [
        (
            "virtualservices.networking.istio.io",
            {
                "apiVersion": "networking.istio.io/v1",
                "kind": "VirtualService",
                "spec": {"http": [{"route": [{"destination": {"host": "r"}, "weight": "50"}]}]},
            },
            "spec.http.0.route.0.weight",
        ),
        (
            "destinationrules.networking.istio.io",
            {
                "apiVersion": "networking.istio.io/v1",
                "kind": "DestinationRule",
                "spec": {
                    "host": "r",
                    "trafficPolicy": {
                        "loadBalancer": {
                            "simple": "RANDOM",
                            "consistentHash": {"useSourceIp": True},
                        }
                    },
                },
            },
            "spec.trafficPolicy.loadBalancer",
        ),
        (
            "peerauthentications.security.istio.io",
            {
                "apiVersion": "security.istio.io/v1",
                "kind": "PeerAuthentication",
                "spec": {"mtls": {"mode": "STRICTER"}},
            },
            "spec.mtls.mode",
        ),
        (
            "destinationrules.networking.istio.io",
            {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule", "spec": {}},
            "spec",
        ),
    ],
)
def test_schemas_reject_wrong_objects(crd_name: str, obj: dict[str, Any], path: str) -> None:
    """Does each schema name the field of a wrong object (wrong type, oneOf, enum, required)?"""
    errors = _errors(crd_name, obj)
    assert errors, "expected the schema to reject this object"
    assert any(e.startswith(f"{path}:") for e in errors), errors


def test_validation_module_when_present() -> None:
    """Does the API server's own validator (if written yet) accept the same samples?"""
    if importlib.util.find_spec("labs.embedded.apiserver.validation") is None:
        pytest.skip("labs.embedded.apiserver.validation is not written yet")
    from labs.embedded.apiserver import validation

    for sample in yaml.safe_load_all(SAMPLES):
        version = sample["apiVersion"].split("/")[1]
        schema = _storage_schema(_crd_name(sample), version)
        assert validation.validate(schema, sample) == []


# --- Linkerd, SMI and Flagger (crds/linkerd.yaml, smi.yaml, flagger.yaml) ---------------------


@pytest.mark.parametrize(
    ("name", "short_names", "columns"),
    [
        ("serviceprofiles.linkerd.io", ["sp"], {}),
        (
            "servers.policy.linkerd.io",
            ["srv"],
            {
                "v1alpha1": [],
                "v1beta1": ["Port", "Protocol"],
                "v1beta2": ["Port", "Protocol"],
                "v1beta3": ["Port", "Protocol", "Access Policy"],
            },
        ),
        (
            "serverauthorizations.policy.linkerd.io",
            ["saz", "serverauthz", "srvauthz"],
            {"v1alpha1": [], "v1beta1": ["Server"]},
        ),
        ("authorizationpolicies.policy.linkerd.io", ["authzpolicy"], {}),
        ("meshtlsauthentications.policy.linkerd.io", ["meshtlsauthn"], {}),
        ("networkauthentications.policy.linkerd.io", ["netauthn", "networkauthn"], {}),
        (
            "httproutes.policy.linkerd.io",
            [],
            {v: ["Hostnames", "Age"] for v in ("v1alpha1", "v1beta1", "v1beta2", "v1beta3")},
        ),
        (
            "trafficsplits.split.smi-spec.io",
            ["ts"],
            {"v1alpha1": ["Service"], "v1alpha2": ["Service"]},
        ),
        (
            "canaries.flagger.app",
            [],
            {
                "v1beta1": [
                    "Status",
                    "Weight",
                    "Suspended",
                    "FailedChecks",
                    "Interval",
                    "Mirror",
                    "StepWeight",
                    "StepWeights",
                    "MaxWeight",
                    "LastTransitionTime",
                ]
            },
        ),
    ],
)
def test_mesh_names_and_columns_match_upstream(
    name: str, short_names: list[str], columns: dict[str, list[str]]
) -> None:
    """Do Linkerd/SMI/Flagger short names and per-version printer columns match upstream?"""
    spec = CRDS[name]["spec"]
    assert spec["names"].get("shortNames", []) == short_names
    for version in spec["versions"]:
        got = [c["name"] for c in version.get("additionalPrinterColumns", [])]
        assert got == columns.get(version["name"], []), version["name"]


@pytest.mark.parametrize(
    ("name", "served", "storage"),
    [
        ("serviceprofiles.linkerd.io", ["v1alpha1", "v1alpha2"], "v1alpha2"),
        ("servers.policy.linkerd.io", ["v1alpha1", "v1beta1", "v1beta2", "v1beta3"], "v1beta3"),
        ("httproutes.policy.linkerd.io", ["v1alpha1", "v1beta1", "v1beta2", "v1beta3"], "v1beta3"),
        ("trafficsplits.split.smi-spec.io", ["v1alpha1", "v1alpha2"], "v1alpha1"),
        ("canaries.flagger.app", ["v1beta1"], "v1beta1"),
    ],
)
def test_mesh_versions_match_upstream(name: str, served: list[str], storage: str) -> None:
    """Is every version upstream serves kept, with upstream's storage version?"""
    versions = CRDS[name]["spec"]["versions"]
    assert [v["name"] for v in versions if v["served"]] == served
    assert [v["name"] for v in versions if v["storage"]] == [storage]


def test_canary_has_status_subresource_and_all_category() -> None:
    """Does `kubectl get all` list canaries and can Flagger write .status separately?"""
    spec = CRDS["canaries.flagger.app"]["spec"]
    assert spec["names"]["categories"] == ["all"]
    assert spec["versions"][0]["subresources"] == {"status": {}}


# Samples from linkerd.io (restricting-access, configuring-per-route-policy, linkerd-smi tasks;
# the ServiceProfile is the booksapp one with a retry budget) and Flagger's Linkerd tutorial.
MESH_SAMPLES = r"""
apiVersion: policy.linkerd.io/v1beta1
kind: Server
metadata:
  namespace: emojivoto
  name: voting-grpc
  labels:
    app: voting-svc
spec:
  podSelector:
    matchLabels:
      app: voting-svc
  port: grpc
  proxyProtocol: gRPC
---
apiVersion: policy.linkerd.io/v1beta1
kind: ServerAuthorization
metadata:
  namespace: emojivoto
  name: voting-grpc
  labels:
    app.kubernetes.io/part-of: emojivoto
    app.kubernetes.io/name: voting
    app.kubernetes.io/version: v11
spec:
  server:
    name: voting-grpc
  client:
    meshTLS:
      serviceAccounts:
        - name: web
---
apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata:
  name: authors-server
  namespace: booksapp
spec:
  podSelector:
    matchLabels:
      app: authors
      project: booksapp
  port: service
---
apiVersion: policy.linkerd.io/v1beta1
kind: HTTPRoute
metadata:
  name: authors-get-route
  namespace: booksapp
spec:
  parentRefs:
    - name: authors-server
      kind: Server
      group: policy.linkerd.io
  rules:
    - matches:
      - path:
          value: "/authors.json"
        method: GET
      - path:
          value: "/authors/"
          type: "PathPrefix"
        method: GET
---
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata:
  name: authors-get-policy
  namespace: booksapp
spec:
  targetRef:
    group: policy.linkerd.io
    kind: HTTPRoute
    name: authors-get-route
  requiredAuthenticationRefs:
    - name: authors-get-authn
      kind: MeshTLSAuthentication
      group: policy.linkerd.io
---
apiVersion: policy.linkerd.io/v1alpha1
kind: MeshTLSAuthentication
metadata:
  name: authors-get-authn
  namespace: booksapp
spec:
  identities:
    - "books.booksapp.serviceaccount.identity.linkerd.cluster.local"
    - "webapp.booksapp.serviceaccount.identity.linkerd.cluster.local"
---
apiVersion: policy.linkerd.io/v1alpha1
kind: NetworkAuthentication
metadata:
  name: authors-probe-authn
  namespace: booksapp
spec:
  networks:
  - cidr: 0.0.0.0/0
  - cidr: ::/0
---
apiVersion: linkerd.io/v1alpha2
kind: ServiceProfile
metadata:
  name: authors.booksapp.svc.cluster.local
  namespace: booksapp
spec:
  routes:
  - condition:
      method: GET
      pathRegex: /authors/[^/]*\.json
    name: GET /authors/{id}.json
    isRetryable: true
    timeout: 300ms
  - condition:
      method: DELETE
      pathRegex: /authors/[^/]*\.json
    name: DELETE /authors/{id}.json
    responseClasses:
    - condition:
        status:
          min: 500
          max: 599
      isFailure: true
  retryBudget:
    retryRatio: 0.2
    minRetriesPerSecond: 10
    ttl: 10s
---
apiVersion: split.smi-spec.io/v1alpha2
kind: TrafficSplit
metadata:
  name: backend-split
  namespace: trafficsplit-sample
spec:
  service: backend-svc
  backends:
  - service: backend-svc
    weight: 500
  - service: failing-svc
    weight: 500
---
apiVersion: split.smi-spec.io/v1alpha1
kind: TrafficSplit
metadata:
  name: backend-split
  namespace: trafficsplit-sample
spec:
  service: backend-svc
  backends:
  - service: backend-svc
    weight: 500m
  - service: failing-svc
    weight: 500m
---
apiVersion: flagger.app/v1beta1
kind: Canary
metadata:
  name: podinfo
  namespace: test
spec:
  targetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: podinfo
  autoscalerRef:
    apiVersion: autoscaling/v2
    kind: HorizontalPodAutoscaler
    name: podinfo
  progressDeadlineSeconds: 60
  service:
    port: 9898
    targetPort: 9898
    gatewayRefs:
      - name: podinfo
        namespace: test
        group: core
        kind: Service
        port: 9898
  analysis:
    interval: 30s
    threshold: 5
    maxWeight: 50
    stepWeight: 5
    metrics:
    - name: request-success-rate
      thresholdRange:
        min: 99
      interval: 1m
    - name: request-duration
      thresholdRange:
        max: 500
      interval: 30s
    webhooks:
      - name: acceptance-test
        type: pre-rollout
        url: http://flagger-loadtester.test/
        timeout: 30s
        metadata:
          type: bash
          cmd: "curl -sd 'test' http://podinfo-canary.test:9898/token | grep token"
      - name: load-test
        type: rollout
        url: http://flagger-loadtester.test/
        metadata:
          cmd: "hey -z 2m -q 10 -c 2 http://podinfo-canary.test:9898/"
"""


def _mesh_id(sample: dict[str, Any]) -> str:
    return f"{sample['kind']}-{sample['apiVersion'].split('/')[1]}-{sample['metadata']['name']}"


@pytest.mark.parametrize("sample", list(yaml.safe_load_all(MESH_SAMPLES)), ids=_mesh_id)
def test_mesh_documented_samples_are_accepted(sample: dict[str, Any]) -> None:
    """Do the Linkerd/SMI/Flagger schemas accept the projects' own documented examples?"""
    assert _errors(_crd_name(sample), sample) == []
    if importlib.util.find_spec("labs.embedded.apiserver.validation") is not None:
        from labs.embedded.apiserver import validation

        version = sample["apiVersion"].split("/")[1]
        assert validation.validate(_storage_schema(_crd_name(sample), version), sample) == []


MESH_WRONG = [
    (  # both selectors: Server.spec is oneOf podSelector / externalWorkloadSelector
        {
            "apiVersion": "policy.linkerd.io/v1beta3",
            "kind": "Server",
            "metadata": {"name": "s", "namespace": "n"},
            "spec": {"port": 80, "podSelector": {}, "externalWorkloadSelector": {}},
        },
        "spec",
        "spec",
    ),
    (  # an empty identity list (minItems: 1)
        {
            "apiVersion": "policy.linkerd.io/v1alpha1",
            "kind": "MeshTLSAuthentication",
            "metadata": {"name": "m", "namespace": "n"},
            "spec": {"identities": []},
        },
        "spec.identities",
        "spec.identities",
    ),
    (  # retry budget without its required ttl
        {
            "apiVersion": "linkerd.io/v1alpha2",
            "kind": "ServiceProfile",
            "metadata": {"name": "web.default.svc.cluster.local", "namespace": "default"},
            "spec": {"retryBudget": {"retryRatio": 0.2, "minRetriesPerSecond": 10}},
        },
        "spec.retryBudget",
        "spec.retryBudget.ttl",
    ),
    (  # v1alpha2 weights are numbers; "500m" quantities only in v1alpha1
        {
            "apiVersion": "split.smi-spec.io/v1alpha2",
            "kind": "TrafficSplit",
            "metadata": {"name": "t", "namespace": "n"},
            "spec": {"service": "web", "backends": [{"service": "web-v2", "weight": "500m"}]},
        },
        "spec.backends.0.weight",
        "spec.backends[0].weight",
    ),
    (  # HTTP method outside the enum
        {
            "apiVersion": "policy.linkerd.io/v1beta3",
            "kind": "HTTPRoute",
            "metadata": {"name": "r", "namespace": "n"},
            "spec": {"rules": [{"matches": [{"method": "FETCH"}]}]},
        },
        "spec.rules.0.matches.0.method",
        "spec.rules[0].matches[0].method",
    ),
    (  # an interval without its unit
        {
            "apiVersion": "flagger.app/v1beta1",
            "kind": "Canary",
            "metadata": {"name": "podinfo", "namespace": "test"},
            "spec": {
                "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                "service": {"port": 9898},
                "analysis": {"interval": "30", "threshold": 5, "stepWeight": 5},
            },
        },
        "spec.analysis.interval",
        "spec.analysis.interval",
    ),
]


@pytest.mark.parametrize(("obj", "path", "server_path"), MESH_WRONG, ids=[w[2] for w in MESH_WRONG])
def test_mesh_schemas_reject_wrong_objects(
    obj: dict[str, Any], path: str, server_path: str
) -> None:
    """Does each schema name the wrong field (jsonschema's path, then the API server's)?"""
    errors = _errors(_crd_name(obj), obj)
    assert any(e.startswith(f"{path}:") for e in errors), errors
    if importlib.util.find_spec("labs.embedded.apiserver.validation") is not None:
        from labs.embedded.apiserver import validation

        version = obj["apiVersion"].split("/")[1]
        issues = validation.validate(_storage_schema(_crd_name(obj), version), obj)
        assert server_path in [i.path for i in issues], issues


# --- Gateway API v1.5.1 and Istio Sidecar/WorkloadEntry/Telemetry (crds/gateway-api.yaml,
# crds/istio-extensions.yaml) ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "short_names", "columns", "served", "storage"),
    [
        (
            "gatewayclasses.gateway.networking.k8s.io",
            ["gc"],
            ["Controller", "Accepted", "Age", "Description"],
            ["v1", "v1beta1"],
            "v1",
        ),
        (
            "gateways.gateway.networking.k8s.io",
            ["gtw"],
            ["Class", "Address", "Programmed", "Age"],
            ["v1", "v1beta1"],
            "v1",
        ),
        (
            "httproutes.gateway.networking.k8s.io",
            [],
            ["Hostnames", "Age"],
            ["v1", "v1beta1"],
            "v1",
        ),
        ("grpcroutes.gateway.networking.k8s.io", [], ["Hostnames", "Age"], ["v1"], "v1"),
        (
            "referencegrants.gateway.networking.k8s.io",
            ["refgrant"],
            ["Age"],
            ["v1", "v1beta1"],
            "v1beta1",
        ),
        ("sidecars.networking.istio.io", [], [], ["v1", "v1alpha3", "v1beta1"], "v1"),
        (
            "workloadentries.networking.istio.io",
            ["we"],
            ["Age", "Address"],
            ["v1", "v1alpha3", "v1beta1"],
            "v1",
        ),
        ("telemetries.telemetry.istio.io", ["telemetry"], ["Age"], ["v1", "v1alpha1"], "v1alpha1"),
    ],
)
def test_gateway_api_and_istio_extension_names_match_upstream(
    name: str, short_names: list[str], columns: list[str], served: list[str], storage: str
) -> None:
    """Do short names, printer columns and served/storage versions match the upstream CRDs?"""
    spec = CRDS[name]["spec"]
    assert spec["names"].get("shortNames", []) == short_names
    for version in spec["versions"]:
        assert [c["name"] for c in version.get("additionalPrinterColumns", [])] == columns
    assert [v["name"] for v in spec["versions"] if v["served"]] == served
    assert [v["name"] for v in spec["versions"] if v["storage"]] == [storage]


def test_gateway_api_crds_carry_the_pinned_bundle_version() -> None:
    """Are the Gateway API CRDs the standard channel of the release the course pins?"""
    gateway_api = [c for c in CRDS.values() if c["spec"]["group"] == "gateway.networking.k8s.io"]
    assert len(gateway_api) == 5
    for crd in gateway_api:
        annotations = crd["metadata"]["annotations"]
        assert annotations["gateway.networking.k8s.io/bundle-version"] == "v1.5.1"
        assert annotations["gateway.networking.k8s.io/channel"] == "standard"
    assert CRDS["gatewayclasses.gateway.networking.k8s.io"]["spec"]["scope"] == "Cluster"


# The Gateway API Bookinfo sample and traffic-shifting routes (istio.io, samples/bookinfo/
# gateway-api), the gateway-api.sigs.k8s.io gRPC-routing and ReferenceGrant examples, and the
# istio.io Sidecar, WorkloadEntry and access-logging (Telemetry) examples.
GATEWAY_API_ISTIO_SAMPLES = """
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata:
  name: istio
spec:
  controllerName: istio.io/gateway-controller
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: bookinfo-gateway
spec:
  gatewayClassName: istio
  listeners:
  - name: http
    port: 80
    protocol: HTTP
    allowedRoutes:
      namespaces:
        from: Same
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: bookinfo
spec:
  parentRefs:
  - name: bookinfo-gateway
  rules:
  - matches:
    - path:
        type: Exact
        value: /productpage
    - path:
        type: PathPrefix
        value: /static
    - path:
        type: Exact
        value: /login
    - path:
        type: Exact
        value: /logout
    - path:
        type: PathPrefix
        value: /api/v1/products
    backendRefs:
    - name: productpage
      port: 9080
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: reviews
spec:
  parentRefs:
  - group: ""
    kind: Service
    name: reviews
    port: 9080
  rules:
  - backendRefs:
    - name: reviews-v1
      port: 9080
      weight: 50
    - name: reviews-v3
      port: 9080
      weight: 50
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: HTTPRoute
metadata:
  name: reviews
spec:
  parentRefs:
  - group: ""
    kind: Service
    name: reviews
    port: 9080
  rules:
  - backendRefs:
    - name: reviews-v1
      port: 9080
      weight: 90
    - name: reviews-v2
      port: 9080
      weight: 10
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata:
  name: example-route
spec:
  parentRefs:
  - name: example-gateway
  hostnames:
  - "example.com"
  rules:
  - matches:
    - method:
        service: com.example.User
        method: Login
    backendRefs:
    - name: foo-svc
      port: 50051
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata:
  name: allow-prod-traffic
  namespace: bar
spec:
  from:
  - group: gateway.networking.k8s.io
    kind: HTTPRoute
    namespace: foo
  to:
  - group: ""
    kind: Service
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: default
  namespace: istio-config
spec:
  egress:
  - hosts:
    - "./*"
    - "istio-system/*"
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: details-svc
spec:
  serviceAccount: details-legacy
  address: 2.2.2.2
  labels:
    app: details-legacy
    instance-id: vm1
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata:
  name: mesh-default
  namespace: istio-system
spec:
  accessLogging:
    - providers:
      - name: envoy
"""


@pytest.mark.parametrize(
    "sample", list(yaml.safe_load_all(GATEWAY_API_ISTIO_SAMPLES)), ids=_mesh_id
)
def test_gateway_api_and_istio_extension_samples_are_accepted(sample: dict[str, Any]) -> None:
    """Do the Gateway API and Istio Sidecar/WorkloadEntry/Telemetry schemas accept the docs?"""
    assert _errors(_crd_name(sample), sample) == []
    if importlib.util.find_spec("labs.embedded.apiserver.validation") is not None:
        from labs.embedded.apiserver import validation

        version = sample["apiVersion"].split("/")[1]
        assert validation.validate(_storage_schema(_crd_name(sample), version), sample) == []


GATEWAY_API_ISTIO_WRONG = [
    (  # a weight quoted as a string
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "reviews"},
            "spec": {"rules": [{"backendRefs": [{"name": "reviews-v1", "weight": "50"}]}]},
        },
        "spec.rules.0.backendRefs.0.weight",
        "spec.rules[0].backendRefs[0].weight",
    ),
    (  # Ingress's "Prefix" is not a Gateway API path match type
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "bookinfo"},
            "spec": {"rules": [{"matches": [{"path": {"type": "Prefix", "value": "/"}}]}]},
        },
        "spec.rules.0.matches.0.path.type",
        "spec.rules[0].matches[0].path.type",
    ),
    (  # listener port below the minimum of 1
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": {"name": "gw"},
            "spec": {
                "gatewayClassName": "istio",
                "listeners": [{"name": "http", "port": 0, "protocol": "HTTP"}],
            },
        },
        "spec.listeners.0.port",
        "spec.listeners[0].port",
    ),
    (  # a grant without its required `to`
        {
            "apiVersion": "gateway.networking.k8s.io/v1beta1",
            "kind": "ReferenceGrant",
            "metadata": {"name": "g", "namespace": "bar"},
            "spec": {"from": [{"group": "", "kind": "HTTPRoute", "namespace": "foo"}]},
        },
        "spec",
        "spec.to",
    ),
    (  # outbound policy mode outside the enum (ALLOW_ANY / REGISTRY_ONLY)
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "Sidecar",
            "metadata": {"name": "default"},
            "spec": {"outboundTrafficPolicy": {"mode": "ALLOW_ALL"}},
        },
        "spec.outboundTrafficPolicy.mode",
        "spec.outboundTrafficPolicy.mode",
    ),
    (  # an empty provider name (minLength: 1)
        {
            "apiVersion": "telemetry.istio.io/v1",
            "kind": "Telemetry",
            "metadata": {"name": "mesh-default", "namespace": "istio-system"},
            "spec": {"accessLogging": [{"providers": [{"name": ""}]}]},
        },
        "spec.accessLogging.0.providers.0.name",
        "spec.accessLogging[0].providers[0].name",
    ),
]


@pytest.mark.parametrize(
    ("obj", "path", "server_path"),
    GATEWAY_API_ISTIO_WRONG,
    ids=[w[2] for w in GATEWAY_API_ISTIO_WRONG],
)
def test_gateway_api_and_istio_extension_schemas_reject_wrong_objects(
    obj: dict[str, Any], path: str, server_path: str
) -> None:
    """Does each schema name the wrong field (jsonschema's path, then the API server's)?"""
    errors = _errors(_crd_name(obj), obj)
    assert any(e.startswith(f"{path}:") for e in errors), errors
    if importlib.util.find_spec("labs.embedded.apiserver.validation") is not None:
        from labs.embedded.apiserver import validation

        version = obj["apiVersion"].split("/")[1]
        issues = validation.validate(_storage_schema(_crd_name(obj), version), obj)
        assert server_path in [i.path for i in issues], issues
