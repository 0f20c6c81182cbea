"""Field ownership (`metadata.managedFields`): which manager set which field, in the real FieldsV1
format, and how create/update/patch move that ownership (`track_update`).

A field is a path of FieldsV1 elements (`f:name`, `k:{"name":"app"}` for a keyed-list item,
`v:"x"` for a set item); an entry's `fieldsV1` is the tree of its paths. Server-side apply
(`server_side_apply.py`) builds on these sets to find conflicts; its simplifications of
structured-merge-diff are listed there. Entries that cannot be decoded are dropped rather than
rejected, as the real server resets them too.
"""

from __future__ import annotations

import json
from typing import Any

from . import patch_merge_keys as schema
from .errors import bad_request
from .objects import json_copy, json_dump, json_equal, now
from .patch_merge_keys import FieldMeta
from .strategic_merge import supports_strategic_merge

# ------------------------------------------------------------------- managed fields (FieldsV1)

Path = tuple[str, ...]
# Fields no manager owns (structured-merge-diff strips them from every field set).
_STRIPPED: frozenset[Path] = frozenset(
    {("f:apiVersion",), ("f:kind",)} | {("f:metadata", f"f:{name}") for name in (
        "name", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp",
        "selfLink", "managedFields")})
_MISSING = object()


def key_element(item: Any, field: FieldMeta, where: str, *, strict: bool = True) -> str | None:
    """The `k:{...}` path element of a keyed-list item (None when lenient and it has no key)."""
    key = {}
    for name, default in field.apply_keys:
        value = item.get(name, default) if isinstance(item, dict) else None
        if value is None:
            if not strict:
                return None
            raise bad_request(f"{where}: associative list with keys has an element that omits "
                              f"key field {name!r}: {json_dump(item)}")
        key[name] = value
    return "k:" + json_dump(key)


def _fields(value: Any, field: FieldMeta, path: Path, out: set[Path], *, config: bool,
            where: str = "") -> None:
    """Collect the field paths of `value`.

    For an apply configuration (`config`), maps are owned through their entries only and a
    keyed list must have unique, complete keys. For a stored object (the sets of Update
    operations), maps are members themselves (`.: {}`) and items without a usable key, which
    a real server may hold (duplicate env names), are left unowned instead of failing.
    """
    t = field.type
    if isinstance(value, dict) and not t.atomic and t.kind != "scalar":
        if path and (not value or (not config and t.kind == "map")):
            out.add(path)
        for key, child in value.items():
            if child is not None:
                _fields(child, schema.child(t, key), (*path, f"f:{key}"), out, config=config,
                        where=f"{where}.{key}" if where else key)
        return
    if isinstance(value, list) and value and field.list_mode == "keyed":
        item_meta = FieldMeta(t.item or schema.ANY)
        seen = set()
        for item in value:
            element = key_element(item, field, where, strict=config)
            if element is None or element in seen:
                if config:
                    raise bad_request(f"{where}: duplicate entries for key {str(element)[2:]}")
                continue
            seen.add(element)
            out.add((*path, element))
            _fields(item, item_meta, (*path, element), out, config=config,
                    where=f"{where}[{_describe_key(element)}]")
        return
    if isinstance(value, list) and value and field.list_mode == "set":
        out.update((*path, "v:" + json_dump(item)) for item in value)
        return
    if path:
        out.add(path)


def object_fields(obj: dict, root: FieldMeta, *, config: bool) -> set[Path]:
    out: set[Path] = set()
    _fields(obj, root, (), out, config=config)
    return {p for p in out if p[:2] not in _STRIPPED and p[:1] not in _STRIPPED}


