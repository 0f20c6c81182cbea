"""Bookinfo `details` twin (the real one is Ruby/WEBrick): `/details/<id>` and `/health`.

    python -m labs.embedded.apps.bookinfo.details --port 9080
"""

from __future__ import annotations

import argparse

from ..http import TwinHandler, add_port_option, serve


def book_details(product_id: int) -> dict[str, object]:
    """The fixed record the real service returns (keys in its order)."""
    return {
        "id": product_id,
        "author": "William Shakespeare",
        "year": 1595,
        "type": "paperback",
        "pages": 200,
        "publisher": "PublisherA",
        "language": "English",
        "ISBN-10": "1234567890",
        "ISBN-13": "123-1234567890",
    }


class DetailsHandler(TwinHandler):
    server_version = "WEBrick/1.8.1"

    def do_GET(self) -> None:
        path = self.url_path
        if path == "/health":
            self.reply_json(200, {"status": "Details is healthy"}, compact=True)
        elif path == "/details" or path.startswith("/details/"):
            try:
                product_id = int(path.rstrip("/").split("/")[-1])
            except ValueError:
                self.reply_json(400, {"error": "please provide numeric product id"}, compact=True)
                return
            self.reply_json(200, book_details(product_id), compact=True)
        else:
            self.reply(404, f"Not Found\n`{path}' not found.\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m labs.embedded.apps.bookinfo.details")
    add_port_option(parser)
    serve(DetailsHandler, parser.parse_args(argv).port, "details")


if __name__ == "__main__":
    main()
