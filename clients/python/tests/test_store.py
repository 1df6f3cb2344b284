"""The store client against a real `converge serve`: reads, conditional writes, paging,
transactions, and `update` under an ETag race (no lost update)."""

from __future__ import annotations

import threading
import time
import unittest

from converge_client import ABSENT, Client, Store
from converge_client.errors import (AbortedError, AlreadyExistsError, ClientInputError,
                                    NotFoundError)

from serve import ServeProcess


class StoreTest(unittest.TestCase):
    server: ServeProcess
    client: Client

    @classmethod
    def setUpClass(cls) -> None:
        # A short idle timeout: kept-alive connections are closed by the server between calls.
        cls.server = ServeProcess("limits:\n  idle_timeout_ms: 300\n").start()
        cls.client = Client(cls.server.url)
        cls.store = Store(cls.client)
        cls.store.collection("counters").create()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.client.close()
        cls.server.stop()

    def test_etag_race_loses_no_update(self) -> None:
        coll = self.store.collection("counters")
        per_thread, threads = 40, 2
        retries = [0]
        lock = threading.Lock()

        def work() -> None:
            c = Store(Client(self.server.url)).collection("counters")
            calls = 0

            def inc(v: object) -> object:
                nonlocal calls
                calls += 1
                return {"n": (0 if v is ABSENT else v["n"]) + 1}  # type: ignore[index]

            for _ in range(per_thread):
                c.update("race/k+1", inc)
            with lock:
                retries[0] += calls - per_thread
            c.client.close()

        ts = [threading.Thread(target=work) for _ in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(120)
        doc = coll.get("race/k+1")
        self.assertEqual(doc.value, {"n": per_thread * threads})
        # Not guaranteed by timing alone, but two tight loops on one key collide.
        print(f"update retries under the race: {retries[0]}")

    def test_update_gives_up_after_max_attempts(self) -> None:
        coll = self.store.collection("counters")
        coll.put("contended", 0)

        def always_stale(v: object) -> object:
            coll.put("contended", int(v) + 1)  # type: ignore[call-overload]
            return -1

        with self.assertRaises(AbortedError):
            coll.update("contended", always_stale, max_attempts=3)
        self.assertEqual(coll.get("contended").value, 3)

    def test_conditional_writes_and_reads(self) -> None:
        coll = self.store.collection("counters")
        w = coll.put("doc-1", {"a": 1}, if_none_match=True)
        self.assertTrue(w.created)
        self.assertTrue(w.consistency_token)
        with self.assertRaises(AlreadyExistsError) as cm:
            coll.put("doc-1", {"a": 2}, if_none_match=True)
        self.assertEqual(cm.exception.status, 412)
        with self.assertRaises(AbortedError):
            coll.put("doc-1", {"a": 2}, if_match='"999999"')
        w2 = coll.put("doc-1", {"a": 2}, if_match=w.etag)
        self.assertEqual(coll.get("doc-1").etag, w2.etag)
        coll.delete("doc-1", if_match=w2.etag)
        self.assertIsNone(coll.find("doc-1"))
        with self.assertRaises(NotFoundError):
            coll.get("doc-1")

    def test_list_pages_through_every_document(self) -> None:
        coll = self.store.collection("paged")
        coll.create()
        for i in range(25):
            coll.put(f"p/{i:03d}", i)
        coll.put("q/0", 0)
        keys = [d.key for d in coll.list(prefix="p/", page_size=7)]
        self.assertEqual(keys, [f"p/{i:03d}" for i in range(25)])

    def test_transaction_commits_all_or_nothing(self) -> None:
        coll = self.store.collection("counters")
        w = coll.put("tx-a", 1)
        out = self.store.transaction([
            {"op": "put", "collection": "counters", "key": "tx-a", "value": 2, "if_match": w.etag},
            {"op": "put", "collection": "counters", "key": "tx-b", "value": 3},
        ])
        self.assertEqual(len(out["results"]), 2)
        with self.assertRaises(AbortedError):
            self.store.transaction([
                {"op": "put", "collection": "counters", "key": "tx-a", "value": 9,
                 "if_match": w.etag},
                {"op": "put", "collection": "counters", "key": "tx-c", "value": 9},
            ])
        self.assertIsNone(coll.find("tx-c"))
        self.assertEqual(coll.get("tx-a").value, 2)

    def test_a_connection_the_server_closed_while_idle_is_replaced_before_sending(self) -> None:
        coll = self.store.collection("counters")
        coll.put("idle", 1)
        time.sleep(0.8)  # past the server's idle timeout: it closed our kept-alive connection
        # An unconditional put is not retried on a lost connection (its outcome would be
        # unknown); it must go out on a fresh connection instead.
        self.assertEqual(coll.put("idle", 2).created, False)
        self.assertEqual(coll.get("idle").value, 2)

    def test_bad_input_is_refused_before_sending(self) -> None:
        coll = self.store.collection("counters")
        with self.assertRaisesRegex(ClientInputError, "document key"):
            coll.put("bad key", 1)
        with self.assertRaisesRegex(ClientInputError, "collection name"):
            self.store.collection("_x")
        with self.assertRaisesRegex(ClientInputError, "not JSON-serializable"):
            coll.put("k", {1, 2})
        with self.assertRaisesRegex(ClientInputError, "not both"):
            coll.put("k", 1, if_match='"1"', if_none_match=True)
        with self.assertRaisesRegex(ClientInputError, "ttl_ms"):
            coll.put("k", 1, ttl_ms=-1)
        with self.assertRaises(ClientInputError):
            coll.update("k", "not callable")  # type: ignore[arg-type]
        with self.assertRaises(ClientInputError):
            self.store.transaction([])


if __name__ == "__main__":
    unittest.main()
