"""The ingress gateway's Envoy configuration, built from objects alone (no cluster, no Envoy).

Istio's translation: Gateway servers selecting the gateway pod → listeners on the target
port (and the Service's node port), bound VirtualServices → virtual hosts of `http.<port>`,
mesh services → clusters with mTLS as the gateway's own identity.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from labs.embedded.mesh.istio.sidecar import node_id
from labs.embedded.mesh.istio.state import MeshState
from labs.embedded.mesh.istio.status import vs_unsupported_fields
from labs.embedded.mesh.istio.xds.gateway import (
    build_gateway,
    credential_sds,
    credential_sds_text,
    gateway_credentials,
    gateway_unsupported_fields,
    service_ports,
)
from labs.embedded.mesh.kube_state import Obj, spiffe_id
from labs.embedded.mesh.proxyfiles import EnvoyResources, ProxyFiles
from labs.embedded.workload import HOST_PORTS, PROXY_PORTS, is_gateway

NS = "bookinfo"
GW_NS = "istio-system"
GW_LABELS = {"app": "istio-ingressgateway", "istio": "ingressgateway"}


def gateway_pod() -> Obj:
    return {"metadata": {
        "name": "istio-ingressgateway-abc", "namespace": GW_NS, "uid": "gw-uid",
        "labels": GW_LABELS,
        "annotations": {HOST_PORTS: json.dumps({"15021": 40001, "8080": 40002, "8443": 40003}),
                        PROXY_PORTS: json.dumps({"admin": 40004, "outbound": 40005})}},
        "spec": {"serviceAccountName": "istio-ingressgateway-service-account", "containers": [{
            "name": "istio-proxy", "args": ["proxy", "router", "--domain", "x"],
            "ports": [{"containerPort": 15021, "name": "status-port"},
                      {"containerPort": 8080, "name": "http2"},
                      {"containerPort": 8443, "name": "https"}]}]}}


def productpage_pod() -> Obj:
    return {"metadata": {"name": "productpage-v1-x", "namespace": NS, "uid": "pp-uid",
                         "labels": {"app": "productpage", "version": "v1"}},
            "spec": {"serviceAccountName": "bookinfo-productpage",
                     "containers": [{"name": "productpage"}, {"name": "istio-proxy"}]}}


def service(name: str, namespace: str, ports: list[Obj], selector: dict[str, str],
            **spec: object) -> Obj:
    return {"metadata": {"name": name, "namespace": namespace},
            "spec": {"ports": ports, "selector": selector, "clusterIP": "10.96.0.9", **spec}}


def endpoints(name: str, namespace: str, pod: Obj, port: int, port_name: str) -> Obj:
    return {"metadata": {"name": name, "namespace": namespace}, "subsets": [{
        "addresses": [{"ip": "127.0.0.1", "targetRef": {
            "kind": "Pod", "namespace": namespace, "name": pod["metadata"]["name"]}}],
        "ports": [{"name": port_name, "port": port}]}]}


def gateway(number: int, hosts: list[str] | None = None, name: str = "bookinfo-gateway",
            protocol: str = "HTTP", **server: object) -> Obj:
    return {"metadata": {"name": name, "namespace": NS},
            "spec": {"selector": {"istio": "ingressgateway"}, "servers": [{
                "port": {"number": number, "name": "http", "protocol": protocol},
                "hosts": hosts or ["*"], **server}]}}


def bookinfo_vs(hosts: list[str] | None = None, gateways: list[str] | None = None) -> Obj:
    return {"metadata": {"name": "bookinfo", "namespace": NS,
                         "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"hosts": hosts or ["*"], "gateways": gateways or ["bookinfo-gateway"],
                     "http": [{"match": [{"uri": {"exact": "/productpage"}},
                                         {"uri": {"prefix": "/static"}}],
                               "route": [{"destination": {"host": "productpage",
                                                          "port": {"number": 9080}}}]}]}}


def state(*, gateways: list[Obj], virtual_services: list[Obj]) -> MeshState:
    gw, pp = gateway_pod(), productpage_pod()
    return MeshState(
        pods=[gw, pp],
        services=[
            service("istio-ingressgateway", GW_NS, [
                {"name": "status-port", "port": 15021, "targetPort": 15021, "nodePort": 30021},
                {"name": "http2", "port": 80, "targetPort": 8080, "nodePort": 31380},
                {"name": "https", "port": 443, "targetPort": 8443, "nodePort": 31390}],
                GW_LABELS, type="LoadBalancer"),
            service("productpage", NS, [{"name": "http", "port": 9080}], {"app": "productpage"})],
        endpoints=[endpoints("productpage", NS, pp, 41000, "http")],
        gateways=gateways, virtual_services=virtual_services)


def files(tmp_path: Path) -> ProxyFiles:
    return ProxyFiles(tmp_path / "xds")


def route_configs(out: EnvoyResources) -> list[Obj]:
    """The inline route configuration of each filter chain of the host-port listeners."""
    return [chain["filters"][0]["typed_config"]["route_config"]
            for lis in out.listeners if lis["name"].startswith("0.0.0.0_")
            and "_nodeport_" not in lis["name"] for chain in lis["filter_chains"]]


def listener_ports(listeners: list[Obj]) -> dict[str, int]:
    return {lis["name"]: lis["address"]["socket_address"]["port_value"] for lis in listeners}


@pytest.mark.parametrize("number", [80, 8080])
def test_server_port_maps_to_the_container_port_and_node_port(tmp_path: Path,
                                                               number: int) -> None:
    """Istio's sample used 80 (the Service port), newer ones 8080 (the target port)."""
    mesh = state(gateways=[gateway(number)], virtual_services=[bookinfo_vs()])
    pod = gateway_pod()
    assert service_ports(mesh, pod, number) == (8080, [31380])
    out = build_gateway(mesh, pod, files(tmp_path), telemetry_port=0)
    assert listener_ports(out.listeners) == {
        "0.0.0.0_8080": 40002, "0.0.0.0_8080_nodeport_31380": 31380, "health": 40001}
    assert out.route_configs == []  # inline: file-based RDS holds one route configuration
    [routes] = route_configs(out)
    assert routes["name"] == f"http.{number}"
    [vhost] = routes["virtual_hosts"]
    assert vhost["domains"] == ["*"]
    assert [r["match"] for r in vhost["routes"]] == [
        {"path": "/productpage", "case_sensitive": True},
        {"prefix": "/static", "case_sensitive": True}]
    cluster = f"outbound|9080||productpage.{NS}.svc.cluster.local"
    assert all(r["route"]["cluster"] == cluster for r in vhost["routes"])
    hcm = out.listeners[0]["filter_chains"][0]["filters"][0]["typed_config"]
    assert hcm["route_config"] == routes
    assert hcm["strip_any_host_port"] is True


