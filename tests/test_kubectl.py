"""API conformance through the pinned kubectl: what learners type must behave as on a real cluster.

Every test runs the real `kubectl` binary against the session's embedded cluster and asserts on
what kubectl prints or on the objects it leaves behind, never on an exit code alone.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import Kubectl, poll

from labs.cluster import ClusterRef, kubectl_binary

MANIFESTS = Path(__file__).parent / "fixtures" / "manifests"


def manifest(name: str) -> str:
    return str(MANIFESTS / name)


def table(text: str) -> list[dict[str, str]]:
    """Rows of a kubectl table, keyed by header; cells are cut at the header's column starts
    (kubectl aligns with a tab writer, and some headers contain one space)."""
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines, "kubectl printed no table"
    starts = [m.start() for m in re.finditer(r"(?:^|(?<=\s\s))\S+(?: \S+)*", lines[0])]
    names = [lines[0][a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
    return [{name: line[a:b].strip() if b else line[a:].strip()
             for name, a, b in zip(names, starts, [*starts[1:], None], strict=True)}
            for line in lines[1:]]


def get_json(kubectl: Kubectl, *args: str) -> Any:
    return json.loads(kubectl("get", *args, "-o", "json"))


def absent(kubectl: Kubectl, *args: str) -> bool:
    """True when `kubectl get` says NotFound."""
    result = kubectl.run("get", *args)
    return result.returncode != 0 and "NotFound" in result.stderr


def running_pod(kubectl: Kubectl, selector: str) -> str:
    """The name of a Ready pod matching `selector` (waits for one)."""
    kubectl("wait", "--for=condition=Ready", "pod", "-l", selector, "--timeout=60s")
    pods = get_json(kubectl, "pods", "-l", selector)["items"]
    return str(pods[0]["metadata"]["name"])


@pytest.fixture(scope="module")
def web(cluster: ClusterRef) -> Iterator[Kubectl]:
    """A namespace with the `web` app (3 replicas, service, configmap), Available; shared by the
    read-only tests of this module."""
    name = f"web-{uuid.uuid4().hex[:6]}"
    assert cluster.kubectl("create", "namespace", name).returncode == 0
    kubectl = Kubectl(cluster, name)
    kubectl("apply", "-f", manifest("web.yaml"))
    kubectl("wait", "--for=condition=Available", "deployment/web", "--timeout=60s")
    yield kubectl
    cluster.kubectl("delete", "namespace", name, "--wait=false")


# -- apply ---------------------------------------------------------------------------------------
class TestApply:
    def test_apply_creates_then_updates_builtins(self, kubectl: Kubectl) -> None:
        """Does `kubectl apply -f` create a ConfigMap, Deployment and Service, then report
        `configured` for a changed object and `unchanged` for the others?"""
        created = kubectl("apply", "-f", manifest("web.yaml"))
        assert created.splitlines() == ["configmap/web-settings created",
                                        "deployment.apps/web created", "service/web created"]
        text = Path(manifest("web.yaml")).read_text()
        changed = text.replace("greeting: hello", "greeting: bonjour").replace(
            "replicas: 3", "replicas: 2")
        updated = kubectl("apply", "-f", "-", input=changed)
        assert updated.splitlines() == ["configmap/web-settings configured",
                                        "deployment.apps/web configured", "service/web unchanged"]
        assert get_json(kubectl, "configmap", "web-settings")["data"] == {"greeting": "bonjour"}
        deployment = get_json(kubectl, "deployment", "web")
        assert deployment["spec"]["replicas"] == 2
        assert deployment["metadata"]["generation"] == 2
        annotation = deployment["metadata"]["annotations"][
            "kubectl.kubernetes.io/last-applied-configuration"]
        assert json.loads(annotation)["spec"]["replicas"] == 2

    def test_apply_istio_custom_resources(self, kubectl: Kubectl) -> None:
        """Are an Istio VirtualService and DestinationRule created, listed with their printer
        columns, and updated in place by a second apply?"""
        out = kubectl("apply", "-f", manifest("reviews-routing.yaml"))
        assert out.splitlines() == [
            "destinationrule.networking.istio.io/reviews created",
            "virtualservice.networking.istio.io/reviews created"]
        [vs_row] = table(kubectl("get", "vs"))
        assert vs_row["NAME"] == "reviews"
        assert vs_row["HOSTS"] == '["reviews"]'
        [dr_row] = table(kubectl("get", "dr"))
        assert dr_row["HOST"] == "reviews"
        uid = get_json(kubectl, "vs", "reviews")["metadata"]["uid"]
        changed = Path(manifest("reviews-routing.yaml")).read_text().replace(
            "weight: 50\n    - destination: {host: reviews, subset: v3}\n      weight: 50",
            "weight: 20\n    - destination: {host: reviews, subset: v3}\n      weight: 80")
        out = kubectl("apply", "-f", "-", input=changed)
        assert "virtualservice.networking.istio.io/reviews configured" in out
        assert "destinationrule.networking.istio.io/reviews unchanged" in out
        vs = get_json(kubectl, "vs", "reviews")
        assert vs["metadata"]["uid"] == uid
        assert [r["weight"] for r in vs["spec"]["http"][0]["route"]] == [20, 80]

    def test_apply_gateway_api_httproute(self, kubectl: Kubectl) -> None:
        """Is a Gateway API HTTPRoute accepted and stored as sent, where its CRD is installed?"""
        groups = kubectl("api-versions")
        if "gateway.networking.k8s.io/v1" not in groups.split():
            pytest.skip("the Gateway API CRDs are not installed in the embedded cluster")
        out = kubectl("apply", "-f", manifest("httproute.yaml"))
        assert out.strip() == "httproute.gateway.networking.k8s.io/reviews created"
        route = get_json(kubectl, "httproute.gateway.networking.k8s.io", "reviews")
        backends = route["spec"]["rules"][0]["backendRefs"]
        assert [(b["name"], b["weight"]) for b in backends] == [("reviews-v1", 90),
                                                                  ("reviews-v2", 10)]


# -- get -----------------------------------------------------------------------------------------
class TestGet:
    def test_table_columns(self, web: Kubectl) -> None:
        """Does `kubectl get` print the server-side table columns kubectl users know?"""
        [deploy] = table(web("get", "deployment", "web"))
        assert (deploy["NAME"], deploy["READY"], deploy["UP-TO-DATE"],
                deploy["AVAILABLE"]) == ("web", "3/3", "3", "3")
        [svc] = table(web("get", "service", "web"))
        assert svc["TYPE"] == "ClusterIP"
        assert re.fullmatch(r"\d+\.\d+\.\d+\.\d+", svc["CLUSTER-IP"]), svc
        assert svc["PORT(S)"] == "80/TCP"
        pods = table(web("get", "pods", "-l", "app=web"))
        assert len(pods) == 3
        assert {(p["READY"], p["STATUS"], p["RESTARTS"]) for p in pods} == {("1/1", "Running",
                                                                             "0")}
        assert all(p["NAME"].startswith("web-") for p in pods)

    def test_wide_output(self, web: Kubectl) -> None:
        """Does `-o wide` add the containers, images and selector columns?"""
        [deploy] = table(web("get", "deployment", "web", "-o", "wide"))
        assert (deploy["CONTAINERS"], deploy["IMAGES"], deploy["SELECTOR"]) == (
            "web", "docker.io/example/web:1.0", "app=web")
        pods = table(web("get", "pods", "-o", "wide"))
        assert all(re.fullmatch(r"\d+\.\d+\.\d+\.\d+", p["IP"]) for p in pods), pods
        assert all(p["NODE"] not in ("", "<none>") for p in pods), pods

    def test_all_namespaces(self, web: Kubectl) -> None:
        """Does `get -A` list objects of every namespace with a NAMESPACE column?"""
        rows = table(web.run("get", "configmaps", "-A", namespaced=False).stdout)
        assert {"NAMESPACE", "NAME", "DATA", "AGE"} <= rows[0].keys()
        assert {"namespace": web.namespace, "name": "web-settings", "data": "1"} in [
            {"namespace": r["NAMESPACE"], "name": r["NAME"], "data": r["DATA"]} for r in rows]

    def test_yaml_and_json(self, web: Kubectl) -> None:
        """Do `-o yaml` and `-o json` print the same complete object?"""
        as_yaml = yaml.safe_load(web("get", "configmap", "web-settings", "-o", "yaml"))
        as_json = get_json(web, "configmap", "web-settings")
        assert as_yaml == as_json
        assert as_json["apiVersion"] == "v1" and as_json["kind"] == "ConfigMap"
        meta = as_json["metadata"]
        assert meta["namespace"] == web.namespace
        assert re.fullmatch(r"[0-9a-f-]{36}", meta["uid"])
        assert meta["resourceVersion"].isdigit()
        listing = get_json(web, "deployments")
        assert listing["kind"] == "List"
        assert [d["metadata"]["name"] for d in listing["items"]] == ["web"]

    def test_not_found(self, kubectl: Kubectl) -> None:
        """Does getting a missing object print kubectl's NotFound line?"""
        err = kubectl.fails("get", "configmap", "nope")
        assert 'Error from server (NotFound): configmaps "nope" not found' in err


