"""Self-checks of the e2e client that need no dspeak server.

* A mock JSON-RPC server answers with real mediasoup payloads (fixtures/, copied from
  shared/reference/) so that pymediasoup runs its real code path up to ICE: Device.load,
  createSendTransport/createRecvTransport, produce() -> on('connect') + on('produce'),
  consume() -> local consumer + resumeConsumer. ICE never connects (nothing listens on
  the fixture's candidate), which is fine here.
* Two plain aiortc RTCPeerConnections in this process check the tone track and the
  receive-side analysis (frame counting, RMS, dominant frequency) over real Opus/RTP.

Run: /tmp/pyvenv/bin/python -m pytest -q e2e/python/test_offline.py
"""
import asyncio
import copy
import json
import os
import uuid

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.mediastreams import MediaStreamError
from websockets.asyncio.server import serve

import dspeak_peer as dp

HERE = os.path.dirname(os.path.abspath(__file__))


def fixture(name):
    with open(os.path.join(HERE, "fixtures", name)) as f:
        return json.load(f)


ROUTER_CAPS = fixture("getRouterRtpCapabilities.result.json")
CREATE_TRANSPORT = fixture("createTransport.result.json")
CONSUME_RESULT = fixture("consume.result.json")
REF_PRODUCE = fixture("produce.params.reference.json")
REF_CONNECT = fixture("connectTransport.params.reference.json")
REF_CONSUME = fixture("consume.params.reference.json")


class MockServer:
    """Speaks dspeak's signaling with canned mediasoup answers; records every request."""

    def __init__(self, fail=(), reuse_mid=False):
        self.mids = {}             # transportId -> next consumer mid
        self.reuse_mid = reuse_mid
        self.calls = []            # (method, params)
        self.fail = set(fail)      # methods answered with a JSON-RPC error
        self.conns = []
        self.transports = {}       # id -> direction
        self.url = None
        self._server = None

    async def __aenter__(self):
        self._server = await serve(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc):
        self._server.close()
        await self._server.wait_closed()

    async def notify(self, event):
        for ws, sub in list(self.conns):
            await ws.send(json.dumps({"jsonrpc": "2.0", "method": "event",
                                      "params": {"subscription": sub, "result": event}}))

    def params_of(self, method):
        return [p for m, p in self.calls if m == method]

    async def _handle(self, ws):
        sub = f"sub-{uuid.uuid4().hex[:6]}"
        async for raw in ws:
            msg = json.loads(raw)
            method, params, rid = msg["method"], msg.get("params"), msg["id"]
            assert msg.get("jsonrpc") == "2.0" and isinstance(params, dict), msg
            self.calls.append((method, params))
            if method == "hang":
                continue
            if method in self.fail:
                await ws.send(json.dumps({"jsonrpc": "2.0", "id": rid, "error": {
                    "code": -32000, "message": f"mock refuses {method}"}}))
                continue
            result = self._result(method, params)
            if result is None:
                await ws.send(json.dumps({"jsonrpc": "2.0", "id": rid, "error": {
                    "code": -32601, "message": "Method not found"}}))
                continue
            await ws.send(json.dumps({"jsonrpc": "2.0", "id": rid, "result": result}))
            if method == "subscribeEvents":
                self.conns.append((ws, sub))
                await ws.send(json.dumps({"jsonrpc": "2.0", "method": "event", "params": {
                    "subscription": sub, "result": {"type": "welcome", "sessionId": sub,
                                                    "server": "mock", "version": "0"}}}))
            elif method == "pauseProducer":
                await self.notify({"type": "producerPaused", "producerId": params["producerId"]})

    def _result(self, method, params):
        if method == "subscribeEvents":
            return "sub"
        if method == "join":
            return {"peerId": uuid.uuid4().hex, "peers": [], "producers": [],
                    "routerRtpCapabilities": ROUTER_CAPS}
        if method == "createTransport":
            r = copy.deepcopy(CREATE_TRANSPORT)
            r["id"] = str(uuid.uuid4())
            self.transports[r["id"]] = params["direction"]
            return r
        if method == "produce":
            return {"id": str(uuid.uuid4())}
        if method == "consume":
            r = copy.deepcopy(CONSUME_RESULT)
            r["id"] = str(uuid.uuid4())
            r["producerId"] = params["producerId"]
            r["producerPaused"] = False
            # like mediasoup: a fresh mid per consumer on a transport
            mids = self.mids.setdefault(params["transportId"], 0)
            self.mids[params["transportId"]] = mids + 1
            r["rtpParameters"]["mid"] = str(mids) if not self.reuse_mid else "0"
            return r
        if method in ("connectTransport", "resumeConsumer", "pauseProducer", "resumeProducer",
                      "closeProducer", "leave"):
            return {}
        if method == "ping":
            return {"type": "pong", "timestamp": 1}
        return None


