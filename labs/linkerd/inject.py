"""`linkerd inject` and `linkerd uninject` on manifests: read a file, a folder, stdin (`-`) or
an HTTPS URL, transform each YAML document (a `List`'s items one by one), write the YAML to
stdout and the report to stderr, as linkerd/linkerd2 `cli/cmd/inject.go`, `uninject.go` and
`inject_util.go` do (golden reports `cli/cmd/testdata/inject_*.report`).

By default the pod template only gets `linkerd.io/inject: enabled`, for the proxy injector to
act on at admission; `--manual` writes the proxy itself (the cluster's trust anchors and
version, read from linkerd-config and the trust-roots ConfigMap). Inject first uninjects, so
re-injecting an injected workload is stable.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

import yaml

from labs.embedded.mesh.linkerd.injection import (
    DISABLED,
    ENABLED,
    INJECT,
    ProxyValues,
    has_existing_sidecar,
    inject_template,
    owner_labels_of,
    pod_templates,
    uninject_template,
)
from labs.linkerd.checks import WARN

Obj = dict[str, Any]
URL_TIMEOUT_S = 30.0


class InjectError(Exception):
    """Input that cannot be read or transformed; the message is upstream's wording."""


@dataclass
class Report:
    """inject.Report, for one resource."""

    kind: str
    name: str
    injectable: bool = False
    annotated: bool = False
    uninjected: bool = False
    host_network: bool = False
    sidecar: bool = False
    disabled: bool = False
    udp: bool = False
    annotatable: bool = False  # has a pod template, or is a Service or Namespace

    @property
    def res_name(self) -> str:
        return f"{self.kind}/{self.name}"


@dataclass
class Transformed:
    documents: list[Obj] = field(default_factory=list)
    reports: list[Report] = field(default_factory=list)


def read_sources(source: str, stdin: TextIO) -> list[str]:
    """The texts to transform: stdin for `-`, an HTTPS URL's body, a file, or every YAML/JSON
    file under a folder (upstream's `read` and `walk`)."""
    if source == "-":
        return [stdin.read()]
    parts = urlsplit(source)
    if parts.scheme and parts.netloc:
        if parts.scheme.lower() != "https":
            raise InjectError("only HTTPS URLs are allowed")
        try:
            with urllib.request.urlopen(source, timeout=URL_TIMEOUT_S) as answer:
                return [answer.read().decode()]
        except urllib.error.HTTPError as err:
            raise InjectError(f'unable to read URL "{source}", server reported {err.code} '
                              f"{err.reason}, status code={err.code}") from None
        except (urllib.error.URLError, OSError) as err:
            raise InjectError(f'Get "{source}": {getattr(err, "reason", err)}') from None
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml", ".json"))
        return [p.read_text() for p in files]
    try:
        return [path.read_text()]
    except OSError as exc:
        raise InjectError(f"open {source}: {exc.strerror.lower() if exc.strerror else exc}"
                          ) from None


def parse_documents(text: str) -> list[Obj]:
    """Each YAML document as an object; bad YAML raises InjectError saying where."""
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise InjectError(f"error converting YAML to JSON: yaml: {where}{problem}") from None
    for doc in docs:
        if not isinstance(doc, dict):
            raise InjectError("error unmarshaling JSON: json: cannot unmarshal "
                              f"{type(doc).__name__} into Go value of type v1.TypeMeta")
    return docs


def _report_for(obj: Obj) -> Report:
    meta = obj.get("metadata") or {}
    return Report(str(obj.get("kind") or "").lower(),
                  str(meta.get("name") or meta.get("generateName") or ""))


def uninject(obj: Obj) -> Report:
    """Remove the proxy and Linkerd's metadata from a workload, in place."""
    report = _report_for(obj)
    templates = pod_templates(obj)
    workload_meta = None if obj.get("kind") == "Pod" else obj.get("metadata")
    if obj.get("kind") in ("Namespace", "Service"):
        report.uninjected = uninject_template({"metadata": obj.get("metadata")})
    for template in templates:
        report.uninjected |= uninject_template(template, workload_meta)
    return report