# -- describe ------------------------------------------------------------------------------------
class TestDescribe:
    def test_describe_deployment(self, web: Kubectl) -> None:
        """Does `kubectl describe deployment` show replicas, the new ReplicaSet and the scaling
        events?"""
        out = web("describe", "deployment", "web")
        assert re.search(r"^Replicas:\s+3 desired \| 3 updated \| 3 total \| 3 available \| "
                         r"0 unavailable", out, re.M), out
        assert re.search(r"^NewReplicaSet:\s+web-\w+ \(3/3 replicas created\)", out, re.M), out
        events = out.split("Events:", 1)[1]
        assert "ScalingReplicaSet" in events, out

    def test_describe_pod(self, web: Kubectl) -> None:
        """Does `kubectl describe pod` show status, container state and the pod's events?"""
        pod = running_pod(web, "app=web")
        out = web("describe", "pod", pod)
        assert re.search(r"^Status:\s+Running", out, re.M), out
        assert re.search(r"^\s+State:\s+Running", out, re.M), out
        assert re.search(r"^Controlled By:\s+ReplicaSet/web-", out, re.M), out
        events = out.split("Events:", 1)[1]
        assert "<none>" not in events.splitlines()[0], out
        assert "Scheduled" in events and "Started" in events, out


# -- wait & rollouts -----------------------------------------------------------------------------
class TestRollouts:
    def test_wait_for_conditions(self, web: Kubectl) -> None:
        """Do `kubectl wait` for deployment Available and pod Ready return each object as met?"""
        out = web("wait", "--for=condition=Available", "deployment/web", "--timeout=60s")
        assert out.strip() == "deployment.apps/web condition met"
        out = web("wait", "--for=condition=Ready", "pod", "-l", "app=web", "--timeout=60s")
        lines = out.strip().splitlines()
        assert len(lines) == 3 and all(
            re.fullmatch(r"pod/web-\S+ condition met", line) for line in lines), out

    def test_rollout_status(self, web: Kubectl) -> None:
        """Does `kubectl rollout status` report a finished rollout?"""
        out = web("rollout", "status", "deployment/web", "--timeout=60s")
        assert out.strip().endswith('deployment "web" successfully rolled out'), out

    def test_set_image_then_undo(self, kubectl: Kubectl) -> None:
        """Does `kubectl set image` roll out a new ReplicaSet, and `kubectl rollout undo` bring
        back the previous image?"""
        kubectl("create", "deployment", "roll", "--image=docker.io/example/web:1.0",
                "--replicas=2")
        kubectl("rollout", "status", "deployment/roll", "--timeout=60s")
        [first_rs] = get_json(kubectl, "rs", "-l", "app=roll")["items"]
        out = kubectl("set", "image", "deployment/roll", "web=docker.io/example/web:2.0")
        assert out.strip() == "deployment.apps/roll image updated"
        out = kubectl("rollout", "status", "deployment/roll", "--timeout=60s")
        assert 'deployment "roll" successfully rolled out' in out
        replica_sets = {rs["metadata"]["name"]: rs for rs in get_json(
            kubectl, "rs", "-l", "app=roll")["items"]}
        assert len(replica_sets) == 2
        assert replica_sets[first_rs["metadata"]["name"]]["spec"]["replicas"] == 0
        [new_rs] = [rs for rs in replica_sets.values() if rs["spec"]["replicas"] == 2]
        assert new_rs["spec"]["template"]["spec"]["containers"][0]["image"] == (
            "docker.io/example/web:2.0")
        assert new_rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
        poll(lambda: {c["image"] for p in get_json(kubectl, "pods", "-l", "app=roll")["items"]
                      if not p["metadata"].get("deletionTimestamp")
                      for c in p["spec"]["containers"]} == {"docker.io/example/web:2.0"},
             "only pods with the new image")
        out = kubectl("rollout", "undo", "deployment/roll")
        assert out.strip() == "deployment.apps/roll rolled back"
        kubectl("rollout", "status", "deployment/roll", "--timeout=60s")
        deployment = get_json(kubectl, "deployment", "roll")
        assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == (
            "docker.io/example/web:1.0")
        assert get_json(kubectl, "rs", first_rs["metadata"]["name"])["spec"]["replicas"] == 2

    def test_scale(self, kubectl: Kubectl) -> None:
        """Does `kubectl scale` change the replica count and the number of running pods?"""
        kubectl("create", "deployment", "sc", "--image=docker.io/example/web:1.0",
                "--replicas=1")
        out = kubectl("scale", "deployment/sc", "--replicas=3")
        assert out.strip() == "deployment.apps/sc scaled"
        kubectl("rollout", "status", "deployment/sc", "--timeout=60s")
        [row] = table(kubectl("get", "deployment", "sc"))
        assert row["READY"] == "3/3"
        kubectl("scale", "deployment/sc", "--replicas=1")
        seen: list[list[str]] = []

        def one_pod_left() -> bool:  # what was listed last is in the failure message
            pods = get_json(kubectl, "pods", "-l", "app=sc")["items"]
            seen[:] = [[p["metadata"]["name"], str(p["metadata"].get("deletionTimestamp")),
                        p["status"].get("phase", "")] for p in pods]
            return len(pods) == 1

        try:
            poll(one_pod_left, "the pods to scale down to 1")
        except pytest.fail.Exception:
            rs = get_json(kubectl, "replicasets", "-l", "app=sc")["items"]
            pytest.fail(f"pods {seen}; replicasets "
                        f"{[(r['metadata']['name'], r['spec'], r['status']) for r in rs]}")
        assert get_json(kubectl, "deployment", "sc")["spec"]["replicas"] == 1