def shape(v):
    """Structure of a JSON value: dict keys recursively, first list element, leaf types."""
    if isinstance(v, dict):
        return {k: shape(x) for k, x in v.items()}
    if isinstance(v, list):
        return [shape(v[0])] if v else []
    return type(v).__name__


def run(coro, timeout=60):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def test_pymediasoup_callbacks_against_mock():
    async def main():
        async with MockServer() as srv:
            peer = dp.Peer("T")
            try:
                welcome = await peer.connect(srv.url)
                assert welcome["type"] == "welcome"
                await peer.join("r", "T")
                pid = await peer.produce_tone(440.0)

                # on('connect') of the send transport -> connectTransport
                (connect_send,) = srv.params_of("connectTransport")
                assert srv.transports[connect_send["transportId"]] == "send"
                assert shape(connect_send) == shape(REF_CONNECT)
                assert connect_send["dtlsParameters"]["role"] == "server"
                assert len(connect_send["dtlsParameters"]["fingerprints"]) == 1
                print("send connectTransport:", json.dumps(connect_send))

                # on('produce') -> produce, same shape as real pymediasoup sent to mediasoup
                (produce,) = srv.params_of("produce")
                assert shape(produce) == shape(REF_PRODUCE), \
                    (shape(produce), shape(REF_PRODUCE))
                rp = produce["rtpParameters"]
                assert produce["kind"] == "audio" and rp["mid"] == "0"
                assert rp["codecs"][0]["mimeType"] == "audio/opus"
                assert [h["uri"] for h in rp["headerExtensions"]] == \
                    [h["uri"] for h in REF_PRODUCE["rtpParameters"]["headerExtensions"]]
                print("produce:", json.dumps(produce))

                # consume -> local consumer -> resumeConsumer; recv connect role client
                stats = await peer.consume("producer-x")
                (consume,) = srv.params_of("consume")
                assert shape(consume) == shape(REF_CONSUME), (shape(consume), shape(REF_CONSUME))
                assert consume["rtpCapabilities"] == REF_CONSUME["rtpCapabilities"]
                (resume,) = srv.params_of("resumeConsumer")  # only one so far
                assert resume["consumerId"] in peer.consumers
                methods = [m for m, _ in srv.calls]
                assert methods.index("consume") < methods.index("resumeConsumer")
                connect_recv = srv.params_of("connectTransport")[1]
                assert srv.transports[connect_recv["transportId"]] == "recv"
                assert connect_recv["dtlsParameters"]["role"] == "client"
                print("recv connectTransport:", json.dumps(connect_recv))
                assert stats.frames == 0

                # a second (concurrent) consume reuses the recv transport, gets its own track
                await asyncio.gather(peer.consume("producer-y"), peer.consume("producer-z"))
                assert len({id(ci.consumer.track) for ci in peer.consumers.values()}) == 3
                assert [p["direction"] for p in srv.params_of("createTransport")] == \
                    ["send", "recv"]

                # events
                m = peer.mark()
                await peer.pause_producer(pid)
                ev = await peer.wait_event("producerPaused", timeout=2, since=m, producerId=pid)
                assert ev == {"type": "producerPaused", "producerId": pid}
                with pytest.raises(TimeoutError):
                    await peer.wait_event("producerResumed", timeout=0.3, since=m)
                await srv.notify({"type": "consumerClosed", "consumerId": resume["consumerId"],
                                  "producerId": "producer-x"})
                await peer.wait_event("consumerClosed", timeout=2)
                assert peer.consumers[resume["consumerId"]].server_closed
                assert (await peer.ping())["type"] == "pong"

                # errors and timeouts
                with pytest.raises(dp.RpcError) as ei:
                    await peer.request("noSuchMethod", {})
                assert ei.value.code == -32601
                with pytest.raises(TimeoutError):
                    await peer.request("hang", {}, timeout=0.3)
                assert peer.errors == []
            finally:
                await peer.close()
            # closed socket: waits fail fast instead of hanging
            with pytest.raises(dp.SignalingClosed):
                await peer.wait_event("never", timeout=30)
            with pytest.raises(dp.SignalingClosed):
                await peer.request("ping", {})

    run(main())


def test_produce_error_propagates():
    async def main():
        async with MockServer(fail={"produce"}) as srv:
            peer = dp.Peer("T")
            try:
                await peer.connect(srv.url)
                await peer.join("r", "T")
                with pytest.raises(dp.RpcError, match="mock refuses produce"):
                    await peer.produce_tone(440.0)
            finally:
                await peer.close()

    run(main())


