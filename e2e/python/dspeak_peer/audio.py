"""Audio for the e2e peers: a sine-tone source track, a speech-like one (bursts of a
tone at two levels), and the analysis of what a receiving track decodes (non-silent
frames, dominant frequency)."""
from __future__ import annotations

import asyncio
import fractions
import time
from typing import Callable, List, Optional

import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError
from av import AudioFrame

SAMPLE_RATE = 48000
PTIME = 0.020
SAMPLES_PER_FRAME = int(SAMPLE_RATE * PTIME)  # 960
# Normalised RMS (full scale = 1.0) above which a decoded frame counts as "non-silent".
# The tone is generated at amplitude 0.3 (RMS ~0.21); Opus silence decodes to ~0.
NONSILENT_RMS = 0.01
FREQ_TOLERANCE = 0.03    # relative


class ToneTrack(MediaStreamTrack):
    """Sine tone as 48 kHz mono s16 AudioFrames of 20 ms, paced in real time.

    Deliberately has no `enabled` attribute, so pymediasoup's local Producer.pause()
    does not silence it: pausing is done on the server (set `muted` to send silence).
    """

    kind = "audio"

    def __init__(self, freq: float = 440.0, amplitude: float = 0.3,
                 sample_rate: int = SAMPLE_RATE, ptime: float = PTIME):
        super().__init__()
        self.freq = float(freq)
        self.amplitude = float(amplitude)
        self.sample_rate = sample_rate
        self.samples = int(round(sample_rate * ptime))
        self.time_base = fractions.Fraction(1, sample_rate)
        self.muted = False
        self.frames_sent = 0
        self._pts = 0
        self._start: Optional[float] = None

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        else:
            self._pts += self.samples
            wait = self._start + self._pts / self.sample_rate - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        if self.muted:
            data = np.zeros((1, self.samples), dtype=np.int16)
        else:
            n = np.arange(self._pts, self._pts + self.samples, dtype=np.float64)
            amplitude = self.amplitude_at(self._pts / self.sample_rate)
            wave = amplitude * np.sin(2.0 * np.pi * self.freq * n / self.sample_rate)
            data = (wave * 32767.0).astype(np.int16).reshape(1, -1)
        frame = AudioFrame.from_ndarray(data, format="s16", layout="mono")
        frame.sample_rate = self.sample_rate
        frame.pts = self._pts
        frame.time_base = self.time_base
        self.frames_sent += 1
        return frame


    def amplitude_at(self, t: float) -> float:
        """The tone's amplitude `t` seconds into the track (steady here)."""
        return self.amplitude


def dbov_amplitude(dbov: float) -> float:
    """The sine amplitude (full scale 1.0) whose RMS is `dbov` (RFC 6465's measure, as
    aiortc computes the level it sends)."""
    return float(np.sqrt(2.0) * 10.0 ** (dbov / 20.0))


class SpeechTrack(ToneTrack):
    """Speech-like audio: a tone in bursts, `loud_ms` at `loud_dbov` then `quiet_ms` at
    `quiet_dbov`, repeated (real speech comes in bursts; a steady tone is not speech).
    `muted` sends digital silence (-127 dBov); the levels may change while it plays."""

    def __init__(self, freq: float = 330.0, loud_dbov: float = -9.0, quiet_dbov: float = -43.0,
                 loud_ms: int = 250, quiet_ms: int = 100):
        super().__init__(freq, dbov_amplitude(loud_dbov))
        self.loud_dbov = loud_dbov
        self.quiet_dbov = quiet_dbov
        self.loud_ms = loud_ms
        self.quiet_ms = quiet_ms

    def amplitude_at(self, t: float) -> float:
        ms = (t * 1000.0) % (self.loud_ms + self.quiet_ms)
        return dbov_amplitude(self.loud_dbov if ms < self.loud_ms else self.quiet_dbov)


def _to_float(samples: np.ndarray) -> np.ndarray:
    """Integer PCM as float in [-1, 1]; float samples unchanged."""
    if samples.dtype == np.int16:
        return samples.astype(np.float64) / 32768.0
    if samples.dtype == np.int32:
        return samples.astype(np.float64) / 2147483648.0
    return samples.astype(np.float64)


def frame_mono_samples(frame: AudioFrame) -> np.ndarray:
    """First channel of an audio frame as float in [-1, 1]."""
    arr = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if frame.format.is_planar:
        mono = arr[0]
    else:
        mono = arr.reshape(-1)[::channels] if channels > 1 else arr.reshape(-1)
    return _to_float(mono)


