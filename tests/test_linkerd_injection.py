"""Does Linkerd's injection give exactly upstream's shapes, to exactly the pods upstream would?

The `linkerd inject` transforms are compared with upstream's goldens (tests/golden/linkerd/,
copied from linkerd/linkerd2 cli/cmd/testdata at the commit named in each file's first line),
fed upstream's own test values, so nothing needs normalizing. The webhook runs in a real
in-process `ObjectApi` with the control plane installed, so injected pods also pass the API
server's validation and defaulting.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from labs.embedded import controllers
from labs.embedded.apiserver import api as api_module
from labs.embedded.apiserver.api import ObjectApi
from labs.embedded.apiserver.resources import ResourceRegistry, ResourceType
from labs.embedded.apiserver.store import Store
from labs.embedded.controllers.replicaset import pod_from_template
from labs.embedded.daemon import install_course_crds
from labs.embedded.mesh.istio import injection as istio_injection
from labs.embedded.mesh.linkerd import injection
from labs.embedded.mesh.linkerd.install import install_linkerd
from labs.linkerd import inject
from labs.versions import version

Obj = dict[str, Any]
GOLDEN = Path(__file__).resolve().parent / "golden" / "linkerd"
REGISTRY = ResourceRegistry()


def rt(group: str, version_: str, plural: str) -> ResourceType:
    found = REGISTRY.lookup(group, version_, plural)
    assert found is not None
    return found


NAMESPACES, PODS, CONFIGMAPS = rt("", "v1", "namespaces"), rt("", "v1", "pods"), \
    rt("", "v1", "configmaps")
DEPLOYMENTS, REPLICASETS = rt("apps", "v1", "deployments"), rt("apps", "v1", "replicasets")


def golden(name: str) -> list[Obj]:
    """The documents of a golden file (its first line names the upstream file and commit)."""
    return [d for d in yaml.safe_load_all((GOLDEN / name).read_text()) if d]


def golden_report(name: str) -> str:
    """An upstream report file, without the line naming its source."""
    return (GOLDEN / name).read_text().split("\n", 1)[1]


def upstream_test_values() -> injection.ProxyValues:
    """What upstream's inject tests inject with: their trust anchors (in the golden's env),
    version `test-inject-proxy-version`, created-by `linkerd/cli dev-undefined`."""
    proxy = golden("inject_emojivoto_deployment.golden.yml")[0]["spec"]["template"]["spec"][
        "initContainers"][1]
    pem = next(e["value"] for e in proxy["env"]
               if e["name"] == "LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS")
    return injection.ProxyValues(pem, "test-inject-proxy-version", "linkerd/cli dev-undefined")


def test_manual_injection_is_upstreams_golden() -> None:
    workload = golden("inject_emojivoto_deployment.input.yml")[0]
    report = inject.inject(workload, upstream_test_values())
    assert workload == golden("inject_emojivoto_deployment.golden.yml")[0]
    # the annotation upstream's golden carries: sha256 of the trust bundle, computed alike
    assert workload["spec"]["template"]["metadata"]["annotations"][
        injection.TRUST_ROOT_SHA] == upstream_test_values().trust_root_sha256
    assert inject.inject_report([report]) == golden_report("inject_emojivoto_deployment.report")


def test_default_injection_only_annotates_the_pod_template() -> None:
    cronjob = golden("inject_emojivoto_cronjob.input.yml")[0]
    report = inject.inject(cronjob, None)
    assert cronjob == golden("inject_emojivoto_cronjob.golden.yml")[0]
    assert inject.inject_report([report]) == golden_report("inject_emojivoto_cronjob.report")


def test_injecting_twice_or_uninjecting_is_stable() -> None:
    values = upstream_test_values()
    injected = golden("inject_emojivoto_deployment.golden.yml")[0]
    again = copy.deepcopy(injected)
    inject.inject(again, values)
    assert again == injected
    report = inject.uninject(again)
    assert report.uninjected
    assert again == golden("inject_emojivoto_deployment.input.yml")[0]
    assert inject.uninject_report([report]) == '\ndeployment "web" uninjected\n\n'


def test_a_list_is_injected_item_by_item() -> None:
    docs = golden("inject_emojivoto_list.input.yml")
    done = inject.transform(docs, lambda obj: inject.inject(obj, None))
    assert [d["kind"] for d in done.documents] == ["List"]
    assert inject.inject_report(done.reports) == golden_report("inject_emojivoto_list.report")
    for item in done.documents[0]["items"]:
        assert item["spec"]["template"]["metadata"]["annotations"] == {
            injection.INJECT: injection.ENABLED}


def test_workloads_that_cannot_be_injected_are_reported() -> None:
    disabled = golden("inject_emojivoto_deployment.input.yml")[0]
    disabled["spec"]["template"]["metadata"]["annotations"] = {injection.INJECT: "disabled"}
    report = inject.inject(disabled, None)
    assert not report.injectable
    assert inject.inject_report([report]) == (
        '\n\u203c "linkerd.io/inject: disabled" annotation set on deployment/web\n\n'
        'deployment "web" skipped\n\n')
    host = golden("inject_emojivoto_deployment.input.yml")[0]
    host["spec"]["template"]["spec"]["hostNetwork"] = True
    with pytest.raises(inject.InjectError, match="failed to inject deployment/web: "
                       "hostNetwork is enabled"):
        inject.inject(host, None)
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web-svc"}}
    assert inject.inject_report([inject.inject(service, None)]) == '\nservice "web-svc" skipped\n\n'


def test_bad_yaml_says_where() -> None:
    with pytest.raises(inject.InjectError, match=r"error converting YAML to JSON: yaml: line 2: "
                       "mapping values are not allowed here"):
        inject.parse_documents("kind: Deployment\nmetadata: name: web\n")
    with pytest.raises(inject.InjectError, match="cannot unmarshal"):
        inject.parse_documents("- just\n- a list\n")


# --- the webhook ---------------------------------------------------------------------------


@pytest.fixture
def api() -> ObjectApi:
    """An API server with the course CRDs, Linkerd installed and both meshes' injection
    registered in the daemon's order."""
    api = ObjectApi(Store(None), ResourceRegistry())
    install_course_crds(api)
    istio_injection.register_injection(api)
    injection.register_injection(api)
    for name, ns_annotations, labels in (
            ("meshed", {injection.INJECT: "enabled"}, {}),
            ("strict", {injection.INJECT: "enabled",
                        injection.DEFAULT_INBOUND_POLICY: "all-authenticated"}, {}),
            ("plain", {}, {}),
            ("both", {injection.INJECT: "enabled"}, {"istio-injection": "enabled"}),
            ("kube-system", {injection.INJECT: "enabled"}, {})):
        if api.find(NAMESPACES, "", name) is None:
            api.create(NAMESPACES, "", {"metadata": {
                "name": name, "annotations": ns_annotations, "labels": labels}})
    install_linkerd(api)
    return api


