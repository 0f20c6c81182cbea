"""`SelfSubjectAccessReview` and `SelfSubjectRulesReview`: what `kubectl auth can-i` asks.

The embedded API server authenticates one bearer token and then authorizes every request: there
is no RBAC evaluation anywhere in it, so it behaves like a kube-apiserver started with
`--authorization-mode=AlwaysAllow`. The reviews answer exactly that, for any user (an
impersonated one included, since AlwaysAllow also allows `impersonate`): every access is
allowed, and the rules are `*` on everything, as the AlwaysAllow authorizer's `RulesFor` says
(staging/src/k8s.io/apiserver/pkg/authorization/authorizerfactory/builtin.go). Reviews are
never stored: a POST answers 201 with the review and its `status`, as the real registries do
(pkg/registry/authorization/selfsubjectaccessreview/rest.go).
"""

from __future__ import annotations

from typing import Any

from .errors import FieldCause, invalid
from .resources import ResourceRegistry, ResourceType

Obj = dict[str, Any]
GROUP = "authorization.k8s.io"
ACCESS_REVIEW = "SelfSubjectAccessReview"
RULES_REVIEW = "SelfSubjectRulesReview"
REASON = ("the embedded cluster authorizes every authenticated request "
          "(like --authorization-mode=AlwaysAllow): there is no RBAC to evaluate")
RESOURCE_TYPES = tuple(
    ResourceType(group=GROUP, version="v1", kind=kind, plural=f"{kind.lower()}s",
                 singular=kind.lower(), namespaced=False, verbs=("create",))
    for kind in (ACCESS_REVIEW, RULES_REVIEW))


def register(registry: ResourceRegistry) -> None:
    """Serve the review resources (discovery lists them, so kubectl finds them)."""
    for rt in RESOURCE_TYPES:
        registry.add(rt)


def answer(rt: ResourceType, review: Obj) -> Obj:
    """The review with its `status` filled in (`review` is already decoded into its type)."""
    spec = review.get("spec") or {}
    if rt.kind == ACCESS_REVIEW:
        _check_access_spec(spec)
        status: Obj = {"allowed": True, "reason": REASON}
    else:
        status = {"resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
                  "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
                  "incomplete": False}
    meta = dict(review.get("metadata") or {})
    meta.setdefault("creationTimestamp", None)
    return {"kind": rt.kind, "apiVersion": rt.api_version, "metadata": meta, "spec": spec,
            "status": status}


def _check_access_spec(spec: Obj) -> None:
    """ValidateSelfSubjectAccessReviewSpec (pkg/apis/authorization/validation)."""
    resource, non_resource = spec.get("resourceAttributes"), spec.get("nonResourceAttributes")
    if resource is not None and non_resource is not None:
        cause = FieldCause("spec.nonResourceAttributes", "FieldValueInvalid",
                           "Invalid value: \"object\": cannot be specified in combination "
                           "with resourceAttributes")
    elif resource is None and non_resource is None:
        cause = FieldCause("spec.resourceAttributes", "FieldValueInvalid",
                           "Invalid value: \"null\": exactly one of nonResourceAttributes or "
                           "resourceAttributes must be specified")
    else:
        return
    raise invalid(ACCESS_REVIEW, "", [cause], GROUP)
