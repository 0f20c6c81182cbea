"""Do the names and log lines that both sides of the mesh rely on read back as Istio writes them:
an Istio text access log line (what `kubectl logs -c istio-proxy` shows on kind) into Envoy's
field names, and istiod's AuthorizationPolicy rule names both ways? Pure functions, no cluster;
the kubectl paths themselves run against real sidecars in test_authz_explain.py and
test_labs_helpers.py."""

from __future__ import annotations

from labs.cluster.access_log import parse_text_line
from labs.istio_names import PolicyRuleName, parse_policy_rule_name

# istio.io, "Getting Envoy's Access Logs" (the sleep/curl client calling httpbin).
OUTBOUND = ('[2020-11-25T21:26:18.409Z] "GET /status/418 HTTP/1.1" 418 - via_upstream - "-" 0 135 '
            '4 4 "-" "curl/7.73.0-DEV" "84961386-6d84-929d-98bd-c5aee93b5c88" "httpbin:8000" '
            '"10.44.1.27:80" outbound|8000||httpbin.foo.svc.cluster.local 10.44.1.23:37652 '
            '10.0.45.184:8000 10.44.1.23:46520 - default')
DENIED = ('[2024-05-02T10:00:00.000Z] "GET /headers HTTP/1.1" 403 - '
          'rbac_access_denied_matched_policy[ns[foo]-policy[deny-get]-rule[0]] - "-" 0 19 0 - '
          '"-" "curl/8.5.0" "b2d5e3a4-0c1f-4e55-9a77-3c4d0f1e2a6b" "httpbin:8000" "-" '
          'inbound|80|| - 10.44.1.27:80 10.44.1.23:46520 '
          'outbound_.8000_._.httpbin.foo.svc.cluster.local -')


def test_text_access_log_lines_read_back_into_envoy_fields() -> None:
    """Is each field where Istio's format puts it, "-" empty, and the direction told by the
    upstream cluster; and is a line of Envoy's own (not an access log entry) skipped?"""
    out = parse_text_line(OUTBOUND)
    assert out is not None
    assert (out["method"], out["path"], out["response_code"], out["response_flags"]) == (
        "GET", "/status/418", 418, None)
    assert (out["request_id"], out["authority"], out["direction"]) == (
        "84961386-6d84-929d-98bd-c5aee93b5c88", "httpbin:8000", "outbound")
    denied = parse_text_line(DENIED)
    assert denied is not None and denied["direction"] == "inbound"
    assert denied["response_code_details"] == (
        "rbac_access_denied_matched_policy[ns[foo]-policy[deny-get]-rule[0]]")
    assert parse_text_line("2024-05-02T10:00:00.000Z info Envoy proxy is ready") is None


def test_policy_rule_names_round_trip() -> None:
    """Does a rule name read back into the policy it names, CUSTOM ones by their prefix, and
    is anything else (istiod's deny-all for a broken CUSTOM policy) not a rule name?"""
    for rule in (PolicyRuleName("foo", "deny-get", 0), PolicyRuleName("bar", "ext", 2, True)):
        assert parse_policy_rule_name(str(rule)) == rule
    assert str(PolicyRuleName("bar", "ext", 2, True)) == (
        "istio-ext-authz-ns[bar]-policy[ext]-rule[2]")
    assert parse_policy_rule_name("default-deny-all-due-to-bad-CUSTOM-action") is None