def deployment(namespace: str, annotations: dict[str, str] | None = None) -> Obj:
    web = golden("inject_emojivoto_deployment.input.yml")[0]
    web["metadata"]["namespace"] = namespace
    web["spec"]["template"]["metadata"]["annotations"] = annotations or {}
    return web


def create_pod_of(api: ObjectApi, workload: Obj) -> Obj:
    """The Deployment -> ReplicaSet -> Pod chain the controllers make, through admission."""
    ns = workload["metadata"]["namespace"]
    made = api.create(DEPLOYMENTS, ns, workload).object
    replicaset = {"metadata": {"name": "web-5d9f7c", "namespace": ns,
                               "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                                                    "name": "web", "uid": made["metadata"]["uid"],
                                                    "controller": True}]},
                  "spec": {"selector": made["spec"]["selector"],
                           "template": made["spec"]["template"]}}
    rs = api.create(REPLICASETS, ns, replicaset).object
    return api.create(PODS, ns, pod_from_template(rs)).object


def proxy_env(pod: Obj) -> dict[str, str]:
    proxy = next(c for c in pod["spec"]["initContainers"] if c["name"] == "linkerd-proxy")
    return {e["name"]: e.get("value", "") for e in proxy["env"]}


def test_namespace_annotation_injects_the_contracts_shape(api: ObjectApi) -> None:
    pod = create_pod_of(api, deployment("meshed"))
    meta, spec = pod["metadata"], pod["spec"]
    pinned = version("LINKERD_VERSION")
    roots = api.find(CONFIGMAPS, "linkerd", "linkerd-identity-trust-roots")
    assert roots is not None
    bundle = roots["data"]["ca-bundle.crt"]
    assert meta["labels"] == {"app": "web-svc", "linkerd.io/control-plane-ns": "linkerd",
                              "linkerd.io/proxy-deployment": "web",
                              "linkerd.io/workload-ns": "meshed"}
    assert meta["annotations"] == {
        "linkerd.io/created-by": f"linkerd/proxy-injector {pinned}",
        "linkerd.io/proxy-version": pinned,
        "linkerd.io/trust-root-sha256": injection.ProxyValues(bundle, "", "").trust_root_sha256}
    init, proxy = spec["initContainers"]
    assert (init["name"], proxy["name"], proxy["restartPolicy"]) == (
        "linkerd-init", "linkerd-proxy", "Always")
    assert proxy["image"] == f"cr.l5d.io/linkerd/proxy:{pinned}"
    assert [c["name"] for c in spec["containers"]] == ["web-svc"]
    env = proxy_env(pod)
    assert env["LINKERD2_PROXY_INBOUND_DEFAULT_POLICY"] == "all-unauthenticated"
    assert env["LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS"] == bundle.strip() + "\n"
    assert env["LINKERD2_PROXY_IDENTITY_LOCAL_NAME"] == (
        "$(_pod_sa).$(_pod_ns).serviceaccount.identity.linkerd.cluster.local")
    assert env["LINKERD2_PROXY_INBOUND_PORTS"] == "80"
    assert [v["name"] for v in spec["volumes"]][-3:] == list(injection.VOLUMES)


