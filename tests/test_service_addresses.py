"""Are Service cluster IPs and node ports allocated, checked and released like kube-apiserver?"""

from __future__ import annotations

import random
import socket

import pytest

from labs.embedded.apiserver.api import ObjectApi
from labs.embedded.apiserver.errors import ApiError
from labs.embedded.apiserver.resources import ResourceRegistry
from labs.embedded.apiserver.store import Store


@pytest.fixture
def api() -> ObjectApi:
    api = ObjectApi(Store(None), ResourceRegistry())
    namespaces = api.registry.lookup("", "v1", "namespaces")
    assert namespaces is not None
    api.create(namespaces, "", {"metadata": {"name": "default"}})
    return api


def service(name: str, kind: str = "ClusterIP", cluster_ip: str | None = None,
            **port: object) -> dict:
    spec = {"type": kind, "selector": {"app": name},
            "ports": [{"name": "http", "port": 80, **port}]}
    if cluster_ip:
        spec["clusterIP"] = cluster_ip
    return {"metadata": {"name": name}, "spec": spec}


def create(api: ObjectApi, body: dict, dry_run: bool = False) -> dict:
    rt = api.registry.lookup("", "v1", "services")
    assert rt is not None
    return api.create(rt, "default", body, dry_run=dry_run).object


def test_node_ports_come_from_the_default_range_and_are_kept_on_update(api: ObjectApi) -> None:
    """Does a NodePort Service get a port in 30000-32767, kept when an update omits it?"""
    created = create(api, service("web", "NodePort"))
    node_port = created["spec"]["ports"][0]["nodePort"]
    assert 30000 <= node_port <= 32767
    assert created["spec"]["clusterIP"].startswith("127.96.")
    rt = api.registry.lookup("", "v1", "services")
    assert rt is not None
    updated = api.update(rt, "default", "web", service("web", "NodePort")).object
    assert updated["spec"]["ports"][0]["nodePort"] == node_port
    as_cluster_ip = api.update(rt, "default", "web", service("web")).object
    assert "nodePort" not in as_cluster_ip["spec"]["ports"][0]


def test_taken_or_out_of_range_node_ports_are_invalid(api: ObjectApi) -> None:
    """Is a node port already in use, or outside the range, a 422 naming the field?"""
    create(api, service("a", "NodePort", nodePort=30080))
    for name, port, text in (("b", 30080, "already allocated"), ("c", 8080, "valid range")):
        with pytest.raises(ApiError) as err:
            create(api, service(name, "NodePort", nodePort=port))
        assert err.value.code == 422
        assert "spec.ports[0].nodePort" in err.value.message and text in err.value.message


def test_deleted_and_dry_run_services_hold_nothing(api: ObjectApi) -> None:
    """Are a dry run's and a deleted Service's node port and cluster IP free again?"""
    create(api, service("dry", "NodePort", nodePort=30100, cluster_ip="127.96.5.5"),
           dry_run=True)
    create(api, service("real", "NodePort", nodePort=30100, cluster_ip="127.96.5.5"))
    rt = api.registry.lookup("", "v1", "services")
    assert rt is not None
    api.delete(rt, "default", "real")
    again = create(api, service("again", "NodePort", nodePort=30100, cluster_ip="127.96.5.5"))
    assert again["spec"]["ports"][0]["nodePort"] == 30100


def hold_a_node_port(listener: socket.socket) -> int:
    """Listen on a free port of the node-port range, as a gateway Envoy does (SO_REUSEPORT)."""
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    for port in range(31000, 31100):
        try:
            listener.bind(("127.0.0.1", port))
        except OSError:
            continue
        listener.listen()
        return port
    raise AssertionError("no free port in 31000-31099 to hold")


def test_node_ports_skip_ports_in_use_on_this_host(api: ObjectApi,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Another cluster's gateway on a port must not be given that port again."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        taken = hold_a_node_port(listener)
        monkeypatch.setattr(random, "randrange", lambda n: taken - 30000)
        created = create(api, service("gw", "NodePort"))
    assert created["spec"]["ports"][0]["nodePort"] != taken
