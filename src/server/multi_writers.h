// The multi-writer collections `converge serve` runs (config `multi_writer:`,
// docs/formats/replica.md, "Multi-writer collections"): per collection one replica::mw::Node
// whose state lives in the store (the collection itself holds each key's resolved document;
// `converge-mw.<collection>` holds the causal metadata, the origin log and the peer
// positions, written in the same store transaction), and one thread that pulls every peer's
// origin log over the sidecar channel (GET /v1/multi-writer/{collection}/changes on the peer)
// and merges it.
//
// Contract
// - Local writes (PUT/DELETE /v1/multi-writer/{collection}/docs/{key}) and merges of one
//   collection are serialized; each is one store transaction, durable before it returns.
// - A peer that cannot be reached, refuses the token, or fails is retried with backoff (100 ms
//   doubling to 5 s); each distinct error is logged once.
// - Start never fails: a collection whose state cannot be loaded is retried by its thread,
//   and its routes answer Unavailable until then.
// Thread-safety: every public function may be called from any thread; the store calls block
// (call them on the blocking pool).
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "converge/env.h"
#include "converge/store.h"
#include "replica/multi_writer.h"
#include "server/config.h"
#include "server/metrics.h"

namespace converge::server {

// The bookkeeping collection of a multi-writer collection.
std::string MultiWriterMetaCollection(const std::string& collection);
// The name checks of a multi-writer collection (and of its bookkeeping collection).
Status ValidateMultiWriterCollection(const std::string& collection);
// The merge policy a config entry declares (the CRDT joins and resolvers by name).
Result<replica::mw::PolicySpec> PolicySpecFor(const MultiWriterConfig& config);

// The read-write context a reader gets and a resolving write names: "mwc1:<node>=<counter>,..."
std::string FormatContext(const conflict::VersionVector& vv);
Result<conflict::VersionVector> ParseContext(std::string_view text);

class MultiWriters {
 public:
  // `env` and `store` must outlive Stop().
  static std::unique_ptr<MultiWriters> Start(Env& env, Store& store, const ServerConfig& config);
  ~MultiWriters();
  void Stop();

  // nullptr when the collection is not multi-writer here.
  const MultiWriterConfig* Find(const std::string& collection) const;

  struct Read {
    replica::mw::KeyState state;
    std::optional<std::string> document;  // the resolved document; nullopt: deleted
  };
  // nullopt: the key has no state (never written, or its tombstone was purged).
  Result<std::optional<Read>> Get(const std::string& collection, const std::string& key);
  // A local write (document nullopt: delete), covering `context` when given.
  Result<Read> Write(const std::string& collection, const std::string& key,
                     std::optional<std::string> document,
                     const std::optional<conflict::VersionVector>& context);
  // A page of this node's origin log, binary (replica::mw::Page).
  Result<std::string> Export(const std::string& collection, uint64_t from, uint64_t limit);
  // Anti-entropy, the responder's side: the reply to a peer's reconciliation message over this
  // node's (key, state) digest (nullopt: none, for a DONE). InvalidArgument for garbage.
  Result<std::optional<std::string>> Reconcile(const std::string& collection,
                                               std::string_view message);
  // The key states of `keys` (one per line; absent keys are left out), binary
  // (replica::mw::EncodeStates): what a peer merges to repair them.
  Result<std::string> States(const std::string& collection, std::string_view keys);

  // converge_multi_writer_* samples, one series per collection.
  void CollectMetrics(std::vector<MetricsRegistry::Sample>* out) const;

 private:
  struct Collection;
  MultiWriters() = default;
  Result<Collection*> Open(const std::string& collection);
  std::map<std::string, std::unique_ptr<Collection>> collections_;
};

}  // namespace converge::server
