"""(a) Two peers: produce/consume, pause/resume, the producer's peer disconnects."""
from __future__ import annotations

import asyncio
import time
from typing import Callable

from ..peer import Peer
from .common import AUDIO_TIMEOUT, EVENT_TIMEOUT, PAUSE_GRACE, PAUSE_WINDOW, new_room, wait_audio


async def scenario_two_peers(url: str, out: Callable[[str], None] = print) -> dict:
    """(a) produce/consume, pause/resume, producer's peer disconnects."""
    room = new_room("e2e-two")
    a, b = Peer("A"), Peer("B")
    figures: dict = {"room": room}
    try:
        await a.connect(url)
        await a.join(room, "Alice")
        pid = await a.produce_tone(440.0)

        await b.connect(url)
        join_b = await b.join(room, "Bob")
        assert any(p.get("peerId") == a.peer_id for p in join_b["peers"]), \
            f"B's join result does not list A ({a.peer_id}) in peers: {join_b['peers']}"
        seen_pid = await b.wait_producer_of(a.peer_id, timeout=EVENT_TIMEOUT)
        assert seen_pid == pid, f"B sees producer {seen_pid}, A produced {pid}"
        stats = await b.consume(pid)
        await wait_audio(b, stats, AUDIO_TIMEOUT, expected_freq=440.0)
        ci = b.consumer_for(pid)
        figures["ms_join_to_first_audio"] = round(b.ms_join_to_first_audio(stats), 1)
        figures["ms_resume_to_first_audio"] = round(
            (stats.first_nonsilent_at - ci.resumed_at) * 1000.0, 1)
        figures["freq_hz"] = round(stats.frequency, 1)
        out(f"[two-peers] B: first audio {figures['ms_join_to_first_audio']} ms after join "
            f"({figures['ms_resume_to_first_audio']} ms after resumeConsumer), "
            f"freq {figures['freq_hz']} Hz")

        # pause
        m = b.mark()
        await a.pause_producer(pid)
        await b.wait_event("producerPaused", timeout=EVENT_TIMEOUT, since=m, producerId=pid)
        await asyncio.sleep(PAUSE_GRACE)
        before = stats.nonsilent_frames
        await asyncio.sleep(PAUSE_WINDOW)
        leaked = stats.nonsilent_frames - before
        figures["frames_before_pause"] = before
        figures["nonsilent_while_paused"] = leaked
        out(f"[two-peers] paused: {leaked} non-silent frames in {PAUSE_WINDOW}s "
            f"(after {PAUSE_GRACE}s grace); total so far {before}")
        assert leaked == 0, (f"B still received {leaked} non-silent frames "
                             f"{PAUSE_GRACE}-{PAUSE_GRACE + PAUSE_WINDOW}s after "
                             f"producerPaused; {b.diag()}")

        # resume
        m = b.mark()
        base = stats.nonsilent_frames
        t0 = time.monotonic()
        await a.resume_producer(pid)
        await b.wait_event("producerResumed", timeout=EVENT_TIMEOUT, since=m, producerId=pid)
        try:
            await stats.wait_until(lambda s: s.nonsilent_frames >= base + 25, AUDIO_TIMEOUT,
                                   "25 more non-silent frames after resume")
        except (TimeoutError, AssertionError) as e:
            raise AssertionError(f"{e}; {b.diag()}") from None
        figures["ms_resume_to_audio"] = round((time.monotonic() - t0) * 1000.0, 1)
        out(f"[two-peers] resumed: +25 non-silent frames after "
            f"{figures['ms_resume_to_audio']} ms")

        # A disconnects
        m = b.mark()
        await a.disconnect()
        ev_p = await b.wait_event("producerClosed", timeout=EVENT_TIMEOUT, since=m,
                                  producerId=pid)
        ev_c = await b.wait_event("consumerClosed", timeout=EVENT_TIMEOUT, since=m,
                                  consumerId=ci.consumer_id)
        assert ev_c.get("producerId") in (None, pid), f"consumerClosed names {ev_c}"
        figures["frames"] = stats.frames
        figures["nonsilent_frames"] = stats.nonsilent_frames
        figures["b_events"] = [e["type"] for e in b.events]
        out(f"[two-peers] A disconnected -> B got producerClosed and consumerClosed; "
            f"B received {stats.frames} frames ({stats.nonsilent_frames} non-silent)")
        assert not b.errors, f"B errors: {b.errors}"
        del ev_p
        return figures
    finally:
        await asyncio.gather(a.close(), b.close(), return_exceptions=True)
