"""Server mute end to end: the app's backend mutes a pymediasoup + aiortc peer through the
admin API; the listener's audio stops, and the muted peer cannot unmute itself.

Run by the server's integration test `pymediasoup.rs`, which starts a server with an auth
secret and passes the tokens it minted:

    DSPEAK_URL=ws://… DSPEAK_ROOM=… DSPEAK_TOKEN_A=… DSPEAK_TOKEN_B=… DSPEAK_ADMIN_TOKEN=… \\
        python -m pytest -s -q test_server_mute.py
"""
import asyncio
import json
import os
import time

import pytest

import dspeak_peer as dp
from dspeak_peer.scenarios.common import PAUSE_GRACE, PAUSE_WINDOW, wait_audio

ENV = ("DSPEAK_URL", "DSPEAK_ROOM", "DSPEAK_TOKEN_A", "DSPEAK_TOKEN_B", "DSPEAK_ADMIN_TOKEN")
FORBIDDEN = 1004


async def silent_for(stats: dp.AudioStats) -> int:
    """Non-silent frames received in PAUSE_WINDOW seconds, after PAUSE_GRACE."""
    await asyncio.sleep(PAUSE_GRACE)
    before = stats.nonsilent_frames
    await asyncio.sleep(PAUSE_WINDOW)
    return stats.nonsilent_frames - before


async def scenario_server_mute(url: str, room: str, token_a: str, token_b: str, admin_token: str) -> dict:
    a, b, admin = dp.Peer("A"), dp.Peer("B"), dp.JsonRpcClient("admin")
    figures: dict = {"room": room}
    try:
        await a.connect(url)
        await a.join(room, "Alice", token=token_a)
        pid = await a.produce_tone(440.0)
        await b.connect(url)
        await b.join(room, "Bob", token=token_b)
        stats = await b.consume(pid)
        await wait_audio(b, stats, dp.AUDIO_TIMEOUT, expected_freq=440.0)

        # The backend mutes A: B is told, and hears nothing although A's tone still flows.
        await admin.connect(url)
        mute = {"token": admin_token, "room": room, "peerId": a.peer_id}
        m = b.mark()
        await admin.request("adminMutePeer", {**mute, "muted": True})
        await b.wait_event("peerUpdated", timeout=dp.EVENT_TIMEOUT, since=m, peerId=a.peer_id,
                           serverMuted=True)
        await b.wait_event("producerPaused", timeout=dp.EVENT_TIMEOUT, since=m, producerId=pid)
        leaked = await silent_for(stats)
        figures["nonsilent_while_server_muted"] = leaked
        assert leaked == 0, f"B still heard {leaked} non-silent frames while A was server-muted"

        # A cannot unmute itself.
        with pytest.raises(dp.RpcError) as refused:
            await a.request("resumeProducer", {"producerId": pid})
        assert refused.value.code == FORBIDDEN, refused.value
        leaked = await silent_for(stats)
        figures["nonsilent_after_refused_resume"] = leaked
        assert leaked == 0, f"B heard {leaked} non-silent frames after A's refused resume"

        # Unmuted by the backend, A may resume, and B hears it again.
        await admin.request("adminMutePeer", {**mute, "muted": False})
        base = stats.nonsilent_frames
        t0 = time.monotonic()
        await a.resume_producer(pid)
        await stats.wait_until(lambda s: s.nonsilent_frames >= base + 25, dp.AUDIO_TIMEOUT,
                               "25 more non-silent frames after the unmute")
        figures["ms_resume_to_audio"] = round((time.monotonic() - t0) * 1000.0, 1)
        assert not b.errors, f"B errors: {b.errors}"
        return figures
    finally:
        await asyncio.gather(a.close(), b.close(), admin.close(), return_exceptions=True)


def test_a_server_muted_peer_is_silent_and_cannot_unmute_itself():
    if not all(os.environ.get(name) for name in ENV):
        pytest.skip(f"needs {', '.join(ENV)} (run by server/tests/it/pymediasoup.rs)")
    env = [os.environ[name] for name in ENV]
    figures = asyncio.run(asyncio.wait_for(scenario_server_mute(*env), 60))
    print(f"\n[server-mute] figures: {json.dumps(figures)}")
