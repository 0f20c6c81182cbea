"""Hidden checks of lab day2.linkerd: that the answers mean what the public checks assume —
sidecars that actually speak mTLS with the workloads' identities, the deployment where the
failures start (not only the route), and voting opened to web by an AuthorizationPolicy on
web's identity (not by the deprecated ServerAuthorization or a default policy), and voting's
other port refused by the default policy `deny` (not by one more Server)."""

from __future__ import annotations

from labs.checks import CheckContext, Outcome, check, failed, passed
from labs.checks.public.day2.linkerd import (
    DEFAULT_POLICY,
    NAMESPACE,
    SETTLE,
    VOTING_METRICS,
    WEB_VOTE,
    answers,
)

TRUST_DOMAIN = "serviceaccount.identity.linkerd.cluster.local"  # linkerd2 _proxy.tpl


def identity(account: str) -> str:
    return f"{account}.{NAMESPACE}.{TRUST_DOMAIN}"


def proxy_metrics(ctx: CheckContext, deployment: str, container: str) -> list[str]:
    """The lines of a pod's linkerd-proxy /metrics (admin port 4191), read from inside it."""
    done = ctx.cluster.kubectl(f"--namespace={NAMESPACE}", "exec", f"deploy/{deployment}",
                               "-c", container, "--", "curl", "-s", "--max-time", "10",
                               "http://localhost:4191/metrics", timeout=60)
    return done.stdout.splitlines() if done.returncode == 0 else []


def counted(lines: list[str], family: str, *fragments: str) -> bool:
    """A sample of `family` with every label fragment counts at least 1."""
    return any(line.startswith(family + "{") and all(f in line for f in fragments)
               and float(line.rsplit(" ", 1)[1]) >= 1 for line in lines)


@check("day2.linkerd.mtls",
       "web's proxy calls voting and emoji over mTLS, each server proving its own identity",
       hidden=True, points=1, retry=SETTLE,
       hint="inject every emojivoto deployment (linkerd inject) and restart them, so that both "
            "ends of each call have a proxy")
def mtls(ctx: CheckContext) -> Outcome:
    ctx.probe(WEB_VOTE, from_workload="vote-bot", namespace=NAMESPACE, n=1, max_time=10)
    lines = proxy_metrics(ctx, "web", "web-svc")
    missing = [app for app in ("voting", "emoji")
               if not counted(lines, "response_total", 'direction="outbound"', 'tls="true"',
                              f'server_id="{identity(app)}"')]
    if missing:
        return failed("web's proxy counts no mTLS response from "
                      + " or ".join(f"{app} ({identity(app)})" for app in missing))
    return passed()


@check("day2.linkerd.failing-source",
       "answers names voting as the deployment where the failures start (key failing-deployment)",
       hidden=True, points=1,
       hint="web fails only because a call it makes fails: follow the failing requests with "
            "`linkerd viz stat deploy` and `linkerd viz top deploy/web` to the deployment "
            "that answers the error")
def failing_source(ctx: CheckContext) -> Outcome:
    given = answers(ctx).get("failing-deployment")
    if given != "voting":
        return failed(f"failing-deployment is {given!r}" if given else
                      "ConfigMap answers has no key failing-deployment")
    return passed()


@check("day2.linkerd.voting-by-identity",
       "voting's proxy allows web's calls by an AuthorizationPolicy on the Server voting-grpc, "
       "for web's mTLS identity",
       hidden=True, points=1, retry=SETTLE,
       hint="use policy.linkerd.io/v1alpha1 AuthorizationPolicy (ServerAuthorization is "
            "deprecated) with a MeshTLSAuthentication naming web's ServiceAccount")
def voting_by_identity(ctx: CheckContext) -> Outcome:
    ctx.probe(WEB_VOTE, from_workload="vote-bot", namespace=NAMESPACE, n=1, max_time=10)
    lines = proxy_metrics(ctx, "voting", "voting-svc")
    if counted(lines, "inbound_http_authz_allow_total", 'srv_kind="server"',
               'srv_name="voting-grpc"', 'authz_kind="authorizationpolicy"',
               f'client_id="{identity("web")}"'):
        return passed()
    return failed("voting's proxy counts no call from web allowed by an AuthorizationPolicy on "
                  "Server voting-grpc (inbound_http_authz_allow_total)")


@check("day2.linkerd.deny-by-default-policy",
       "voting's proxy refuses its prom port by the default inbound policy deny (no Server "
       "there)",
       hidden=True, points=1, retry=SETTLE,
       hint=f"the annotation {DEFAULT_POLICY}: deny on voting's pod template makes every port "
            "without a Server deny; a Server per port does not protect the next port added")
def deny_by_default_policy(ctx: CheckContext) -> Outcome:
    ctx.probe(VOTING_METRICS, from_workload="vote-bot", namespace=NAMESPACE, n=1, max_time=10)
    lines = proxy_metrics(ctx, "voting", "voting-svc")
    if counted(lines, "inbound_http_authz_deny_total", 'target_port="8801"',
               'srv_kind="default"', 'srv_name="deny"'):
        return passed()
    return failed("voting's proxy counts no request to port 8801 refused by the default policy "
                  "deny (inbound_http_authz_deny_total with srv_kind=\"default\", "
                  "srv_name=\"deny\")")
