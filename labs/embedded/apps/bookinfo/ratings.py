"""Bookinfo `ratings` v1 twin (the real one is Node.js): in-memory ratings per product.

`GET /ratings/<id>` -> {"id":0,"ratings":{"Reviewer1":5,"Reviewer2":4}}; `POST /ratings/<id>`
stores the posted ratings object for that product, as v1 does; `/health`. Like the real service it
logs `METHOD URL` for every request.

    python -m labs.embedded.apps.bookinfo.ratings --port 9080
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import threading

from ..http import TwinHandler, add_port_option, serve

_RATINGS_PATH = re.compile(r"^/ratings/[0-9]*")
_added: dict[int, object] = {}
_lock = threading.Lock()


def ratings_for(product_id: int) -> dict[str, object]:
    with _lock:
        ratings = _added.get(product_id, {"Reviewer1": 5, "Reviewer2": 4})
    return {"id": product_id, "ratings": ratings}


def _product_id(url: str) -> int | None:
    try:
        return int(url.split("/")[-1])
    except ValueError:
        return None


class RatingsHandler(TwinHandler):
    def _log_request_line(self) -> None:
        sys.stdout.write(f"{self.command} {self.path}\n")
        sys.stdout.flush()

    def do_GET(self) -> None:
        self._log_request_line()
        if self.path == "/health":
            self.reply_json(200, {"status": "Ratings is healthy"}, compact=True)
        elif _RATINGS_PATH.match(self.path):
            product_id = _product_id(self.path)
            if product_id is None:
                self.reply_json(400, {"error": "please provide numeric product ID"}, compact=True)
            else:
                self.reply_json(200, ratings_for(product_id), compact=True)
        else:
            self.reply(404, "Page Not Found")

    def do_POST(self) -> None:
        self._log_request_line()
        body = self.read_body()
        if not _RATINGS_PATH.match(self.path):
            self.reply(404, "Page Not Found")
            return
        product_id = _product_id(self.path)
        if product_id is None:
            self.reply_json(400, {"error": "please provide numeric product ID"}, compact=True)
            return
        try:
            ratings = json.loads(body)
        except ValueError:
            self.reply_json(400, {"error": "please provide valid ratings JSON"}, compact=True)
            return
        with _lock:
            _added[product_id] = ratings
        self.reply_json(200, ratings_for(product_id), compact=True)

    def log_message(self, format: str, *args: object) -> None:
        """The real service logs only `METHOD URL` (written before dispatch)."""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m labs.embedded.apps.bookinfo.ratings")
    add_port_option(parser)
    serve(RatingsHandler, parser.parse_args(argv).port, "ratings")


if __name__ == "__main__":
    main()