def _locate(obj: Any, root: FieldMeta, path: Path) -> tuple[Any, Any, FieldMeta] | None:
    """(container, key or index, metadata) of the value at `path`, or None when absent."""
    node, field, parent, slot = obj, root, None, None
    for element in path:
        kind, text = element[:2], element[2:]
        if kind == "f:" and isinstance(node, dict) and text in node:
            parent, slot, field = node, text, schema.child(field.type, text)
        elif kind in ("k:", "v:") and isinstance(node, list):
            index = _list_index(node, element, field)
            if index is None:
                return None
            parent, slot = node, index
            field = FieldMeta(field.type.item or schema.ANY) if kind == "k:" else field
        else:
            return None
        node = parent[slot]
    return (parent, slot, field) if parent is not None else None


def _list_index(items: list, element: str, field: FieldMeta) -> int | None:
    wanted = json.loads(element[2:])
    for index, item in enumerate(items):
        if element.startswith("v:"):
            if json_equal(item, wanted):
                return index
        elif isinstance(item, dict) and all(
                json_equal(item.get(name, default), wanted.get(name))
                for name, default in field.apply_keys):
            return index
    return None


def value_at(obj: Any, root: FieldMeta, path: Path) -> Any:
    found = _locate(obj, root, path)
    return _MISSING if found is None else found[0][found[1]]


def remove_path(obj: dict, root: FieldMeta, path: Path) -> None:
    """Delete the value at `path`, then what it leaves empty below the top-level fields (so a
    dropped `rollingUpdate.maxSurge` does not leave a `rollingUpdate: {}` behind)."""
    while path:
        found = _locate(obj, root, path)
        if found is None:
            return
        container, slot, _ = found
        del container[slot]
        path = path[:-1]
        if container or len(path) < 2:
            return


def _encode(paths: set[Path]) -> dict:
    """A set of paths as FieldsV1: leaves are `{}`, an owned node with children has `.: {}`."""
    tree: dict = {}
    for path in paths:
        node = tree
        for element in path:
            node = node.setdefault(element, {})
    for path in paths:
        node = tree
        for element in path:
            node = node[element]
        if node:
            node["."] = {}
    return _sorted_tree(tree)


def _sorted_tree(node: dict) -> dict:
    return {k: _sorted_tree(node[k]) for k in sorted(node, key=lambda k: (k != ".", k))}


def _decode(fields: Any, prefix: Path = ()) -> set[Path]:
    if not isinstance(fields, dict):
        raise ValueError(f"FieldsV1 node at {prefix} is not an object")
    out: set[Path] = set()
    for key, child in fields.items():
        if key == ".":
            out.add(prefix)
            continue
        if not _is_path_element(key):
            raise ValueError(f"FieldsV1 key {key!r} at {prefix} is not a field path element")
        if not child:
            out.add((*prefix, key))
        else:
            out |= _decode(child, (*prefix, key))
    return out


def _is_path_element(key: str) -> bool:
    kind, text = key[:2], key[2:]
    if kind in ("f:", "i:"):
        return True
    if kind not in ("k:", "v:"):
        return False
    try:
        value = json.loads(text)
    except ValueError:
        return False
    return kind == "v:" or isinstance(value, dict)


def _describe_key(element: str) -> str:
    if element.startswith("v:"):
        return "=" + element[2:]
    return ",".join(f"{k}={json_dump(v)}" for k, v in json.loads(element[2:]).items())


def describe(path: Path) -> str:
    """A path as the real server prints it: `.spec.containers[name="app"].image`."""
    return "".join(f".{e[2:]}" if e.startswith("f:") else f"[{_describe_key(e)}]"
                   for e in path)


def leaves(paths: set[Path]) -> set[Path]:
    inner = {p[:i] for p in paths for i in range(1, len(p))}
    return paths - inner


def prefixes(paths: set[Path]) -> set[Path]:
    return {p[:i] for p in paths for i in range(1, len(p) + 1)}


