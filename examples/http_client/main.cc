// Publishes three CloudEvents to a running `converge serve` (make run), then consumes them with
// a lease and acknowledges them.
//
//   http_client_example [PORT]        (default 8080, on 127.0.0.1, no token)
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "converge/client.h"
#include "converge/event.h"

int main(int argc, char** argv) {
  using namespace converge;
  client::Options options;
  options.port = static_cast<uint16_t>(argc > 1 ? std::atoi(argv[1]) : 8080);
  client::Client c(options);
  if (Status s = c.Health(); !s.ok()) {
    std::fprintf(stderr, "is converge serve running? %s\n", s.ToString().c_str());
    return 1;
  }
  client::TopicSpec topic;
  topic.name = "example";
  topic.partitions = 2;
  if (Status s = c.CreateTopic(topic).status(); !s.ok() && s.code() != StatusCode::kAlreadyExists) {
    std::fprintf(stderr, "create topic: %s\n", s.ToString().c_str());
    return 1;
  }

  std::vector<Event> events;
  for (int i = 0; i < 3; ++i) {
    Event e;
    e.set_source("/examples/http_client");
    e.set_id("order-" + std::to_string(i));
    e.set_type("com.example.order.created");
    e.set_partitionkey("customer-" + std::to_string(i % 2));  // per-customer order
    if (Status s = e.SetJsonData("{\"order\":" + std::to_string(i) + "}"); !s.ok()) return 1;
    events.push_back(std::move(e));
  }
  Result<std::vector<client::Published>> published = c.Publish("example", events);
  if (!published.ok()) {
    std::fprintf(stderr, "publish: %s\n", published.status().ToString().c_str());
    return 1;
  }
  for (const client::Published& p : *published) {
    std::printf("published %s -> partition %u offset %llu%s\n", p.id.c_str(), p.partition,
                static_cast<unsigned long long>(p.offset), p.duplicate ? " (duplicate)" : "");
  }

  // Events with the same partition key are delivered one at a time (the next after the
  // previous is acked), so fetch and ack until everything arrived.
  client::FetchOptions fetch;
  fetch.max_events = 10;
  fetch.wait_ms = 1000;
  size_t received = 0;
  while (received < events.size()) {
    Result<std::vector<client::Delivery>> got = c.Fetch("example", "example-readers", fetch);
    if (!got.ok()) {
      std::fprintf(stderr, "fetch: %s\n", got.status().ToString().c_str());
      return 1;
    }
    if (got->empty()) break;  // nothing within wait_ms (e.g. a second run: already consumed)
    std::vector<client::Lease> leases;
    for (const client::Delivery& d : *got) {
      if (d.event) {
        std::printf("received %s (attempt %u): %s\n", d.event->id().c_str(), d.attempt,
                    d.event->data().c_str());
      }
      leases.push_back(d.lease());
    }
    Result<client::AckResult> acked = c.Ack("example", "example-readers", leases);
    if (!acked.ok()) {
      std::fprintf(stderr, "ack: %s\n", acked.status().ToString().c_str());
      return 1;
    }
    received += got->size();
  }
  std::printf("received and acked %zu event(s)\n", received);
  return 0;
}
