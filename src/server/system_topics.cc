#include "server/system_topics.h"

#include <mutex>

namespace converge::server {

namespace {
constexpr const char* kSagaCommands = "the saga orchestrator (a participant's command topic)";
}  // namespace

std::string SystemTopics::OwnerOfOutsideSagas(std::string_view topic) const {
  if (!topic.empty() && topic.front() == '_') {
    return "converge itself (internal topics: consumer-group dead letters, group state)";
  }
  if (config_.store.enabled && topic == config_.store.feed_topic) {
    return "the store (its change feed)";
  }
  if (config_.relays.enabled && topic == config_.relays.service.sink.dead_letter_topic) {
    return "the outbox relays (their dead letters)";
  }
  return {};
}

std::string SystemTopics::OwnerOf(std::string_view topic) {
  if (std::string owner = OwnerOfOutsideSagas(topic); !owner.empty()) return owner;
  if (sagas_ == nullptr) return {};
  const uint64_t gen = definitions_gen_.load();
  {
    std::shared_lock<std::shared_mutex> read(mu_);
    if (built_gen_ == gen) {
      if (command_topics_.count(topic) != 0) return kSagaCommands;
      return {};
    }
  }
  std::unique_lock<std::shared_mutex> write(mu_);
  if (built_gen_ != gen) {
    command_topics_.clear();
    for (const SagaDefinition& def : sagas_->ListDefinitions()) {
      for (const SagaStepDefinition& step : def.steps) command_topics_.insert(step.participant);
    }
    built_gen_ = gen;
  }
  if (command_topics_.count(topic) != 0) return kSagaCommands;
  return {};
}

}  // namespace converge::server
