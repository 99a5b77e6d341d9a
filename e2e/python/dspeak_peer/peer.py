"""`Peer`: one pymediasoup + aiortc client of dspeak. Subscribes to events, joins a room
(loads the mediasoup `Device`), creates send/recv transports on demand, produces a tone,
consumes producers and counts what it hears, and closes everything it made."""
from __future__ import annotations

import asyncio
import json
import logging
import socket
import struct
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from aiortc.mediastreams import MediaStreamError
from pymediasoup import AiortcHandler, Device
from pymediasoup.models.transport import DtlsParameters, IceCandidate, IceParameters
from pymediasoup.rtp_parameters import RtpCapabilities, RtpParameters

from .audio import AudioStats, SpeechTrack, ToneTrack
from .rpc import DEFAULT_REQUEST_TIMEOUT, JsonRpcClient, SignalingClosed

log = logging.getLogger("dspeak_peer")

DEFAULT_URL = "ws://127.0.0.1:8080"


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
        return await self._produce(ToneTrack(freq, amplitude), timeout)

    async def produce_speech(self, track: Optional[SpeechTrack] = None,
                             timeout: float = 15.0) -> str:
        """Produces speech-like bursts (`SpeechTrack`); keep the track to change its
        levels or mute it while it plays (`self.tracks[producer_id]`)."""
        async with self._send_lock:
            return await self._produce(track or SpeechTrack(), timeout)

    async def _produce(self, track: ToneTrack, timeout: float) -> str:
        transport = await self._ensure_send_transport()
        producer = await asyncio.wait_for(transport.produce(track=track, appData={}), timeout)
        await self._await_transport_connect(transport)
        self.producers[producer.id] = producer
        self.tracks[producer.id] = track
        log.info("[%s] producing %s (%.0f Hz) as %s", self.name, type(track).__name__,
                 track.freq, producer.id)
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

    # ---------------------------------------------------------------- resume
    @property
    def last_seq(self) -> int:
        """The `seq` of the last event of the session received (0: none)."""
        return max((ev.get("seq", 0) for ev in self.events), default=0)

    def reset_signaling(self) -> None:
        """Kill the WebSocket with a TCP reset (SO_LINGER 0, then abort): no close frame,
        no FIN. The media transports stay up."""
        transport = self.rpc.ws.transport
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()

    async def resume(self, url: str = DEFAULT_URL, timeout: float = 5.0) -> dict:
        """Resume the session on a new WebSocket: `resume` with the last token and
        `lastSeq`, then `subscribeEvents` (welcome, then the missed events)."""
        token = self.welcome["resumeToken"] if self.welcome else None
        last_seq = self.last_seq
        await self.rpc.close()
        self.rpc = JsonRpcClient(self.name, self.rpc.request_timeout)
        self.rpc.on_notification = self._on_notification
        await self.rpc.connect(url, timeout)
        result = await self.rpc.request("resume", {"resumeToken": token, "lastSeq": last_seq},
                                        timeout)
        m = self.mark()
        self.subscription = await self.rpc.request("subscribeEvents", {}, timeout)
        self.welcome = await self.wait_event("welcome", timeout=timeout, since=m)
        log.info("[%s] resumed after seq %d: %s", self.name, last_seq, result)
        return result

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
