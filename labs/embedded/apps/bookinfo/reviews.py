"""Bookinfo `reviews` twin (the real one is Java on Open Liberty), versions v1, v2 and v3.

v1 does not call ratings (no stars); v2 calls `http://ratings:9080/ratings/<id>` and shows black
stars; v3 shows red ones. As in the real images the version only sets the defaults of
`ENABLE_RATINGS` and `STAR_COLOR`, which a pod's env can override, and the ratings call times out
after 10 s for black stars and 2.5 s otherwise (the fault-injection task depends on it). A failed
ratings call gives `"rating": {"error": "Ratings service is currently unavailable"}`.

    python -m labs.embedded.apps.bookinfo.reviews --version v2 --port 9080
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from typing import Any

from ...workload import POD_NAME_ENV
from ..http import TwinHandler, add_port_option, http_get, serve

VERSIONS = {"v1": (False, "black"), "v2": (True, "black"), "v3": (True, "red")}
RATINGS_UNAVAILABLE = "Ratings service is currently unavailable"
REVIEWS = (
    ("Reviewer1",
     "An extremely entertaining play by Shakespeare. The slapstick humour is refreshing!"),
    ("Reviewer2",
     "Absolutely fun and entertaining. The play lacks thematic depth when compared to other "
     "plays by Shakespeare."),
)
# The real service's list (LibertyRestEndpoint.headers_to_propagate), in its order.
PROPAGATED_HEADERS = (
    "x-request-id", "x-ot-span-context",
    "x-datadog-trace-id", "x-datadog-parent-id", "x-datadog-sampling-priority",
    "traceparent", "tracestate", "x-cloud-trace-context", "grpc-trace-bin",
    "x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled", "x-b3-flags",
    "sw8", "end-user", "user-agent", "cookie", "authorization", "jwt",
)


@dataclass(frozen=True)
class ReviewsConfig:
    ratings_enabled: bool
    star_color: str
    ratings_service: str  # e.g. http://ratings:9080/ratings
    podname: str
    clustername: str

    @property
    def ratings_timeout(self) -> float:
        return 10.0 if self.star_color == "black" else 2.5

    @classmethod
    def from_env(cls, version: str, env: dict[str, str]) -> ReviewsConfig:
        enabled, color = VERSIONS[version]
        if "ENABLE_RATINGS" in env:  # Java's Boolean.valueOf: only "true" (any case) is true
            enabled = env["ENABLE_RATINGS"].lower() == "true"
        domain = f".{env['SERVICES_DOMAIN']}" if "SERVICES_DOMAIN" in env else ""
        host = env.get("RATINGS_HOSTNAME", "ratings")
        port = env.get("RATINGS_SERVICE_PORT", "9080")
        return cls(
            ratings_enabled=enabled,
            star_color=env.get("STAR_COLOR", color),
            ratings_service=f"http://{host}{domain}:{port}/ratings",
            podname=env.get(POD_NAME_ENV) or env.get("HOSTNAME", "null"),
            clustername=env.get("CLUSTER_NAME", "null"),  # Java prints a missing value as null
        )


def reviews_json(config: ReviewsConfig, product_id: str, stars: tuple[int, int]) -> str:
    """The response body, built as the Java service concatenates it (its exact spacing)."""
    entries = []
    for (reviewer, text), star in zip(REVIEWS, stars, strict=True):
        entry = f'{{  "reviewer": "{reviewer}",  "text": "{text}"'
        if config.ratings_enabled:
            if star != -1:
                entry += f', "rating": {{"stars": {star}, "color": "{config.star_color}"}}'
            else:
                entry += f', "rating": {{"error": "{RATINGS_UNAVAILABLE}"}}'
        entries.append(entry + "}")
    return (f'{{"id": "{product_id}","podname": "{config.podname}",'
            f'"clustername": "{config.clustername}","reviews": [{",".join(entries)}]}}')


def fetch_stars(config: ReviewsConfig, product_id: str,
                incoming: dict[str, str]) -> tuple[int, int]:
    """Stars of Reviewer1/Reviewer2 from ratings; -1 for each when ratings did not answer 200."""
    headers = {"Accept": "application/json"}
    headers.update({name: incoming[name] for name in PROPAGATED_HEADERS if name in incoming})
    reply = http_get(f"{config.ratings_service}/{product_id}", headers, config.ratings_timeout)
    if reply is None or reply.status != 200:
        what = "no answer" if reply is None else f"status of {reply.status}"
        print(f"Error: unable to contact {config.ratings_service} got {what}", flush=True)
        return -1, -1
    try:
        ratings: Any = reply.json()
        table = ratings.get("ratings", {})
        return int(table.get("Reviewer1", -1)), int(table.get("Reviewer2", -1))
    except (ValueError, AttributeError, TypeError):
        print(f"Error: unreadable answer from {config.ratings_service}", flush=True)
        return -1, -1


def make_handler(config: ReviewsConfig) -> type[TwinHandler]:
    class ReviewsHandler(TwinHandler):
        def do_GET(self) -> None:
            path = self.url_path
            if path == "/health":
                self.reply(200, '{"status": "Reviews is healthy"}', "application/json")
                return
            parts = path.split("/")
            if len(parts) != 3 or parts[1] != "reviews" or not _is_java_int(parts[2]):
                self.reply(404, "Error 404: java.io.FileNotFoundException: SRVE0190E: "
                                f"File not found: {path}", "text/html")
                return
            product_id = str(int(parts[2]))
            stars = (-1, -1)
            if config.ratings_enabled:
                incoming = {name.lower(): value for name, value in self.headers.items()}
                stars = fetch_stars(config, product_id, incoming)
            self.reply(200, reviews_json(config, product_id, stars), "application/json")

    return ReviewsHandler


def _is_java_int(text: str) -> bool:
    try:
        return -(2**31) <= int(text) < 2**31 and text.strip() == text
    except ValueError:
        return False


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m labs.embedded.apps.bookinfo.reviews")
    parser.add_argument("--version", choices=sorted(VERSIONS), required=True,
                        help="which reviews image this is (sets ENABLE_RATINGS / STAR_COLOR)")
    add_port_option(parser)
    args = parser.parse_args(argv)
    config = ReviewsConfig.from_env(args.version, dict(os.environ))
    print(f"reviews {args.version}: ratings {'enabled' if config.ratings_enabled else 'disabled'}"
          f", star color {config.star_color}", file=sys.stdout, flush=True)
    serve(make_handler(config), args.port, f"reviews-{args.version}")


if __name__ == "__main__":
    main()
