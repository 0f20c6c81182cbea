"""Why a request was allowed or denied — told by the destination's proxy, not guessed.

    >>> from labs import authz
    >>> authz.explain("http://httpbin:8000/get", from_workload="curl", namespace="foo")
    GET http://httpbin:8000/get from deploy/curl (namespace foo): 403 at pod httpbin-...
    DENIED by AuthorizationPolicy foo/deny-get (DENY), rule 0 ...

One request is sent with `labs.traffic.probe` from the source workload, carrying a fresh
`x-request-id`. The answer is then read from the destination sidecar's own records: its access
log line for that request id (`%RESPONSE_CODE_DETAILS%`, e.g.
`rbac_access_denied_matched_policy[ns[foo]-policy[deny-get]-rule[0]]`, and on the embedded
cluster the RBAC filters' dynamic metadata, e.g. `enforced_effective_policy_id`), the change in
its RBAC / jwt_authn / ext_authz counters (`/stats`) and the policy names in its configuration
(`/config_dump`). Envoy's policy names map back to Istio's objects the way istiod writes them:
`ns[<namespace>]-policy[<name>]-rule[<index>]`, with `istio-ext-authz-` in front for CUSTOM.
Nothing here evaluates a policy, so the explanation cannot disagree with Envoy.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from html import escape
from typing import Any
from urllib.parse import urlsplit

from labs import proxy, traffic
from labs.cluster import ClusterRef, SidecarError, current_cluster
from labs.course import LabError
from labs.istio_names import (
    BAD_CUSTOM_POLICY,
    EXT_AUTHZ_RULE_PREFIX,
    SIDECAR_CONTAINER,
    parse_policy_rule_name,
)

Obj = dict[str, Any]
LOG_WAIT_S = 5.0  # sidecars flush access logs every 0.2 s (embedded); kubectl logs lags more
RBAC_TYPE = "envoy.extensions.filters.http.rbac.v3.RBAC"
EXT_AUTHZ_TYPE = "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"
JWT_FILTER = "envoy.filters.http.jwt_authn"
DENIED_BY_RBAC = re.compile(r"^rbac_access_denied_matched_policy\[(?P<policy>.*)\]$")
WATCHED_STATS = (".rbac.", ".jwt_authn.", ".ext_authz.")


class AuthzError(LabError):
    """The request could not be explained; the message says what is missing and what to do."""


@dataclass(frozen=True)
class PolicyRef:
    """An AuthorizationPolicy rule as the proxy names it."""

    namespace: str
    name: str
    rule: int
    action: str  # ALLOW, DENY or CUSTOM: which filter of the proxy holds the rule

    @classmethod
    def parse(cls, envoy_name: str, action: str) -> PolicyRef | None:
        found = parse_policy_rule_name(envoy_name)
        if found is None:
            return None
        return cls(found.namespace, found.name, found.rule,
                   "CUSTOM" if found.custom else action)

    def __str__(self) -> str:
        return (f"AuthorizationPolicy {self.namespace}/{self.name} ({self.action}), "
                f"rule {self.rule}")


@dataclass
class ProxyPolicies:
    """The authorization filters of the destination's inbound listeners (from /config_dump)."""

    by_name: dict[str, str] = field(default_factory=dict)  # Envoy policy name -> action
    allow_filter: bool = False  # an ALLOW filter exists (with or without rules)
    ext_authz: bool = False
    jwt: bool = False
    needs_jwt: list[str] = field(default_factory=list)  # ALLOW rules reading the JWT payload

    @classmethod
    def of(cls, dump: Obj) -> ProxyPolicies:
        found = cls()
        for hcm in _inbound_hcms(dump):
            for http_filter in hcm.get("http_filters", []):
                config = http_filter.get("typed_config", {})
                kind = str(config.get("@type", ""))
                if kind.endswith(RBAC_TYPE):
                    found._add_rbac(config)
                elif kind.endswith(EXT_AUTHZ_TYPE):
                    found.ext_authz = True
                elif http_filter.get("name") == JWT_FILTER:
                    found.jwt = True
        return found

    def _add_rbac(self, config: Obj) -> None:
        for key in ("rules", "shadow_rules"):
            rules = config.get(key)
            if not rules:
                continue
            action = str(rules.get("action", "ALLOW"))
            if action == "ALLOW" and key == "rules":
                self.allow_filter = True
            for name, policy in (rules.get("policies") or {}).items():
                self.by_name[name] = "CUSTOM" if name.startswith(EXT_AUTHZ_RULE_PREFIX) else action
                # Each inbound filter chain (mTLS, plaintext) repeats the same policies.
                if (action == "ALLOW" and JWT_FILTER in json.dumps(policy)
                        and name not in self.needs_jwt):
                    self.needs_jwt.append(name)

    def refs(self, action: str) -> list[PolicyRef]:
        return [ref for name, act in sorted(self.by_name.items()) if act == action
                if (ref := PolicyRef.parse(name, act)) is not None]