def test_clusters_use_mtls_to_meshed_backends_as_the_gateway(tmp_path: Path) -> None:
    mesh = state(gateways=[gateway(80)], virtual_services=[bookinfo_vs()])
    out = build_gateway(mesh, gateway_pod(), files(tmp_path), telemetry_port=9411)
    by_name = {c["name"]: c for c in out.clusters}
    cluster = by_name[f"outbound|9080||productpage.{NS}.svc.cluster.local"]
    text = json.dumps(cluster)
    assert spiffe_id(NS, "bookinfo-productpage") in text  # the destination's identity
    assert str(files(tmp_path).cert_sds) in text  # the gateway's own certificate
    assert "zipkin" in by_name


def test_hosts_and_binding(tmp_path: Path) -> None:
    """Only VirtualServices naming the Gateway count; a server host narrows a VS wildcard."""
    unbound = {**bookinfo_vs(), "metadata": {"name": "other", "namespace": NS}}
    unbound["spec"] = {**unbound["spec"], "gateways": ["mesh"]}
    mesh = state(gateways=[gateway(80, ["bookinfo.example.com"])],
                 virtual_services=[bookinfo_vs(["*"], [f"{NS}/bookinfo-gateway"]), unbound])
    [routes] = route_configs(build_gateway(mesh, gateway_pod(), files(tmp_path), 0))
    assert [v["domains"] for v in routes["virtual_hosts"]] == [["bookinfo.example.com"]]
    assert len(routes["virtual_hosts"][0]["routes"]) == 2
    # A server limited to another namespace's VirtualServices gets none of them.
    mesh = state(gateways=[gateway(80, ["other-ns/*"])], virtual_services=[bookinfo_vs()])
    [routes] = route_configs(build_gateway(mesh, gateway_pod(), files(tmp_path), 0))
    assert routes["virtual_hosts"] == []


