"""The fields of the built-in kinds' types, taken from the official client's generated models.

The API server needs, for every model reachable from a built-in kind, its fields in order: the
Python attribute (the key of the transcribed tables), the JSON name, the type as the generator
writes it (`List[V1Container]`, `Dict[str, str]`, `str`, `object` …), whether the field is
required, and whether it takes an int or a string (IntOrString). Reading that from the models at
run time cost the daemon ~26 MB (`import kubernetes` pulls in requests, oauthlib, urllib3 …, and
each model is a pydantic class) and ~0.4 s; so the table is generated once from the installed
client into `kubernetes_models.json` beside this module, and tests/test_client_models.py checks
that it still matches. Regenerate after upgrading `kubernetes`:

    python -m labs.embedded.apiserver.client_models
"""

from __future__ import annotations

import json
import re
import typing
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

TABLE = Path(__file__).with_name("kubernetes_models.json")
_CONTAINER = re.compile(r"^(?:List|Dict)\[(?:str, )?(.*)\]$")


class Field(NamedTuple):
    attr: str
    json_name: str
    type_name: str
    required: bool
    int_or_string: bool


@cache
def _table() -> dict[str, tuple[Field, ...]]:
    raw: dict[str, list[list[Any]]] = json.loads(TABLE.read_text())
    return {model: tuple(Field(*f) for f in fields) for model, fields in raw.items()}


def fields(model: str) -> tuple[Field, ...]:
    """The fields of a model reachable from a built-in kind (KeyError for any other name)."""
    return _table()[model]


def is_model(type_name: str) -> bool:
    """Whether `type_name` is a generated model (a struct), not a scalar or free-form type."""
    return type_name in _table()


def generate(roots: Iterable[str]) -> dict[str, list[list[Any]]]:
    """The table for `roots` and every model their fields reach, read from the installed
    `kubernetes` client (imported here only)."""
    from kubernetes.client import models

    table: dict[str, list[list[Any]]] = {}
    pending = sorted(set(roots))
    while pending:
        name = pending.pop()
        if name in table:
            continue
        cls = getattr(models, name)
        table[name] = [list(_field(cls, attr, type_name))
                       for attr, type_name in cls.openapi_types.items()]
        for _, _, type_name, _, _ in table[name]:
            while match := _CONTAINER.match(type_name):
                type_name = match[1]
            if hasattr(models, type_name):
                pending.append(type_name)
    return dict(sorted(table.items()))


def _field(cls: Any, attr: str, type_name: str) -> Field:
    json_name = cls.attribute_map[attr]
    pydantic_fields = cls.model_fields
    info = pydantic_fields.get(attr) or next(
        (f for f in pydantic_fields.values() if f.alias == json_name), None)
    if info is None:
        return Field(attr, json_name, type_name, False, False)
    leaves = {typing.get_args(arg)[0] if typing.get_args(arg) else arg
              for arg in typing.get_args(info.annotation)}
    return Field(attr, json_name, type_name, bool(info.is_required()), {int, str} <= leaves)


def roots() -> set[str]:
    """The models of the built-in kinds the API server serves (schemas and patches)."""
    from .builtin_schemas import KINDS
    from .patch_merge_keys import KIND_MODELS

    return {*KINDS.values(), *(m for kinds in KIND_MODELS.values() for m in kinds.values()),
            "V1ObjectMeta"}


def render(table: dict[str, list[list[Any]]]) -> str:
    """The file's text: one model per line, so a client upgrade shows as a readable diff."""
    lines = [f"{json.dumps(model)}: {json.dumps(fields)}" for model, fields in table.items()]
    return "{\n" + ",\n".join(lines) + "\n}\n"


if __name__ == "__main__":
    TABLE.write_text(render(generate(roots())))