# -- metadata and patches ------------------------------------------------------------------------
class TestEdits:
    def test_label_and_annotate(self, kubectl: Kubectl) -> None:
        """Do `kubectl label` and `kubectl annotate` add, overwrite (only with --overwrite) and
        remove keys, and do label selectors see the change?"""
        kubectl("create", "configmap", "c", "--from-literal=a=1")
        assert kubectl("label", "configmap", "c", "tier=db").strip() == "configmap/c labeled"
        err = kubectl.fails("label", "configmap", "c", "tier=web")
        assert "'tier' already has a value (db), and --overwrite is false" in err
        kubectl("label", "configmap", "c", "tier=web", "--overwrite")
        assert kubectl("get", "cm", "-l", "tier=web", "-o", "name").strip() == "configmap/c"
        assert kubectl("annotate", "configmap", "c", "owner=ops").strip() == (
            "configmap/c annotated")
        meta = get_json(kubectl, "configmap", "c")["metadata"]
        assert meta["labels"] == {"tier": "web"} and meta["annotations"] == {"owner": "ops"}
        kubectl("label", "configmap", "c", "tier-")
        kubectl("annotate", "configmap", "c", "owner-")
        meta = get_json(kubectl, "configmap", "c")["metadata"]
        assert not meta.get("labels") and not meta.get("annotations")

    def test_patch_types(self, kubectl: Kubectl) -> None:
        """Do strategic, merge and JSON patches change exactly what they say?"""
        kubectl("apply", "-f", manifest("web.yaml"))
        env = {"spec": {"template": {"spec": {"containers": [
            {"name": "web", "env": [{"name": "MODE", "value": "blue"}]}]}}}}
        out = kubectl("patch", "deployment", "web", "-p", json.dumps(env))
        assert out.strip() == "deployment.apps/web patched"
        [container] = get_json(kubectl, "deployment", "web")["spec"]["template"]["spec"][
            "containers"]
        assert container["image"] == "docker.io/example/web:1.0"  # merged by name, kept
        assert container["env"] == [{"name": "MODE", "value": "blue"}]
        kubectl("patch", "configmap", "web-settings", "--type=merge",
                "-p", '{"data": {"greeting": null, "colour": "red"}}')
        assert get_json(kubectl, "configmap", "web-settings")["data"] == {"colour": "red"}
        kubectl("patch", "service", "web", "--type=json", "-p",
                '[{"op": "replace", "path": "/spec/ports/0/port", "value": 8000}]')
        assert get_json(kubectl, "service", "web")["spec"]["ports"][0]["port"] == 8000
        err = kubectl.fails("patch", "service", "web", "--type=json", "-p",
                            '[{"op": "test", "path": "/spec/type", "value": "NodePort"}]')
        assert "The request is invalid" in err and "test failed" in err, err
        out = kubectl("patch", "deployment", "web", "-p", json.dumps(env))
        assert out.strip() == "deployment.apps/web patched (no change)"

    def test_strategic_patch_on_custom_resource(self, kubectl: Kubectl) -> None:
        """Is a strategic merge patch on a custom resource refused with the media types to use,
        while a merge patch works?"""
        kubectl("apply", "-f", manifest("reviews-routing.yaml"))
        err = kubectl.fails("patch", "vs", "reviews", "-p", '{"spec": {"hosts": ["x"]}}')
        assert "application/merge-patch+json" in err, err
        kubectl("patch", "vs", "reviews", "--type=merge", "-p", '{"spec": {"hosts": ["x"]}}')
        assert get_json(kubectl, "vs", "reviews")["spec"]["hosts"] == ["x"]

    def test_server_side_apply_conflict(self, kubectl: Kubectl) -> None:
        """Does `apply --server-side` record its field manager, refuse to take over a field another
        manager changed, and take it with --force-conflicts?"""
        out = kubectl("apply", "--server-side", "-f", manifest("web.yaml"))
        assert "configmap/web-settings serverside-applied" in out
        managers = {(m["manager"], m["operation"]) for m in get_json(
            kubectl, "configmap", "web-settings", "--show-managed-fields")["metadata"][
            "managedFields"]}
        assert ("kubectl", "Apply") in managers
        kubectl("patch", "configmap", "web-settings", "--type=merge",
                "-p", '{"data": {"greeting": "changed"}}')
        err = kubectl.fails("apply", "--server-side", "-f", manifest("web.yaml"))
        assert 'Apply failed with 1 conflict: conflict with "kubectl-patch"' in err, err
        assert ".data.greeting" in err, err
        assert get_json(kubectl, "configmap", "web-settings")["data"]["greeting"] == "changed"
        kubectl("apply", "--server-side", "--force-conflicts", "-f", manifest("web.yaml"))
        assert get_json(kubectl, "configmap", "web-settings")["data"]["greeting"] == "hello"


