"""Is the table of the built-in kinds' fields (labs/embedded/apiserver/kubernetes_models.json,
read by the API server instead of importing `kubernetes`) what the installed client's models
give? If not: `python -m labs.embedded.apiserver.client_models` regenerates it."""

from __future__ import annotations

from labs.embedded.apiserver import client_models


def test_table_matches_the_installed_client() -> None:
    """Does the checked-in table equal one generated from the installed `kubernetes` models?"""
    expected = client_models.render(client_models.generate(client_models.roots()))
    assert client_models.TABLE.read_text() == expected, (
        "the kubernetes client changed: run `python -m labs.embedded.apiserver.client_models`")


def test_fields_say_what_the_schemas_need() -> None:
    """Are a required field, an IntOrString and a container type read as the models say?"""
    container = {f.json_name: f for f in client_models.fields("V1Container")}
    assert container["name"].required and not container["image"].required
    assert container["ports"].type_name == "List[V1ContainerPort]"
    port = {f.json_name: f for f in client_models.fields("V1ServicePort")}
    assert port["targetPort"].int_or_string and port["targetPort"].type_name == "object"
    assert client_models.is_model("V1PodSpec") and not client_models.is_model("str")
