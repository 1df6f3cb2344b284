// The production Transport: unreliable datagrams as length-prefixed frames over TCP, running on
// the AsioExecutor's io_context (handlers run on the executor thread).
//
// Wire format, one frame per message:
//   u32 big-endian  length of everything after this field
//   u8              format version (1)
//   u16 big-endian  length A of the sender's address (A <= kMaxAddressBytes)
//   A bytes         sender's address ("host:port" it listens on; becomes Message::from)
//   payload         the rest (<= Transport::kMaxPayloadBytes)
// A peer that sends a malformed or oversized frame is disconnected; nothing else happens.
//
// Sending: Send queues the frame for `to` and returns; the executor thread connects lazily
// (one outbound connection per peer), writes queued frames in batches (one gather write per
// batch), and reconnects with exponential backoff after a failure. Frames queued when a connection
// breaks or cannot be established are dropped: delivery is best effort, like UDP.
// Receiving: each accepted connection is read in large chunks and parsed in place.
//
// Thread-safety: Listen, Endpoint::Send and Endpoint destruction may be called from any thread.
// After an Endpoint's destructor returns its handler is never called again (the destructor waits
// for a running handler call, unless it runs inside that very handler).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "converge/env.h"
#include "env/asio_executor.h"

namespace converge::internal {

struct TcpTransportOptions {
  // Frames waiting for a peer's connection before Send returns ResourceExhausted.
  size_t max_queued_frames_per_peer = 8192;
  // Bytes waiting for a peer's connection before Send returns ResourceExhausted.
  size_t max_queued_bytes_per_peer = 64u << 20;
  // Distinct peers one endpoint keeps state for (ResourceExhausted beyond).
  size_t max_peers = 1024;
  // Accepted connections one endpoint keeps open; further ones are closed at once.
  size_t max_inbound_connections = 1024;
  int64_t connect_timeout_ns = 5'000'000'000;
  int64_t reconnect_backoff_min_ns = 10'000'000;
  int64_t reconnect_backoff_max_ns = 1'000'000'000;
  // Read buffer per inbound connection (grows up to one maximal frame when needed).
  size_t read_chunk_bytes = 64u << 10;
  // Payloads up to this size are copied into one contiguous write buffer per batch (fewer
  // iovecs); larger ones are written from where they are.
  size_t coalesce_max_bytes = 4096;
};

class TcpTransport : public Transport {
 public:
  static constexpr size_t kMaxAddressBytes = 1024;
  static constexpr uint8_t kFrameVersion = 1;

  // `executor` must outlive the transport and every endpoint it creates.
  explicit TcpTransport(AsioExecutor& executor, TcpTransportOptions options = {});

  // `address` is "host:port" (host: IPv4/IPv6 literal, optionally in brackets, or a name);
  // port 0 picks a free port and address() reports the real one. InvalidArgument for a
  // malformed address; AlreadyExists if the port is in use; Unavailable if the host cannot be
  // resolved or bound otherwise.
  // Endpoint::Send: InvalidArgument for a payload over kMaxPayloadBytes or a `to` that is not
  // "host:port"; ResourceExhausted when the peer's queue or the peer table is full.
  Result<std::unique_ptr<Endpoint>> Listen(const std::string& address, Handler handler) override;

 private:
  AsioExecutor& executor_;
  const TcpTransportOptions options_;
};

// Counters of one TCP endpoint (for tests and diagnostics).
struct TcpEndpointStats {
  uint64_t frames_sent = 0;      // written to a socket
  uint64_t frames_received = 0;  // handed to the handler
  uint64_t frames_dropped = 0;   // queued but lost to a failed or broken connection
  uint64_t protocol_errors = 0;  // inbound connections closed for a malformed frame
};
// Stats of an endpoint created by TcpTransport (precondition: it was).
TcpEndpointStats GetTcpEndpointStats(const Endpoint& endpoint);

}  // namespace converge::internal
