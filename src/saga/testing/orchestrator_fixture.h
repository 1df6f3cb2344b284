// The orchestrator test fixture shared by the saga module's tests and the server's saga-route
// tests: a log, a memory ledger and four participants (inventory, payments, orders, shipping)
// on one simulated Env, and an orchestrator over them.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "converge/log.h"
#include "converge/saga.h"
#include "converge/sim_env.h"

namespace converge::saga_testing {

class OrchestratorFixture : public ::testing::Test {
 protected:
  explicit OrchestratorFixture(uint64_t segment_max_bytes = 64ull << 20) : env_(21) {
    topic_options_.segment_max_bytes = segment_max_bytes;
    LogOptions lo;
    lo.dir = "/log";
    log_ = Log::Open(env_, lo).value();
    ledger_ = NewMemorySagaLedger(env_.clock());
    core_ = std::make_unique<SagaParticipantCore>(*ledger_);
    for (const char* t :
         {"inventory.reserve", "payments.reserve", "orders.confirm", "shipping.schedule"}) {
      core_->Handle(t, [this, t](const SagaCommand& c, std::string*) {
        if (refuse_type_ == t) return FailedPreconditionError("refused");
        ++holdings_[std::string(c.saga_id)][t];
        return Status::Ok();
      });
    }
    core_->Handle("inventory.release", [this](const SagaCommand& c, std::string*) {
      --holdings_[std::string(c.saga_id)]["inventory.reserve"];
      return Status::Ok();
    });
    core_->Handle("payments.release", [this](const SagaCommand& c, std::string*) {
      --holdings_[std::string(c.saga_id)]["payments.reserve"];
      return Status::Ok();
    });
    for (const char* topic : {"inventory", "payments", "orders", "shipping"}) {
      SagaParticipantOptions po;
      po.topic = topic;
      po.topic_options = topic_options_;
      participants_.push_back(SagaParticipant::Start(env_, *log_, *core_, po).value());
    }
    OpenOrchestrator();
  }

  void OpenOrchestrator() {
    SagaOrchestratorOptions o;
    o.dir = "/saga";
    o.topic_options = topic_options_;
    o.on_finished = [this](const SagaSummary& s) { finished_[s.id] = s.state; };
    orch_ = SagaOrchestrator::Open(env_, *log_, o).value();
  }

  sim::SimEnv env_;
  TopicOptions topic_options_;
  std::unique_ptr<Log> log_;
  std::unique_ptr<SagaLedger> ledger_;
  std::unique_ptr<SagaParticipantCore> core_;
  std::vector<std::unique_ptr<SagaParticipant>> participants_;
  std::unique_ptr<SagaOrchestrator> orch_;
  std::map<std::string, std::map<std::string, int>> holdings_;
  std::map<std::string, SagaState> finished_;
  std::string refuse_type_;
};

}  // namespace converge::saga_testing
