"""httpbin twin: the endpoints Istio's tasks use, in two flavours.

`--flavor go` answers like mccutchen/go-httpbin (Istio's current sample: header values are lists),
`--flavor python` like kennethreitz/httpbin and kong/httpbin (header values are strings).
Endpoints: `/`, `/get`, `/headers`, `/ip`, `/user-agent`, `/status/{codes}` (one code, or a
choice such as `200,500` or weighted `200:0.9,500:0.1`), `/delay/{seconds}` (at most 10 s),
`/anything[/...]`, `/post` `/put` `/patch` `/delete`, `/response-headers?name=value`.

    python -m labs.embedded.apps.httpbin --flavor go --port 8080
"""

from __future__ import annotations

import argparse
import json
import random
import time
from typing import Any
from urllib.parse import parse_qs

from .http import TwinHandler, add_port_option, serve

MAX_DELAY = 10.0  # seconds, go-httpbin's default -max-duration and httpbin's cap
METHOD_PATHS = {"/post": "POST", "/put": "PUT", "/patch": "PATCH", "/delete": "DELETE"}
TEAPOT = """
    -=[ teapot ]=-

       _...._
     .'  _ _ `.
    | ."` ^ `". _,
    \\_;`"---"`|//
      |       ;/
      \\_     _/
        `\"\"\"`
"""


