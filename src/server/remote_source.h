// A replica source on another converge serve node (docs/formats/replica.md, "Remote
// sources"): the change stream of one store collection of that node, pulled over HTTP with a
// bearer token that may read the collection (GET /v1/collections/{collection}/changes).
//
// Contract
// - Read(0, from, n) asks the other node for the feed from offset `from` and long-polls up to
//   `wait_ms` when nothing is there yet; the batch is sparse (offsets of other collections are
//   passed). The position is the other node's feed offset, held by the target, so a restart of
//   either side resumes from where the target's last transaction left it.
// - A failure to reach the node, a timeout or a 5xx is Unavailable (the driver retries with
//   backoff); 401/403 are Unauthenticated / PermissionDenied; a position the other node's
//   retention removed (410) is, for a replica that has applied nothing yet (position 0), a
//   bootstrap: a snapshot of the collection (GET .../docs pages) handed out as one batch up to
//   the feed's end before the listing; for any other position a damaged range the applier
//   reports and, by its on_malformed policy, stops at (the default) or skips, or with
//   `rebootstrap` a snapshot batch (SourceBatch::snapshot_version) from the position to the end. A position past
//   the other node's end (409) is FailedPrecondition. Nothing is skipped silently.
// Thread-safety: one thread at a time (the replica's driving thread). Blocks on the network,
// each request bounded by wait_ms + timeout_ms.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "converge/env.h"
#include "converge/replica.h"
#include "converge/status.h"
#include "converge/store.h"
#include "server/config.h"

namespace converge::server {

struct RemoteSourceOptions {
  std::string url;                           // http(s)://host:port of the other node (no path)
  std::string token;                         // its bearer token; empty sends none
  std::string collection;                    // the collection on the other node
  std::string ca_file;                       // https: trust only these PEM certificates
  std::string feed_topic = "store-changes";  // the other node's store.feed_topic
  int64_t wait_ms = 1000;                    // long poll per read when caught up
  int64_t timeout_ms = 10'000;               // per request, beyond wait_ms
  // A position the other node's retention removed after changes were applied: take a new
  // snapshot (a re-bootstrap batch, SourceBatch::snapshot_version) instead of a damaged range.
  bool rebootstrap = false;
};

// The checks a remote source's settings pass (URL, collection and topic names, CA file).
Status CheckRemoteSource(const ReplicaConfig& r);
RemoteSourceOptions RemoteSourceOptionsFor(const ReplicaConfig& r);

// The other calls of the channel, for a reconciliation run (one thread at a time).
class RemoteNode {
 public:
  static Result<std::unique_ptr<RemoteNode>> Open(const RemoteSourceOptions& options);
  ~RemoteNode();
  // POST /v1/collections/{collection}/reconcile: the responder's reply to a reconcile message
  // (empty when it answers none). Unavailable for a lost exchange (resend), PermissionDenied
  // for 401/403, InvalidArgument/FailedPrecondition for a refused message.
  Result<std::string> Reconcile(std::string_view message);
  // GET /v1/collections/{collection}/docs/{key}: the document and its version now; nullopt
  // when absent.
  Result<std::optional<Document>> GetDocument(const std::string& key);
  // GET /v1/multi-writer/{collection}/changes?from=&limit=: a page of the peer's origin log
  // (the binary form of replica/multi_writer.h). Unavailable for a lost exchange or a 5xx,
  // PermissionDenied for 401/403, InvalidArgument for 400, FailedPrecondition for 404/409
  // (not a multi-writer collection there, or a position it no longer keeps).
  Result<std::string> MultiWriterChanges(uint64_t from, uint64_t limit);
  // POST /v1/multi-writer/{collection}/{what} with a binary body (what: reconcile, states):
  // the binary reply ("" for 204), statuses mapped as above.
  Result<std::string> MultiWriterPost(const std::string& what, std::string body);

 private:
  struct Impl;
  explicit RemoteNode(std::unique_ptr<Impl> impl);
  // One binary exchange of the channel: the reply body ("" for 204), statuses mapped as above.
  Result<std::string> SendBytes(const std::string& method, const std::string& target,
                                std::string body);
  std::unique_ptr<Impl> impl_;
};

// InvalidArgument for bad options. `env` (its wall clock) must outlive the source.
Result<std::unique_ptr<replica::Source>> NewRemoteSource(Env& env,
                                                         const RemoteSourceOptions& options);

}  // namespace converge::server
