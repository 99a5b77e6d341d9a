"""Active speaker and audio levels end to end, with speech-like signals.

Two pymediasoup + aiortc peers produce (neither paused): A speaks in bursts (~250 ms
at -9 dBov, ~100 ms at -43 dBov, repeated), B sends digital silence; C only listens.
aiortc sends RFC 6464 levels once `ssrc-audio-level` is negotiated (with the voice-
activity bit always off), so the server's detector has only the levels to go by.

1. Every peer gets `activeSpeaker` naming A within 1.5 s; `audioLevels` list A and
   never the silent B.
2. A is paused (server side; its client keeps sending loud audio) and B starts
   speaking: every peer gets `activeSpeaker` naming B within 2 s.
3. A resumes, loud; B speaks quietly (-35 dBov bursts): an `audioLevels` lists both,
   A above B.

Run by the server's integration test `pymediasoup.rs`:

    DSPEAK_URL=ws://… python -m pytest -s -q test_speaker.py
"""
import asyncio
import time

import dspeak_peer as dp
from dspeak_peer.scenarios.common import new_room, run_against_server

FIRST_SPEAKER_WITHIN = 1.5
SWITCH_WITHIN = 2.0


async def wait_all(peers, type_: str, timeout: float, since: dict, **fields) -> float:
    """Waits until every peer got the event; returns the seconds the last one took."""
    t0 = time.monotonic()
    await asyncio.gather(*(p.wait_event(type_, timeout=timeout, since=since[p.name], **fields)
                           for p in peers))
    return time.monotonic() - t0


def levels_events(peer: dp.Peer, since: int) -> list:
    return [e["levels"] for e in peer.events[since:] if e.get("type") == "audioLevels"]


async def scenario_speaker(url: str) -> dict:
    room = new_room("speaker")
    a, b, c = dp.Peer("A"), dp.Peer("B"), dp.Peer("C")
    peers = (a, b, c)
    figures: dict = {"room": room}
    try:
        for p in peers:
            await p.connect(url)
            await p.join(room, p.name)
        caps = a.join_result["routerRtpCapabilities"]["headerExtensions"]
        assert any(e["uri"] == "urn:ietf:params:rtp-hdrext:ssrc-audio-level" for e in caps), caps

        silent = dp.SpeechTrack(freq=550.0)
        silent.muted = True
        b_pid = await b.produce_speech(silent)
        since = {p.name: p.mark() for p in peers}
        a_pid = await a.produce_speech(dp.SpeechTrack(freq=330.0))
        t0 = time.monotonic()

        # 1. The speaking peer is named, at every peer (the speaker too).
        await wait_all(peers, "activeSpeaker", FIRST_SPEAKER_WITHIN, since,
                       peerId=a.peer_id, producerId=a_pid)
        figures["s_to_first_speaker"] = round(time.monotonic() - t0, 3)
        assert figures["s_to_first_speaker"] <= FIRST_SPEAKER_WITHIN, figures
        assert c.find_event("activeSpeaker", since["C"], producerId=b_pid) is None, \
            "the silent peer was never the speaker"
        await asyncio.sleep(1.0)
        levels = levels_events(c, since["C"])
        assert levels, "audioLevels while A speaks"
        listed = {lv["producerId"] for ls in levels for lv in ls}
        assert a_pid in listed and b_pid not in listed, levels
        a_levels = [lv["level"] for ls in levels for lv in ls if lv["producerId"] == a_pid]
        figures["a_level_dbov"] = [min(a_levels), max(a_levels)]
        assert all(-50.0 < lv < -5.0 for lv in a_levels), a_levels
        # At most one every 200 ms (counted, since arrival times bunch under load).
        elapsed = time.monotonic() - t0
        figures["audio_levels_per_s"] = round(len(levels) / elapsed, 2)
        assert len(levels) <= elapsed / 0.2 + 1, (len(levels), elapsed)

        # 2. A is paused (its client still sends loud audio), B starts speaking.
        since = {p.name: p.mark() for p in peers}
        await a.request("pauseProducer", {"producerId": a_pid})
        b.tracks[b_pid].muted = False
        t1 = time.monotonic()
        await wait_all(peers, "activeSpeaker", SWITCH_WITHIN, since,
                       peerId=b.peer_id, producerId=b_pid)
        figures["s_to_switch"] = round(time.monotonic() - t1, 3)
        assert figures["s_to_switch"] <= SWITCH_WITHIN, figures
        await asyncio.sleep(0.5)
        late = c.mark()
        await asyncio.sleep(0.6)
        listed = {lv["producerId"] for ls in levels_events(c, late) for lv in ls}
        assert a_pid not in listed, "a paused producer is never listed"

        # 3. A loud, B quiet: both listed, A above B.
        quiet = b.tracks[b_pid]
        quiet.loud_dbov, quiet.quiet_dbov = -35.0, -45.0
        await a.request("resumeProducer", {"producerId": a_pid})
        # Levels are smoothed (~200 ms): compare them once both have settled.
        await asyncio.sleep(1.0)
        mark = c.mark()
        deadline = time.monotonic() + 3.0
        both = None
        while both is None and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            for ls in levels_events(c, mark):
                ids = [lv["producerId"] for lv in ls]
                if a_pid in ids and b_pid in ids:
                    both = ls
        assert both is not None, levels_events(c, mark)
        by_id = {lv["producerId"]: lv["level"] for lv in both}
        figures["levels_loud_quiet"] = [by_id[a_pid], by_id[b_pid]]
        assert by_id[a_pid] > by_id[b_pid] + 6.0, both
        assert [lv["producerId"] for lv in both][0] == a_pid, "loudest first"
        for p in peers:
            assert not p.errors, f"{p.name} errors: {p.errors}"
        return figures
    finally:
        await asyncio.gather(*(p.close() for p in peers), return_exceptions=True)


def test_the_active_speaker_follows_who_speaks():
    run_against_server("speaker", scenario_speaker)
