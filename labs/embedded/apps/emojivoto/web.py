"""emojivoto `web` twin (`docker.l5d.io/buoyantio/emojivoto-web`): the HTTP front end on
WEB_PORT, calling emoji-svc (EMOJISVC_HOST) and voting-svc (VOTINGSVC_HOST) over gRPC through
the pod's proxy, as BuoyantIO/emojivoto `emojivoto-web/web/web.go`:
`/api/list` (the emoji), `/api/vote?choice=:joy:` (200 and no body; 400 for a missing or unknown
choice; 500 with `{"error":"rpc error: code = Unknown desc = ERROR"}` when voting fails, as for
:doughnut:), `/api/leaderboard` (votes as strings, most first), and the index page for every
other path. The page's script (`/js`) is the twin's own few lines, not upstream's React bundle.

The image's other entrypoint, `emojivoto-vote-bot`, is the vote bot (vote_bot.py): the embedded
runtime does not run a container's `command`, so this twin tells the two apart by environment —
WEB_HOST without WEB_PORT is the bot (upstream's vote-bot manifest sets only WEB_HOST).

    WEB_PORT=8080 EMOJISVC_HOST=emoji-svc.emojivoto:8080 VOTINGSVC_HOST=voting-svc.emojivoto:8080 \
        python -m labs.embedded.apps.emojivoto.web
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from ..http import TwinHandler, serve
from .api import (
    EMOJI_SERVICE,
    VOTE_METHODS,
    VOTING_SERVICE,
    dial,
    emoji_of,
    field_string,
    fields,
    go_status,
    pod_port,
    string_field,
    unary,
)
from .metrics import go_log

INDEX = """
\t<!DOCTYPE html>
\t<html>
\t\t<head>
\t\t\t<meta charset="UTF-8">
\t\t\t<title>Emoji Vote</title>
\t\t\t<link rel="icon" href="/img/favicon.ico">
\t\t</head>
\t\t<body>
\t\t\t<div id="motd" class="motd">{motd}</div>
\t\t\t<div id="main" class="main"></div>
\t\t</body>
\t\t\t<script type="text/javascript" src="/js" async></script>
\t</html>"""
# The twin's page script: the emoji to vote for, and the leaderboard (upstream ships a React
# bundle built from emojivoto-web/webapp, which the twin does not carry).
SCRIPT = """(async () => {
  const main = document.getElementById("main");
  const board = await (await fetch("/api/leaderboard")).json();
  const list = await (await fetch("/api/list")).json();
  main.innerHTML = "<h1>EMOJI VOTE</h1><p>Tap to vote for your favorite emoji below</p>" +
    list.map(e => `<button title="${e.shortcode}" data-c="${e.shortcode}">${e.unicode}</button>`)
      .join("") + "<h2>Leaderboard</h2>" +
    board.map(e => `<div>${e.unicode} ${e.votes}</div>`).join("");
  main.onclick = async (ev) => {
    const choice = ev.target.dataset && ev.target.dataset.c;
    if (!choice) return;
    const r = await fetch("/api/vote?choice=" + encodeURIComponent(choice));
    alert(r.ok ? "Voted for " + choice : "Vote failed: " + (await r.text()));
  };
})();
"""


class Clients:
    """The two gRPC channels web.go opens at start."""

    def __init__(self) -> None:
        import grpc

        self.error = grpc.RpcError
        hosts = {name: os.environ.get(name, "") for name in
                 ("WEB_PORT", "EMOJISVC_HOST", "VOTINGSVC_HOST", "INDEX_BUNDLE")}
        if not all(hosts[name] for name in ("WEB_PORT", "EMOJISVC_HOST", "VOTINGSVC_HOST")):
            raise SystemExit(
                f"WEB_PORT (currently [{hosts['WEB_PORT']}]) EMOJISVC_HOST (currently "
                f"[{hosts['EMOJISVC_HOST']}]) and VOTINGSVC_HOST (currently "
                f"[{hosts['VOTINGSVC_HOST']}]) INDEX_BUNDLE (currently [{hosts['INDEX_BUNDLE']}]) "
                "environment variables must me set.")
        for name in ("VOTINGSVC_HOST", "EMOJISVC_HOST"):
            go_log(f"Connecting to [{hosts[name]}]")
        self.emoji = dial(hosts["EMOJISVC_HOST"])
        self.voting = dial(hosts["VOTINGSVC_HOST"])

    def list_all(self) -> list[dict[str, str]]:
        reply = unary(self.emoji, EMOJI_SERVICE, "ListAll")(b"")
        return [emoji_of(value) for number, value in fields(reply)
                if number == 1 and isinstance(value, bytes)]

    def find(self, shortcode: str) -> dict[str, str] | None:
        request = field_string(1, shortcode)  # FindByShortcodeRequest {Shortcode = 1}
        reply = unary(self.emoji, EMOJI_SERVICE, "FindByShortcode")(request)
        found = [value for number, value in fields(reply) if number == 1]
        return emoji_of(found[0]) if found and isinstance(found[0], bytes) else None

    def results(self) -> list[tuple[str, int]]:
        reply = unary(self.voting, VOTING_SERVICE, "Results")(b"")
        out = []
        for number, value in fields(reply):
            if number == 1 and isinstance(value, bytes):
                votes = next((v for n, v in fields(value) if n == 2 and isinstance(v, int)), 0)
                out.append((string_field(value, 1), votes))
        return out

    def vote(self, shortcode: str) -> None:
        method = VOTE_METHODS.get(shortcode)
        if method is not None:  # web.go's switch: a known emoji without a case is not voted
            unary(self.voting, VOTING_SERVICE, method)(b"")


CLIENTS: Clients | None = None


class WebHandler(TwinHandler):
    def _json(self, status: int, payload: Any) -> None:
        """writeJsonBody: Go's json.Encoder (compact, UTF-8, a newline)."""
        text = json.dumps(payload, ensure_ascii=False, separators=(",", ":")) + "\n"
        self.reply(status, text.encode(), "application/json; charset=UTF-8")

    def _error(self, status: int, message: str) -> None:
        go_log(f"Error serving request [{self.command} {self.path}]: {message}")
        self._json(status, {"error": message})

    def do_GET(self) -> None:
        self.read_body()
        assert CLIENTS is not None
        path = self.url_path
        try:
            if path == "/api/list":
                self._json(200, [{"shortcode": e["shortcode"], "unicode": e["unicode"]}
                                 for e in CLIENTS.list_all()])
            elif path == "/api/vote":
                self._vote((self.query.get("choice") or [""])[0])
            elif path == "/api/leaderboard":
                self._leaderboard()
            elif path == "/js":
                self.reply(200, SCRIPT, "text/javascript")
            elif path == "/img/favicon.ico":
                self.reply(404, "404 page not found\n")
            else:
                motd = os.environ.get("MESSAGE_OF_THE_DAY", "")
                self.reply(200, INDEX.format(motd=motd), "text/html")
        except CLIENTS.error as error:  # type: ignore[misc]
            self._error(500, go_status(error))

    do_POST = do_GET

    def _vote(self, choice: str) -> None:
        assert CLIENTS is not None
        if not choice:
            self._error(400, f"Emoji choice [{choice}] is mandatory")
            return
        if CLIENTS.find(choice) is None:
            self._error(400, f"Choosen emoji shortcode [{choice}] doesnt exist")
            return
        CLIENTS.vote(choice)
        self.reply(200, b"", "text/plain; charset=utf-8")

    def _leaderboard(self) -> None:
        assert CLIENTS is not None
        board = []
        for shortcode, votes in CLIENTS.results():
            emoji = CLIENTS.find(shortcode) or {"shortcode": "", "unicode": ""}
            board.append({"shortcode": emoji["shortcode"], "unicode": emoji["unicode"],
                          "votes": str(votes)})
        self._json(200, board)


def main() -> None:
    global CLIENTS
    if os.environ.get("WEB_HOST") and not os.environ.get("WEB_PORT"):
        from . import vote_bot

        sys.exit(vote_bot.main())
    CLIENTS = Clients()
    declared, port = pod_port("WEB_PORT")
    go_log(f"Starting web server on WEB_PORT=[{declared}] and MESSAGE_OF_THE_DAY="
           f"[{os.environ.get('MESSAGE_OF_THE_DAY', '')}]")
    serve(WebHandler, [port], "web")


if __name__ == "__main__":
    main()
