"""A consumer loop over a consumer group: fetch/ack/nack or the Server-Sent Events stream.

Per-key order: the server delivers one event per partition key at a time (docs/server.md,
"Partition key") and the next only once the previous is acked or dead-lettered; this loop keeps
that order by running a key's events one after another and acking each only after its handler
returned. Events of different keys may run in parallel (``workers``).

Failures: a handler that raises gets its event nacked with a growing delay (redelivered; after
the group's ``max_deliveries`` it is dead-lettered); :class:`PermanentFailure` dead-letters it
at once. Errors talking to the server are retried with exponential backoff and full jitter.

Graceful stop: :meth:`Consumer.stop` lets the handlers running finish and ack, then leaves the
group, so nothing leased is left to wait for a lease expiry.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Literal

from ._http import Backoff
from .client import Client, Delivery, DeliveryStream, Nack, check_consumer, check_group, check_topic
from .errors import (ApiError, ClientInputError, ConvergeError, NotFoundError, RetryableError,
                     TransportError)

#: Handles one delivery; returning means done (ack), raising means not done (nack).
Handler = Callable[[Delivery], None]


class PermanentFailure(Exception):
    """Raised by a handler for an event that can never be handled: dead-letter it now."""


def default_consumer_name() -> str:
    host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())[:60] or "host"
    return f"py-{host}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


@dataclass
class ConsumerStats:
    handled: int = 0
    failed: int = 0
    dead_lettered: int = 0
    lost_acks: int = 0
    server_errors: int = 0


class Consumer:
    """Runs ``handler`` for every event of ``topic`` in ``group`` until stopped.

    ``mode``: ``"fetch"`` (long-polling fetch, ``wait_ms``) or ``"stream"`` (SSE).
    """

    def __init__(self, client: Client, topic: str, group: str, handler: Handler, *,
                 consumer: str | None = None, mode: Literal["fetch", "stream"] = "fetch",
                 max_events: int = 100, wait_ms: int = 5000, workers: int = 1,
                 retry_backoff: Backoff | None = None, error_backoff: Backoff | None = None,
                 on_error: Callable[[BaseException], None] | None = None) -> None:
        if not isinstance(client, Client):
            raise ClientInputError("client must be a converge_client.Client")
        if not callable(handler):
            raise ClientInputError("handler must be callable")
        if mode not in ("fetch", "stream"):
            raise ClientInputError("mode must be 'fetch' or 'stream'")
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ClientInputError("workers must be an integer >= 1")
        if isinstance(max_events, bool) or not isinstance(max_events, int) or max_events < 1:
            raise ClientInputError("max_events must be an integer >= 1")
        if isinstance(wait_ms, bool) or not isinstance(wait_ms, int) or wait_ms < 0:
            raise ClientInputError("wait_ms must be an integer >= 0")
        self.client = client
        self.topic = check_topic(topic)
        self.group = check_group(group)
        self.consumer = check_consumer(consumer) if consumer is not None else default_consumer_name()
        self.handler = handler
        self.mode = mode
        self.max_events = max_events
        self.wait_ms = wait_ms
        self.workers = workers
        self.retry_backoff = retry_backoff or Backoff(base_s=0.2, cap_s=60.0)
        self.error_backoff = error_backoff or Backoff(base_s=0.05, cap_s=5.0)
        self.on_error = on_error
        self.stats = ConsumerStats()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._busy = False
        self._stream: DeliveryStream | None = None
        self._thread: threading.Thread | None = None
        self._pool = ThreadPoolExecutor(workers) if workers > 1 else None

    # --- control ---------------------------------------------------------------------------
    def start(self) -> threading.Thread:
        """Runs the loop on a new thread."""
        t = threading.Thread(target=self.run, name=f"converge-consumer-{self.topic}",
                             daemon=True)
        self._thread = t
        t.start()
        return t

    def stop(self, timeout: float | None = None) -> None:
        """Stops after the handlers running now finished and were acked; leaves the group.

        In fetch mode a long poll in progress ends first (at most ``wait_ms``).
        """
        self._stop.set()
        with self._lock:
            if not self._busy and self._stream is not None:
                self._stream.close()  # idle: wake the reader
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self) -> None:
        """The loop (run it once); returns after :meth:`stop`. Raises on errors retrying cannot
        fix (authentication, permission, a bad request)."""
        try:
            if self.mode == "fetch":
                self._run_fetch()
            else:
                self._run_stream()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
            try:
                self.client.leave(self.topic, self.group, self.consumer)
            except ConvergeError:
                pass  # the session timeout removes the member anyway
            self.client.close()  # this thread's kept-alive connection

    # --- internals ---------------------------------------------------------------------------
    def _server_error(self, e: BaseException, attempt: int) -> None:
        """Backs off after a failed call, or re-raises what retrying cannot fix."""
        self.stats.server_errors += 1
        if self.on_error is not None:
            self.on_error(e)
        if isinstance(e, ApiError) and not isinstance(e, (RetryableError, NotFoundError)):
            if e.status < 500:
                raise e
        self._stop.wait(self.error_backoff.delay(attempt))

    def _run_fetch(self) -> None:
        errors = 0
        while not self._stop.is_set():
            try:
                batch = self.client.fetch(self.topic, self.group, max_events=self.max_events,
                                          wait_ms=self.wait_ms, consumer=self.consumer)
            except (ConvergeError, OSError) as e:
                self._server_error(e, errors)
                errors += 1
                continue
            errors = 0
            if batch:
                self._handle_batch(batch)

    def _run_stream(self) -> None:
        errors = 0
        while not self._stop.is_set():
            try:
                stream = self.client.stream(self.topic, self.group, consumer=self.consumer,
                                            max_events=self.max_events)
            except (ConvergeError, OSError) as e:
                self._server_error(e, errors)
                errors += 1
                continue
            with self._lock:
                self._stream = stream
                if self._stop.is_set():
                    stream.close()
            try:
                for delivery in stream:
                    errors = 0
                    with self._lock:
                        self._busy = True
                    try:
                        self._handle_batch([delivery])
                    finally:
                        with self._lock:
                            self._busy = False
                            if self._stop.is_set():
                                stream.close()
            except (TransportError, OSError) as e:
                if not self._stop.is_set():
                    self._server_error(e, errors)
                    errors += 1
            except ApiError as e:  # an `error` event ended the stream
                self._server_error(e, errors)
                errors += 1
            finally:
                stream.close()
                with self._lock:
                    self._stream = None

    def _handle_batch(self, batch: list[Delivery]) -> None:
        # Group by ordering key; events without a key have no order among themselves.
        groups: dict[object, list[Delivery]] = {}
        for d in batch:
            key = d.event.ordering_key if d.event is not None else None
            groups.setdefault(key if key is not None else object(), []).append(d)
        acks: list[Delivery] = []
        nacks: list[Nack] = []
        lock = threading.Lock()

        def run_key(items: list[Delivery]) -> None:
            for i, d in enumerate(items):
                outcome = self._handle_one(d)
                with lock:
                    if outcome is None:
                        acks.append(d)
                    else:
                        nacks.append(outcome)
                        # Later events of this key must wait for this one: hand them back.
                        nacks.extend(Nack(x.lease, 0) for x in items[i + 1:])
                if outcome is not None:
                    return

        if self._pool is not None and len(groups) > 1:
            list(self._pool.map(run_key, groups.values()))
        else:
            for items in groups.values():
                run_key(items)
        self._settle(acks, nacks)

    def _handle_one(self, d: Delivery) -> Nack | None:
        if d.event is None:
            # Not a CloudEvent: nothing can handle it.
            self.stats.dead_lettered += 1
            return Nack(d.lease, permanent=True, reason=f"not a CloudEvent: {d.error}")
        try:
            self.handler(d)
        except PermanentFailure as e:
            self.stats.dead_lettered += 1
            return Nack(d.lease, permanent=True, reason=str(e) or "permanent failure")
        except Exception as e:  # noqa: BLE001 - a handler failure is an outcome, not a crash
            self.stats.failed += 1
            if self.on_error is not None:
                self.on_error(e)
            delay_ms = int(self.retry_backoff.delay(d.attempt) * 1000)
            return Nack(d.lease, delay_ms=delay_ms, reason=f"{type(e).__name__}: {e}")
        self.stats.handled += 1
        return None

    def _settle(self, acks: list[Delivery], nacks: list[Nack]) -> None:
        # Acks and nacks are retried until they go through or the consumer stops: a lost one
        # only means a redelivery, which the handler (or its inbox) tolerates.
        attempt = 0
        while acks:
            try:
                r = self.client.ack(self.topic, self.group, acks, consumer=self.consumer)
                self.stats.lost_acks += len(r.lost)
                break
            except (ConvergeError, OSError) as e:
                if self._stop.is_set() and attempt > 3:
                    break
                self._server_error(e, attempt)
                attempt += 1
        attempt = 0
        while nacks:
            try:
                self.client.nack(self.topic, self.group, nacks, consumer=self.consumer)
                break
            except (ConvergeError, OSError) as e:
                if self._stop.is_set() and attempt > 3:
                    break
                self._server_error(e, attempt)
                attempt += 1
