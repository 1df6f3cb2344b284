"""The Python client's publish path against the C++ client's, in one run.

Starts one `converge serve` (topic durability fsync, the default), runs
`converge bench client-publish --port <its port>` (the C++ client: N publisher threads, one
connection each) and then the same request shapes from this client with N publisher threads:
one event per request (structured mode), --batch events per request (batched mode), and one
event per request in binary mode. Prints one JSON line per row, then the Python/C++ ratios.

    python3 clients/python/bench/publish_bench.py --binary build/converge [--publishers 32]
        [--seconds 5] [--batch 100]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from converge_client import Client, CloudEvent  # noqa: E402


def start_server(binary: str, work: str) -> tuple[subprocess.Popen[bytes], int]:
    config = os.path.join(work, "converge.yaml")
    with open(config, "w") as f:
        f.write("auto_create_topics: true\n")
    log = open(os.path.join(work, "serve.log"), "ab")
    proc = subprocess.Popen([binary, "serve", "--listen", "127.0.0.1:0", "--data-dir",
                             os.path.join(work, "data"), "--config", config],
                            stdout=subprocess.PIPE, stderr=log)
    log.close()
    assert proc.stdout is not None
    text = b""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if select.select([proc.stdout], [], [], 0.1)[0]:
            chunk = os.read(proc.stdout.fileno(), 512)
            if not chunk:
                break
            text += chunk
            m = re.search(rb"listening on http://127\.0\.0\.1:(\d+)", text)
            if m:
                return proc, int(m.group(1))
    proc.kill()
    raise RuntimeError(f"converge serve did not start: {text!r}")


def percentile(sorted_ns: list[int], q: float) -> float:
    if not sorted_ns:
        return 0.0
    rank = max(0, min(len(sorted_ns) - 1, int(q * len(sorted_ns) + 0.999999) - 1))
    return sorted_ns[rank] / 1000.0


def python_row(url: str, mode: str, publishers: int, seconds: float, batch: int) -> dict:
    per_request = batch if mode == "batch" else 1
    topic = f"bench-py-{mode}"
    counts = [0] * publishers
    latencies: list[list[int]] = [[] for _ in range(publishers)]
    errors: list[BaseException] = []
    start_gate = threading.Barrier(publishers + 1)
    data = {"order": 12345, "customer": "c-42", "total": 99.5}

    def work(t: int) -> None:
        client = Client(url, timeout=60)
        source = f"/bench/py/{mode}/{t}"
        seq = 0
        start_gate.wait()
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline:
                events = [CloudEvent(type="bench.order", source=source, id=str(seq + i), data=data)
                          for i in range(per_request)]
                seq += per_request
                before = time.perf_counter_ns()
                if mode == "structured":
                    client.publish(topic, events[0])
                elif mode == "binary":
                    client.publish_binary(topic, events[0])
                else:
                    client.publish_batch(topic, events)
                latencies[t].append(time.perf_counter_ns() - before)
                counts[t] += per_request
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)
        finally:
            client.close()

    threads = [threading.Thread(target=work, args=(t,)) for t in range(publishers)]
    for th in threads:
        th.start()
    start_gate.wait()
    began = time.perf_counter()
    for th in threads:
        th.join()
    elapsed = time.perf_counter() - began
    if errors:
        raise errors[0]
    merged = sorted(ns for per in latencies for ns in per)
    events = sum(counts)
    return {"workload": f"publish_{mode}", "system": "python-client", "durability": "fsync",
            "events_per_s": round(events / elapsed, 1), "p50_us": percentile(merged, 0.50),
            "p99_us": percentile(merged, 0.99), "p999_us": percentile(merged, 0.999),
            "events": events, "seconds": round(elapsed, 3),
            "note": f"{publishers} publisher threads, {per_request} event(s) per request; "
                    "latency per request"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--binary", default=os.environ.get("CONVERGE_BINARY", "build/converge"))
    ap.add_argument("--publishers", type=int, default=32)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--batch", type=int, default=100)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="converge-py-bench-")
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"# before: {uptime}", file=sys.stderr)
    proc, port = start_server(args.binary, work)
    rows: list[dict] = []
    try:
        cpp = subprocess.run([args.binary, "bench", "client-publish", "--port", str(port),
                              "--json", "--publishers", str(args.publishers), "--seconds",
                              str(args.seconds), "--batch", str(args.batch), "--topic",
                              "bench-cpp"], capture_output=True, text=True, check=True)
        rows += [json.loads(line) for line in cpp.stdout.splitlines() if line.startswith("{")]
        for mode in ("structured", "batch", "binary"):
            rows.append(python_row(f"http://127.0.0.1:{port}", mode, args.publishers,
                                   args.seconds, args.batch))
    finally:
        proc.terminate()
        proc.wait(60)
        shutil.rmtree(work, ignore_errors=True)
    for r in rows:
        print(json.dumps(r))
    by = {(r["system"], r["workload"]): r for r in rows}
    for mode in ("structured", "batch"):
        py, cc = by.get(("python-client", f"publish_{mode}")), by.get(("cpp-client",
                                                                       f"publish_{mode}"))
        if py and cc:
            print(f"# {mode}: python/c++ throughput {py['events_per_s'] / cc['events_per_s']:.2f}, "
                  f"p99 {py['p99_us'] / max(cc['p99_us'], 1):.2f}x", file=sys.stderr)
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"# after: {uptime}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
