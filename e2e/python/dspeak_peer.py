#!/usr/bin/env python3
"""dspeak end-to-end test peer: pymediasoup + aiortc over dspeak's JSON-RPC signaling.

Importable module and CLI.

    peer = Peer("alice")
    await peer.connect("ws://127.0.0.1:8080")       # subscribeEvents + wait for `welcome`
    await peer.join("room-1", "Alice")               # loads the mediasoup Device
    producer_id = await peer.produce_tone(440.0)     # sine tone, 48 kHz, 20 ms frames
    stats = await peer.consume(other_producer_id)    # consume + resumeConsumer + frame counting
    await stats.wait_nonsilent(25, timeout=5)

CLI (same scenarios as test_e2e.py, plus two manual helpers):

    python dspeak_peer.py --url ws://127.0.0.1:8080 scenario two-peers
    python dspeak_peer.py --url ws://127.0.0.1:8080 scenario three-peers
    python dspeak_peer.py --url ws://127.0.0.1:8080 tone   --room r1 --freq 440 --duration 30
    python dspeak_peer.py --url ws://127.0.0.1:8080 listen --room r1 --duration 30

Every network wait has a timeout; a broken server raises a clear exception instead of
hanging.

Environment knobs:
    DSPEAK_ICE_LOOPBACK  "1" (default): also offer 127.0.0.1 as a local ICE host
                         candidate (aioice normally skips loopback, which breaks ICE on a
                         machine whose only interface is `lo`). "0": leave aioice alone.
"""
from __future__ import annotations

import argparse
import asyncio
import fractions
import itertools
import json
import logging
import os
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

import numpy as np
from av import AudioFrame
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError
import websockets
from websockets.asyncio.client import connect as ws_connect

from pymediasoup import AiortcHandler, Device
from pymediasoup.models.transport import DtlsParameters, IceCandidate, IceParameters
from pymediasoup.rtp_parameters import RtpCapabilities, RtpParameters

log = logging.getLogger("dspeak_peer")

DEFAULT_URL = "ws://127.0.0.1:8080"
SAMPLE_RATE = 48000
PTIME = 0.020
SAMPLES_PER_FRAME = int(SAMPLE_RATE * PTIME)  # 960
# Normalised RMS (full scale = 1.0) above which a decoded frame counts as "non-silent".
# The tone is generated at amplitude 0.3 (RMS ~0.21); Opus silence decodes to ~0.
NONSILENT_RMS = 0.01
DEFAULT_REQUEST_TIMEOUT = 10.0


# --------------------------------------------------------------------------------------
# aioice: allow a loopback host candidate
# --------------------------------------------------------------------------------------
def _install_loopback_ice_candidate() -> None:
    if os.environ.get("DSPEAK_ICE_LOOPBACK", "1") == "0":
        return
    import aioice.ice as aioice_ice

    original = aioice_ice.get_host_addresses
    if getattr(original, "_dspeak_patched", False):
        return

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> List[str]:
        addresses = original(use_ipv4, use_ipv6)
        if use_ipv4 and "127.0.0.1" not in addresses:
            addresses.append("127.0.0.1")
        return addresses

    get_host_addresses._dspeak_patched = True  # type: ignore[attr-defined]
    aioice_ice.get_host_addresses = get_host_addresses


_install_loopback_ice_candidate()


# --------------------------------------------------------------------------------------
# JSON-RPC 2.0 over WebSocket
# --------------------------------------------------------------------------------------
class RpcError(Exception):
    """A JSON-RPC error object returned by the server."""

    def __init__(self, method: str, code: Any, message: str, data: Any = None):
        super().__init__(f"{method}: JSON-RPC error {code}: {message}"
                         + (f" (data={data!r})" if data is not None else ""))
        self.method = method
        self.code = code
        self.message = message
        self.data = data


class SignalingClosed(ConnectionError):
    pass


