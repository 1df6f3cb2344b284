// Clients of the peers for the many-small-clients workload of `converge bench log --clients`:
// `clients` connections driven by one thread, each sending one request and waiting for its
// reply before the next, `requests` in total.
#pragma once

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

namespace converge::bench {

struct ManyClientsResult {
  uint64_t ok = 0;
  uint64_t errors = 0;
  std::string first_error;
  int64_t elapsed_ns = 0;
  std::vector<int64_t> latencies_ns;
};

// Redis: each request is command(seq) (RESP); a bulk-string or status reply is OK, an error
// reply counts as an error.
ManyClientsResult RunRespClients(uint16_t port, uint32_t clients, uint64_t requests,
                                 const std::function<std::string(uint64_t)>& command);

// NATS JetStream synchronous publish: PUB `subject` with a reply inbox per connection; OK when
// the stream's ack ({"stream":..,"seq":..}) arrives.
ManyClientsResult RunNatsRequestPublishers(uint16_t port, uint32_t clients, uint64_t requests,
                                           const std::string& subject,
                                           const std::string& payload);

// One RESP command.
std::string RespCommand(std::initializer_list<std::string_view> args);

}  // namespace converge::bench
