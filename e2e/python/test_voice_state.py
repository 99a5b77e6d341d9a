"""Voice state end to end: a pymediasoup + aiortc peer deafens itself; the server stops
sending it audio (no packet in 2 s, by the engine's count and by the frames aiortc
decodes), the room sees `voiceStateUpdated`, and audio returns once it undeafens.
Self-mute then pauses the speaker's producer as `pauseProducer` does.

Run by the server's integration test `pymediasoup.rs`:

    DSPEAK_URL=ws://… python -m pytest -s -q test_voice_state.py
"""
import asyncio
import time

import pytest

import dspeak_peer as dp
from dspeak_peer.scenarios.common import PAUSE_GRACE, new_room, run_against_server, tone_heard

FORBIDDEN = 1004
DEAF_WINDOW = 2.0


async def packets_sent(peer: dp.Peer, consumer_id: str) -> int:
    stats = await peer.request("getStats", {"id": consumer_id})
    return stats["packetsSent"]


async def scenario_voice_state(url: str) -> dict:
    room = new_room("voice-state")
    a, b = dp.Peer("A"), dp.Peer("B")
    figures: dict = {"room": room}
    try:
        pid, stats = await tone_heard(url, room, (a, "Alice"), (b, "Bob"))
        cid = b.consumer_for(pid).consumer_id

        # B deafens: everyone is told, and nothing reaches B although A still sends.
        m = a.mark()
        state = await b.request("setVoiceState", {"selfDeaf": True})
        assert state == {"selfMute": False, "selfDeaf": True, "serverMuted": False}, state
        await a.wait_event("voiceStateUpdated", timeout=dp.EVENT_TIMEOUT, since=m,
                           peerId=b.peer_id, selfDeaf=True, selfMute=False)
        await asyncio.sleep(PAUSE_GRACE)
        frames, sent = stats.frames, await packets_sent(b, cid)
        await asyncio.sleep(DEAF_WINDOW)
        figures["frames_while_deaf"] = stats.frames - frames
        figures["packets_sent_while_deaf"] = await packets_sent(b, cid) - sent
        assert figures["packets_sent_while_deaf"] == 0, figures
        assert figures["frames_while_deaf"] == 0, figures

        # B's own resume while deaf changes nothing on the wire.
        await b.request("resumeConsumer", {"consumerId": cid})
        sent = await packets_sent(b, cid)
        await asyncio.sleep(0.5)
        assert await packets_sent(b, cid) == sent, "a resume while deafened sent audio"

        # Undeafened, B hears A again.
        base = stats.nonsilent_frames
        t0 = time.monotonic()
        await b.request("setVoiceState", {"selfDeaf": False})
        await stats.wait_until(lambda s: s.nonsilent_frames >= base + 25, dp.AUDIO_TIMEOUT,
                               "25 more non-silent frames after undeafening")
        figures["ms_undeafen_to_audio"] = round((time.monotonic() - t0) * 1000.0, 1)

        # A mutes itself: its producer is paused (announced), it cannot resume it
        # directly, and unmuting brings the audio back.
        m = b.mark()
        await a.request("setVoiceState", {"selfMute": True})
        await b.wait_event("producerPaused", timeout=dp.EVENT_TIMEOUT, since=m, producerId=pid)
        await b.wait_event("voiceStateUpdated", timeout=dp.EVENT_TIMEOUT, since=m,
                           peerId=a.peer_id, selfMute=True)
        with pytest.raises(dp.RpcError) as refused:
            await a.request("resumeProducer", {"producerId": pid})
        assert refused.value.code == FORBIDDEN, refused.value
        await a.request("setVoiceState", {"selfMute": False})
        await b.wait_event("producerResumed", timeout=dp.EVENT_TIMEOUT, since=m, producerId=pid)
        base = stats.nonsilent_frames
        await stats.wait_until(lambda s: s.nonsilent_frames >= base + 25, dp.AUDIO_TIMEOUT,
                               "25 more non-silent frames after unmuting")
        assert not b.errors, f"B errors: {b.errors}"
        return figures
    finally:
        await asyncio.gather(a.close(), b.close(), return_exceptions=True)


def test_a_deafened_peer_receives_nothing_until_undeafened():
    run_against_server("voice-state", scenario_voice_state)
