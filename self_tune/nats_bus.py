"""`NatsBus`: the telemetry bus over NATS core pub/sub, so other processes watch the snapshots.

    publish(snapshot) ──bounded queue──▶ bus thread (the nats client's event loop) ──▶ NATS
    NATS ──▶ bus thread ──TelemetrySnapshot.from_dict──▶ Subscription (bounded, as in process)

`NatsBus(url, subject)` is a `TelemetryBus[TelemetrySnapshot]` behind the same three methods
as `InProcessBus`, with the same `Subscription`. `publish()` never blocks and never raises: it
puts the JSON of `snapshot.to_dict()` on a bounded queue a background thread sends from, and
what does not fit (a slow or unreachable server) is dropped and counted. Connecting and
reconnecting are the nats client's (it retries for ever); while it is away the queue fills
and then drops. A message on the subject that is not a snapshot is counted in `bad_messages`
and logged once, never raised. A password or token in the URL is masked in every log line,
error and status (`url` is the masked form).

`orchestrator serve --self-tune --telemetry-nats URL` and `coordinator --self-improve
--telemetry-nats URL` mirror their in-process bus here (`SelfTuning`). The `nats` package is
imported only when a `NatsBus` is made, so the commands start as fast without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections import deque
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from self_tune.telemetry import Subscription, TelemetrySnapshot

__all__ = ["DEFAULT_SUBJECT", "QUEUE_MAX", "NatsBus", "mask_url", "subject_problem"]

log = logging.getLogger(__name__)

DEFAULT_SUBJECT = "orchestrator.telemetry"
"""The subject snapshots are published on (`--telemetry-nats-subject`)."""

QUEUE_MAX = 1024
"""Snapshots waiting for the server at most; more are dropped (and counted)."""

CLOSE_TIMEOUT_S = 5.0


def subject_problem(subject: str) -> str | None:
    """Why `subject` cannot be published on (None: it can)."""
    if not subject or any(c.isspace() for c in subject) or {"*", ">"} & set(subject):
        return f"a NATS subject to publish on has no spaces or wildcards, got {subject!r}"
    if "" in subject.split("."):
        return f"a NATS subject has no empty tokens (a.b.c), got {subject!r}"
    return None


def mask_url(url: str) -> str:
    """`url` (or a comma-separated list of them) with any password or token replaced by ***."""
    return ",".join(_mask_one(part.strip()) for part in url.split(","))


def _mask_one(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<a NATS URL that does not parse>"
    if "@" not in parts.netloc:
        return url
    userinfo, _, host = parts.netloc.rpartition("@")
    user, colon, _ = userinfo.partition(":")
    shown = f"{user}:***" if colon else "***"  # nats://TOKEN@host: the token is the secret
    return urlunsplit(parts._replace(netloc=f"{shown}@{host}"))


def _secrets(url: str) -> list[str]:
    found = []
    for part in url.split(","):
        with contextlib.suppress(ValueError):
            netloc = urlsplit(part.strip()).netloc
            if "@" in netloc:
                userinfo = netloc.rpartition("@")[0]
                secret = userinfo.partition(":")[2] if ":" in userinfo else userinfo
                if secret:
                    found += [secret, unquote(secret)]
    return sorted(set(found), key=len, reverse=True)


class NatsBus:
    """A `TelemetryBus[TelemetrySnapshot]` over NATS core pub/sub on `subject`.

    `published` counts snapshots handed to the nats client, `dropped` those it never got (the
    queue of `queue_max` was full, or the client refused them), `pending` those waiting in the
    queue. Local subscribers (`subscribe`) are fed from one NATS subscription, in the order
    they subscribed. `close()` sends what is queued (within a few seconds), drains and
    disconnects.
    """

    def __init__(
        self,
        url: str,
        subject: str = DEFAULT_SUBJECT,
        *,
        queue_max: int = QUEUE_MAX,
        connect_timeout_s: float = 2.0,
        reconnect_wait_s: float = 1.0,
    ) -> None:
        import nats  # lazily: only a process that makes a NATS bus loads the client

        problem = subject_problem(subject)
        if problem is not None:
            raise ValueError(problem)
        if queue_max < 1:
            raise ValueError(f"queue_max must be >= 1, got {queue_max!r}")
        servers = [u.strip() for u in url.split(",") if u.strip()]
        if not servers:
            raise ValueError("a NATS URL, e.g. nats://127.0.0.1:4222")
        self.url = mask_url(url)
        self.subject = subject
        self.queue_max = queue_max
        self._nats = nats
        self._servers = servers
        self._secret_texts = _secrets(url)
        self._connect_timeout_s = connect_timeout_s
        self._reconnect_wait_s = reconnect_wait_s
        self._lock = threading.Lock()
        self._queue: deque[bytes] = deque()
        self._published = 0
        self._dropped = 0
        self.bad_messages = 0
        self._bad_logged = False
        self._error_logged = False
        self._subscribers: list[Subscription[TelemetrySnapshot]] = []
        self._connected = threading.Event()
        self._listening = threading.Event()  # the NATS subscription is in place at the server
        self._closing = False
        self._nc: Any = None
        self._nats_sub: Any = None
        self._loop = asyncio.new_event_loop()
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._thread = threading.Thread(target=self._run, name=f"nats-bus {subject}", daemon=True)
        self._thread.start()

    # -- the TelemetryBus ------------------------------------------------------------------

    @property
    def published(self) -> int:
        """Snapshots handed to the nats client so far."""
        return self._published

    @property
    def dropped(self) -> int:
        """Snapshots never handed to it: the queue was full (server slow or away) or closed."""
        return self._dropped

    @property
    def pending(self) -> int:
        """Snapshots queued for the server."""
        return len(self._queue)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def publish(self, message: TelemetrySnapshot) -> None:
        """Queue `message` for the server; never blocks, never raises (drops and counts)."""
        try:
            data = json.dumps(message.to_dict()).encode()
        except (TypeError, ValueError):
            log.exception(
                "telemetry NATS %s: a snapshot that is not JSON was dropped", self.subject
            )
            with self._lock:
                self._dropped += 1
            return
        with self._lock:
            if self._closing or len(self._queue) >= self.queue_max:
                self._dropped += 1
                return
            self._queue.append(data)
        self._call(self._wake.set)

    def subscribe(self, *, maxlen: int = 256) -> Subscription[TelemetrySnapshot]:
        """A subscription fed from NATS messages on the subject, keeping at most `maxlen`
        undrained (the oldest dropped and counted). `wait_ready()` says when the server has
        it, so that a publisher elsewhere is heard."""
        sub: Subscription[TelemetrySnapshot] = Subscription(self._remove, maxlen)
        with self._lock:
            self._subscribers.append(sub)
            first = len(self._subscribers) == 1
        if first:
            self._listening.clear()
            self._call(lambda: self._loop.create_task(self._listen()))
        return sub

    def wait_ready(self, timeout_s: float | None = None) -> bool:
        """Block until connected and, with subscribers, subscribed at the server (True), or
        `timeout_s` passes (False)."""
        if not self._connected.wait(timeout_s):
            return False
        with self._lock:
            listening = bool(self._subscribers)
        return self._listening.wait(timeout_s) if listening else True

    def close(self) -> None:
        """Send what is queued (a few seconds at most), drain and disconnect; idempotent."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
        self._call(self._stop.set)
        self._thread.join(timeout=CLOSE_TIMEOUT_S + 2 * self._connect_timeout_s)
        with self._lock:  # what the server never got
            self._dropped += len(self._queue)
            self._queue.clear()

    def status(self) -> dict[str, Any]:
        """JSON-ready: the masked URL, the subject and the counts."""
        return {
            "url": self.url,
            "subject": self.subject,
            "connected": self.connected,
            "published": self.published,
            "dropped": self.dropped,
            "pending": self.pending,
            "bad_messages": self.bad_messages,
        }

    # -- the bus thread --------------------------------------------------------------------

    def _call(self, fn: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to wake
            self._loop.call_soon_threadsafe(fn)

    def _remove(self, sub: Subscription[TelemetrySnapshot]) -> None:
        with self._lock:
            if sub in self._subscribers:
                self._subscribers.remove(sub)
            last = not self._subscribers
        if last:
            self._call(lambda: self._loop.create_task(self._unlisten()))

    def _scrub(self, text: object) -> str:
        shown = str(text)
        for secret in self._secret_texts:
            shown = shown.replace(secret, "***")
        return shown

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._main())
        except Exception as exc:  # never let the thread die loudly with a secret in it
            log.error("telemetry NATS %s: the bus thread stopped: %s", self.url, self._scrub(exc))
        finally:
            with contextlib.suppress(Exception):
                self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

    async def _main(self) -> None:
        nc = self._nats.NATS()
        connecting = asyncio.ensure_future(
            nc.connect(
                servers=self._servers,
                name="prompt-orchestrator telemetry",
                connect_timeout=self._connect_timeout_s,
                reconnect_time_wait=self._reconnect_wait_s,
                max_reconnect_attempts=-1,
                allow_reconnect=True,
                error_cb=self._on_error,
                disconnected_cb=self._on_disconnected,
                reconnected_cb=self._on_reconnected,
            )
        )
        stopping = asyncio.ensure_future(self._stop.wait())
        await asyncio.wait({connecting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not connecting.done() and self._queue:  # closing with snapshots queued: a while
            await asyncio.wait({connecting}, timeout=self._connect_timeout_s)
        if not connecting.done():  # closed before the server was ever reached
            for _ in range(50):  # the client may swallow one cancel mid-attempt: cancel again
                connecting.cancel()
                await asyncio.wait({connecting}, timeout=0.1)
                if connecting.done():
                    break
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(nc.close(), timeout=1.0)
            return
        stopping.cancel()
        if connecting.exception() is not None:
            log.warning(
                "telemetry NATS %s: cannot connect: %s",
                self.url,
                self._scrub(connecting.exception()),
            )
            return
        self._nc = nc
        self._connected.set()
        self._error_logged = False
        log.info("telemetry NATS %s: connected, publishing on %s", self.url, self.subject)
        with self._lock:
            listen = bool(self._subscribers)
        if listen:
            await self._listen()
        try:
            await self._send_until_stopped(nc)
        finally:
            self._connected.clear()
            try:
                await asyncio.wait_for(nc.drain(), timeout=CLOSE_TIMEOUT_S)
            except Exception as exc:
                log.warning("telemetry NATS %s: drain on close: %s", self.url, self._scrub(exc))
                with contextlib.suppress(Exception):
                    await nc.close()

    async def _send_until_stopped(self, nc: Any) -> None:
        while True:
            await self._send_queued(nc)
            if self._stop.is_set():
                return
            self._wake.clear()
            if self._queue:
                continue
            waits = {
                asyncio.ensure_future(self._wake.wait()),
                asyncio.ensure_future(self._stop.wait()),
            }
            _, left = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for task in left:
                task.cancel()

    async def _send_queued(self, nc: Any) -> None:
        while True:
            with self._lock:
                if not self._queue:
                    return
                data = self._queue.popleft()
            try:
                await nc.publish(self.subject, data)
            except Exception as exc:  # e.g. the client's own buffer is full while away
                with self._lock:
                    self._dropped += 1
                self._log_error_once(exc)
                continue
            with self._lock:
                self._published += 1

    async def _listen(self) -> None:
        if self._nc is None or self._nats_sub is not None:
            return  # not connected yet (`_main` listens on connecting), or listening already
        self._nats_sub = "subscribing"  # a second _listen while this one awaits does nothing
        try:
            self._nats_sub = await self._nc.subscribe(self.subject, cb=self._on_message)
            await self._nc.flush(timeout=max(1, int(self._connect_timeout_s)))
        except Exception as exc:
            if self._nats_sub == "subscribing":
                self._nats_sub = None
            self._log_error_once(exc)
            return
        self._listening.set()

    async def _unlisten(self) -> None:
        sub, self._nats_sub = self._nats_sub, None
        self._listening.clear()
        if sub is not None and sub != "subscribing":
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _on_message(self, msg: Any) -> None:
        try:
            snapshot = TelemetrySnapshot.from_dict(json.loads(msg.data))
        except (ValueError, TypeError) as exc:  # JSONDecodeError and UnicodeError are these
            self.bad_messages += 1
            if not self._bad_logged:
                self._bad_logged = True
                log.warning(
                    "telemetry NATS %s: a message on %s is not a telemetry snapshot "
                    "(%s); counted in bad_messages, later ones are not logged",
                    self.url,
                    msg.subject,
                    exc,
                )
            return
        with self._lock:
            subscribers = tuple(self._subscribers)
        for sub in subscribers:
            sub._offer(snapshot)

    def _log_error_once(self, exc: BaseException) -> None:
        if not self._error_logged:
            self._error_logged = True
            log.warning(
                "telemetry NATS %s: %s: %s (until it is back, snapshots that do not "
                "fit the queue are dropped)",
                self.url,
                type(exc).__name__,
                self._scrub(exc),
            )

    async def _on_error(self, exc: Exception) -> None:
        self._log_error_once(exc)

    async def _on_disconnected(self) -> None:
        if not self._closing and self._connected.is_set():
            log.warning("telemetry NATS %s: disconnected; the client reconnects", self.url)

    async def _on_reconnected(self) -> None:
        self._error_logged = False
        log.info("telemetry NATS %s: reconnected", self.url)