class JsonRpcClient:
    """Minimal JSON-RPC 2.0 client: request ids, futures, notification callback."""

    def __init__(self, name: str = "rpc", request_timeout: float = DEFAULT_REQUEST_TIMEOUT):
        self.name = name
        self.request_timeout = request_timeout
        self.ws = None
        self._ids = itertools.count(1)
        self._pending: Dict[int, "asyncio.Future[Any]"] = {}
        self._reader: Optional[asyncio.Task] = None
        self.on_notification: Optional[Callable[[str, Any], None]] = None
        self.closed = asyncio.Event()
        self.close_reason: Optional[str] = None

    async def connect(self, url: str, timeout: float = 5.0) -> None:
        try:
            self.ws = await asyncio.wait_for(
                ws_connect(url, open_timeout=timeout, max_size=None), timeout + 1)
        except (OSError, asyncio.TimeoutError, websockets.exceptions.WebSocketException) as e:
            raise SignalingClosed(
                f"[{self.name}] cannot open WebSocket {url}: {type(e).__name__}: {e}") from e
        self._reader = asyncio.create_task(self._read_loop(), name=f"{self.name}-rpc-reader")

    async def _read_loop(self) -> None:
        reason = "closed"
        try:
            async for raw in self.ws:
                try:
                    msg = json.loads(raw)
                except ValueError:
                    log.warning("[%s] non-JSON message: %r", self.name, raw[:200])
                    continue
                for m in (msg if isinstance(msg, list) else [msg]):
                    self._dispatch(m)
        except websockets.exceptions.ConnectionClosed as e:
            reason = f"connection closed ({e})"
        except Exception as e:  # pragma: no cover - defensive
            reason = f"reader crashed: {type(e).__name__}: {e}"
            log.exception("[%s] reader crashed", self.name)
        finally:
            if self.ws is not None and self.ws.close_code is not None:
                reason = f"closed code={self.ws.close_code} reason={self.ws.close_reason!r}"
            self.close_reason = reason
            self.closed.set()
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(SignalingClosed(f"[{self.name}] WebSocket {reason}"))
            self._pending.clear()

    def _dispatch(self, m: Any) -> None:
        if not isinstance(m, dict):
            log.warning("[%s] unexpected message: %r", self.name, m)
            return
        if "method" in m and "id" not in m:
            if self.on_notification:
                try:
                    self.on_notification(m["method"], m.get("params"))
                except Exception:
                    log.exception("[%s] notification handler failed", self.name)
            return
        if "method" in m:
            log.warning("[%s] server->client request not supported: %r", self.name, m)
            return
        fut = self._pending.pop(m.get("id"), None)
        if fut is None or fut.done():
            log.warning("[%s] response for unknown id: %r", self.name, m)
            return
        if "error" in m and m["error"] is not None:
            err = m["error"] or {}
            fut.set_exception(RpcError(getattr(fut, "_method", "?"), err.get("code"),
                                       err.get("message", ""), err.get("data")))
        else:
            fut.set_result(m.get("result"))

    async def request(self, method: str, params: Optional[dict] = None,
                      timeout: Optional[float] = None) -> Any:
        if self.ws is None or self.closed.is_set():
            raise SignalingClosed(f"[{self.name}] {method}: WebSocket not open "
                                  f"({self.close_reason or 'never connected'})")
        rid = next(self._ids)
        fut = asyncio.get_running_loop().create_future()
        fut._method = method  # type: ignore[attr-defined]
        self._pending[rid] = fut
        msg = {"jsonrpc": "2.0", "id": rid, "method": method, "params": params or {}}
        log.debug("[%s] -> %s", self.name, msg)
        try:
            await self.ws.send(json.dumps(msg))
        except websockets.exceptions.ConnectionClosed as e:
            self._pending.pop(rid, None)
            raise SignalingClosed(f"[{self.name}] {method}: send failed: {e}") from e
        t = self.request_timeout if timeout is None else timeout
        try:
            return await asyncio.wait_for(fut, t)
        except asyncio.TimeoutError:
            self._pending.pop(rid, None)
            raise TimeoutError(f"[{self.name}] no response to {method!r} within {t:.1f}s") \
                from None

    async def close(self) -> None:
        if self.ws is not None:
            try:
                await asyncio.wait_for(self.ws.close(), 3)
            except Exception:
                pass
        if self._reader is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._reader), 3)
            except Exception:
                self._reader.cancel()


# --------------------------------------------------------------------------------------
# Audio: tone source and receive-side analysis
# --------------------------------------------------------------------------------------
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
            wave = self.amplitude * np.sin(2.0 * np.pi * self.freq * n / self.sample_rate)
            data = (wave * 32767.0).astype(np.int16).reshape(1, -1)
        frame = AudioFrame.from_ndarray(data, format="s16", layout="mono")
        frame.sample_rate = self.sample_rate
        frame.pts = self._pts
        frame.time_base = self.time_base
        self.frames_sent += 1
        return frame


