"""`podcli`, the CLI in podinfo's image, as Flagger's podinfo manifest probes with it:
`podcli check http localhost:9898/readyz` and `podcli check tcp ADDRESS` (stefanprodan/podinfo
`cmd/podcli/check.go`: `--retry` (0), `--delay` (1s, also slept before the first try, as
upstream does), `--timeout` (5s), `--method`, `--body`; exit 0 on HTTP 2xx/3xx or a TCP
connection, else 1; zap-style JSON lines on stdout). A `localhost` address is the pod's (the
embedded runtime's port map); other hosts go through the pod's `http_proxy`. Other `check`
kinds (grpc, cert, ws) and podcli's other commands are not emulated: they exit 1 saying so.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import sys
import time
import urllib.request
from urllib.parse import urlsplit

from . import localhost
from .fortio import UsageError, parse_duration


def log(msg: str, **fields: object) -> None:
    entry = {"level": "info", "ts": round(time.time(), 6), "msg": msg, **fields}
    print(json.dumps(entry), flush=True)


def dial(host: str, port: int) -> tuple[str, int, bool]:
    """(host, port, via proxy) for a connection from inside the pod."""
    if host.lower() in localhost.LOOPBACK_HOSTS:
        try:
            mapped = localhost.dial_port(host, port, os.environ)
        except localhost.NotInPod:
            mapped = port
        if mapped is None:
            raise ConnectionRefusedError(f"dial tcp {host}:{port}: connect: connection refused")
        return "127.0.0.1", mapped, False
    proxy = urllib.request.getproxies().get("http")
    if proxy and not urllib.request.proxy_bypass(host):
        parsed = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        return parsed.hostname or "127.0.0.1", parsed.port or 80, True
    return host, port, False


def check_http(address: str, method: str, body: str, timeout: float) -> bool:
    url = urlsplit(address if address.startswith(("http://", "https://"))
                   else f"http://{address}")
    if url.scheme != "http":
        log("check failed", address=address, error="https is not emulated by this twin")
        return False
    try:
        host, port, proxied = dial(url.hostname or "", url.port or 80)
        path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        conn.request(method, url.geturl() if proxied else path, body=body.encode() or None,
                     headers={"Host": url.netloc})
        response = conn.getresponse()
        size = len(response.read())
        conn.close()
    except (OSError, http.client.HTTPException) as error:
        log("check failed", address=url.geturl(), error=str(error))
        return False
    if 200 <= response.status < 400:
        log("check succeed", address=url.geturl(), **{"status code": response.status,
                                                      "response size": f"{size}B"})
        return True
    log("check failed", address=url.geturl(), **{"status code": response.status})
    return False


def check_tcp(address: str, timeout: float) -> bool:
    host, _, port = address.rpartition(":")
    try:
        target = dial(host, int(port))[:2]
        with socket.create_connection(target, timeout=timeout):
            pass
    except (OSError, ValueError) as error:
        log("check failed", address=address, error=str(error))
        return False
    log("check succeed", address=address)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="podcli")
    parser.add_argument("command", choices=["check"])
    parser.add_argument("kind", choices=["http", "tcp"],
                        help="what to check (grpc, cert and ws are not emulated by this twin)")
    parser.add_argument("address")
    parser.add_argument("--retry", type=int, default=0)
    parser.add_argument("--delay", default="1s")
    parser.add_argument("--timeout", default="5s")
    parser.add_argument("--method", default="GET")
    parser.add_argument("--body", default="")
    args = parser.parse_args(argv)
    try:
        delay = parse_duration(args.delay, "delay")
        timeout = parse_duration(args.timeout, "timeout")
    except UsageError as error:
        parser.error(str(error))
    if args.retry < 0:
        parser.error("--retry is required")
    for attempt in range(args.retry + 1):
        if attempt != 1:  # upstream sleeps before every try but the second
            time.sleep(delay)
        ok = (check_http(args.address, args.method.upper(), args.body, timeout)
              if args.kind == "http" else check_tcp(args.address, timeout))
        if ok:
            return 0
    return 1


if __name__ == "__main__":
    sys.exit(main())
