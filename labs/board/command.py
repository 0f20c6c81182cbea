"""`meshlab board`: the instructor's live board of students × labs."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import TYPE_CHECKING

from labs.board.refresh import DEFAULT_CHECK_TIMEOUT_S, DEFAULT_CONCURRENCY, Refresher
from labs.cluster.roster import RosterError, Student, current_student, load_roster

if TYPE_CHECKING:
    from labs.board.model import Board

BOARD_HELP = ("serve a live board of students x labs (passed checks, points, who is stuck "
              "where) on 127.0.0.1, re-checking every student's cluster in the background")


def configure_board(parser: argparse.ArgumentParser) -> None:
    """Add `meshlab board`'s options to its subcommand parser (`--name`/`--state-dir` select
    the one cluster shown without a roster)."""
    parser.add_argument("--roster", help="YAML or CSV file listing students and their clusters "
                        "(see README, 'Instructor board'); without it, one row: this cluster")
    parser.add_argument("--labs", help="comma-separated lab ids, e.g. day1.install,day1.mtls "
                        "(default: every lab with checks)")
    parser.add_argument("--port", type=int, default=8470,
                        help="port on 127.0.0.1 (default 8470; 0 picks a free one)")
    parser.add_argument("--interval", type=float, default=30.0,
                        help="seconds between re-checks of every student (default 30)")
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY,
                        help=f"students checked at once (default {DEFAULT_CONCURRENCY})")
    parser.add_argument("--check-timeout", type=float, default=DEFAULT_CHECK_TIMEOUT_S,
                        help="seconds a check may run before the board stops it (default "
                        f"{DEFAULT_CHECK_TIMEOUT_S:g}; behavioural checks get their retry "
                        "deadline on top)")
    parser.add_argument("--hidden", action="store_true",
                        help="also run the grader's hidden checks (grader/hidden)")


def cmd_board(args: argparse.Namespace) -> int:
    from labs.board.model import Board
    from labs.board.plan import PlanError, build_plan

    try:
        students = _students(args)
        labs = [lab.strip() for lab in (args.labs or "").split(",") if lab.strip()] or None
        plan = build_plan(labs, hidden=args.hidden)
        if args.interval <= 0 or args.concurrency < 1 or args.check_timeout <= 0:
            raise ValueError("--interval and --check-timeout must be positive and "
                             "--concurrency at least 1")
    except (RosterError, PlanError, ValueError) as exc:
        print(f"meshlab board: {exc}", file=sys.stderr)
        return 2
    board = Board(students, plan, interval=args.interval)
    refresher = Refresher(board, students, hidden=args.hidden, concurrency=args.concurrency,
                          check_timeout=args.check_timeout)
    try:
        asyncio.run(_serve(board, refresher, args.interval, args.port))
    except OSError as exc:
        print(f"meshlab board: {exc}", file=sys.stderr)
        return 1
    return 0


def _students(args: argparse.Namespace) -> list[Student]:
    if args.roster and (args.name or args.state_dir):
        raise RosterError("--roster lists the clusters; leave out --name and --state-dir")
    if args.roster:
        return load_roster(args.roster)
    return [current_student(args.name, args.state_dir)]


async def _serve(board: Board, refresher: Refresher, interval: float, port: int) -> None:
    from labs.board.server import HOST, make_app, start  # aiohttp: only when serving

    runner, bound = await start(make_app(board, refresher, interval), port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    print(f"board for {len(board.rows)} student(s), {len(board.plan)} lab(s): "
          f"http://{HOST}:{bound}/  (JSON: http://{HOST}:{bound}/board.json; Ctrl-C stops)",
          flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
