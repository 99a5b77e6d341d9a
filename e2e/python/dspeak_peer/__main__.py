"""CLI: `python -m dspeak_peer --url ws://127.0.0.1:8080 scenario two-peers|three-peers`,
and four helpers: `tone` (produce a tone into a room), `listen` (consume every producer
of a room and print what was heard), `talk` (produce a tone and consume everyone else
in the room, like a person in a call; the server's ops tests use it) and `cluster-talk`
(the same on a cluster: follows `wrongNode`, starts over through the next `--url` when its
node goes away; the server's cluster test uses it)."""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from typing import List, Optional

from .cluster import cluster_talk
from .peer import DEFAULT_URL, Peer
from .scenarios import SCENARIOS


async def _cli_tone(url: str, room: str, freq: float, duration: float) -> None:
    p = Peer("tone")
    try:
        await p.connect(url)
        await p.join(room, f"tone-{freq:.0f}Hz")
        pid = await p.produce_tone(freq)
        print(f"producing {freq} Hz as {pid} in room {room} for {duration}s")
        await asyncio.sleep(duration)
        print(json.dumps(p.counters(), default=str))
    finally:
        await p.close()


async def _consume_everyone(p: Peer, joined: dict, seen: int, duration: float) -> None:
    """Consumes the room's producers, and those added since event `seen`, for `duration`
    seconds."""
    for pr in joined["producers"]:
        await p.consume(pr["producerId"])
    end = time.monotonic() + duration
    while time.monotonic() < end:
        try:
            ev = await p.wait_event("producerAdded", timeout=min(1.0, end - time.monotonic()),
                                    since=seen)
            seen = p.events.index(ev) + 1
            await p.consume(ev["producerId"])
        except TimeoutError:
            pass


async def _cli_listen(url: str, room: str, duration: float) -> None:
    p = Peer("listen")
    try:
        await p.connect(url)
        seen = p.mark()
        res = await p.join(room, "listener")
        await _consume_everyone(p, res, seen, duration)
        print(json.dumps(p.counters(), default=str, indent=1))
    finally:
        await p.close()


async def _cli_talk(url: str, room: str, freq: float, duration: float) -> None:
    p = Peer("talk")
    try:
        await p.connect(url)
        seen = p.mark()
        res = await p.join(room, f"talk-{freq:.0f}Hz")
        await p.produce_tone(freq)
        await _consume_everyone(p, res, seen, duration)
        print(json.dumps(p.counters(), default=str))
    finally:
        await p.close()


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dspeak_peer", description="dspeak e2e peer (pymediasoup + aiortc)")
    ap.add_argument("--url", default=os.environ.get("DSPEAK_URL", DEFAULT_URL))
    ap.add_argument("-v", "--verbose", action="count", default=0)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sc = sub.add_parser("scenario")
    sc.add_argument("name", choices=sorted(SCENARIOS))
    sc.add_argument("--timeout", type=float, default=60.0)
    t = sub.add_parser("tone")
    t.add_argument("--room", required=True)
    t.add_argument("--freq", type=float, default=440.0)
    t.add_argument("--duration", type=float, default=30.0)
    li = sub.add_parser("listen")
    li.add_argument("--room", required=True)
    li.add_argument("--duration", type=float, default=30.0)
    tk = sub.add_parser("talk")
    tk.add_argument("--room", required=True)
    tk.add_argument("--freq", type=float, default=440.0)
    tk.add_argument("--duration", type=float, default=30.0)
    ct = sub.add_parser("cluster-talk")
    ct.add_argument("--room", required=True)
    ct.add_argument("--freq", type=float, default=440.0)
    ct.add_argument("--duration", type=float, default=30.0)
    ct.add_argument("--also", action="append", default=[],
                    help="another node's URL, tried in turn after --url when a node goes away")
    args = ap.parse_args(argv)
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.cmd == "scenario":
        figures = asyncio.run(asyncio.wait_for(SCENARIOS[args.name](args.url), args.timeout))
        print(json.dumps(figures, default=str))
    elif args.cmd == "tone":
        asyncio.run(_cli_tone(args.url, args.room, args.freq, args.duration))
    elif args.cmd == "cluster-talk":
        asyncio.run(cluster_talk([args.url, *args.also], args.room, args.freq, args.duration))
    elif args.cmd == "talk":
        asyncio.run(_cli_talk(args.url, args.room, args.freq, args.duration))
    else:
        asyncio.run(_cli_listen(args.url, args.room, args.duration))
    return 0


if __name__ == "__main__":
    sys.exit(main())
