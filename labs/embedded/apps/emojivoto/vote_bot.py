"""emojivoto `vote-bot` twin (the web image's `emojivoto-vote-bot`): every 1/REQUEST_RATE
seconds it lists the emoji at WEB_HOST and votes — for :doughnut: 15% of the time, else for a
random one — printing `✔ Voting for :x:`, until TTL seconds (when set) have passed, as
BuoyantIO/emojivoto `emojivoto-web/cmd/vote-bot/main.go`. Its requests go through the pod's
proxy; HOST_OVERRIDE sets their Host header. OpenCensus export (OC_AGENT_HOST) is not emulated.

    WEB_HOST=web-svc.emojivoto:80 python -m labs.embedded.apps.emojivoto.vote_bot
"""

from __future__ import annotations

import json
import os
import random
import sys
import time

from ..http import http_get

TIMEOUT = 10.0  # seconds per request (upstream's client has none)


def _int(name: str) -> int:
    """An optional number; invalid ones are ignored, as upstream's strconv.Atoi(...) with _."""
    try:
        return int(os.environ.get(name, ""))
    except ValueError:
        return 0


def shortcodes(base: str, headers: dict[str, str]) -> list[str]:
    url = f"{base}/api/list"
    reply = http_get(url, headers, TIMEOUT)
    if reply is None:
        raise OSError(f'Get "{url}": no response')
    try:
        return [str(e["shortcode"]) for e in json.loads(reply.body)]
    except (ValueError, TypeError, KeyError):
        raise OSError(f"invalid character in the answer of {url} (HTTP {reply.status})") from None


def vote(base: str, headers: dict[str, str], shortcode: str) -> None:
    print(f"✔ Voting for {shortcode}", flush=True)
    url = f"{base}/api/vote?choice={shortcode}"
    if http_get(url, headers, TIMEOUT) is None:
        raise OSError(f'Get "{url}": no response')


def main() -> int:
    host = os.environ.get("WEB_HOST", "")
    if not host:
        sys.stderr.write("WEB_HOST environment variable must me set\n")
        return 1
    ttl, rate = _int("TTL"), max(_int("REQUEST_RATE"), 1)
    deadline = time.monotonic() + ttl if ttl else None
    headers = {"Host": os.environ["HOST_OVERRIDE"]} if os.environ.get("HOST_OVERRIDE") else {}
    base = f"http://{host}"
    while True:
        if deadline is not None and time.monotonic() > deadline:
            print(f"Time to live of {ttl} seconds reached, completing", flush=True)
            return 0
        time.sleep(1 / rate)
        try:
            codes = shortcodes(base, headers)
            choice = ":doughnut:" if random.random() < 0.15 else random.choice(codes)
            vote(base, headers, choice)
        except (OSError, IndexError) as error:
            sys.stderr.write(f"{error}\n")
            sys.stderr.flush()


if __name__ == "__main__":
    sys.exit(main())
