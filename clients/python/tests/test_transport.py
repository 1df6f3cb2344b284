"""The transport's own HTTP/1.1 reader, against a scripted server: replies framed by
Content-Length, chunked, or the connection's close (``Connection: close``, or no length at
all), several requests on one kept-alive connection, and header values that would split the
request refused before anything is sent."""

from __future__ import annotations

import threading
import unittest
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from converge_client import Backoff
from converge_client._http import Transport


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.connections: set[int] = set()
        self.lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    server: Server
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length) if length else b""
        with self.server.lock:
            self.server.requests.append((self.path, dict(self.headers.items()), body))
            self.server.connections.add(self.client_address[1])
        reply = b"echo:" + body
        if self.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("X-Kind", "chunked")
            self.end_headers()
            for part in (reply[:4], reply[4:], b""):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
        elif self.path == "/close":
            self.send_response(201)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(reply)
            self.close_connection = True
        elif self.path == "/no-content":
            self.send_response(204)
            self.end_headers()
        else:
            self.send_response(200)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)


class TransportTest(unittest.TestCase):
    def setUp(self) -> None:
        self.srv = Server()
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()
        self.addCleanup(self.srv.server_close)
        self.addCleanup(self.srv.shutdown)
        self.t = Transport(f"http://127.0.0.1:{self.srv.server_address[1]}", "tok", 5.0, 0,
                           Backoff())
        self.addCleanup(self.t.close)

    def test_every_reply_framing(self) -> None:
        for path, status in (("/len", 200), ("/chunked", 200), ("/len", 200), ("/close", 201),
                             ("/no-content", 204), ("/len", 200)):
            res = self.t.request("POST", path, body=b'{"a":1}',
                                 headers={"Content-Type": "application/json"}, ok=(status,))
            self.assertEqual(res.status, status, path)
            self.assertEqual(res.body, b"" if status == 204 else b'echo:{"a":1}', path)
        self.assertEqual(res.headers["content-length"], "12")
        path, headers, body = self.srv.requests[0]
        self.assertEqual(headers["Authorization"], "Bearer tok")
        self.assertEqual(headers["Content-Type"], "application/json")
        self.assertEqual(headers["Content-Length"], "7")
        self.assertEqual(body, b'{"a":1}')
        # One connection until the server closed it ("/close"), then a new one.
        self.assertEqual(len(self.srv.connections), 2)

    def test_reply_headers_are_lower_case(self) -> None:
        res = self.t.request("POST", "/chunked", body=b"x")
        self.assertEqual(res.headers["x-kind"], "chunked")

    def test_header_values_that_would_split_the_request_are_refused(self) -> None:
        for headers in ({"X-A": "a\r\nX-B: b"}, {"X-A": "a\nb"}, {"X A": "b"}, {"": "b"}):
            with self.assertRaises(ValueError):
                self.t.request("POST", "/len", body=b"", headers=headers)
        with self.assertRaises(ValueError):
            self.t.request("POST", "/len x", body=b"")
        self.assertEqual(self.srv.requests, [])


if __name__ == "__main__":
    unittest.main()