def frame_mono_samples(frame: AudioFrame) -> np.ndarray:
    """First channel of an audio frame as float in [-1, 1]."""
    arr = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if frame.format.is_planar:
        mono = arr[0]
    else:
        mono = arr.reshape(-1)[::channels] if channels > 1 else arr.reshape(-1)
    if mono.dtype == np.int16:
        return mono.astype(np.float64) / 32768.0
    if mono.dtype == np.int32:
        return mono.astype(np.float64) / 2147483648.0
    return mono.astype(np.float64)


def frame_rms(frame: AudioFrame) -> float:
    arr = frame.to_ndarray()
    if arr.dtype == np.int16:
        x = arr.astype(np.float64) / 32768.0
    elif arr.dtype == np.int32:
        x = arr.astype(np.float64) / 2147483648.0
    else:
        x = arr.astype(np.float64)
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


@dataclass
class ConsumerInfo:
    consumer_id: str
    producer_id: str
    kind: str
    consumer: Any                     # pymediasoup Consumer
    stats: AudioStats
    created_at: float
    resumed_at: Optional[float] = None       # when resumeConsumer was sent
    producer_paused: bool = False
    server_closed: bool = False
    task: Optional[asyncio.Task] = None


def _round(x: Optional[float]) -> Optional[float]:
    return None if x is None else round(x, 1)


