"""End-to-end tests against a running dspeak server, with unmodified pymediasoup + aiortc.

    DSPEAK_URL=ws://127.0.0.1:8080 /tmp/pyvenv/bin/python -m pytest -s -q e2e/python/test_e2e.py

Server-side counters are checked by the Rust tests; these only look at what a client sees.
Every step has its own timeout (see the dspeak_peer package), and each test has an overall cap, so
a broken server fails fast with a message rather than hanging.
"""
import asyncio
import json
import os

import pytest

import dspeak_peer as dp

URL = os.environ.get("DSPEAK_URL", dp.DEFAULT_URL)
TEST_TIMEOUT = float(os.environ.get("DSPEAK_TEST_TIMEOUT", "60"))


def run(coro):
    try:
        return asyncio.run(asyncio.wait_for(coro, TEST_TIMEOUT))
    except asyncio.TimeoutError:
        pytest.fail(f"test exceeded {TEST_TIMEOUT}s overall against {URL}")


def report(name, figures):
    print(f"\n[{name}] figures: {json.dumps(figures, default=str)}")


def test_signaling_basics():
    """welcome, ping, getRouterRtpCapabilities, JSON-RPC errors, peerJoined/peerLeft."""
    async def main():
        a, b = dp.Peer("A"), dp.Peer("B")
        try:
            welcome = await a.connect(URL)
            for key in ("sessionId", "server", "version"):
                assert key in welcome, f"welcome lacks {key!r}: {welcome}"
            pong = await a.ping()
            assert pong.get("type") == "pong" and "timestamp" in pong, pong
            caps = await a.request("getRouterRtpCapabilities", {})
            assert any(c.get("mimeType", "").lower() == "audio/opus"
                       for c in caps.get("codecs", [])), caps
            with pytest.raises(dp.RpcError) as ei:
                await a.request("noSuchMethod", {})
            assert isinstance(ei.value.code, int) and ei.value.message, ei.value

            room = dp.new_room("e2e-basics")
            ja = await a.join(room, "Alice")
            assert ja["peers"] == [] or all(p["peerId"] != ja["peerId"] for p in ja["peers"])
            await b.connect(URL)
            m = a.mark()
            jb = await b.join(room, "Bob")
            assert any(p["peerId"] == a.peer_id and p.get("displayName") == "Alice"
                       for p in jb["peers"]), jb["peers"]
            ev = await a.wait_event("peerJoined", timeout=dp.EVENT_TIMEOUT, since=m,
                                    peerId=b.peer_id)
            assert ev.get("displayName") == "Bob", ev
            m = a.mark()
            assert await b.leave() == {}
            await a.wait_event("peerLeft", timeout=dp.EVENT_TIMEOUT, since=m, peerId=b.peer_id)
            report("basics", {"welcome": welcome, "a_events": [e["type"] for e in a.events]})
        finally:
            await asyncio.gather(a.close(), b.close(), return_exceptions=True)

    run(main())


def test_two_peers_produce_consume_pause_resume_disconnect():
    """(a) A produces 440 Hz; B consumes it (audio within ~5 s of joining); pause stops
    B's audio, resume restarts it; A's WebSocket closing gives B producerClosed and
    consumerClosed."""
    report("two-peers", run(dp.scenario_two_peers(URL)))


def test_three_peers_each_consume_the_other_two():
    """(b) A/B/C produce 440/660/880 Hz; each consumes the other two and hears both, each
    at the right frequency."""
    report("three-peers", run(dp.scenario_three_peers(URL)))
