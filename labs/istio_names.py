"""Names real Istio gives things in pods and in Envoy's configuration.

The embedded mesh writes them and the learner helpers (`labs.proxy`, `labs.authz`,
`labs.traffic`) read them, on every backend: they are Istio's contract, not the embedded
cluster's, so they live here, below both, instead of inside `labs.embedded`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SIDECAR_CONTAINER = "istio-proxy"
# istiod's names for AuthorizationPolicy rules in the RBAC filters
# (pilot/pkg/security/authz/builder): `ns[<namespace>]-policy[<name>]-rule[<index>]`, with
# this prefix on the shadow rules that mark requests for a CUSTOM (ext-authz) provider.
EXT_AUTHZ_RULE_PREFIX = "istio-ext-authz-"
# The single rule of the deny-all filter istiod gives a workload whose CUSTOM policy is broken.
BAD_CUSTOM_POLICY = "default-deny-all-due-to-bad-CUSTOM-action"
_RULE_NAME = re.compile(rf"^(?P<custom>{re.escape(EXT_AUTHZ_RULE_PREFIX)})?"
                        r"ns\[(?P<ns>[^\]]*)\]-policy\[(?P<name>[^\]]*)\]-rule\[(?P<rule>\d+)\]$")


@dataclass(frozen=True)
class PolicyRuleName:
    """One AuthorizationPolicy rule as Envoy names it; `custom`: a CUSTOM policy's rule."""

    namespace: str
    name: str
    rule: int
    custom: bool = False

    def __str__(self) -> str:
        prefix = EXT_AUTHZ_RULE_PREFIX if self.custom else ""
        return f"{prefix}ns[{self.namespace}]-policy[{self.name}]-rule[{self.rule}]"


def parse_policy_rule_name(text: str) -> PolicyRuleName | None:
    """The rule `text` names, or None when it is not an AuthorizationPolicy rule name."""
    found = _RULE_NAME.match(text)
    if found is None:
        return None
    return PolicyRuleName(found["ns"], found["name"], int(found["rule"]), bool(found["custom"]))
