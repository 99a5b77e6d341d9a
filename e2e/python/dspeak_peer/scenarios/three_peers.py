"""(b) Three peers, each producing its own tone and consuming the other two."""
from __future__ import annotations

import asyncio
from typing import Callable, Dict

from ..audio import AudioStats, check_frequency
from ..peer import Peer
from .common import AUDIO_TIMEOUT, EVENT_TIMEOUT, new_room, wait_audio


async def scenario_three_peers(url: str, out: Callable[[str], None] = print) -> dict:
    """(b) three peers, each produces a distinct tone and consumes the other two."""
    room = new_room("e2e-three")
    freqs = {"A": 440.0, "B": 660.0, "C": 880.0}
    peers = {n: Peer(n) for n in freqs}
    figures: dict = {"room": room}
    try:
        for n, p in peers.items():
            await p.connect(url)
            await p.join(room, f"peer-{n}")
        pids: Dict[str, str] = {}
        for n, p in peers.items():
            pids[n] = await p.produce_tone(freqs[n])
        # everyone discovers (join result or producerAdded) and consumes the other two
        pairs = []
        for n, p in peers.items():
            for m_, q in peers.items():
                if m_ == n:
                    continue
                seen = await p.wait_producer_of(q.peer_id, timeout=EVENT_TIMEOUT)
                assert seen == pids[m_], f"{n} sees producer {seen} for {m_}, expected {pids[m_]}"
                pairs.append((n, m_))
        stats: Dict[tuple, AudioStats] = {}
        for n, m_ in pairs:
            stats[(n, m_)] = await peers[n].consume(pids[m_])
        await asyncio.gather(*[
            wait_audio(peers[n], stats[(n, m_)], AUDIO_TIMEOUT + 3.0, expected_freq=freqs[m_])
            for n, m_ in pairs])
        for n, m_ in pairs:
            s = stats[(n, m_)]
            f = check_frequency(s, freqs[m_])
            first_ms = (s.first_nonsilent_at - peers[n].consumer_for(pids[m_]).resumed_at) * 1000
            figures[f"{n}<-{m_}"] = {"frames": s.frames, "nonsilent": s.nonsilent_frames,
                                     "freq": round(f, 1), "ms_resume_to_audio": round(first_ms, 1)}
            out(f"[three-peers] {n} <- {m_}: {s.nonsilent_frames}/{s.frames} non-silent "
                f"frames, {f:.1f} Hz (expected {freqs[m_]:.0f}), first audio "
                f"{first_ms:.0f} ms after resumeConsumer")
        for n, p in peers.items():
            assert not p.errors, f"{n} errors: {p.errors}"
        return figures
    finally:
        await asyncio.gather(*[p.close() for p in peers.values()], return_exceptions=True)
