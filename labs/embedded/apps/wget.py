"""BusyBox `wget` as the Flagger load tester image's probes run it
(`wget --quiet --tries=1 --timeout=4 --spider http://localhost:8080/healthz`, fluxcd/flagger
`kustomize/tester/deployment.yaml`): a GET whose `localhost` is the pod's (the embedded
runtime's port map; an exec probe runs without the pod-loopback shim, so the host's wget would
dial the host's port), other hosts through the pod's `http_proxy`. Options: `-q/--quiet`,
`--spider`, `-O FILE` (`-` for stdout; default: the URL's file name), `-T/--timeout`, `--tries`
(`-t`); exit 0 on HTTP 2xx, else 1 with BusyBox's message. HTTPS and redirects are not emulated.
"""

from __future__ import annotations

import argparse
import http.client
import os
import sys
from urllib.parse import urlsplit

from .podcli import dial


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="wget")
    parser.add_argument("-q", "--quiet", action="store_true")
    parser.add_argument("--spider", action="store_true")
    parser.add_argument("-O", dest="output")
    parser.add_argument("-T", "--timeout", type=float, default=900.0)
    parser.add_argument("-t", "--tries", type=int, default=1)
    parser.add_argument("url")
    args = parser.parse_args(argv)
    url = urlsplit(args.url if "://" in args.url else f"http://{args.url}")
    if url.scheme != "http":
        sys.stderr.write(f"wget: {url.scheme}:// is not supported by this twin (http:// only)\n")
        return 1
    path = (url.path or "/") + (f"?{url.query}" if url.query else "")
    error = ""
    for _ in range(max(args.tries, 1)):
        try:
            host, port, proxied = dial(url.hostname or "", url.port or 80)
            conn = http.client.HTTPConnection(host, port, timeout=args.timeout)
            conn.request("GET", url.geturl() if proxied else path,
                         headers={"Host": url.netloc, "User-Agent": "Wget"})
            response = conn.getresponse()
            body = response.read()
            conn.close()
        except (OSError, http.client.HTTPException) as exc:
            error = f"wget: can't connect to remote host: {exc}"
            continue
        if not 200 <= response.status < 300:
            error = f"wget: server returned error: HTTP/1.1 {response.status} {response.reason}"
            break
        if not args.quiet:
            sys.stderr.write(f"Connecting to {url.netloc} ({host}:{port})\n")
        if args.spider:
            if not args.quiet:
                sys.stderr.write("remote file exists\n")
            return 0
        target = args.output or os.path.basename(url.path) or "index.html"
        if target == "-":
            sys.stdout.buffer.write(body)
            sys.stdout.flush()
        else:
            with open(target, "wb") as out:
                out.write(body)
        return 0
    sys.stderr.write(error + "\n")
    return 1


if __name__ == "__main__":
    sys.exit(main())