class Manager:
    """One `managedFields` entry with its field set decoded."""

    def __init__(self, entry: dict, fields: set[Path]) -> None:
        self.entry, self.fields = entry, fields

    @property
    def name(self) -> str:
        return str(self.entry.get("manager", ""))

    def is_apply_by(self, manager: str) -> bool:
        return (self.entry.get("operation") == "Apply" and self.name == manager
                and not self.entry.get("subresource"))

    def describe(self) -> str:
        text = json.dumps(self.name)
        if self.entry.get("subresource"):
            text += f" with subresource {json.dumps(self.entry['subresource'])}"
        if self.entry.get("operation") == "Update":
            text += f" using {self.entry.get('apiVersion', '')}"
        return text

    def to_entry(self) -> dict:
        return {**self.entry, "fieldsType": "FieldsV1", "fieldsV1": _encode(self.fields)}


def managers_of(obj: dict) -> list[Manager]:
    return decode_entries((obj.get("metadata") or {}).get("managedFields"))


def decode_entries(entries: Any) -> list[Manager]:
    out = []
    for entry in entries if isinstance(entries, list) else []:
        try:
            out.append(Manager({k: v for k, v in entry.items() if k not in (
                "fieldsType", "fieldsV1")}, _decode(entry.get("fieldsV1") or {})))
        except (AttributeError, ValueError):
            continue  # undecodable ownership is reset, as the real server does
    return out


def new_entry(manager: str, operation: str, api_version: str, subresource: str = "") -> dict:
    entry = {"manager": manager, "operation": operation, "apiVersion": api_version,
             "time": now()}
    if subresource:
        entry["subresource"] = subresource
    return entry


def with_managers(obj: dict, managers: list[Manager]) -> dict:
    entries = [m.to_entry() for m in managers if m.fields]
    metadata = obj.setdefault("metadata", {})
    if entries:
        metadata["managedFields"] = entries
    else:
        metadata.pop("managedFields", None)
    return obj


def root_field(api_version: str, kind: str) -> FieldMeta:
    return FieldMeta(schema.root_type(api_version, kind))


def without_status(paths: set[Path], api_version: str, kind: str) -> set[Path]:
    if not supports_strategic_merge(api_version, kind):
        return paths
    return {p for p in paths if p[0] != "f:status"}


# ------------------------------------------------------------------ ownership for other writes


def track_update(old: dict | None, new: dict, manager: str, api_version: str, kind: str,
                 subresource: str = "") -> dict:
    """Record a create/update/patch by `manager` (operation "Update") in `new`'s managedFields.

    The manager takes the fields it added or changed (from any other owner, no conflicts: that
    is what an update means); fields that no longer exist leave every owner. `managedFields`
    sent in `new` are honoured as the real server does: absent or `[]` keeps the stored ones,
    `[{}]` strips them, any other list replaces them (kubectl uses that to hand client-side
    apply ownership over to server-side apply).
    """
    root = root_field(api_version, kind)
    result = json_copy(new)
    sent = result.get("metadata", {}).pop("managedFields", None)
    if sent == [{}]:
        return result
    stored = ((old or {}).get("metadata") or {}).get("managedFields")
    before = object_fields(old, root, config=False) if old is not None else set()
    after = object_fields(result, root, config=False)
    if subresource:
        before, after = ({p for p in s if p[0] == f"f:{subresource}"} for s in (before, after))
    else:
        before, after = (without_status(s, api_version, kind) for s in (before, after))
    changed = (after - before) | {p for p in leaves(after) & before if not json_equal(
        value_at(old, root, p), value_at(result, root, p))}
    gone = before - after
    managers = decode_entries(sent if sent and sent != stored else stored)
    for m in managers:
        m.fields -= changed | gone
    if changed:
        mine = next((m for m in managers if m.name == manager and m.entry.get("operation") ==
                     "Update" and m.entry.get("apiVersion") == api_version and
                     m.entry.get("subresource", "") == subresource), None)
        if mine is None:
            managers.append(Manager(new_entry(manager, "Update", api_version, subresource),
                                    changed))
        else:
            mine.entry = new_entry(manager, "Update", api_version, subresource)
            mine.fields |= changed
    return with_managers(result, managers)
