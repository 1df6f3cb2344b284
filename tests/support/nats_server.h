// NATS JetStream on loopback for tests: one nats-server, or a cluster of them (three for a
// replicated stream), each with its own client and cluster port and its own store directory
// under one temporary directory. Links nats.c (it asks the servers whether JetStream is
// ready) and tests/support/server_process.cc.
//
// Contract (as server_process.h): a test whose servers cannot start fails; loopback only;
// Start returns once every node accepts connections AND JetStream answers API requests (for
// a cluster: its meta leader is elected), found by polling, never by sleeping a fixed time.
// The destructor stops every node (SIGTERM, then SIGKILL) and removes the directory.
//
// Thread-safety: none.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "converge/status.h"
#include "support/server_process.h"
#include "support/temp_dir.h"

namespace converge::testing {

struct NatsClusterOptions {
  int nodes = 1;  // 1 = a single server without a cluster block
  std::string executable = "/usr/sbin/nats-server";
  std::string base_dir;  // where the temp dir goes; empty = $TMPDIR or /tmp
  int64_t ready_timeout_ms = 30'000;
};

class NatsCluster {
 public:
  static Result<std::unique_ptr<NatsCluster>> Start(const NatsClusterOptions& options);
  ~NatsCluster();
  NatsCluster(const NatsCluster&) = delete;
  NatsCluster& operator=(const NatsCluster&) = delete;

  int size() const { return static_cast<int>(nodes_.size()); }
  // nats://127.0.0.1:<client port> of node i; Urls() of every node.
  std::string Url(int i) const;
  std::vector<std::string> Urls() const;
  // "n<i>": the server_name of node i (what JetStream reports as a stream's leader).
  static std::string NodeName(int i) { return std::string("n").append(std::to_string(i)); }
  // The node whose server_name is `name`; -1 if none.
  int NodeIndex(const std::string& name) const;
  bool running(int i) const;
  pid_t pid(int i) const;

  // SIGKILL node i (no shutdown of its own): the fault the tests inject.
  Status Kill(int i);
  // Starts node i again on the same ports and store directory.
  Status Restart(int i);
  // Polls until JetStream answers through node `via` (every running node if -1) and, when
  // every node of a cluster runs (via -1), until a stream replicated on all of them can be
  // created.
  Status WaitJetStreamReady(int64_t timeout_ms, int via = -1) const;
  // The server_name of the leader of `stream` (asked through any running node); Unavailable
  // while it has none.
  Result<std::string> StreamLeader(const std::string& stream) const;

 private:
  struct Node {
    uint16_t client_port = 0;
    uint16_t cluster_port = 0;
    std::string config_path;
    std::unique_ptr<ServerProcess> process;
  };
  NatsCluster() = default;
  Status StartNode(int i);

  NatsClusterOptions options_;
  TempDir dir_;
  std::vector<Node> nodes_;
};

}  // namespace converge::testing