def test_default_inbound_policy_from_pod_then_namespace(api: ObjectApi) -> None:
    from_namespace = create_pod_of(api, deployment("strict"))
    assert proxy_env(from_namespace)["LINKERD2_PROXY_INBOUND_DEFAULT_POLICY"] == (
        "all-authenticated")
    from_pod = create_pod_of(api, deployment("meshed", {
        injection.DEFAULT_INBOUND_POLICY: "deny"}))
    assert proxy_env(from_pod)["LINKERD2_PROXY_INBOUND_DEFAULT_POLICY"] == "deny"


@pytest.mark.parametrize(("namespace", "annotations"), [
    ("plain", {}),                                      # nobody asked
    ("meshed", {injection.INJECT: "disabled"}),         # the pod opts out
    ("meshed", {injection.INJECT: "yes"}),              # invalid value at the workload
    ("kube-system", {injection.INJECT: "enabled"}),     # never in kube-system
    ("linkerd", {injection.INJECT: "enabled"}),         # admission-webhooks: disabled
])
def test_pods_upstream_leaves_alone(api: ObjectApi, namespace: str,
                                    annotations: dict[str, str]) -> None:
    pod = create_pod_of(api, deployment(namespace, annotations))
    assert "initContainers" not in pod["spec"]
    assert not any(k.startswith("linkerd.io/proxy") for k in pod["metadata"]["labels"])


def test_the_pod_annotation_alone_injects(api: ObjectApi) -> None:
    pod = create_pod_of(api, deployment("plain", {injection.INJECT: "enabled"}))
    assert [c["name"] for c in pod["spec"]["initContainers"]] == ["linkerd-init",
                                                                  "linkerd-proxy"]
    assert pod["metadata"]["annotations"][injection.INJECT] == "enabled"  # stays


def test_an_injected_pod_is_not_injected_again(api: ObjectApi) -> None:
    manual = deployment("meshed")
    cli = dataclasses.replace(injection.cluster_values(api), created_by="linkerd/cli test")
    inject.inject(manual, cli)
    pod = create_pod_of(api, manual)
    assert [c["name"] for c in pod["spec"]["initContainers"]] == ["linkerd-init",
                                                                  "linkerd-proxy"]
    assert pod["metadata"]["annotations"]["linkerd.io/created-by"] == "linkerd/cli test"


def test_istio_and_linkerd_both_asked_gives_istio_only(api: ObjectApi) -> None:
    """Istio's webhook runs first (webhooks run in name order) and Linkerd then skips a pod
    with `istio-proxy`, as upstream's HasExistingSidecars does."""
    pod = create_pod_of(api, deployment("both"))
    assert [c["name"] for c in pod["spec"]["containers"]] == ["web-svc", "istio-proxy"]
    assert [c["name"] for c in pod["spec"]["initContainers"]] == ["istio-init"]
    assert "linkerd.io/proxy-version" not in pod["metadata"]["annotations"]


def test_without_trust_roots_pods_are_admitted_uninjected(api: ObjectApi) -> None:
    api.delete(CONFIGMAPS, "linkerd", "linkerd-identity-trust-roots")
    pod = create_pod_of(api, deployment("meshed"))
    assert "initContainers" not in pod["spec"]


def test_install_is_idempotent_and_fills_the_trust_anchors(api: ObjectApi) -> None:
    assert install_linkerd(api) == 0
    config = api.find(CONFIGMAPS, "linkerd", "linkerd-config")
    roots = api.find(CONFIGMAPS, "linkerd", "linkerd-identity-trust-roots")
    assert config is not None and roots is not None
    values = yaml.safe_load(config["data"]["values"])
    assert values["identityTrustAnchorsPEM"] == roots["data"]["ca-bundle.crt"]
    assert values["linkerdVersion"] == version("LINKERD_VERSION")
    assert values["proxy"]["defaultInboundPolicy"] == "all-unauthenticated"
    for name in ("linkerd-destination", "linkerd-identity", "linkerd-proxy-injector"):
        found = api.find(DEPLOYMENTS, "linkerd", name)
        assert found is not None, f"linkerd/{name}"
        assert "linkerd.io/control-plane-component" in found["metadata"]["labels"]
    # linkerd-viz is installed on demand (`linkerd viz install | kubectl apply -f -`)
    assert api.find(DEPLOYMENTS, "linkerd-viz", "prometheus") is None


def test_install_builds_no_schema(monkeypatch: pytest.MonkeyPatch) -> None:
    """The in-process install (tests, benches) creates its objects packaged, as the cluster's
    own manifests are, without building a schema (tests/test_daemon_start.py says why)."""
    def no_schema(api_version: str, kind: str) -> None:
        raise AssertionError(f"a schema was built for {api_version} {kind} during the start")

    monkeypatch.setattr(api_module, "builtin_schema", no_schema)
    api = ObjectApi(Store(None), ResourceRegistry())
    install_course_crds(api)
    asyncio.run(controllers.bootstrap(api))
    assert install_linkerd(api) > 25  # the control plane only: viz is installed on demand
    config = api.find(CONFIGMAPS, "linkerd", "linkerd-config")
    assert config is not None and "BEGIN CERTIFICATE" in config["data"]["values"]
