"""Bookinfo `productpage` twin (the real one is Python/Flask).

Calls `http://details:9080/details/0` and `http://reviews:9080/reviews/0` (host names from
`DETAILS_HOSTNAME` / `REVIEWS_HOSTNAME` / `RATINGS_HOSTNAME` / `SERVICES_DOMAIN` as the real one)
through the pod's proxy with a 3 s timeout, trying reviews twice — the real app's deliberate
"bug" that the fault-injection task shows. It forwards the real app's header list, the B3
headers, and `end-user: <user>` once a user signed in (`POST /login`, session cookie).

    python -m labs.embedded.apps.bookinfo.productpage --port 9080
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qs, quote, unquote

from ..http import TwinHandler, add_port_option, http_get, serve
from .page import PRODUCT, index_page, product_page

TIMEOUT = 3.0  # seconds, per call, as the real app's requests.get(..., timeout=3.0)
REVIEWS_ATTEMPTS = 2
DETAILS_ERROR = "Sorry, product details are currently unavailable for this book."
REVIEWS_ERROR = "Sorry, product reviews are currently unavailable for this book."
RATINGS_ERROR = "Sorry, product ratings are currently unavailable for this book."
SESSION_COOKIE = "session"
B3_HEADERS = ("x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled", "x-b3-flags")
# The real app's getForwardHeaders list, in its order (B3 comes from its tracer, above).
FORWARDED_HEADERS = (
    "x-request-id", "x-ot-span-context",
    "x-datadog-trace-id", "x-datadog-parent-id", "x-datadog-sampling-priority",
    "traceparent", "tracestate", "x-cloud-trace-context", "grpc-trace-bin",
    "sw8", "user-agent", "cookie", "authorization", "jwt",
)


def service_url(name: str) -> str:
    domain = f".{os.environ['SERVICES_DOMAIN']}" if "SERVICES_DOMAIN" in os.environ else ""
    host = os.environ.get(f"{name.upper()}_HOSTNAME", name)
    return f"http://{host}{domain}:9080"


def forward_headers(incoming: dict[str, str], user: str) -> dict[str, str]:
    """Headers for the calls to details/reviews/ratings: tracing context, identity, session.

    Like the real app's tracer, incoming B3 headers pass unchanged and a request without a trace
    starts a fresh sampled one."""
    headers = {name: incoming[name] for name in B3_HEADERS if name in incoming}
    if "x-b3-traceid" not in headers:
        trace_id = secrets.token_hex(8)
        headers.update({"x-b3-traceid": trace_id, "x-b3-spanid": trace_id, "x-b3-sampled": "1"})
    if user:
        headers["end-user"] = user
    headers.update({name: incoming[name] for name in FORWARDED_HEADERS if name in incoming})
    return headers


def _get_json(url: str, headers: dict[str, str], error: str,
              attempts: int = 1) -> tuple[int, dict[str, Any]]:
    reply = None
    for _ in range(attempts):
        reply = http_get(url, headers, TIMEOUT)
        if reply is not None and reply.status == 200:
            try:
                return 200, json.loads(reply.body)
            except ValueError:
                break
    status = reply.status if reply is not None and reply.status != 200 else 500
    return status, {"error": error}


def get_details(product_id: str, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    return _get_json(f"{service_url('details')}/details/{product_id}", headers, DETAILS_ERROR)


def get_reviews(product_id: str, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    return _get_json(f"{service_url('reviews')}/reviews/{product_id}", headers, REVIEWS_ERROR,
                     attempts=REVIEWS_ATTEMPTS)


def get_ratings(product_id: str, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    return _get_json(f"{service_url('ratings')}/ratings/{product_id}", headers, RATINGS_ERROR)


API_CALLS = {"": get_details, "reviews": get_reviews, "ratings": get_ratings}


class ProductPageHandler(TwinHandler):
    server_version = "Werkzeug/3.0.6"

    @property
    def user(self) -> str:
        try:
            cookie = SimpleCookie(self.headers.get("Cookie", ""))
        except CookieError:
            return ""
        morsel = cookie.get(SESSION_COOKIE)
        return unquote(morsel.value) if morsel else ""

    def _incoming(self) -> dict[str, str]:
        return {name.lower(): value for name, value in self.headers.items()}

    def do_GET(self) -> None:
        path = self.url_path
        if path in ("/", "/index.html"):
            self.reply(200, index_page([(name, service_url(name))
                                        for name in ("details", "reviews", "ratings")]),
                       "text/html; charset=utf-8")
        elif path == "/health":
            self.reply(200, "Product page is healthy", "text/html; charset=utf-8")
        elif path == "/productpage":
            user = self.user
            headers = forward_headers(self._incoming(), user)
            details = get_details(str(PRODUCT["id"]), headers)
            reviews = get_reviews(str(PRODUCT["id"]), headers)
            self.reply(200, product_page(user, details, reviews), "text/html; charset=utf-8")
        elif path == "/login":
            self.reply(405, "Method Not Allowed", "text/html; charset=utf-8",
                       [("Allow", "POST, OPTIONS")])
        elif path == "/logout":
            self._redirect(f"{SESSION_COOKIE}=; Expires=Thu, 01 Jan 1970 00:00:00 GMT; "
                           "Max-Age=0; Path=/")
        elif path == "/api/v1/products":
            self.reply(200, json.dumps([PRODUCT]), "application/json")
        elif path.startswith("/api/v1/products/"):
            self._api(path.removeprefix("/api/v1/products/").split("/"))
        else:
            self._not_found()

    def do_POST(self) -> None:
        if self.url_path != "/login":
            self.read_body()
            self._not_found()
            return
        form = parse_qs(self.read_body().decode("utf-8", "replace"))
        user = (form.get("username") or [""])[0]
        self._redirect(f"{SESSION_COOKIE}={quote(user)}; HttpOnly; Path=/")

    def _api(self, parts: list[str]) -> None:
        if len(parts) > 2 or (len(parts) == 2 and parts[1] not in API_CALLS) or not parts[0]:
            self._not_found()
            return
        call = API_CALLS[parts[1] if len(parts) == 2 else ""]
        status, payload = call(parts[0], forward_headers(self._incoming(), self.user))
        self.reply(status, json.dumps(payload), "application/json")

    def _redirect(self, set_cookie: str) -> None:
        """Back where the user came from, as the real app's redirect(request.referrer)."""
        target = self.headers.get("Referer") or "/productpage"
        self.reply(302, f'<a href="{target}">{target}</a>', "text/html; charset=utf-8",
                   [("Location", target), ("Set-Cookie", set_cookie)])

    def _not_found(self) -> None:
        self.reply(404, "<!doctype html>\n<title>404 Not Found</title>\n<h1>Not Found</h1>\n"
                        "<p>The requested URL was not found on the server.</p>\n",
                   "text/html; charset=utf-8")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m labs.embedded.apps.bookinfo.productpage")
    add_port_option(parser)
    serve(ProductPageHandler, parser.parse_args(argv).port, "productpage")


if __name__ == "__main__":
    main()