def frame_rms(frame: AudioFrame) -> float:
    """RMS of all samples of a frame, full scale = 1.0."""
    x = _to_float(frame.to_ndarray())
    return float(np.sqrt(np.mean(x * x))) if x.size else 0.0


def dominant_frequency(samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float:
    if samples.size < 64:
        return 0.0
    win = samples * np.hanning(samples.size)
    spec = np.abs(np.fft.rfft(win))
    spec[0] = 0.0
    k = int(np.argmax(spec))
    # parabolic interpolation around the peak
    if 0 < k < spec.size - 1:
        a, b, c = spec[k - 1], spec[k], spec[k + 1]
        denom = a - 2 * b + c
        k = k + (0.5 * (a - c) / denom if denom else 0.0)
    return float(k * sample_rate / samples.size)


class AudioStats:
    """Counts frames read from a receiving track. Times are time.monotonic()."""

    FREQ_SKIP_FRAMES = 5     # skip codec ramp-up before collecting samples
    FREQ_FRAMES = 25         # 0.5 s of audio for the frequency estimate

    def __init__(self, label: str = "", threshold: float = NONSILENT_RMS):
        self.label = label
        self.threshold = threshold
        self.frames = 0
        self.nonsilent_frames = 0
        self.first_frame_at: Optional[float] = None
        self.first_nonsilent_at: Optional[float] = None
        self.last_frame_at: Optional[float] = None
        self.last_rms = 0.0
        self.max_rms = 0.0
        self.sample_rate: Optional[int] = None
        self.ended = False
        self.error: Optional[BaseException] = None
        self._freq_chunks: List[np.ndarray] = []
        self._changed = asyncio.Event()

    def feed(self, frame: AudioFrame) -> None:
        now = time.monotonic()
        self.frames += 1
        self.last_frame_at = now
        if self.first_frame_at is None:
            self.first_frame_at = now
            self.sample_rate = frame.sample_rate
        rms = frame_rms(frame)
        self.last_rms = rms
        self.max_rms = max(self.max_rms, rms)
        if rms >= self.threshold:
            self.nonsilent_frames += 1
            if self.first_nonsilent_at is None:
                self.first_nonsilent_at = now
            if (self.FREQ_SKIP_FRAMES < self.nonsilent_frames
                    <= self.FREQ_SKIP_FRAMES + self.FREQ_FRAMES):
                self._freq_chunks.append(frame_mono_samples(frame))
        self._notify()

    def _notify(self) -> None:
        ev, self._changed = self._changed, asyncio.Event()
        ev.set()

    @property
    def frequency(self) -> Optional[float]:
        """Dominant frequency of the first ~0.5 s of non-silent audio (None until then)."""
        if len(self._freq_chunks) < self.FREQ_FRAMES:
            return None
        return dominant_frequency(np.concatenate(self._freq_chunks),
                                  self.sample_rate or SAMPLE_RATE)

    async def wait_until(self, pred: Callable[["AudioStats"], bool], timeout: float,
                         what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while not pred(self):
            if self.ended or self.error:
                raise AssertionError(f"{self.label}: track ended while waiting for {what} "
                                     f"({self.summary()}, error={self.error!r})")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{self.label}: timed out after {timeout:.1f}s waiting "
                                   f"for {what} ({self.summary()})")
            ev = self._changed
            try:
                await asyncio.wait_for(ev.wait(), min(remaining, 0.25))
            except asyncio.TimeoutError:
                pass

    async def wait_nonsilent(self, count: int = 1, timeout: float = 5.0) -> None:
        await self.wait_until(lambda s: s.nonsilent_frames >= count, timeout,
                              f"{count} non-silent frames")

    def summary(self) -> str:
        f = self.frequency
        return (f"frames={self.frames} nonsilent={self.nonsilent_frames} "
                f"max_rms={self.max_rms:.3f}"
                + (f" freq={f:.1f}Hz" if f is not None else ""))


def check_frequency(stats: AudioStats, expected: float) -> float:
    f = stats.frequency
    assert f is not None, f"{stats.label}: not enough audio for a frequency estimate " \
                          f"({stats.summary()})"
    assert abs(f - expected) <= expected * FREQ_TOLERANCE, \
        f"{stats.label}: dominant frequency {f:.1f} Hz, expected {expected:.0f} Hz " \
        f"(wrong stream routed?)"
    return f
