// A reconciliation session between two copies of a set of (key, version) entries
// (docs/formats/reconcile.md): the initiator learns exactly which keys are missing on each side
// and which differ in version, without either side shipping its entries.
//
// Transport-agnostic: both ends are state machines over byte messages. The initiator produces
// requests and consumes replies; the responder answers each request on its own (it keeps only a
// snapshot per session, dropped after an idle timeout). Any link works: the sidecar channel,
// a simulated one that loses, duplicates and reorders messages. Lost messages are recovered by
// the caller resending Retransmit() after a timeout of its choosing; duplicates and stale replies
// are ignored; a responder that lost the session (crash, timeout) answers "unknown session" and
// the initiator starts over against a fresh snapshot, keeping its own.
//
// Snapshot semantics: the initiator compares its set as of Start() with the responder's as of
// the first request of the session. A key written on either side after its snapshot is reported
// in changed_during_run, never as a difference, so a repair never reverts a concurrent write.
// The repair itself (a version-gated apply) is the caller's.
//
// Thread-safety: none; each object is driven by one strand, the same one that writes the set.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "converge/env.h"
#include "converge/status.h"
#include "reconcile/reconcile_set.h"

namespace converge::reconcile {

struct Difference {
  std::string key;
  std::optional<uint64_t> local_version;   // nullopt: absent locally
  std::optional<uint64_t> remote_version;  // nullopt: absent remotely
  bool operator==(const Difference&) const = default;
};

struct ReconcileResult {
  std::vector<Difference> missing_local;   // the remote side has them, the local side does not
  std::vector<Difference> missing_remote;  // the local side has them, the remote side does not
  std::vector<Difference> divergent;       // both have them, at different versions
  // Keys that differed but were written on either side during the run: not to be repaired
  // from this run's view (the next run sees them settled).
  std::vector<Difference> changed_during_run;
  size_t differences() const {
    return missing_local.size() + missing_remote.size() + divergent.size();
  }
};

struct SessionStats {
  uint64_t bytes_sent = 0;
  uint64_t bytes_received = 0;
  uint64_t round_trips = 0;  // replies accepted to distinct requests
  uint64_t retransmits = 0;
  uint64_t restarts = 0;       // responder lost the session; started over
  uint64_t symbols = 0;        // coded symbols received
  uint64_t estimate = 0;       // estimated size of the symmetric difference (entries)
  bool full_exchange = false;  // fell back to exchanging every hash
};

struct InitiatorOptions {
  // Coded symbols asked for with the first request when the digests differ (d <= ~40 decodes
  // in one round).
  uint64_t first_symbols = 64;
  // Symbols further down the sequence (up to the local set's maintained symbols, so they cost
  // no scan), compared by 2-byte fingerprints for the estimate of the difference size.
  uint64_t probes = 512;
  // Symbols asked for per estimated difference after the first round.
  double symbols_per_difference = 1.6;
  // Hashes per FETCH request (bounds each reply).
  uint64_t fetch_batch = 100'000;
};

class Initiator {
 public:
  // `local` outlives the initiator; the snapshot is taken in Start().
  Initiator(ReconcileSet& local, uint64_t session_id, InitiatorOptions options = {});
  ~Initiator();

  // The first request.
  std::string Start();

  struct Step {
    enum Kind { kSend, kIgnored, kDone } kind = kIgnored;
    std::string message;  // kSend: the next request
  };
  // Consumes a reply. kIgnored for duplicates and replies to earlier requests. An error for a
  // malformed reply or a responder that breaks the protocol (the run is over then).
  Result<Step> OnReply(std::string_view reply);
  // The request in flight, again (after a timeout).
  std::string Retransmit();
  // Tells the responder it may drop the session (optional; no reply).
  std::string Finish() const;

  bool done() const { return done_; }
  const ReconcileResult& result() const { return result_; }
  const SessionStats& stats() const { return stats_; }
  uint64_t session_id() const { return session_; }
  // The responder's snapshot the result was computed against (0 if it answered "in sync").
  uint64_t remote_snapshot() const { return remote_snapshot_; }

 private:
  std::string Send(std::string message);
  std::string Hello();
  Result<Step> AfterSymbols();
  Result<Step> NextFetch();
  Status Finalize();
  bool Verified() const;

  ReconcileSet& local_;
  InitiatorOptions options_;
  uint64_t session_;
  uint64_t seq_ = 0;
  std::string in_flight_;
  std::unique_ptr<Snapshot> snapshot_;
  uint64_t probe_last_ = 0;
  uint64_t remote_snapshot_ = 0;
  SetDigest local_digest_;
  SetDigest remote_digest_;
  enum class Phase { kHello, kSymbols, kFull, kFetch, kDone } phase_ = Phase::kHello;
  std::unique_ptr<PeelingDecoder> decoder_;
  std::vector<uint64_t> remote_only_, local_only_;
  std::vector<uint64_t> full_hashes_;
  size_t fetched_ = 0;
  std::vector<Entry> remote_entries_;
  std::unordered_set<uint64_t> remote_touched_;
  bool done_ = false;
  ReconcileResult result_;
  SessionStats stats_;
};

struct ResponderOptions {
  int64_t session_timeout_ns = 60'000'000'000;
  size_t max_sessions = 64;
  uint64_t max_symbols_per_reply = 1'000'000;  // 13 MB at most
  uint64_t max_hashes_per_reply = 1'000'000;   // 8 MB
  // Called when a session's snapshot is opened (tests).
  std::function<void(uint64_t session, uint64_t snapshot)> on_open;
};

class Responder {
 public:
  // `set` and `env` outlive the responder (time for session timeouts, randomness for snapshot
  // ids).
  Responder(ReconcileSet& set, Env& env, ResponderOptions options = {});
  ~Responder();
  // The reply to `request`, or none (a DONE). InvalidArgument for a malformed request, which
  // changes nothing (drop it).
  Result<std::optional<std::string>> Handle(std::string_view request);
  size_t sessions() const { return sessions_.size(); }

 private:
  struct Session {
    std::unique_ptr<Snapshot> snapshot;
    uint64_t id = 0;  // sent in every reply; a request naming another is answered "unknown"
    int64_t last_used = 0;
    std::vector<uint64_t> sorted_hashes;  // built on a FULL request
  };
  void Expire(int64_t now);

  ReconcileSet& set_;
  Env& env_;
  ResponderOptions options_;
  std::map<uint64_t, Session> sessions_;
};

// The probe indices: up to `count`, geometric in [first, last) (shared by both sides).
std::vector<uint64_t> ProbeIndices(uint64_t first, uint64_t count, uint64_t last);

}  // namespace converge::reconcile