def test_reused_mid_is_reported():
    async def main():
        async with MockServer(reuse_mid=True) as srv:
            peer = dp.Peer("T")
            try:
                await peer.connect(srv.url)
                await peer.join("r", "T")
                await peer.consume("p1")
                with pytest.raises(AssertionError, match="reused mid"):
                    await peer.consume("p2")
            finally:
                await peer.close()

    run(main())


def test_connect_refused_fails_fast():
    async def main():
        async with MockServer() as srv:
            url = srv.url
        peer = dp.Peer("T")
        with pytest.raises(dp.SignalingClosed, match="cannot open WebSocket"):
            await peer.connect(url, timeout=2)

    run(main(), timeout=10)


def test_tone_over_aiortc_loopback():
    """ToneTrack -> Opus/RTP/SRTP over real ICE on this host -> AudioStats."""
    async def main():
        cfg = RTCConfiguration(iceServers=[])
        pc1, pc2 = RTCPeerConnection(cfg), RTCPeerConnection(cfg)
        stats = dp.AudioStats("loopback")
        track = dp.ToneTrack(660.0)
        got_track = asyncio.get_running_loop().create_future()

        @pc2.on("track")
        def on_track(t):
            got_track.set_result(t)

        async def reader(t):
            try:
                while True:
                    stats.feed(await t.recv())
            except MediaStreamError:
                pass

        try:
            pc1.addTrack(track)
            await pc1.setLocalDescription(await pc1.createOffer())
            await pc2.setRemoteDescription(pc1.localDescription)
            await pc2.setLocalDescription(await pc2.createAnswer())
            await pc1.setRemoteDescription(pc2.localDescription)
            t = await asyncio.wait_for(got_track, 5)
            task = asyncio.create_task(reader(t))
            t0 = asyncio.get_running_loop().time()
            await stats.wait_nonsilent(50, timeout=10)
            await stats.wait_until(lambda s: s.frequency is not None, 5, "frequency")
            elapsed = asyncio.get_running_loop().time() - t0
            f = dp.check_frequency(stats, 660.0)
            print(f"loopback: {stats.summary()} in {elapsed:.2f}s, freq {f:.1f} Hz, "
                  f"sent {track.frames_sent}")
            # real-time pacing: ~50 frames/s sent
            assert 0.6 < track.frames_sent / 50.0 / max(elapsed, 0.1) < 3.0 or elapsed < 2
            # muting the source gives silent frames (analysis sanity check)
            track.muted = True
            await asyncio.sleep(0.5)
            n = stats.nonsilent_frames
            await asyncio.sleep(0.5)
            assert stats.nonsilent_frames == n
            assert stats.frames > n
            task.cancel()
        finally:
            await pc1.close()
            await pc2.close()

    run(main(), timeout=40)


