"""Twins of Linkerd's demo app emojivoto (BuoyantIO/emojivoto): `emoji-svc` and `voting-svc`
are gRPC servers, `web` serves the HTTP API and calls both over gRPC through the pod's proxy,
and `vote-bot` (the web image's second entrypoint) votes forever. Like upstream, a vote for
:doughnut: fails (voting-svc answers gRPC `Unknown`, web answers 500): the debugging exercise."""
