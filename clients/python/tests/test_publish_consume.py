"""Publishing in every mode, idempotency, fetch/ack/nack, the stream and the consumer loop,
against a real `converge serve`."""

from __future__ import annotations

import threading
import time
import unittest

from converge_client import (Backoff, Client, CloudEvent, Consumer, Delivery, Nack,
                             PermanentFailure)
from converge_client.errors import NotFoundError

from serve import ServeProcess, wait_until

CONFIG = """
auto_create_topics: true
topic_defaults:
  partitions: 4
groups:
  lease_ms: 2000
  session_timeout_ms: 5000
  max_deliveries: 3
"""


class PublishConsumeTest(unittest.TestCase):
    server: ServeProcess
    client: Client

    @classmethod
    def setUpClass(cls) -> None:
        cls.server = ServeProcess(CONFIG).start()
        cls.client = Client(cls.server.url, timeout=30)

    @classmethod
    def tearDownClass(cls) -> None:
        cls.client.close()
        cls.server.stop()

    def drain(self, topic: str, group: str, count: int, timeout: float = 20) -> list[Delivery]:
        got: list[Delivery] = []
        deadline = time.monotonic() + timeout
        while len(got) < count and time.monotonic() < deadline:
            batch = self.client.fetch(topic, group, max_events=100, wait_ms=500)
            if batch:
                self.client.ack(topic, group, batch)
                got.extend(batch)
        return got

    def test_structured_batch_and_binary_publish_round_trip(self) -> None:
        topic = "modes"
        a = CloudEvent(type="t.json", source="/py/test", data={"n": 1}, subject="s1",
                       extensions={"tenant": "acme", "prio": 3, "flag": True})
        b = CloudEvent(type="t.bytes", source="/py/test", data=b"\x00\x01\xff",
                       datacontenttype="application/octet-stream")
        c = CloudEvent(type="t.text", source="/py/test", data="h\u00e9llo",
                       datacontenttype="text/plain")
        d = CloudEvent(type="t.binary", source="/py/test", data={"x": [1, 2]},
                       subject="caf\u00e9 \"quoted\" %", extensions={"tenant": "z z"})
        r1 = self.client.publish(topic, a)
        r2 = self.client.publish_batch(topic, [b, c])
        r3 = self.client.publish_binary(topic, d)
        self.assertEqual(r1.id, a.id)
        self.assertEqual([r.id for r in r2], [b.id, c.id])
        self.assertFalse(r3.duplicate)
        got = {x.event.id: x.event for x in self.drain(topic, "g", 4) if x.event}
        self.assertEqual(got[a.id].data, {"n": 1})
        self.assertEqual(got[a.id].extensions["prio"], 3)
        self.assertIs(got[a.id].extensions["flag"], True)
        self.assertEqual(got[b.id].data, b"\x00\x01\xff")
        self.assertEqual(got[c.id].data, "h\u00e9llo")
        self.assertEqual(got[d.id].json_data(), {"x": [1, 2]})
        self.assertEqual(got[d.id].subject, "caf\u00e9 \"quoted\" %")
        self.assertEqual(got[d.id].extensions["tenant"], "z z")

    def test_a_republished_event_is_stored_once(self) -> None:
        e = CloudEvent(type="t", source="/py/idem", data={"k": 1})
        first = self.client.publish("idem", e)
        again = self.client.publish("idem", e)
        self.assertFalse(first.duplicate)
        self.assertTrue(again.duplicate)
        self.assertEqual((first.partition, first.offset), (again.partition, again.offset))
        binary_again = self.client.publish_binary("idem", e)
        self.assertTrue(binary_again.duplicate)
        # The same id from another source is another event.
        other = CloudEvent(type="t", source="/py/other", id=e.id)
        self.assertFalse(self.client.publish("idem", other).duplicate)

    def test_nack_redelivers_and_permanent_nack_dead_letters(self) -> None:
        topic = "nacks"
        self.client.create_topic(topic, partitions=1)
        self.client.publish_batch(topic, [CloudEvent(type="t", source="/n", data=i)
                                          for i in range(2)])
        batch = self.client.fetch(topic, "g", max_events=10, wait_ms=2000)
        self.assertEqual(len(batch), 2)
        r = self.client.nack(topic, "g", [Nack(batch[0].lease),
                                          Nack(batch[1].lease, permanent=True, reason="bad")])
        self.assertEqual(r.nacked, 2)
        again = self.client.fetch(topic, "g", max_events=10, wait_ms=2000)
        self.assertEqual([d.event.data for d in again if d.event], [0])
        self.assertEqual(again[0].attempt, 2)
        self.client.ack(topic, "g", again)
        dl = self.client.dead_letters(topic, "g")
        self.assertEqual(len(dl["dead_letters"]), 1)
        self.assertEqual(dl["dead_letters"][0]["event"]["data"], 1)

    def test_stream_delivers_and_acks(self) -> None:
        topic = "streamed"
        self.client.create_topic(topic, partitions=2)
        events = [CloudEvent(type="t", source="/s", data=i) for i in range(5)]
        self.client.publish_batch(topic, events)
        seen = []
        with self.client.stream(topic, "g", consumer="py-stream") as s:
            for d in s:
                seen.append(d.event.data if d.event else None)
                self.client.ack(topic, "g", [d])
                if len(seen) == 5:
                    break
        self.assertEqual(sorted(seen), list(range(5)))
        wait_until(lambda: self.client.describe_group(topic, "g")["lag"] == 0, what="lag 0")

    def run_consumer_keeps_key_order(self, mode: str) -> None:
        topic = f"ordered-{mode}"
        self.client.create_topic(topic, partitions=2)
        keys = [f"k{i}" for i in range(6)]
        n = 20
        for i in range(n):
            self.client.publish_batch(topic, [CloudEvent(type="t", source="/o", data=i,
                                                         extensions={"partitionkey": k})
                                              for k in keys])
        seen: dict[str, list[int]] = {k: [] for k in keys}
        failed_once: set[tuple[str, int]] = set()
        lock = threading.Lock()

        def handler(d: Delivery) -> None:
            assert d.event is not None
            key, value = d.event.partitionkey or "", int(d.event.data)
            # Fail every 7th event once: it is redelivered, and its key must wait for it.
            if value % 7 == 3 and (key, value) not in failed_once:
                with lock:
                    failed_once.add((key, value))
                raise RuntimeError("transient")
            with lock:
                seen[key].append(value)

        c = Consumer(self.client, topic, "g", handler, mode=mode,  # type: ignore[arg-type]
                     workers=3, wait_ms=500, retry_backoff=Backoff(0.01, 0.05))
        c.start()
        try:
            wait_until(lambda: sum(len(v) for v in seen.values()) >= n * len(keys), timeout=60,
                       what="every event handled")
        finally:
            c.stop(timeout=30)
        for k in keys:
            self.assertEqual(seen[k], list(range(n)), k)
        self.assertGreater(c.stats.failed, 0)
        wait_until(lambda: self.client.describe_group(topic, "g")["lag"] == 0, what="lag 0")

    def test_fetch_consumer_keeps_key_order(self) -> None:
        self.run_consumer_keeps_key_order("fetch")

    def test_stream_consumer_keeps_key_order(self) -> None:
        self.run_consumer_keeps_key_order("stream")

    def test_graceful_stop_acks_the_running_handler_and_leaves(self) -> None:
        topic = "graceful"
        self.client.create_topic(topic, partitions=1)
        self.client.publish_batch(topic, [CloudEvent(type="t", source="/g", data=i)
                                          for i in range(3)])
        started = threading.Event()
        release = threading.Event()
        handled: list[int] = []

        def handler(d: Delivery) -> None:
            started.set()
            release.wait(10)
            handled.append(int(d.event.data if d.event else -1))

        c = Consumer(self.client, topic, "g", handler, max_events=1, wait_ms=200)
        c.start()
        self.assertTrue(started.wait(20))
        stopper = threading.Thread(target=c.stop, kwargs={"timeout": 20})
        stopper.start()
        time.sleep(0.2)
        release.set()
        stopper.join(30)
        self.assertFalse(stopper.is_alive())
        self.assertEqual(handled, [0])
        group = self.client.describe_group(topic, "g")
        self.assertEqual(group["members"], 0)
        self.assertEqual(group["lag"], 2)  # the handled one was acked before leaving
        # The rest is delivered at once to the next consumer (no lease to wait out).
        rest = self.client.fetch(topic, "g", max_events=10, wait_ms=2000)
        self.assertEqual([d.event.data for d in rest if d.event], [1, 2])

    def test_an_idle_stream_consumer_stops_at_once(self) -> None:
        topic = "idle-stream"
        self.client.create_topic(topic)
        c = Consumer(self.client, topic, "g", lambda d: None, mode="stream", consumer="idle-1")
        c.start()
        def joined() -> bool:
            try:
                return bool(self.client.describe_group(topic, "g")["members"] == 1)
            except NotFoundError:
                return False  # the stream creates the group

        wait_until(joined, what="the stream joined")
        began = time.monotonic()
        c.stop(timeout=30)
        # Not at the next heartbeat (15 s): closing the stream wakes its reader.
        self.assertLess(time.monotonic() - began, 5.0)

    def test_permanent_failure_dead_letters(self) -> None:
        topic = "permanent"
        self.client.create_topic(topic, partitions=1)
        self.client.publish(topic, CloudEvent(type="t", source="/p", data="poison"))

        def handler(d: Delivery) -> None:
            raise PermanentFailure("cannot parse")

        c = Consumer(self.client, topic, "g", handler, wait_ms=200)
        c.start()
        wait_until(lambda: c.stats.dead_lettered == 1, what="dead-lettered")
        c.stop(10)
        dl = self.client.dead_letters(topic, "g")["dead_letters"]
        self.assertEqual(len(dl), 1)
        self.assertIn("cannot parse", dl[0]["reason"] + dl[0]["last_error"])

    def test_consumer_backs_off_while_the_topic_is_missing(self) -> None:
        errors: list[BaseException] = []
        c = Consumer(self.client, "not-there-yet", "g", lambda d: None, wait_ms=100,
                     on_error=errors.append)
        c.start()
        wait_until(lambda: len(errors) >= 2, what="errors")
        c.stop(10)
        self.assertIsInstance(errors[0], NotFoundError)


if __name__ == "__main__":
    unittest.main()
