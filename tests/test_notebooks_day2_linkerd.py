"""Lab day2.linkerd runs top to bottom alone on a fresh embedded cluster, as nbgrader replays it
(solutions, hidden tests checking the cluster in a fresh process, "Check my work"), and what it
shows the learner is what Linkerd's docs show: `linkerd check`, emojivoto's pods 2/2 with
linkerd-proxy as a native sidecar, secured edges, tap lines with tls=true, the doughnut vote
failing with grpc-status Unknown in top and tap, voting refusing vote-bot with
PermissionDenied once the Server and AuthorizationPolicy are in place while web still votes, and
voting's metrics port refused by the default policy deny once its pod template says so."""

from __future__ import annotations

import re
from pathlib import Path

from notebook_support import course_notebooks, run_notebooks

from labs.cluster import EmbeddedCluster

DOUGHNUT = "/emojivoto.v1.VotingService/VoteDoughnut"


def test_linkerd_lab_runs_alone_on_a_fresh_cluster(notebook_cluster: EmbeddedCluster,
                                                   tmp_path: Path) -> None:
    run = run_notebooks(course_notebooks("day2/03-linkerd.ipynb"), tmp_path)
    assert not run.failed(), run.describe_failures()
    text = run.text()
    assert "did not settle" not in text, "a probe's until= never held with the solutions"

    # setup: emojivoto unmeshed answers; the doughnut vote fails through web
    assert "a vote for :joy:       {200: 1}" in text
    assert "a vote for :doughnut:  {500: 1}" in text
    assert "Status check results are √" in text  # linkerd check, linkerd viz check

    # meshed: 2/2 pods, the proxy a native sidecar, Envoy named as the stand-in
    assert re.search(r"voting-\w+-\w+\s+2/2\s+Running", text), text
    assert "linkerd-proxy restartPolicy=Always" in text
    assert "a real Envoy playing linkerd2-proxy's part" in text

    # viz: secured edges with identities, tap over mTLS
    assert re.search(r"web\s+voting\s+emojivoto\s+emojivoto\s+\u221a", text), text
    assert re.search(r"web\s+voting\s+emojivoto\s+emojivoto\s+web\.emojivoto\s+"
                     r"voting\.emojivoto\s+\u221a", text), text
    assert re.search(r"req id=\d+:\d+ proxy=out .* tls=true :method=POST "
                     r":authority=voting-svc\.emojivoto:8080 :path=/emojivoto\.v1\."
                     r"VotingService/Vote\w+", text), text

    # debugging: the doughnut route fails in top and tap
    assert re.search(rf"{DOUGHNUT}\s+\d+\s+\S+\s+\S+\s+\S+\s+0\.00%", text), text
    assert re.search(r"end id=\d+:\d+ proxy=in .* tls=true grpc-status=Unknown", text), text

    # policy: before, voting answers vote-bot itself; after, its proxy refuses it
    before, after = text.split("authorizationpolicy.policy.linkerd.io/voting-policy created")
    assert "grpc-status: 14" in before and "l5d-proxy-error" not in before
    assert "l5d-proxy-error: unauthorized request on route\ncontent-type: application/grpc\n" \
        "grpc-status: 7\n" in after
    assert re.search(r"default\s+voting-grpc\s+authorizationpolicy/voting-policy\s+"
                     r"\d+\.\drps\s+\d+\.\d\d%", after), after
    assert "a vote for :joy: through web: {200: 3}" in text
    assert re.search(r'inbound_http_authz_allow_total\{.*srv_name="voting-grpc".*'
                     r'authz_kind="authorizationpolicy",authz_name="voting-policy".*'
                     r'client_id="web\.emojivoto\.serviceaccount\.identity\.linkerd\.cluster\.'
                     r'local"\} \d+', text), text

    # default deny: voting's port without a Server refuses vote-bot, by the default policy
    assert "voting:8801 answers vote-bot 200" in text  # before
    assert re.search(r"voting-\w+-\w+ LINKERD2_PROXY_INBOUND_DEFAULT_POLICY=deny\n", text), text
    assert "a vote for :joy: through web: {200: 2}" in text
    assert re.search(r'inbound_http_authz_deny_total\{[^}]*target_port="8801".*srv_kind="default",'
                     r'srv_name="deny"', text), text