# -- imperative commands (protobuf bodies) -------------------------------------------------------
class TestCreate:
    def test_create_kinds(self, kubectl: Kubectl, cluster: ClusterRef) -> None:
        """Does each `kubectl create` subcommand (sent as protobuf) create the object it names?"""
        ns = f"c-{uuid.uuid4().hex[:6]}"
        try:
            assert kubectl("create", "namespace", ns).strip() == f"namespace/{ns} created"
            assert get_json(kubectl, "namespace", ns)["status"]["phase"] == "Active"
        finally:
            cluster.kubectl("delete", "namespace", ns, "--wait=false")
        kubectl("create", "configmap", "cfg", "--from-literal=a=1", "--from-literal=b=two")
        assert get_json(kubectl, "configmap", "cfg")["data"] == {"a": "1", "b": "two"}
        kubectl("create", "secret", "generic", "pw", "--from-literal=password=s3cret")
        secret = get_json(kubectl, "secret", "pw")
        assert secret["type"] == "Opaque"
        assert secret["data"] == {"password": "czNjcmV0"}
        out = kubectl("create", "serviceaccount", "robot")
        assert out.strip() == "serviceaccount/robot created"
        assert get_json(kubectl, "serviceaccount", "robot")["metadata"]["name"] == "robot"
        kubectl("create", "deployment", "api", "--image=docker.io/example/api:1.0",
                "--replicas=2", "--port=8080")
        deployment = get_json(kubectl, "deployment", "api")
        assert deployment["spec"]["replicas"] == 2
        assert deployment["spec"]["selector"] == {"matchLabels": {"app": "api"}}
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        assert (container["image"], container["ports"]) == (
            "docker.io/example/api:1.0", [{"containerPort": 8080, "protocol": "TCP"}])
        kubectl("create", "service", "clusterip", "api", "--tcp=80:8080")
        service = get_json(kubectl, "service", "api")
        assert service["spec"]["type"] == "ClusterIP"
        assert re.fullmatch(r"\d+\.\d+\.\d+\.\d+", service["spec"]["clusterIP"])
        [port] = service["spec"]["ports"]
        assert (port["port"], port["targetPort"], port["protocol"]) == (80, 8080, "TCP")

    def test_expose_and_run(self, kubectl: Kubectl) -> None:
        """Does `kubectl expose` build a service from a deployment's selector and port, and
        `kubectl run` start a labelled pod?"""
        kubectl("create", "deployment", "echo", "--image=docker.io/example/web:1.0",
                "--port=8080")
        assert kubectl("expose", "deployment", "echo", "--port=80",
                       "--target-port=8080").strip() == "service/echo exposed"
        spec = get_json(kubectl, "service", "echo")["spec"]
        assert spec["selector"] == {"app": "echo"}
        assert [(p["port"], p["targetPort"]) for p in spec["ports"]] == [(80, 8080)]
        kubectl("wait", "--for=condition=Available", "deployment/echo", "--timeout=60s")
        endpoints = poll(lambda: get_json(kubectl, "endpoints", "echo").get("subsets"),
                         "endpoints of the exposed service")
        assert len(endpoints[0]["addresses"]) == 1
        assert kubectl("run", "one", "--image=docker.io/example/web:1.0").strip() == (
            "pod/one created")
        pod = get_json(kubectl, "pod", "one")
        assert pod["metadata"]["labels"] == {"run": "one"}
        assert pod["spec"]["containers"][0]["image"] == "docker.io/example/web:1.0"
        kubectl("wait", "--for=condition=Ready", "pod/one", "--timeout=60s")