def inject(obj: Obj, values: ProxyValues | None) -> Report:
    """Annotate a workload for injection (values None) or write the proxy (`--manual`), in
    place; the report says what happened, as inject.Report does."""
    uninject(obj)
    report = _report_for(obj)
    templates = pod_templates(obj)
    report.annotatable = bool(templates) or obj.get("kind") in ("Namespace", "Service")
    if obj.get("kind") == "Namespace":
        obj.setdefault("metadata", {}).setdefault("annotations", {})[INJECT] = ENABLED
        report.annotated = True
        return report
    if not templates:
        return report
    template = templates[0]
    if not isinstance(template.get("metadata"), dict):
        template["metadata"] = {}
    meta = template["metadata"]
    spec = template.get("spec") or {}
    annotations = meta.get("annotations") or {}
    report.host_network = bool(spec.get("hostNetwork"))
    report.sidecar = has_existing_sidecar(spec)
    report.disabled = annotations.get(INJECT) == DISABLED
    report.udp = any(p.get("protocol") == "UDP" for c in spec.get("containers") or []
                     for p in c.get("ports") or [])
    report.injectable = not (report.host_network or report.sidecar or report.disabled)
    if report.host_network or report.sidecar:
        reasons = [r for r, on in (("hostNetwork is enabled", report.host_network),
                                   ("pod has a sidecar injected already", report.sidecar)) if on]
        raise InjectError(f"failed to inject {report.res_name}: {', '.join(reasons)}")
    if not report.injectable:
        return report
    if values is None:
        meta.setdefault("annotations", {})[INJECT] = ENABLED
    else:
        inject_template(template, values, owner_labels_of(obj))
    return report


def transform(docs: list[Obj], change: Callable[[Obj], Report]) -> Transformed:
    """Apply `change` (inject or uninject with its arguments bound) to each document, a
    List's items one by one."""
    done = Transformed()
    for doc in docs:
        items = doc.get("items") if doc.get("kind") == "List" else [doc]
        for item in items or []:
            if isinstance(item, dict):
                done.reports.append(change(item))
        done.documents.append(doc)
    return done


class _Dumper(yaml.SafeDumper):
    """Block style for multi-line strings (the trust anchors), as Go's yaml writes them."""


_Dumper.add_representer(str, lambda dumper, data: dumper.represent_scalar(
    "tag:yaml.org,2002:str", data, style="|" if "\n" in data else None))


def render(documents: list[Obj], output: str) -> str:
    """Each document followed by `---` (YAML, keys sorted as upstream's JSON round trip
    leaves them) or one JSON object per line."""
    if output == "json":
        return "".join(json.dumps(d, separators=(",", ":"), sort_keys=True) + "\n"
                       for d in documents)
    return "".join(yaml.dump(d, Dumper=_Dumper, sort_keys=True, default_flow_style=False,
                             allow_unicode=True) + "---\n" for d in documents)


def inject_report(reports: list[Report]) -> str:
    """generateReport of resourceTransformerInject, not verbose (warnings, then one line per
    resource)."""
    lines = ["\n"]
    warned = False
    for flag, text in ((lambda r: r.host_network, '"hostNetwork: true" detected in {}'),
                       (lambda r: r.sidecar, "known 3rd party sidecar detected in {}"),
                       (lambda r: r.disabled, f'"{INJECT}: {DISABLED}" annotation set on {{}}')):
        found = [r.res_name for r in reports if flag(r)]
        if found:
            lines.append(f"{WARN} {text.format(', '.join(found))}\n")
            warned = True
    if not any(r.injectable or r.annotatable for r in reports):
        lines.append(f"{WARN} no supported objects found\n")
        warned = True
    udp = [r.res_name for r in reports if r.udp]
    if udp:
        lines.append(f'{WARN} {", ".join(udp)} {"uses" if len(udp) == 1 else "use"} '
                     '"protocol: UDP"\n')
        warned = True
    if warned:
        lines.append("\n")
    for r in reports:
        if r.injectable:
            lines.append(f'{r.kind} "{r.name}" injected\n')
        elif r.annotated:
            lines.append(f'{r.kind} "{r.name}" annotated\n')
        elif r.kind:
            lines.append(f'{r.kind} "{r.name}" skipped\n')
        else:
            lines.append('document missing "kind" field, skipped\n')
    lines.append("\n")
    return "".join(lines)


def uninject_report(reports: list[Report]) -> str:
    """generateReport of resourceTransformerUninject."""
    lines = ["\n"]
    for r in reports:
        if r.uninjected:
            lines.append(f'{r.kind} "{r.name}" uninjected\n')
        elif r.kind:
            lines.append(f'{r.kind} "{r.name}" skipped\n')
        else:
            lines.append('document missing "kind" field, skipped\n')
    lines.append("\n")
    return "".join(lines)
