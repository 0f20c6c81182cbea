"""The board over HTTP on 127.0.0.1: `/` (the live page), `/api/board` (what the page polls:
the snapshot and its rendered grid) and `/board.json` (the snapshot, for scripts)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from labs.board.model import Board
from labs.board.refresh import Refresher
from labs.board.render import fragment, page

BOARD_KEY = web.AppKey("board", Board)
HOST = "127.0.0.1"


def make_app(board: Board, refresher: Refresher | None = None,
             interval: float = 30.0) -> web.Application:
    """The board's web app; with a `refresher`, checks re-run every `interval` seconds for as
    long as the app runs."""
    app = web.Application()
    app[BOARD_KEY] = board
    app.router.add_get("/", _page)
    app.router.add_get("/api/board", _api_board)
    app.router.add_get("/board.json", _board_json)
    if refresher is not None:
        app.cleanup_ctx.append(_refreshing(refresher, interval))
    return app


def _refreshing(refresher: Refresher, interval: float):  # type: ignore[no-untyped-def]
    async def context(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(refresher.run(interval))
        yield
        task.cancel()  # kills a worker still running
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return context


async def _page(request: web.Request) -> web.Response:
    board = request.app[BOARD_KEY]
    return web.Response(text=page(board.interval or 5.0), content_type="text/html")


async def _api_board(request: web.Request) -> web.Response:
    snapshot = request.app[BOARD_KEY].snapshot()
    return web.json_response({"board": snapshot, "html": fragment(snapshot)},
                             headers={"Cache-Control": "no-store"})


async def _board_json(request: web.Request) -> web.Response:
    return web.json_response(request.app[BOARD_KEY].snapshot(),
                             headers={"Cache-Control": "no-store"})


async def start(app: web.Application, port: int = 0) -> tuple[web.AppRunner, int]:
    """Serve `app` on 127.0.0.1:`port` (0: any free port); returns the runner and the port."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, HOST, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise OSError(f"cannot listen on {HOST}:{port} ({exc.strerror or exc}); choose another "
                      "port with --port") from None
    return runner, int(runner.addresses[0][1])
