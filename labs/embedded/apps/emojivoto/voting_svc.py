"""emojivoto `voting-svc` twin (`docker.l5d.io/buoyantio/emojivoto-voting-svc`): the gRPC
`emojivoto.v1.VotingService` on GRPC_PORT — one `Vote<Name>` RPC per emoji and `Results`
(shortcodes by votes, most first), an in-memory poll, `emojivoto_votes_total{emoji}` on
PROM_PORT (BuoyantIO/emojivoto `emojivoto-voting-svc/api/api.go`, `voting/poll.go`).

`VoteDoughnut` fails with gRPC status Unknown "ERROR" — always up to image v11 (the tag of
Linkerd's emojivoto.yml and upstream's kustomize manifests; the failure came in commit 62d6e5a),
and from v12 on with probability FAILURE_RATE (0 when unset, commit c8a51d8), which also brought
ARTIFICIAL_DELAY (a Go duration slept before each vote).

    GRPC_PORT=8080 python -m labs.embedded.apps.emojivoto.voting_svc --image ...:v11
"""

from __future__ import annotations

import argparse
import os
import random
import re
import threading
import time

from labs.duration import go_duration_text

from ..fortio import UsageError, parse_duration
from .api import (
    EMOJI,
    VOTING_SERVICE,
    Handler,
    field_bytes,
    field_int,
    field_string,
    pod_port,
    serve_grpc,
)
from .metrics import go_log, start_metrics

DOUGHNUT = ":doughnut:"
FIRST_CONFIGURABLE = 12  # the first image tag whose doughnut failure follows FAILURE_RATE


class Poll:
    """voting/poll.go's inMemoryPoll."""

    def __init__(self) -> None:
        self.votes: dict[str, int] = {}
        self.lock = threading.Lock()

    def vote(self, shortcode: str) -> None:
        with self.lock:
            self.votes[shortcode] = self.votes.get(shortcode, 0) + 1
            total = self.votes[shortcode]
        go_log(f"Voted for [{shortcode}], which now has a total of [{total}] votes")

    def results(self) -> list[tuple[str, int]]:
        with self.lock:
            return sorted(self.votes.items(), key=lambda item: -item[1])

    def metrics(self) -> str:
        lines = ["# HELP emojivoto_votes_total Number of emoji votes",
                 "# TYPE emojivoto_votes_total counter"]
        with self.lock:
            lines += [f'emojivoto_votes_total{{emoji="{shortcode}"}} {n}'
                      for shortcode, n in sorted(self.votes.items())]
        return "\n".join(lines) + "\n"


def image_release(image: str) -> int | None:
    """`...:v11` -> 11; None for another tag (latest, a digest)."""
    match = re.search(r":v(\d+)$", image.split("@", 1)[0])
    return int(match.group(1)) if match else None


def failure_rate(image: str) -> float:
    """The probability that a doughnut vote fails, as the image's release decides."""
    release = image_release(image)
    if release is not None and release < FIRST_CONFIGURABLE:
        return 1.0
    value = os.environ.get("FAILURE_RATE", "")
    try:
        rate = float(value) if value else 0.0
    except ValueError:
        go_log(f"Invalid value for FAILURE_RATE {value}. Using 0.000000 instead")
        return 0.0
    if rate > 1.0:
        go_log(f"FAILURE_RATE is set to {rate:f}. It should be a value between 0.0 and 1.0")
    return rate


def artificial_delay() -> float:
    value = os.environ.get("ARTIFICIAL_DELAY", "")
    try:
        return parse_duration(value, "ARTIFICIAL_DELAY") if value else 0.0
    except UsageError:
        go_log(f"ParseDuration failed for {value} using 0s instead")
        return 0.0


def handlers(poll: Poll, rate: float, delay: float) -> dict[str, Handler]:
    import grpc

    def voter(shortcode: str) -> Handler:
        def vote(request: bytes, context: grpc.ServicerContext) -> bytes:
            if shortcode == DOUGHNUT:
                probability = random.random()
                if rate > 0 and probability < rate:
                    go_log(f"probability [{probability:f}] is less than failureRate [{rate:f}]")
                    go_log("logging an error for doughnut")
                    context.abort(grpc.StatusCode.UNKNOWN, "ERROR")
                go_log("voting for doughnut")
            time.sleep(delay)
            poll.vote(shortcode)
            return b""
        return vote

    def results(request: bytes, context: grpc.ServicerContext) -> bytes:
        return b"".join(field_bytes(1, field_string(1, shortcode) + field_int(2, votes))
                        for shortcode, votes in poll.results())

    out = {method: voter(shortcode) for shortcode, _, method in EMOJI}
    out["Results"] = results
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m labs.embedded.apps.emojivoto.voting_svc")
    parser.add_argument("--image", default="", help="the container image (its tag: the release)")
    parser.add_argument("--port", type=int, action="append", default=[],
                        help="ignored: GRPC_PORT and PROM_PORT say which port is which")
    image = parser.parse_args(argv).image
    _, port = pod_port("GRPC_PORT")
    poll = Poll()
    start_metrics(poll.metrics)
    rate, delay = failure_rate(image), artificial_delay()
    go_log(f"Starting grpc server on GRPC_PORT=[{os.environ['GRPC_PORT']}]")
    go_log(f"Using failureRate [{rate:f}] and artificialDelayDuration [{go_duration_text(delay)}]")
    serve_grpc(VOTING_SERVICE, handlers(poll, rate, delay), port, "voting-svc")


if __name__ == "__main__":
    main()