@dataclass
class Decision:
    """What the destination's proxy did with one request, and why."""

    method: str
    url: str
    source: str  # deploy/<name> (namespace)
    destination: str  # pod name (namespace)
    status: int
    details: str  # Envoy's %RESPONSE_CODE_DETAILS%
    allowed: bool
    verdict: str  # one line: who decided
    reasons: list[str]
    policy: PolicyRef | None
    rbac: Obj  # the RBAC filters' dynamic metadata (embedded cluster), else {}
    stats: dict[str, int]  # counters that changed for this request
    body: str = ""

    def _evidence(self) -> list[tuple[str, str]]:
        rows = [("response code details", self.details or "-")]
        if self.rbac:
            rows.append(("rbac metadata", ", ".join(f"{k}={v}" for k, v in
                                                    sorted(self.rbac.items()))))
        rows += [(name, f"{delta:+d}") for name, delta in sorted(self.stats.items())]
        return rows

    def __str__(self) -> str:
        lines = [f"{self.method} {self.url} from {self.source}: {self.status} at pod "
                 f"{self.destination}", self.verdict]
        lines += [f"  why: {reason}" for reason in self.reasons]
        lines.append("  proxy evidence:")
        lines += [f"    {name:<44} {value}" for name, value in self._evidence()]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        color = "#2e7d32" if self.allowed else "#c62828"
        reasons = "".join(f"<li>{escape(r)}</li>" for r in self.reasons)
        rows = "".join(f"<tr><td><code>{escape(n)}</code></td><td><code>{escape(v)}</code>"
                       f"</td></tr>" for n, v in self._evidence())
        return (f"<div><p><code>{escape(self.method)} {escape(self.url)}</code> from "
                f"{escape(self.source)}: <b>{self.status}</b> at pod "
                f"{escape(self.destination)}</p><p style='color:{color}'><b>"
                f"{escape(self.verdict)}</b></p><ul>{reasons}</ul>"
                f"<table><tr><th>proxy evidence</th><th></th></tr>{rows}</table></div>")


def explain(url: str, *, from_workload: str = "curl", namespace: str = "default",
            method: str = "GET", headers: Mapping[str, str] | None = None,
            token: str | None = None, cluster: ClusterRef | None = None) -> Decision:
    """Send one request from deploy/`from_workload` to `url` and say which policy allowed or
    denied it, from the destination sidecar's access log, stats and configuration. `token` is
    sent as `Authorization: Bearer <token>`."""
    try:
        return _explain(url, from_workload, namespace, method, headers, token,
                        cluster or current_cluster())
    except (proxy.ProxyError, SidecarError) as exc:  # e.g. a sidecar that is not ready yet
        raise AuthzError(f"the destination's sidecar could not be asked: {exc}") from None


def _explain(url: str, from_workload: str, namespace: str, method: str,
             headers: Mapping[str, str] | None, token: str | None, ref: ClusterRef
             ) -> Decision:
    dest_ns, pods = _destination_pods(ref, url, namespace)
    before = {pod["metadata"]["name"]: _watched(proxy.stats(pod["metadata"]["name"], dest_ns,
                                                            cluster=ref)) for pod in pods}
    request_id = str(uuid.uuid4())
    sent = {**(headers or {}), "x-request-id": request_id}
    if token:
        sent["Authorization"] = f"Bearer {token}"
    bodies: list[str] = []

    def keep(body: str) -> str:
        bodies.append(body)
        return "body"

    result = traffic.probe(url, from_workload=from_workload, namespace=namespace, n=1,
                           headers=sent, method=method, classify=keep, cluster=ref)
    status = next(iter(result.codes))
    pod, line = _find_line(ref, pods, request_id)
    name = pod["metadata"]["name"]
    after = _watched(proxy.stats(name, dest_ns, cluster=ref))
    delta = {k: v - before[name].get(k, 0) for k, v in after.items()
             if v != before[name].get(k, 0)}
    policies = ProxyPolicies.of(proxy.config_dump(name, dest_ns, cluster=ref))
    rbac = line.get("rbac") if isinstance(line.get("rbac"), dict) else {}
    details = str(line.get("response_code_details") or "")
    allowed, verdict, reasons, policy = _reason(details, rbac or {}, delta, policies, token)
    return Decision(method.upper(), url, f"deploy/{from_workload} (namespace {namespace})",
                    f"{name} (namespace {dest_ns})", status, details, allowed, verdict,
                    reasons, policy, rbac or {}, delta, bodies[0] if bodies else "")


# --- what the proxy says ---------------------------------------------------------------------

