"""A person in a call on a dspeak cluster (`python -m dspeak_peer cluster-talk`): joins a
room through one node, following `wrongNode` to the node that hosts the room (at most 3
hops, as the TS SDK does), produces a tone and consumes everyone else. When its node goes
away it starts over through the next URL it was given. It prints one JSON line per step
(`joined`, `heard`, `lost`), which the server's cluster test reads as they come."""
from __future__ import annotations

import asyncio
import json
import time
from typing import List, Optional, Set, Tuple

from .peer import Peer
from .rpc import RpcError, SignalingClosed

WRONG_NODE = 1012
MAX_REDIRECTS = 3


def _say(**fields) -> None:
    print(json.dumps({"t": round(time.time(), 3), **fields}), flush=True)


async def join_following(name: str, url: str, room: str) -> Tuple[Peer, str, int]:
    """Connects to `url` and joins `room`, following `wrongNode` answers; returns the
    joined peer, the URL of the node it joined on and how many redirects it followed."""
    for hops in range(MAX_REDIRECTS + 1):
        p = Peer(name)
        try:
            await p.connect(url)
            await p.join(room, name)
            return p, url, hops
        except RpcError as e:
            await p.close()
            if e.code != WRONG_NODE or hops == MAX_REDIRECTS:
                raise
            url = e.data["url"]
        except BaseException:
            await p.close()
            raise
    raise AssertionError("unreachable")


async def _one_session(p: Peer, freq: float, end: float) -> None:
    """Produces, consumes everyone (also those who come later) and reports each
    frequency heard, until the connection is lost or `end`."""
    seen = 0
    await p.produce_tone(freq)
    for pr in (p.join_result or {}).get("producers", []):
        await p.consume(pr["producerId"])
    heard: Set[int] = set()
    while time.monotonic() < end:
        if p.rpc.closed.is_set():
            raise SignalingClosed(f"WebSocket {p.rpc.close_reason}")
        for ev in p.events[seen:]:
            seen += 1
            if ev.get("type") == "producerAdded":
                await p.consume(ev["producerId"])
        for ci in list(p.consumers.values()):
            f = ci.stats.frequency
            if f is not None and not ci.server_closed and round(f) not in heard:
                heard.add(round(f))
                _say(event="heard", freq=round(f), producerId=ci.producer_id)
        await asyncio.sleep(0.1)


async def cluster_talk(urls: List[str], room: str, freq: float, duration: float) -> None:
    end = time.monotonic() + duration
    name = f"talk-{freq:.0f}Hz"
    attempt = 0
    while time.monotonic() < end:
        url = urls[attempt % len(urls)]
        attempt += 1
        p: Optional[Peer] = None
        try:
            p, node, hops = await join_following(name, url, room)
            _say(event="joined", node=node, hops=hops, peerId=p.peer_id)
            await _one_session(p, freq, end)
        except (RpcError, SignalingClosed, TimeoutError, OSError, AssertionError) as e:
            _say(event="lost", via=url, error=str(e)[:300])
            await asyncio.sleep(0.5)
        finally:
            if p is not None:
                await p.close()