def test_match_gateways_pick_routes_for_this_gateway(tmp_path: Path) -> None:
    vs = bookinfo_vs(gateways=["bookinfo-gateway", "mesh"])
    vs["spec"]["http"] = [
        {"match": [{"uri": {"prefix": "/mesh-only"}, "gateways": ["mesh"]}],
         "route": [{"destination": {"host": "productpage"}}]},
        {"match": [{"uri": {"prefix": "/edge"}, "gateways": ["bookinfo-gateway"]}],
         "route": [{"destination": {"host": "productpage"}}]}]
    mesh = state(gateways=[gateway(80)], virtual_services=[vs])
    [routes] = route_configs(build_gateway(mesh, gateway_pod(), files(tmp_path), 0))
    [vhost] = routes["virtual_hosts"]
    assert [r["match"].get("prefix") for r in vhost["routes"]] == ["/edge"]


def test_gateway_pods_are_not_sidecars() -> None:
    mesh = state(gateways=[], virtual_services=[])
    assert is_gateway(gateway_pod()) and not is_gateway(productpage_pod())
    assert [p["metadata"]["name"] for p in mesh.gateway_pods()] == ["istio-ingressgateway-abc"]
    assert [p["metadata"]["name"] for p in mesh.sidecar_pods()] == ["productpage-v1-x"]
    assert node_id("gw", GW_NS, "router") == (
        "router~127.0.0.1~gw.istio-system~istio-system.svc.cluster.local")


def test_not_emulated_fields_are_reported(tmp_path: Path) -> None:
    mutual = gateway(443, protocol="HTTPS", tls={"mode": "MUTUAL", "credentialName": "c"})
    assert gateway_unsupported_fields(mutual) == ["spec.servers[0].tls.mode=MUTUAL"]
    assert gateway_unsupported_fields(gateway(9000, protocol="TCP")) == [
        "spec.servers[0].port.protocol=TCP"]
    assert gateway_unsupported_fields(gateway(80, tls={"httpsRedirect": True})) == [
        "spec.servers[0].tls.httpsRedirect"]
    assert gateway_unsupported_fields(gateway(80)) == []
    assert vs_unsupported_fields(bookinfo_vs()) == []
    mesh = state(gateways=[mutual], virtual_services=[bookinfo_vs()])
    out = build_gateway(mesh, gateway_pod(), files(tmp_path), 0, credentials=["c"])
    assert route_configs(out) == [] and listener_ports(out.listeners) == {"health": 40001}


def test_tls_simple_terminates_with_the_credential(tmp_path: Path) -> None:
    simple = gateway(443, ["bookinfo.example.com"], protocol="HTTPS",
                     tls={"mode": "SIMPLE", "credentialName": "bookinfo-cert"})
    assert gateway_unsupported_fields(simple) == []
    mesh = state(gateways=[simple], virtual_services=[bookinfo_vs(["bookinfo.example.com"])])
    pod = gateway_pod()
    assert gateway_credentials(mesh, pod) == ["bookinfo-cert"]
    missing = build_gateway(mesh, pod, files(tmp_path), 0)
    assert listener_ports(missing.listeners) == {"health": 40001}
    [(about, problem)] = missing.warnings  # for the Gateway's status
    assert about is simple and "bookinfo-cert has no usable Secret" in problem
    out = build_gateway(mesh, pod, files(tmp_path), 0, credentials=["bookinfo-cert"])
    assert listener_ports(out.listeners) == {
        "0.0.0.0_8443": 40003, "0.0.0.0_8443_nodeport_31390": 31390, "health": 40001}
    [chain] = out.listeners[0]["filter_chains"]
    assert chain["filter_chain_match"] == {"transport_protocol": "tls",
                                           "server_names": ["bookinfo.example.com"]}
    [sds] = chain["transport_socket"]["typed_config"]["common_tls_context"][
        "tls_certificate_sds_secret_configs"]
    assert sds["name"] == "kubernetes://bookinfo-cert"
    assert sds["sds_config"]["path_config_source"]["path"] == str(
        credential_sds(files(tmp_path), "bookinfo-cert"))
    [routes] = route_configs(out)
    assert [v["domains"] for v in routes["virtual_hosts"]] == [["bookinfo.example.com"]]


def test_credential_secret_becomes_an_sds_file() -> None:
    def secret(data: dict[str, str]) -> Obj:
        return {"metadata": {"name": "c", "namespace": GW_NS}, "type": "kubernetes.io/tls",
                "data": data}
    pem = base64.b64encode(b"-----BEGIN X-----\n").decode()
    [resource] = json.loads(credential_sds_text(secret({"tls.crt": pem, "tls.key": pem})))[
        "resources"]
    assert resource["name"] == "kubernetes://c"
    assert resource["tls_certificate"]["private_key"]["inline_bytes"] == pem
    with pytest.raises(ValueError, match=r"has no tls\.key.*kubectl create secret tls"):
        credential_sds_text(secret({"tls.crt": pem}))