# -- logs and exec -------------------------------------------------------------------------------
class TestPodIO:
    def test_logs(self, web: Kubectl) -> None:
        """Does `kubectl logs` print the container's output, `--tail` the last lines only, and
        `-f` keep streaming until stopped?"""
        pod = running_pod(web, "app=web")
        full = poll(lambda: web("logs", pod), f"log output from {pod}")
        assert full.endswith("\n")
        lines = full.splitlines()
        assert web("logs", pod, "--tail=1").splitlines() == lines[-1:]
        assert web("logs", pod, "-c", "web", "--tail=2").splitlines() == lines[-2:]
        err = web.fails("logs", pod, "-c", "nope")
        assert "container nope is not valid for pod" in err
        with subprocess.Popen(
                [kubectl_binary(), f"--kubeconfig={web.ref.kubeconfig}",
                 f"--context={web.ref.context}", "-n", web.namespace, "logs", "-f", pod],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as follower:
            assert follower.stdout is not None
            first = follower.stdout.readline()
            time.sleep(1)
            assert follower.poll() is None, "kubectl logs -f exited instead of following"
            follower.terminate()
            follower.wait(timeout=10)
        assert first == lines[0] + "\n"

    def test_exec(self, web: Kubectl) -> None:
        """Does `kubectl exec` pass stdout, stderr, the exit code and (with -i) stdin?"""
        pod = running_pod(web, "app=web")
        result = web.run("exec", pod, "--", "sh", "-c", "echo to-out; echo to-err >&2; exit 3")
        assert result.returncode == 3, result
        assert result.stdout == "to-out\n"
        assert "to-err" in result.stderr
        assert "command terminated with exit code 3" in result.stderr
        assert web("exec", "-i", pod, "--", "cat", input="line one\nline two\n") == (
            "line one\nline two\n")
        assert web("exec", pod, "-c", "web", "--", "echo", "hi there") == "hi there\n"
        err = web.fails("exec", pod, "--", "/no/such/binary")
        assert "no/such/binary" in err, err


# -- discovery -----------------------------------------------------------------------------------
def test_api_resources_short_names(kubectl: Kubectl) -> None:
    """Does `kubectl api-resources` list the Istio kinds with their short names?"""
    rows = {(r["NAME"], r["APIVERSION"]): r for r in table(kubectl("api-resources"))}
    for plural, short in [("virtualservices", "vs"), ("destinationrules", "dr"),
                          ("gateways", "gw")]:
        row = rows[(plural, "networking.istio.io/v1")]
        assert short in row["SHORTNAMES"].split(","), row
        assert row["NAMESPACED"] == "true"
    assert rows[("deployments", "apps/v1")]["SHORTNAMES"] == "deploy"


# -- deletion ------------------------------------------------------------------------------------
class TestDelete:
    def test_delete_from_file(self, kubectl: Kubectl) -> None:
        """Does `kubectl delete -f` remove every object of the file, including the deployment's
        pods?"""
        kubectl("apply", "-f", manifest("web.yaml"))
        out = kubectl("delete", "-f", manifest("web.yaml"), "--timeout=60s")
        assert out.splitlines() == ['configmap "web-settings" deleted from '
                                    f"{kubectl.namespace} namespace",
                                    f'deployment.apps "web" deleted from {kubectl.namespace} '
                                    "namespace",
                                    f'service "web" deleted from {kubectl.namespace} namespace']
        for kind in ("configmap/web-settings", "deployment/web", "service/web"):
            assert absent(kubectl, kind), kind
        poll(lambda: "No resources found" in kubectl.run("get", "pods,rs").stderr,
             "the deployment's replicasets and pods to go")

    def test_namespace_delete(self, cluster: ClusterRef) -> None:
        """Does deleting a namespace remove its contents first, then the namespace itself?"""
        ns = f"d-{uuid.uuid4().hex[:6]}"
        kubectl = Kubectl(cluster, ns)
        assert cluster.kubectl("create", "namespace", ns).returncode == 0
        kubectl("apply", "-f", manifest("web.yaml"))
        kubectl("apply", "-f", manifest("reviews-routing.yaml"))
        kubectl("wait", "--for=condition=Available", "deployment/web", "--timeout=60s")
        out = kubectl.run("delete", "namespace", ns, "--wait=false", namespaced=False)
        assert out.stdout.strip() == f'namespace "{ns}" deleted'

        def gone() -> bool:
            got = kubectl.run("get", "namespace", ns, "-o", "json", namespaced=False)
            if got.returncode != 0:
                assert "NotFound" in got.stderr, got.stderr
                return True
            assert json.loads(got.stdout)["status"]["phase"] == "Terminating"
            return False

        poll(gone, f"namespace {ns} to go after delete")
        for kind in ("configmaps", "deployments", "pods", "services", "virtualservices"):
            listing = get_json(kubectl, kind)
            assert listing["items"] == [], kind
        err = kubectl.fails("create", "configmap", "late")
        assert f'namespaces "{ns}" not found' in err


# -- validation errors ---------------------------------------------------------------------------
class TestValidation:
    def test_unknown_field_is_rejected(self, kubectl: Kubectl) -> None:
        """Does a typo'd field in a VirtualService give kubectl's strict decoding error, with
        nothing created?"""
        err = kubectl.fails("apply", "-f", manifest("vs-unknown-field.yaml"))
        assert "Error from server (BadRequest)" in err, err
        assert ('strict decoding error: unknown field '
                '"spec.http[0].route[0].destination.sbuset"') in err, err
        assert "No resources found" in kubectl.run("get", "vs").stderr

    def test_wrong_type_is_invalid(self, kubectl: Kubectl) -> None:
        """Does a wrong value type give `is invalid` with the field path?"""
        err = kubectl.fails("apply", "-f", manifest("vs-wrong-type.yaml"))
        assert 'The VirtualService "reviews" is invalid' in err, err
        assert "spec.http[0].route[0].weight" in err, err
        assert "integer" in err, err
        assert absent(kubectl, "vs", "reviews")

    def test_validate_warn(self, kubectl: Kubectl) -> None:
        """Does `--validate=warn` print a warning for the unknown field and create the object
        without it?"""
        result = kubectl.run("apply", "--validate=warn", "-f", manifest("vs-unknown-field.yaml"))
        assert result.returncode == 0, result.stderr
        assert "virtualservice.networking.istio.io/reviews created" in result.stdout
        assert re.search(r'Warning: unknown field "spec\.http\[0\]\.route\[0\]\.destination\.'
                         r'sbuset"', result.stderr), result.stderr
        vs = get_json(kubectl, "vs", "reviews")
        assert vs["spec"]["http"][0]["route"][0]["destination"] == {"host": "reviews"}
        assert {"uid", "creationTimestamp", "generation"} <= vs["metadata"].keys(), vs

    def test_malformed_yaml(self, kubectl: Kubectl) -> None:
        """Is malformed YAML reported by kubectl itself, with the line, before any request?"""
        err = kubectl.fails("apply", "-f", manifest("malformed.yaml"))
        assert "error converting YAML to JSON" in err or "error parsing" in err, err
        assert "line" in err, err
        assert "Error from server" not in err
        assert absent(kubectl, "configmap", "broken")

    def test_server_dry_run_creates_nothing(self, kubectl: Kubectl) -> None:
        """Does `--dry-run=server` validate and print the result but store nothing?"""
        out = kubectl("apply", "--dry-run=server", "-f", manifest("web.yaml"))
        assert out.splitlines() == ["configmap/web-settings created (server dry run)",
                                    "deployment.apps/web created (server dry run)",
                                    "service/web created (server dry run)"]
        for kind in ("configmap/web-settings", "deployment/web", "service/web"):
            assert absent(kubectl, kind), kind
        err = kubectl.fails("apply", "--dry-run=server", "-f",
                            manifest("vs-unknown-field.yaml"))
        assert "strict decoding error" in err


def test_secret_string_data_is_merged_into_data(kubectl: Kubectl) -> None:
    """`stringData` is write-only: stored base64 in `data` (overriding), never returned."""
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"},
              "data": {"user": base64.b64encode(b"old").decode(),
                       "keep": base64.b64encode(b"kept").decode()},
              "stringData": {"user": "jason", "token": "s3cret"}}
    kubectl("apply", "-f", "-", input=json.dumps(secret))
    stored = get_json(kubectl, "secret", "creds")
    assert "stringData" not in stored
    assert {k: base64.b64decode(v).decode() for k, v in stored["data"].items()} == {
        "user": "jason", "token": "s3cret", "keep": "kept"}


