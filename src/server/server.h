// `converge serve` as an object: opens the embedded storage (log, consumer groups, store) in
// data_dir, serves API v1 over HTTP(S), and shuts down cleanly.
//
// Contract
// - Open creates data_dir if needed and recovers the storage; an error leaves nothing open.
// - Run serves until Shutdown() is called or (with handle_signals) SIGTERM/SIGINT arrives
//   (Run unblocks both in the calling thread once its handler is in place, so a caller may
//   block them before Open and lose none);
//   then it stops accepting, drains in-flight requests (bounded by
//   limits.shutdown_timeout_ms), ends streams, makes every acknowledged write durable
//   (groups Flush, store Sync and FlushFeed, log Sync) and returns. OK means everything synced.
// Thread-safety: Shutdown may be called from any thread; the rest from one thread.
#pragma once

#include <memory>
#include <string>

#include "converge/status.h"
#include "server/config.h"

namespace converge::server {

class Server {
 public:
  static Result<std::unique_ptr<Server>> Open(const ServerConfig& config);
  ~Server();

  // Binds the listening socket. After this, port() is valid.
  Status Listen();
  uint16_t port() const;
  // "http://127.0.0.1:8080" (or https).
  std::string url() const;

  Status Run(bool handle_signals);
  void Shutdown();

  struct Impl;

 private:
  explicit Server(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace converge::server