class HttpbinHandler(TwinHandler):
    flavor = "go"

    # --- request views -------------------------------------------------------------------
    def _headers(self) -> dict[str, Any]:
        merged: dict[str, list[str]] = {}
        for name, value in self.headers.items():
            merged.setdefault("-".join(p.capitalize() for p in name.split("-")), []).append(value)
        if self.flavor == "go":
            return merged
        return {name: ",".join(values) for name, values in merged.items()}

    def _args(self) -> dict[str, Any]:
        query = self.query
        if self.flavor == "go":
            return query
        return {k: v[0] if len(v) == 1 else v for k, v in query.items()}

    def _origin(self) -> str:
        forwarded = self.headers.get("X-Forwarded-For")
        if forwarded:
            return forwarded.split(",")[0].strip() if self.flavor == "go" else forwarded
        return self.client_address[0]

    def _url(self) -> str:
        host = self.headers.get("Host", f"127.0.0.1:{self.server.server_address[1]}")
        scheme = self.headers.get("X-Forwarded-Proto", "http")
        return self.path if self.path.startswith("http") else f"{scheme}://{host}{self.path}"

    def _request_info(self, with_body: bool) -> dict[str, Any]:
        info: dict[str, Any] = {"args": self._args(), "headers": self._headers()}
        if self.flavor == "go" or self.url_path.startswith("/anything"):
            info["method"] = self.command
        info["origin"] = self._origin()
        info["url"] = self._url()
        if with_body:
            body = self.read_body()
            text = body.decode("utf-8", "replace")
            content_type = self.headers.get("Content-Type", "")
            form: dict[str, Any] = {}
            if content_type.startswith("application/x-www-form-urlencoded"):
                form = parse_qs(text)
                if self.flavor != "go":
                    form = {k: v[0] if len(v) == 1 else v for k, v in form.items()}
            try:
                parsed = json.loads(text) if "json" in content_type else None
            except ValueError:
                parsed = None
            info.update({"data": text, "files": {}, "form": form, "json": parsed})
        return info

    def _json(self, status: int, payload: object,
              headers: list[tuple[str, str]] | None = None) -> None:
        cors = [("Access-Control-Allow-Origin", "*"),
                ("Access-Control-Allow-Credentials", "true")]
        self.reply_json(status, payload, indent=2, headers=cors + (headers or []))

    # --- dispatch --------------------------------------------------------------------------
    def _handle(self) -> None:
        path = self.url_path
        if path == "/":
            self.reply(200, "<!DOCTYPE html>\n<html><head><title>httpbin</title></head><body>"
                            "<h1>httpbin</h1><p>A simple HTTP Request &amp; Response Service."
                            "</p></body></html>\n", "text/html; charset=utf-8")
        elif path in ("/get", "/headers", "/ip", "/user-agent") and self.command not in (
                "GET", "HEAD"):
            self._method_not_allowed()
        elif path == "/get":
            self._json(200, self._request_info(with_body=False))
        elif path == "/headers":
            self._json(200, {"headers": self._headers()})
        elif path == "/ip":
            self._json(200, {"origin": self._origin()})
        elif path == "/user-agent":
            self._json(200, {"user-agent": self.headers.get("User-Agent", "")})
        elif path in METHOD_PATHS:
            if self.command != METHOD_PATHS[path]:
                self._method_not_allowed()
            else:
                self._json(200, self._request_info(with_body=True))
        elif path == "/anything" or path.startswith("/anything/"):
            self._json(200, self._request_info(with_body=True))
        elif path.startswith("/status/"):
            self._status(path.removeprefix("/status/"))
        elif path.startswith("/delay/"):
            self._delay(path.removeprefix("/delay/"))
        elif path == "/response-headers":
            extra = [(name, value) for name, values in self.query.items() for value in values]
            self._json(200, self._args(), headers=extra)
        else:
            self.reply(404, "404 page not found\n" if self.flavor == "go" else
                       "<!DOCTYPE HTML PUBLIC \"-//W3C//DTD HTML 3.2 Final//EN\">\n"
                       "<title>404 Not Found</title>\n<h1>Not Found</h1>\n",
                       "text/plain; charset=utf-8" if self.flavor == "go" else "text/html")

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle

    def _method_not_allowed(self) -> None:
        self.read_body()
        self.reply(405, "Method Not Allowed\n")

    def _status(self, spec: str) -> None:
        try:
            code = choose_status(spec)
        except ValueError:
            self.reply(400, f"Invalid status code: {spec!r}\n")
            return
        headers: list[tuple[str, str]] = []
        body = ""
        if 300 <= code < 400 and code != 304:
            headers.append(("Location", "/redirect/1"))
        elif code == 418:
            body = TEAPOT
        elif code == 401:
            headers.append(("WWW-Authenticate", 'Basic realm="Fake Realm"'))
        self.read_body()
        self.reply(code, body, "text/plain; charset=utf-8", headers)

    def _delay(self, spec: str) -> None:
        try:
            seconds = float(spec.rstrip("s"))
            if not seconds >= 0:
                raise ValueError(spec)
        except ValueError:
            self.reply(400, f"invalid delay: {spec!r}\n")
            return
        if seconds > MAX_DELAY and self.flavor == "go":
            self.reply(400, f"delay must be at most {MAX_DELAY:g}s\n")
            return
        time.sleep(min(seconds, MAX_DELAY))
        self._json(200, self._request_info(with_body=True))


def choose_status(spec: str) -> int:
    """`503` -> 503; `200,500` -> either; `200:0.9,500:0.1` -> weighted (httpbin's syntax)."""
    codes: list[int] = []
    weights: list[float] = []
    for part in spec.split(","):
        code, _, weight = part.partition(":")
        value = int(code)
        if not 100 <= value <= 599:
            raise ValueError(code)
        codes.append(value)
        weights.append(float(weight) if weight else 1.0)
    return random.choices(codes, weights)[0]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m labs.embedded.apps.httpbin")
    parser.add_argument("--flavor", choices=("go", "python"), default="go",
                        help="go: mccutchen/go-httpbin (lists of header values); "
                             "python: kennethreitz/httpbin (strings)")
    add_port_option(parser)
    args = parser.parse_args(argv)
    handler = type("Httpbin", (HttpbinHandler,), {
        "flavor": args.flavor,
        "server_version": "go-httpbin" if args.flavor == "go" else "gunicorn/19.9.0",
    })
    serve(handler, args.port, f"httpbin ({args.flavor})")


if __name__ == "__main__":
    main()