def _reason(details: str, rbac: Obj, delta: dict[str, int], policies: ProxyPolicies,
            token: str | None) -> tuple[bool, str, list[str], PolicyRef | None]:
    """(allowed, verdict, reasons, deciding policy) from the proxy's own records."""
    denied_by = DENIED_BY_RBAC.match(details)
    if denied_by:
        return _rbac_denial(denied_by["policy"], policies, token)
    if details.startswith("jwt_authn_access_denied"):
        why = details.partition("{")[2].rstrip("}").replace("_", " ") or details
        return False, "DENIED by RequestAuthentication (jwt_authn): 401", [
            f"the token failed validation: {why}; a missing token passes, an invalid one "
            "is rejected (check issuer, audiences, expiry and the JWKS)"], None
    if details.startswith("ext_authz"):
        return _ext_authz_denial(details, rbac, policies)
    return _allowed(details, rbac, delta, policies)


def _rbac_denial(name: str, policies: ProxyPolicies, token: str | None
                 ) -> tuple[bool, str, list[str], PolicyRef | None]:
    if name == BAD_CUSTOM_POLICY:
        return False, "DENIED: a CUSTOM AuthorizationPolicy could not be applied", [
            "istiod denies every request to a workload whose CUSTOM policy names an unknown or "
            "broken ext-authz provider; `kubectl get authorizationpolicy -o yaml` shows why"], \
            None
    if name != "none":
        ref = PolicyRef.parse(name, policies.by_name.get(name, "DENY"))
        return False, f"DENIED by {ref or name}", [
            "the request matched this DENY rule; DENY policies are checked before ALLOW ones, "
            "so no ALLOW policy can let it through"], ref
    allow_rules = policies.refs("ALLOW")
    reasons = ["ALLOW policies apply to this workload and the request matched none of their "
               "rules (rbac_access_denied_matched_policy[none])"]
    if allow_rules:
        reasons.append("ALLOW rules on the proxy: " + "; ".join(map(str, allow_rules)))
    else:
        reasons.append("the proxy's ALLOW filter has no rules: an ALLOW policy without rules "
                       "(`spec: {}`, allow-nothing) applies, so every request is denied")
    if token is None and policies.needs_jwt:
        needing = [str(r) for n in policies.needs_jwt
                   if (r := PolicyRef.parse(n, "ALLOW")) is not None]
        reasons.append("no JWT was sent: a missing token passes RequestAuthentication, but "
                       f"these rules need a request principal or claims: {'; '.join(needing)}")
    return False, "DENIED: no ALLOW policy matched", reasons, None


def _custom_ref(rbac: Obj, policies: ProxyPolicies) -> PolicyRef | None:
    name = rbac.get("istio_ext_authz_shadow_effective_policy_id")
    if name:
        return PolicyRef.parse(str(name), "CUSTOM")
    custom = policies.refs("CUSTOM")
    return custom[0] if len(custom) == 1 else None


def _ext_authz_denial(details: str, rbac: Obj, policies: ProxyPolicies
                      ) -> tuple[bool, str, list[str], PolicyRef | None]:
    ref = _custom_ref(rbac, policies)
    by = str(ref) if ref else "a CUSTOM AuthorizationPolicy"
    if details == "ext_authz_denied":
        return False, f"DENIED by the ext-authz server ({by})", [
            "the request matched the CUSTOM policy's rules, so the proxy asked the external "
            "authorizer, and it said no; CUSTOM is checked before DENY and ALLOW"], ref
    return False, f"DENIED: the ext-authz server could not be asked ({by})", [
        f"{details}: the provider's service did not answer or errored; check the provider in "
        "ConfigMap istio-system/istio and the ext-authz pod"], ref


def _allowed(details: str, rbac: Obj, delta: dict[str, int], policies: ProxyPolicies
             ) -> tuple[bool, str, list[str], PolicyRef | None]:
    reasons = []
    if rbac.get("istio_ext_authz_shadow_effective_policy_id") or _counted(delta, "ext_authz.ok"):
        ref = _custom_ref(rbac, policies)
        reasons.append(f"the ext-authz server allowed it ({ref or 'CUSTOM policy'})")
    elif policies.ext_authz:
        reasons.append("no CUSTOM rule matched, so the ext-authz server was not asked")
    policy = None
    allow_id = rbac.get("enforced_effective_policy_id")
    if allow_id and rbac.get("enforced_engine_result") == "allowed":
        policy = PolicyRef.parse(str(allow_id), policies.by_name.get(str(allow_id), "ALLOW"))
        reasons.append(f"it matched {policy or allow_id}")
    elif policies.refs("DENY") and not policies.allow_filter:
        reasons.append("no DENY rule matched and no ALLOW policy applies")
    elif _counted(delta, "rbac.allowed"):
        reasons.append("the RBAC filters allowed it (their policy ids are not in this "
                       "proxy's access log)")
    elif not policies.by_name and not policies.allow_filter:
        reasons.append("no AuthorizationPolicy applies to this workload: allowed by default")
    if details != "via_upstream":
        reasons.append(f"the proxy answered itself: {details}")
    verdict = f"ALLOWED by {policy}" if policy else "ALLOWED"
    return True, verdict, reasons, policy


