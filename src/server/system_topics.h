// The topics that `converge serve` writes itself ("system-owned"), which take no events from
// outside: the HTTP publish path, dead-letter replay (its target, or the group's own topic)
// and topic creation (POST /v1/topics: converge creates them with the options it needs)
// refuse them (403 SYSTEM_TOPIC), and the outbox relays dead-letter rows addressed to them. An outside event there would be read as converge's own
// (a forged change event, saga command or dead letter), and the real one could then be
// dropped as its duplicate.
//
// They are: names starting with '_' (consumer-group dead letters "_dlq.<topic>.<group>", the
// relays' default "_dlq.outbox", internal state), the store's change feed (store.feed_topic),
// the relays' dead-letter topic (relays.sink.dead_letter_topic), and the command topic
// (participant) of every step of every registered saga definition. The saga reply topic is
// not one: participants publish their replies there.
//
// Thread-safety: thread-safe.
#pragma once

#include <atomic>
#include <cstdint>
#include <set>
#include <shared_mutex>
#include <string>
#include <string_view>

#include "converge/saga.h"
#include "server/config.h"

namespace converge::server {

class SystemTopics {
 public:
  // `config` and `sagas` (null when sagas are disabled) must outlive this object.
  SystemTopics(const ServerConfig& config, SagaOrchestrator* sagas)
      : config_(config), sagas_(sagas) {}

  // What writes `topic`, for an error message ("the store (its change feed)"), if it is
  // system-owned; empty otherwise.
  std::string OwnerOf(std::string_view topic);
  // The same without the saga command topics: for checking the participants of a definition
  // being registered (which may share command topics with definitions registered before).
  std::string OwnerOfOutsideSagas(std::string_view topic) const;

  // A saga definition may have been registered: its command topics count from the next call.
  void DefinitionsChanged() { definitions_gen_.fetch_add(1); }

 private:
  const ServerConfig& config_;
  SagaOrchestrator* const sagas_;
  // The command topics of the registered definitions, rebuilt when definitions_gen_ moved.
  // Every publish asks, so lookups share the lock; only a rebuild takes it exclusively.
  std::atomic<uint64_t> definitions_gen_{1};
  std::shared_mutex mu_;
  uint64_t built_gen_ = 0;  // guarded by mu_
  std::set<std::string, std::less<>> command_topics_;
};

}  // namespace converge::server
