"""What the scenarios share: timeouts from the environment, room names, waiting for
audio with the peer's state in the failure message, running one against `DSPEAK_URL`."""
from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from typing import Awaitable, Callable, Optional

from ..audio import AudioStats
from ..peer import Peer


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


AUDIO_TIMEOUT = _env_float("DSPEAK_AUDIO_TIMEOUT", 5.0)     # join -> decoded audio
EVENT_TIMEOUT = _env_float("DSPEAK_EVENT_TIMEOUT", 5.0)
PAUSE_GRACE = 0.5
PAUSE_WINDOW = 1.5
MIN_FRAMES = 10          # non-silent frames required to call audio "received" (200 ms)


def new_room(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def tone_heard(url: str, room: str, speaker: tuple[Peer, str], listener: tuple[Peer, str],
                     freq: float = 440.0) -> tuple[str, AudioStats]:
    """The speaker (peer, display name) joins `room` and sends a `freq` tone; then the
    listener joins, consumes it and hears it. Returns the producer id and the listener's
    audio stats."""
    (talker, talker_name), (hearer, hearer_name) = speaker, listener
    await talker.connect(url)
    await talker.join(room, talker_name)
    pid = await talker.produce_tone(freq)
    await hearer.connect(url)
    await hearer.join(room, hearer_name)
    stats = await hearer.consume(pid)
    await wait_audio(hearer, stats, AUDIO_TIMEOUT, expected_freq=freq)
    return pid, stats


async def wait_audio(peer: Peer, stats: AudioStats, timeout: float,
                      expected_freq: Optional[float] = None) -> None:
    remaining = timeout
    if peer.join_sent_at is not None:
        remaining = max(0.5, timeout - (time.monotonic() - peer.join_sent_at))
    try:
        await stats.wait_nonsilent(MIN_FRAMES, timeout=remaining)
        if expected_freq is not None:
            await stats.wait_until(lambda s: s.frequency is not None, 3.0,
                                   "enough audio for a frequency estimate")
    except (TimeoutError, AssertionError) as e:
        raise AssertionError(f"{e}; peer state: {peer.diag()}") from None


def run_against_server(label: str, scenario: Callable[[str], Awaitable[dict]],
                       timeout: float = 60.0) -> None:
    """Runs `scenario(url)` against `DSPEAK_URL` (skipped without it) and prints its
    figures; for the pytest files the server's `pymediasoup.rs` runs."""
    import pytest

    url = os.environ.get("DSPEAK_URL")
    if not url:
        pytest.skip("needs DSPEAK_URL (run by server/tests/it/pymediasoup.rs)")
    figures = asyncio.run(asyncio.wait_for(scenario(url), timeout))
    print(f"\n[{label}] figures: {json.dumps(figures)}")
