#!/usr/bin/env bash
# Usage: make_datadir.sh CONVERGE_BINARY OUT_DIR
# Writes the data directory upgrade_test opens: run once with the binary of the release to
# test against (datadir-7c68a72 was made by `converge serve` built at 7c68a72), never by the
# tests themselves. Needs curl and python3.
set -euo pipefail
bin=$1
out=$2
work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
rm -rf "$out"
# The dedup window is 100 years so the ids stay duplicates whenever the test runs.
cat >"$work/config.yaml" <<'YAML'
topic_defaults:
  dedup_window_ms: 3153600000000
YAML
cat >"$work/def.yaml" <<'YAML'
name: order
version: 1
steps:
  - name: reserve
    participant: inventory
    action: inventory.reserve
    compensation: inventory.release
    timeout_ms: 86400000
  - name: charge
    participant: payments
    action: payments.charge
    pivot: true
    timeout_ms: 86400000
YAML
"$bin" serve --config "$work/config.yaml" --listen 127.0.0.1:0 --data-dir "$out" >"$work/out" 2>"$work/err" &
pid=$!
for _ in $(seq 100); do grep -q "listening on" "$work/out" && break; sleep 0.1; done
u=$(sed -n 's/.*listening on \(http:[^ ]*\).*/\1/p' "$work/out")
json=(-H 'Content-Type: application/json')
curl -sf -XPOST "$u/v1/topics" "${json[@]}" -d '{"name":"orders","partitions":2}' >/dev/null
for i in $(seq 1 20); do
  curl -sf -XPOST "$u/v1/topics/orders/events" -H 'Content-Type: application/cloudevents+json' \
    -d "{\"specversion\":\"1.0\",\"id\":\"evt-$i\",\"source\":\"/shop\",\"type\":\"order.created\",\"subject\":\"k$((i % 5))\",\"data\":{\"n\":$i}}" >/dev/null
done
# One fetch (one event per key is leased: evt-1 .. evt-5) and an ack of all of it.
curl -sf -XPOST "$u/v1/topics/orders/groups/billing/fetch" "${json[@]}" -d '{"max_events":8}' >"$work/fetch.json"
python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
print(json.dumps({"acks": [{"partition": x["partition"], "offset": x["offset"], "lease_id": x["lease_id"]} for x in d["deliveries"]]}))
' "$work/fetch.json" >"$work/ack.json"
curl -sf -XPOST "$u/v1/topics/orders/groups/billing/ack" "${json[@]}" -d @"$work/ack.json" >/dev/null
curl -sf -XPUT "$u/v1/collections/customers" "${json[@]}" -d '{"owner":"crm"}' >/dev/null
for i in 1 2 3; do
  curl -sf -XPUT "$u/v1/collections/customers/docs/c$i" "${json[@]}" -d "{\"name\":\"customer $i\",\"tier\":$i}" >/dev/null
done
curl -sf -XPUT "$u/v1/collections/customers/docs/c2" "${json[@]}" -H 'If-Match: "3"' -d '{"name":"customer 2","tier":9}' >/dev/null
curl -sf -XDELETE "$u/v1/collections/customers/docs/c3" >/dev/null
curl -sf -XPOST "$u/v1/saga-definitions" -H 'Content-Type: application/yaml' --data-binary @"$work/def.yaml" >/dev/null
curl -sf -XPOST "$u/v1/sagas" "${json[@]}" -d '{"definition":"order","id":"saga-upgrade-1","data":{"order":42}}' >/dev/null
kill -TERM "$pid"
wait "$pid"
echo "wrote $out"