def _counted(delta: dict[str, int], suffix: str) -> bool:
    return any(name.endswith(suffix) and value > 0 for name, value in delta.items())


# --- reading the destination proxy ------------------------------------------------------------

def _watched(stats: dict[str, int]) -> dict[str, int]:
    """The inbound authorization counters (RBAC, jwt_authn, ext_authz) and request totals."""
    def wanted(name: str) -> bool:
        if name.startswith("http.inbound_") and name.endswith(".downstream_rq_total"):
            return True
        return name.startswith(("http.inbound_", "cluster.")) and any(
            w in name for w in WATCHED_STATS)
    return {k: v for k, v in stats.items() if wanted(k)}


def _inbound_hcms(dump: Obj) -> list[Obj]:
    listeners = []
    for config in dump.get("configs", []):
        if str(config.get("@type", "")).endswith(".ListenersConfigDump"):
            listeners += [d.get("active_state", {}).get("listener", {})
                          for d in config.get("dynamic_listeners", [])]
    return [f.get("typed_config", {}) for listener in listeners
            if listener.get("traffic_direction") == "INBOUND"
            for chain in listener.get("filter_chains", []) for f in chain.get("filters", [])]


def _destination_pods(ref: ClusterRef, url: str, namespace: str) -> tuple[str, list[Obj]]:
    """(namespace, running pods with a sidecar) of the Service `url` names."""
    host = (urlsplit(url).hostname or "").lower()
    parts = host.split(".")
    if not host or len(parts) not in (1, 2, 3, 5):
        raise AuthzError(f"{url!r}: name a Service of the mesh, e.g. http://httpbin:8000/get or "
                         "http://httpbin.foo.svc.cluster.local:8000/get")
    name, svc_ns = parts[0], (parts[1] if len(parts) > 1 else namespace)
    got = ref.kubectl(f"--namespace={svc_ns}", "get", "service", name, "-o", "json")
    if got.returncode != 0:
        raise AuthzError(f"no Service {name!r} in namespace {svc_ns} to explain a request to: "
                         f"run the cells that deploy it first ({got.stderr.strip()})")
    selector = json.loads(got.stdout).get("spec", {}).get("selector") or {}
    if not selector:
        raise AuthzError(f"Service {svc_ns}/{name} has no selector: no pod's proxy to ask")
    listed = ref.kubectl(f"--namespace={svc_ns}", "get", "pods", "-l",
                         ",".join(f"{k}={v}" for k, v in selector.items()),
                         "--field-selector=status.phase=Running", "-o", "json")
    pods = [p for p in json.loads(listed.stdout or "{}").get("items", [])
            if any(c.get("name") == SIDECAR_CONTAINER for c in p["spec"].get("containers", []))]
    if not pods:
        raise AuthzError(f"Service {svc_ns}/{name} has no running pod with an {SIDECAR_CONTAINER}"
                         f" sidecar: label namespace {svc_ns} istio-injection=enabled and "
                         "`kubectl rollout restart` the workload")
    return svc_ns, pods


def _find_line(ref: ClusterRef, pods: list[Obj], request_id: str) -> tuple[Obj, Obj]:
    """(pod, access log fields) of the inbound request with `request_id`."""
    deadline = time.monotonic() + LOG_WAIT_S
    while True:
        for pod in pods:
            line = _log_line(ref, pod, request_id)
            if line is not None:
                return pod, line
        if time.monotonic() > deadline:
            raise AuthzError(f"no inbound access log line with x-request-id {request_id} at "
                             f"the destination's sidecar within {LOG_WAIT_S:g}s: did the "
                             "request reach it? (`kubectl logs <pod> -c istio-proxy`)")
        time.sleep(0.1)


def _id_pattern(request_id: str) -> re.Pattern[str]:
    """The request id as the proxies log it: Envoy rewrites the UUID's version digit (the 15th
    character) to record its trace sampling decision."""
    return re.compile(re.escape(request_id[:14]) + "." + re.escape(request_id[15:]))


def _log_line(ref: ClusterRef, pod: Obj, request_id: str) -> Obj | None:
    """The inbound access log entry of `request_id` at `pod`'s sidecar, or None (yet)."""
    logged = _id_pattern(request_id)
    for entry in reversed(ref.sidecar_access_log(pod)):
        if entry.get("direction") == "inbound" and logged.fullmatch(
                str(entry.get("request_id"))):
            return entry
    return None
