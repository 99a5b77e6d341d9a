"""A minimal JSON-RPC 2.0 client over one WebSocket: request ids, futures with timeouts,
a notification callback, and clear errors when the server answers with an error object
or the connection closes."""
from __future__ import annotations

import asyncio
import itertools
import json
import logging
from typing import Any, Callable, Dict, Optional

import websockets
from websockets.asyncio.client import connect as ws_connect

log = logging.getLogger("dspeak_peer.rpc")

DEFAULT_REQUEST_TIMEOUT = 10.0


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