# --------------------------------------------------------------------------------------
# Scenario dry run: an in-process fake SFU with rooms and events. Media is injected as
# decoded frames straight into each consumer's aiortc track queue (no RTP), gated by the
# fake's pause/resume/close state, so the scenario logic of test_e2e.py runs for real.
# --------------------------------------------------------------------------------------
class FakeSfu(MockServer):
    def __init__(self, peers_registry):
        super().__init__()
        self.registry = peers_registry         # dspeak_peer.Peer instances in this process
        self.rooms = {}                        # room -> {peerId: conn-state}
        self.producers = {}                    # producerId -> dict(peer, paused)
        self.consumers = {}                    # consumerId -> dict(producerId, peer, task)

    async def _handle(self, ws):
        st = {"ws": ws, "sub": f"sub-{uuid.uuid4().hex[:6]}", "peerId": None, "room": None}
        try:
            async for raw in ws:
                msg = json.loads(raw)
                method, params, rid = msg["method"], msg["params"], msg["id"]
                self.calls.append((method, params))
                try:
                    result = await self._call(st, method, params)
                    reply = {"jsonrpc": "2.0", "id": rid, "result": result}
                except KeyError as e:
                    reply = {"jsonrpc": "2.0", "id": rid,
                             "error": {"code": -32602, "message": f"unknown {e}"}}
                await ws.send(json.dumps(reply))
                await self._after(st, method, params, result)
        finally:
            await self._drop(st)

    async def _send_event(self, st, ev):
        try:
            await st["ws"].send(json.dumps({"jsonrpc": "2.0", "method": "event", "params": {
                "subscription": st["sub"], "result": ev}}))
        except Exception:
            pass

    async def _room_event(self, room, ev, exclude=None):
        for pid, st in list(self.rooms.get(room, {}).items()):
            if pid != exclude:
                await self._send_event(st, ev)

    async def _call(self, st, method, params):
        if method == "subscribeEvents":
            return st["sub"]
        if method == "join":
            st["peerId"], st["room"] = uuid.uuid4().hex, params["room"]
            room = self.rooms.setdefault(params["room"], {})
            res = {"peerId": st["peerId"],
                   "peers": [{"peerId": p, "displayName": s["name"]} for p, s in room.items()],
                   "producers": [{"peerId": v["peer"], "producerId": k, "kind": "audio",
                                  "paused": v["paused"]} for k, v in self.producers.items()
                                 if v["peer"] in room],
                   "routerRtpCapabilities": ROUTER_CAPS}
            st["name"] = params["displayName"]
            room[st["peerId"]] = st
            return res
        if method == "produce":
            pid = str(uuid.uuid4())
            self.producers[pid] = {"peer": st["peerId"], "paused": False}
            return {"id": pid}
        if method == "consume":
            r = self._result(method, params)
            self.producers[params["producerId"]]  # KeyError if unknown
            self.consumers[r["id"]] = {"producerId": params["producerId"],
                                       "peer": st["peerId"], "task": None}
            return r
        if method == "resumeConsumer":
            c = self.consumers[params["consumerId"]]
            c["task"] = asyncio.create_task(self._feed(params["consumerId"]))
            return {}
        if method in ("pauseProducer", "resumeProducer"):
            self.producers[params["producerId"]]["paused"] = method == "pauseProducer"
            return {}
        if method == "getRouterRtpCapabilities":
            return ROUTER_CAPS
        if method == "leave":
            await self._drop(st)
            st["room"] = st["peerId"] = None
            return {}
        r = self._result(method, params)
        if r is None:
            raise KeyError(f"method {method}")
        return r

    async def _after(self, st, method, params, result):
        if method == "subscribeEvents":
            await self._send_event(st, {"type": "welcome", "sessionId": st["sub"],
                                        "server": "fake", "version": "0"})
        elif method == "join":
            await self._room_event(st["room"], {"type": "peerJoined", "peerId": st["peerId"],
                                                "displayName": st["name"]}, st["peerId"])
        elif method == "produce":
            await self._room_event(st["room"], {"type": "producerAdded", "peerId": st["peerId"],
                                                "producerId": result["id"], "kind": "audio"},
                                   st["peerId"])
        elif method in ("pauseProducer", "resumeProducer"):
            t = "producerPaused" if method == "pauseProducer" else "producerResumed"
            await self._room_event(st["room"], {"type": t, "producerId": params["producerId"]},
                                   st["peerId"])

    async def _drop(self, st):
        room = self.rooms.get(st["room"], {})
        room.pop(st["peerId"], None)
        for pid in [k for k, v in self.producers.items() if v["peer"] == st["peerId"]]:
            del self.producers[pid]
            for cid in [k for k, v in self.consumers.items() if v["producerId"] == pid]:
                c = self.consumers.pop(cid)
                if c["task"]:
                    c["task"].cancel()
                if c["peer"] in room:
                    await self._send_event(room[c["peer"]], {
                        "type": "consumerClosed", "consumerId": cid, "producerId": pid})
            await self._room_event(st["room"], {"type": "producerClosed", "producerId": pid})
        await self._room_event(st["room"], {"type": "peerLeft", "peerId": st["peerId"]})

    def _client_consumer(self, cid):
        for peer in self.registry:
            if cid in peer.consumers:
                ci = peer.consumers[cid]
                ci.loop = peer.loop
                return ci
        raise AssertionError(f"no client consumer {cid}")

    def _freq(self, producer_id):
        for peer in self.registry:
            if producer_id in peer.tracks:
                return peer.tracks[producer_id].freq
        raise AssertionError(f"no client producer {producer_id}")

    async def _feed(self, cid):
        c = self.consumers[cid]
        ci = self._client_consumer(cid)
        tone = dp.ToneTrack(self._freq(c["producerId"]))
        while cid in self.consumers:
            frame = await tone.recv()     # real-time paced
            if not self.producers.get(c["producerId"], {"paused": True})["paused"]:
                # thread-safe so the fake can also serve peers running in another loop
                ci.loop.call_soon_threadsafe(ci.consumer.track._queue.put_nowait, frame)


def test_scenarios_against_fake_sfu(monkeypatch):
    registry = []
    orig_init = dp.Peer.__init__

    def init(self, *a, **kw):
        orig_init(self, *a, **kw)
        self.loop = asyncio.get_running_loop()
        registry.append(self)

    monkeypatch.setattr(dp.Peer, "__init__", init)

    async def main():
        async with FakeSfu(registry) as srv:
            two = await dp.scenario_two_peers(srv.url)
            assert two["nonsilent_while_paused"] == 0
            assert "producerClosed" in two["b_events"] and "consumerClosed" in two["b_events"]
            three = await dp.scenario_three_peers(srv.url)
            assert len([k for k in three if "<-" in k]) == 6
            print(json.dumps(two, default=str))
            print(json.dumps(three, default=str))

    run(main(), timeout=90)
