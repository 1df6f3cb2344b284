// nats.c helpers shared by the benchmarks that measure NATS JetStream (log, outbox polling
// baseline, store KV): error text, connecting, and the file-storage stream they all use.
#pragma once

#include <nats/nats.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "converge/status.h"

namespace converge::bench {

// Unavailable "<system>: <what>: <nats status text> (JetStream error N) [last nats error]".
Status NatsError(std::string_view system, const std::string& what, natsStatus s,
                 jsErrCode jerr = static_cast<jsErrCode>(0));

struct NatsConnectOptions {
  std::string url;            // nats://127.0.0.1:PORT
  int64_t timeout_ms = 10'000;
  bool send_asap = false;     // true: every publish is flushed at once (latency), no batching
};

// Connects; *nc is set only on success. NatsError(system, ...) otherwise.
Status NatsConnect(std::string_view system, const NatsConnectOptions& options,
                   natsConnection** nc);

// Adds stream `stream` on `subject`, file storage, `replicas` replicas.
Status AddFileStream(std::string_view system, jsCtx* js, const char* stream, const char* subject,
                     int64_t replicas = 1);

}  // namespace converge::bench