def test_apply_of_a_list_applies_its_items_and_the_server_checks_each(kubectl: Kubectl) -> None:
    """`kubectl apply -f` of a `kind: List` (what `kubectl get -o yaml` prints for several
    objects): kubectl validates a List itself against /openapi/v2, then applies each item; an
    item with an unknown field is refused by the server's strict validation, by name."""
    items = [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"listed-{n}"},
              "data": {"n": str(n)}} for n in (1, 2)]
    listed = {"apiVersion": "v1", "kind": "List", "items": items}
    assert kubectl("apply", "-f", "-", input=json.dumps(listed)).splitlines() == [
        "configmap/listed-1 created", "configmap/listed-2 created"]
    assert get_json(kubectl, "configmap", "listed-2")["data"] == {"n": "2"}
    items[1]["bogus"] = True
    err = kubectl.fails("apply", "-f", "-", input=json.dumps(listed))
    assert 'strict decoding error: unknown field "bogus"' in err
    assert 'Name: "listed-2"' in err


def test_rbac_objects_are_served_like_kube_apiserver(kubectl: Kubectl) -> None:
    """Istio's samples and charts carry RBAC objects: `kubectl apply` of a ClusterRole and its
    binding, `kubectl create role|rolebinding` (protobuf bodies), and the tables real kubectl
    shows (ROLE as Kind/name; USERS, SERVICEACCOUNTS with -o wide). The server authorizes
    every authenticated request anyway (`kubectl auth can-i` says so)."""
    name = f"reader-{uuid.uuid4().hex[:6]}"
    cluster_role = {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": name},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
                  {"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]}
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": "prometheus",
                      "namespace": "istio-system"}]}
    try:
        out = kubectl("apply", "-f", "-", input=yaml.safe_dump_all([cluster_role, binding]))
        assert f"clusterrole.rbac.authorization.k8s.io/{name} created" in out
        assert f"clusterrolebinding.rbac.authorization.k8s.io/{name} created" in out
        rows = table(kubectl("get", "clusterrolebinding", name, "-o", "wide"))
        assert rows == [{"NAME": name, "ROLE": f"ClusterRole/{name}", "AGE": rows[0]["AGE"],
                         "USERS": "", "GROUPS": "", "SERVICEACCOUNTS": "istio-system/prometheus"}]
        kubectl("create", "role", "pod-reader", "--verb=get", "--resource=pods")
        kubectl("create", "rolebinding", "jane-reads", "--role=pod-reader", "--user=jane")
        rows = table(kubectl("get", "rolebinding", "jane-reads", "-o", "wide"))
        assert (rows[0]["ROLE"], rows[0]["USERS"]) == ("Role/pod-reader", "jane")
        assert table(kubectl("get", "roles"))[0].keys() == {"NAME", "CREATED AT"}
        assert kubectl("auth", "can-i", "create", "rolebindings").strip() == "yes"
    finally:
        kubectl.run("delete", "clusterrole,clusterrolebinding", name, namespaced=False)
