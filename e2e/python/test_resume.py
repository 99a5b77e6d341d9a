"""Session resume end to end: A hears B (pymediasoup + aiortc); A's WebSocket dies with a
TCP reset; A keeps hearing B during the gap (media is not tied to the WebSocket); B
broadcasts three messages; A resumes on a new connection within 2 s and gets the three
broadcasts in order; B saw `peerReconnecting` and `peerReconnected` and no `peerLeft`;
the server's transport and consumer counts never change.

Run by the server's integration test `pymediasoup.rs` (a server with a resume grace):

    DSPEAK_URL=ws://… DSPEAK_METRICS=http://…/metrics python -m pytest -s -q test_resume.py
"""
import asyncio
import json
import os
import time
import urllib.request

import pytest

import dspeak_peer as dp
from dspeak_peer.scenarios.common import new_room, tone_heard

RESUME_WITHIN = 2.0


def counts(metrics_url: str) -> dict:
    """Sums of the server's live gauges, per name."""
    text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
    wanted = ("dspeak_peers", "dspeak_transports", "dspeak_consumers", "dspeak_producers")
    sums = {name: 0.0 for name in wanted}
    for line in text.splitlines():
        name = line.split("{")[0].split(" ")[0]
        if name in sums:
            sums[name] += float(line.rsplit(" ", 1)[1])
    return sums


async def scenario_resume(url: str, metrics_url: str) -> dict:
    room = new_room("resume")
    a, b = dp.Peer("A"), dp.Peer("B")
    figures: dict = {"room": room}
    try:
        pid, stats = await tone_heard(url, room, (b, "Bob"), (a, "Alice"))
        before = counts(metrics_url)
        figures["counts"] = before

        m = b.mark()
        reset_at = time.monotonic()
        a.reset_signaling()
        await b.wait_event("peerReconnecting", timeout=dp.EVENT_TIMEOUT, since=m, peerId=a.peer_id)
        # Media is not tied to the WebSocket: A goes on hearing B.
        base = stats.nonsilent_frames
        await stats.wait_until(lambda s: s.nonsilent_frames >= base + 10, dp.AUDIO_TIMEOUT,
                               "10 more non-silent frames while A's WebSocket is gone")
        figures["frames_during_gap"] = stats.nonsilent_frames - base
        for n in (1, 2, 3):
            sent = await b.request("broadcast", {"payload": {"n": n}})
            assert sent == {"delivered": 1}, sent
        assert counts(metrics_url) == before, "the detached session keeps everything"

        first = a.mark()
        resumed = await a.resume(url)
        figures["s_reset_to_resumed"] = round(time.monotonic() - reset_at, 3)
        assert figures["s_reset_to_resumed"] < RESUME_WITHIN, figures
        assert resumed["peerId"] == a.peer_id and resumed["room"] == room, resumed
        # The gap's events come back: the 3 broadcasts and whatever else the room sent
        # meanwhile (B's tone makes it the active speaker: audioLevels).
        assert resumed["replayed"] >= 3, resumed
        for n in (1, 2, 3):
            await a.wait_event("broadcast", timeout=dp.EVENT_TIMEOUT, since=first, payload={"n": n})
        replayed = [ev for ev in a.events[first:] if ev["type"] == "broadcast"]
        assert [ev["payload"]["n"] for ev in replayed] == [1, 2, 3], replayed
        gap = [ev for ev in a.events[first:] if ev.get("seq")][: resumed["replayed"]]
        seqs = [ev["seq"] for ev in gap]
        assert seqs == list(range(seqs[0], seqs[0] + len(gap))), seqs
        assert all(ev in gap for ev in replayed), (replayed, gap)
        await b.wait_event("peerReconnected", timeout=dp.EVENT_TIMEOUT, since=m, peerId=a.peer_id)
        assert b.find_event("peerLeft", since=m) is None, b.events[m:]

        # The same session: calls work, audio goes on, nothing was rebuilt.
        await a.request("getStats", {"id": a.consumer_for(pid).consumer_id})
        base = stats.nonsilent_frames
        await stats.wait_until(lambda s: s.nonsilent_frames >= base + 25, dp.AUDIO_TIMEOUT,
                               "25 more non-silent frames after resuming")
        assert counts(metrics_url) == before
        assert not a.errors and not b.errors, (a.errors, b.errors)
        return figures
    finally:
        # Without `leave`, a closed WebSocket would leave the sessions waiting for resume.
        await asyncio.gather(a.leave(), b.leave(), return_exceptions=True)
        await asyncio.gather(a.close(), b.close(), return_exceptions=True)


def test_a_reset_websocket_resumes_without_leaving():
    url, metrics = os.environ.get("DSPEAK_URL"), os.environ.get("DSPEAK_METRICS")
    if not url or not metrics:
        pytest.skip("needs DSPEAK_URL and DSPEAK_METRICS (run by server/tests/it/pymediasoup.rs)")
    figures = asyncio.run(asyncio.wait_for(scenario_resume(url, metrics), 60))
    print(f"\n[resume] figures: {json.dumps(figures)}")