# --------------------------------------------------------------------------------------
# Peer
# --------------------------------------------------------------------------------------
class Peer:
    def __init__(self, name: str = "peer", request_timeout: float = DEFAULT_REQUEST_TIMEOUT):
        self.name = name
        self.rpc = JsonRpcClient(name, request_timeout)
        self.rpc.on_notification = self._on_notification
        self.subscription: Any = None
        self.welcome: Optional[dict] = None
        self.events: List[dict] = []               # every EVENT object, in arrival order
        self.event_times: List[float] = []
        self.event_queue: "asyncio.Queue[dict]" = asyncio.Queue()
        self._new_event = asyncio.Event()
        self.peer_id: Optional[str] = None
        self.join_result: Optional[dict] = None
        self.join_sent_at: Optional[float] = None
        self.joined_at: Optional[float] = None
        self.device: Optional[Device] = None
        self.send_transport = None
        self.recv_transport = None
        self._send_lock = asyncio.Lock()
        self._recv_lock = asyncio.Lock()
        self.transport_connected: Dict[str, "asyncio.Future[None]"] = {}
        self.transport_states: Dict[str, str] = {}
        self.producers: Dict[str, Any] = {}        # producer_id -> pymediasoup Producer
        self.tracks: Dict[str, ToneTrack] = {}     # producer_id -> ToneTrack
        self.consumers: Dict[str, ConsumerInfo] = {}
        self.errors: List[str] = []

    # ---------------------------------------------------------------- signaling
    async def connect(self, url: str = DEFAULT_URL, timeout: float = 5.0) -> dict:
        await self.rpc.connect(url, timeout)
        self.subscription = await self.rpc.request("subscribeEvents", {}, timeout)
        self.welcome = await self.wait_event("welcome", timeout=timeout)
        log.info("[%s] connected, welcome=%s", self.name, self.welcome)
        return self.welcome

    async def request(self, method: str, params: Optional[dict] = None,
                      timeout: Optional[float] = None) -> Any:
        return await self.rpc.request(method, params or {}, timeout)

    def _on_notification(self, method: str, params: Any) -> None:
        if method != "event" or not isinstance(params, dict):
            log.warning("[%s] unexpected notification %s %r", self.name, method, params)
            return
        if (self.subscription is not None and "subscription" in params
                and params["subscription"] != self.subscription):
            log.warning("[%s] event for unknown subscription %r (ours: %r)",
                        self.name, params["subscription"], self.subscription)
        ev = params.get("result")
        if not isinstance(ev, dict) or "type" not in ev:
            log.warning("[%s] malformed event %r", self.name, params)
            return
        log.debug("[%s] event %s", self.name, ev)
        self.events.append(ev)
        self.event_times.append(time.monotonic())
        self.event_queue.put_nowait(ev)
        self._track_event(ev)
        old, self._new_event = self._new_event, asyncio.Event()
        old.set()

    def _track_event(self, ev: dict) -> None:
        t = ev.get("type")
        if t in ("producerPaused", "producerResumed"):
            for ci in self.consumers.values():
                if ci.producer_id == ev.get("producerId"):
                    ci.producer_paused = t == "producerPaused"
        elif t == "consumerClosed":
            ci = self.consumers.get(ev.get("consumerId"))
            if ci is not None:
                ci.server_closed = True
                asyncio.ensure_future(self._close_local_consumer(ci))

    def mark(self) -> int:
        """Index to pass as `since=` so wait_event only looks at later events."""
        return len(self.events)

    def find_event(self, type_: str, since: int = 0, **fields: Any) -> Optional[dict]:
        for ev in self.events[since:]:
            if ev.get("type") == type_ and all(ev.get(k) == v for k, v in fields.items()):
                return ev
        return None

    async def wait_event(self, type_: str, timeout: float = 5.0, since: int = 0,
                         **fields: Any) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            waiter = self._new_event
            ev = self.find_event(type_, since, **fields)
            if ev is not None:
                return ev
            if self.rpc.closed.is_set():
                raise SignalingClosed(
                    f"[{self.name}] WebSocket {self.rpc.close_reason} while waiting for "
                    f"event {type_} {fields or ''}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                seen = [e.get("type") for e in self.events[since:]]
                raise TimeoutError(f"[{self.name}] no {type_!r} event {fields or ''} within "
                                   f"{timeout:.1f}s; events seen since mark: {seen}")
            closed = asyncio.ensure_future(self.rpc.closed.wait())
            got = asyncio.ensure_future(waiter.wait())
            try:
                await asyncio.wait({closed, got}, timeout=remaining,
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                closed.cancel()
                got.cancel()

    async def join(self, room: str, display_name: Optional[str] = None,
                   timeout: Optional[float] = None, token: Optional[str] = None) -> dict:
        self.join_sent_at = time.monotonic()
        params = {"room": room, "displayName": display_name or self.name}
        if token is not None:
            params["token"] = token
        res = await self.request("join", params, timeout)
        self.joined_at = time.monotonic()
        for key in ("peerId", "peers", "producers", "routerRtpCapabilities"):
            if key not in res:
                raise AssertionError(f"[{self.name}] join result lacks {key!r}: {res}")
        self.join_result = res
        self.peer_id = res["peerId"]
        self.device = Device(handlerFactory=AiortcHandler.createFactory())
        await asyncio.wait_for(
            self.device.load(RtpCapabilities.model_validate(res["routerRtpCapabilities"])), 10)
        if not self.device.canProduce("audio"):
            raise AssertionError(f"[{self.name}] device cannot produce audio with router "
                                 f"capabilities {res['routerRtpCapabilities']}")
        log.info("[%s] joined room=%s peerId=%s peers=%d producers=%d", self.name, room,
                 self.peer_id, len(res["peers"]), len(res["producers"]))
        return res

    async def ping(self) -> dict:
        return await self.request("ping", {})

    async def leave(self) -> dict:
        return await self.request("leave", {})

    # ---------------------------------------------------------------- transports
    async def _create_transport(self, direction: str):
        info = await self.request("createTransport", {"direction": direction})
        for key in ("id", "iceParameters", "iceCandidates", "dtlsParameters"):
            if key not in info:
                raise AssertionError(f"[{self.name}] createTransport result lacks {key!r}: "
                                     f"{info}")
        kwargs = dict(
            id=info["id"],
            iceParameters=IceParameters.model_validate(info["iceParameters"]),
            # pymediasoup's IceCandidate requires `ip` (ignores `address`).
            iceCandidates=[IceCandidate.model_validate(c) for c in info["iceCandidates"]],
            dtlsParameters=DtlsParameters.model_validate(info["dtlsParameters"]),
            sctpParameters=None,
            # [] not None: with None aiortc adds stun.l.google.com as default ICE server.
            iceServers=[],
        )
        assert self.device is not None, "join() first"
        if direction == "send":
            transport = self.device.createSendTransport(**kwargs)
        else:
            transport = self.device.createRecvTransport(**kwargs)
        tid = transport.id
        connected = asyncio.get_running_loop().create_future()
        self.transport_connected[tid] = connected
        self.transport_states[tid] = "new"

        @transport.on("connect")
        async def on_connect(dtlsParameters: DtlsParameters):
            # pymediasoup emits this without awaiting it (pyee schedules a task), so an
            # exception here would only be logged; record it and fail the future instead.
            try:
                await self.request("connectTransport", {
                    "transportId": tid,
                    "dtlsParameters": dtlsParameters.model_dump(mode="json",
                                                                exclude_none=True)})
                if not connected.done():
                    connected.set_result(None)
            except Exception as e:
                self.errors.append(f"connectTransport({direction}) failed: {e}")
                if not connected.done():
                    connected.set_exception(e)

        @transport.on("connectionstatechange")
        def on_state(state: str):
            log.info("[%s] %s transport %s -> %s", self.name, direction, tid, state)
            self.transport_states[tid] = state

        if direction == "send":
            @transport.on("produce")
            async def on_produce(kind: str, rtpParameters: RtpParameters, appData: Any):
                # An exception raised here propagates out of transport.produce().
                res = await self.request("produce", {
                    "transportId": tid,
                    "kind": kind,
                    "rtpParameters": rtpParameters.model_dump(mode="json", exclude_none=True),
                    "appData": appData or {},
                })
                return res["id"]

        log.info("[%s] created %s transport %s", self.name, direction, tid)
        return transport

    async def _await_transport_connect(self, transport, timeout: float = 5.0) -> None:
        fut = self.transport_connected[transport.id]
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(f"[{self.name}] transport {transport.id}: pymediasoup never "
                               f"reached on('connect')/connectTransport within {timeout}s") \
                from None

    # pymediasoup 1.5 does not queue handler operations the way mediasoup-client does
    # ("NOTE: Mediasoup client enqueue command here"), so two concurrent produce() or
    # consume() calls on one transport would interleave SDP renegotiations. Every
    # produce/consume therefore runs under a per-direction lock.
    async def _ensure_send_transport(self):
        if self.send_transport is None:
            self.send_transport = await self._create_transport("send")
        return self.send_transport

    async def _ensure_recv_transport(self):
        if self.recv_transport is None:
            self.recv_transport = await self._create_transport("recv")
        return self.recv_transport

    # ---------------------------------------------------------------- producing
    async def produce_tone(self, freq: float = 440.0, amplitude: float = 0.3,
                           timeout: float = 15.0) -> str:
        async with self._send_lock:
            return await self._produce_tone(freq, amplitude, timeout)

    async def _produce_tone(self, freq: float, amplitude: float, timeout: float) -> str:
        transport = await self._ensure_send_transport()
        track = ToneTrack(freq, amplitude)
        producer = await asyncio.wait_for(transport.produce(track=track, appData={}), timeout)
        await self._await_transport_connect(transport)
        self.producers[producer.id] = producer
        self.tracks[producer.id] = track
        log.info("[%s] producing %.0f Hz tone as %s", self.name, freq, producer.id)
        return producer.id

    def _producer_id(self, producer_id: Optional[str]) -> str:
        if producer_id is not None:
            return producer_id
        if len(self.producers) != 1:
            raise ValueError(f"[{self.name}] pass producer_id ({len(self.producers)} producers)")
        return next(iter(self.producers))

    async def pause_producer(self, producer_id: Optional[str] = None,
                             mute_locally: bool = False) -> None:
        """Server-side pause. By default the tone keeps flowing into the SFU, so the test
        observes the SFU's pause, not a silent source. mute_locally=True also mutes it."""
        pid = self._producer_id(producer_id)
        await self.request("pauseProducer", {"producerId": pid})
        if mute_locally:
            self.tracks[pid].muted = True
            self.producers[pid].pause()  # sync in pymediasoup 1.5 (bookkeeping only)

    async def resume_producer(self, producer_id: Optional[str] = None) -> None:
        pid = self._producer_id(producer_id)
        await self.request("resumeProducer", {"producerId": pid})
        self.tracks[pid].muted = False
        if self.producers[pid].paused:
            self.producers[pid].resume()

    async def close_producer(self, producer_id: Optional[str] = None) -> None:
        pid = self._producer_id(producer_id)
        await self.request("closeProducer", {"producerId": pid})
        producer = self.producers.pop(pid)
        self.tracks.pop(pid, None)
        await asyncio.wait_for(producer.close(), 5)

    # ---------------------------------------------------------------- consuming
    async def consume(self, producer_id: str, timeout: float = 15.0) -> AudioStats:
        async with self._recv_lock:
            return await self._consume(producer_id, timeout)

    async def _consume(self, producer_id: str, timeout: float) -> AudioStats:
        transport = await self._ensure_recv_transport()
        assert self.device is not None
        res = await self.request("consume", {
            "transportId": transport.id,
            "producerId": producer_id,
            "rtpCapabilities": self.device.rtpCapabilities.model_dump(mode="json",
                                                                      exclude_none=True),
        })
        for key in ("id", "producerId", "kind", "rtpParameters"):
            if key not in res:
                raise AssertionError(f"[{self.name}] consume result lacks {key!r}: {res}")
        rtp_parameters = RtpParameters.model_validate(res["rtpParameters"])
        # pymediasoup maps a repeated mid onto the existing m-section ("Plan-B" no-op), so
        # the new consumer would silently share the old consumer's track. Fail loudly.
        used_mids = {ci.consumer.localId for ci in self.consumers.values()
                     if not ci.server_closed}
        if rtp_parameters.mid is not None and rtp_parameters.mid in used_mids:
            raise AssertionError(f"[{self.name}] consume {producer_id}: server reused "
                                 f"mid {rtp_parameters.mid!r} on recv transport "
                                 f"{transport.id} (mids in use: {sorted(used_mids)})")
        consumer = await asyncio.wait_for(transport.consume(
            id=res["id"], producerId=res["producerId"], kind=res["kind"],
            rtpParameters=rtp_parameters), timeout)
        stats = AudioStats(label=f"{self.name}<-{producer_id[:8]}")
        ci = ConsumerInfo(consumer_id=res["id"], producer_id=producer_id, kind=res["kind"],
                          consumer=consumer, stats=stats, created_at=time.monotonic(),
                          producer_paused=bool(res.get("producerPaused", False)))
        self.consumers[ci.consumer_id] = ci
        ci.task = asyncio.create_task(self._read_track(ci), name=f"{stats.label}-reader")
        ci.resumed_at = time.monotonic()   # resumeConsumer sent
        await self.request("resumeConsumer", {"consumerId": ci.consumer_id})
        await self._await_transport_connect(transport)
        log.info("[%s] consuming %s as %s", self.name, producer_id, ci.consumer_id)
        return stats

    async def _read_track(self, ci: ConsumerInfo) -> None:
        track = ci.consumer.track
        try:
            while True:
                frame = await track.recv()
                ci.stats.feed(frame)
        except MediaStreamError:
            pass
        except asyncio.CancelledError:
            raise
        except Exception as e:
            ci.stats.error = e
            self.errors.append(f"reader {ci.stats.label}: {type(e).__name__}: {e}")
        finally:
            ci.stats.ended = True
            ci.stats._notify()

    async def _close_local_consumer(self, ci: ConsumerInfo) -> None:
        try:
            async with self._recv_lock:
                await asyncio.wait_for(ci.consumer.close(), 5)
        except Exception as e:  # best effort: server already closed it
            log.debug("[%s] local consumer close failed: %r", self.name, e)

    def consumer_for(self, producer_id: str) -> ConsumerInfo:
        for ci in self.consumers.values():
            if ci.producer_id == producer_id:
                return ci
        raise KeyError(producer_id)

    async def wait_producer_of(self, peer_id: str, timeout: float = 5.0,
                               kind: str = "audio") -> str:
        """Producer id of `peer_id`: from the join result, else a producerAdded event."""
        for p in (self.join_result or {}).get("producers", []):
            if p.get("peerId") == peer_id and p.get("kind", kind) == kind:
                return p["producerId"]
        ev = await self.wait_event("producerAdded", timeout=timeout, peerId=peer_id)
        return ev["producerId"]

    # ---------------------------------------------------------------- teardown
    async def disconnect(self) -> None:
        """Close only the WebSocket (abrupt leave); media transports stay up."""
        await self.rpc.close()

    async def close(self) -> None:
        for ci in self.consumers.values():
            if ci.task is not None:
                ci.task.cancel()
        for t in (self.send_transport, self.recv_transport):
            if t is not None:
                try:
                    await asyncio.wait_for(t.close(), 5)
                except Exception as e:
                    log.debug("[%s] transport close: %r", self.name, e)
        for track in self.tracks.values():
            track.stop()
        await self.rpc.close()

    def counters(self) -> dict:
        return {
            "peer": self.name,
            "peerId": self.peer_id,
            "events": len(self.events),
            "producers": {pid: {"frames_sent": self.tracks[pid].frames_sent}
                          for pid in self.producers if pid in self.tracks},
            "consumers": {ci.consumer_id: {
                "producerId": ci.producer_id,
                "frames": ci.stats.frames,
                "nonsilent": ci.stats.nonsilent_frames,
                "freq": _round(ci.stats.frequency),
                "ms_join_to_first_audio": _round(self.ms_join_to_first_audio(ci.stats)),
            } for ci in self.consumers.values()},
            "transport_states": dict(self.transport_states),
            "errors": list(self.errors),
        }

    def ms_join_to_first_audio(self, stats: AudioStats) -> Optional[float]:
        if stats.first_nonsilent_at is None or self.join_sent_at is None:
            return None
        return (stats.first_nonsilent_at - self.join_sent_at) * 1000.0

    def diag(self) -> str:
        return json.dumps(self.counters(), default=str)


# --------------------------------------------------------------------------------------
# Scenarios (shared by test_e2e.py and the CLI)
# --------------------------------------------------------------------------------------
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
FREQ_TOLERANCE = 0.03    # relative


def new_room(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def check_frequency(stats: AudioStats, expected: float) -> float:
    f = stats.frequency
    assert f is not None, f"{stats.label}: not enough audio for a frequency estimate " \
                          f"({stats.summary()})"
    assert abs(f - expected) <= expected * FREQ_TOLERANCE, \
        f"{stats.label}: dominant frequency {f:.1f} Hz, expected {expected:.0f} Hz " \
        f"(wrong stream routed?)"
    return f


async def _wait_audio(peer: Peer, stats: AudioStats, timeout: float,
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
        await _wait_audio(b, stats, AUDIO_TIMEOUT, expected_freq=440.0)
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
            _wait_audio(peers[n], stats[(n, m_)], AUDIO_TIMEOUT + 3.0, expected_freq=freqs[m_])
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


SCENARIOS = {"two-peers": scenario_two_peers, "three-peers": scenario_three_peers}


# --------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------
async def _cli_tone(url: str, room: str, freq: float, duration: float) -> None:
    p = Peer("tone")
    try:
        await p.connect(url)
        await p.join(room, f"tone-{freq:.0f}Hz")
        pid = await p.produce_tone(freq)
        print(f"producing {freq} Hz as {pid} in room {room} for {duration}s")
        await asyncio.sleep(duration)
        print(json.dumps(p.counters(), default=str))
    finally:
        await p.close()


async def _cli_listen(url: str, room: str, duration: float) -> None:
    p = Peer("listen")
    try:
        await p.connect(url)
        res = await p.join(room, "listener")
        for pr in res["producers"]:
            await p.consume(pr["producerId"])
        end = time.monotonic() + duration
        seen = p.mark()
        while time.monotonic() < end:
            try:
                ev = await p.wait_event("producerAdded", timeout=min(1.0, end - time.monotonic()),
                                        since=seen)
                seen = p.events.index(ev) + 1
                await p.consume(ev["producerId"])
            except TimeoutError:
                pass
        print(json.dumps(p.counters(), default=str, indent=1))
    finally:
        await p.close()


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", default=os.environ.get("DSPEAK_URL", DEFAULT_URL))
    ap.add_argument("-v", "--verbose", action="count", default=0)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sc = sub.add_parser("scenario")
    sc.add_argument("name", choices=sorted(SCENARIOS))
    sc.add_argument("--timeout", type=float, default=60.0)
    t = sub.add_parser("tone")
    t.add_argument("--room", required=True)
    t.add_argument("--freq", type=float, default=440.0)
    t.add_argument("--duration", type=float, default=30.0)
    li = sub.add_parser("listen")
    li.add_argument("--room", required=True)
    li.add_argument("--duration", type=float, default=30.0)
    args = ap.parse_args(argv)
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.cmd == "scenario":
        figures = asyncio.run(asyncio.wait_for(SCENARIOS[args.name](args.url), args.timeout))
        print(json.dumps(figures, default=str))
    elif args.cmd == "tone":
        asyncio.run(_cli_tone(args.url, args.room, args.freq, args.duration))
    else:
        asyncio.run(_cli_listen(args.url, args.room, args.duration))
    return 0


if __name__ == "__main__":
    sys.exit(main())
