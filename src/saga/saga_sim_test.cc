// Simulation of sagas under faults, over many seeds: participants that refuse and fail
// transiently, commands and replies that are lost, duplicated and delivered late (after their
// step timed out), operator cancels, and orchestrator crashes at arbitrary points of its log
// writes (SimFileSystem::CrashAfterOps + Crash, optionally with torn writes), and replies forged
// by a service that cannot read the commands (no or a wrong token). The event log the
// commands travel on lives on the same simulated machine and crashes with it.
//
// Participants are modelled as resource reservations. At the end every saga must be final, and
//   completed   => every step's reservation is held, each applied exactly once;
//   compensated => no reservation is held;
// and no reservation exists for a saga the orchestrator does not know (no orphans).
//
// Faults last ten virtual minutes; then they stop (the network and the participants heal)
// and every saga must end within ten more. Liveness can only be asked for once faults stop:
// a step retried without a bound waits up to max_attempt_timeout_ms (5 minutes) per attempt
// (docs/formats/saga.md), so a run of lost commands legitimately takes longer than any fixed
// limit while faults go on (seed 2505: eleven attempts of its last step in a row got no
// usable reply). A timer or command the orchestrator lost would still leave a saga unfinished
// after the faults stop, which the check reports.
//
// CONVERGE_SIM_SEEDS=N runs N seeds (default 1000); CONVERGE_SIM_SEED=S runs one.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <random>
#include <set>

#include "converge/log.h"
#include "converge/saga.h"
#include "converge/sim_env.h"
#include "saga/messages.h"

namespace converge {
namespace {

constexpr int kSteps = 4;

struct Params {
  int sagas = 12;
  double drop = 0;          // a command or reply is lost
  double duplicate = 0;     // delivered twice
  double late = 0;          // delivered after its step timed out
  double refuse = 0;        // an action is refused
  double transient = 0;     // an action or compensation fails transiently
  double cancel = 0;        // the operator cancels a saga
  int max_crashes = 0;      // orchestrator crashes
  uint64_t crash_ops = 40;  // crash point within this many mutating operations
  bool torn_writes = false;
  bool crash_during_recovery = false;
  uint64_t crash_at_op = 0;  // a crash at this mutating operation after the node opened
  // Another service forges a reply with the opposite outcome (it may publish to the reply
  // topic but cannot read the command, so its token is missing or wrong): it must change
  // nothing.
  double forge = 0;
};

// Faults (drops, duplicates, late deliveries, refusals, transient failures, forged replies,
// crashes) happen only before this virtual time.
constexpr int64_t kFaultWindowNs = 600LL * 1'000'000'000;  // ten virtual minutes
// Once they stop, every saga must end within this: at most one outstanding attempt timeout
// (capped at max_attempt_timeout_ms, 5 minutes) and backoff, then attempts that succeed.
constexpr int64_t kSettleNs = 600LL * 1'000'000'000;

Params RandomParams(std::mt19937_64& rng) {
  std::uniform_real_distribution<double> u(0, 1);
  Params p;
  p.sagas = 4 + static_cast<int>(rng() % 16);
  p.drop = u(rng) < 0.5 ? u(rng) * 0.2 : 0;
  p.duplicate = u(rng) < 0.5 ? u(rng) * 0.3 : 0;
  p.late = u(rng) < 0.5 ? u(rng) * 0.2 : 0;
  p.refuse = u(rng) * 0.25;
  p.transient = u(rng) * 0.3;
  p.cancel = u(rng) < 0.3 ? u(rng) * 0.3 : 0;
  p.max_crashes = static_cast<int>(rng() % 5);
  p.crash_ops = 1 + rng() % 60;
  p.torn_writes = u(rng) < 0.3;
  p.crash_during_recovery = u(rng) < 0.3;
  p.forge = u(rng) < 0.5 ? u(rng) * 0.5 : 0;
  return p;
}

SagaDefinition TripSaga() {
  RetryPolicy retry;
  retry.base_delay_ms = 10;
  retry.max_delay_ms = 100;
  retry.max_attempts = 3;
  retry.deadline_ms = 5'000;
  return SagaDefinitionBuilder("trip", 1)
      .Step("hotel", "hotels", "hotel.reserve", "hotel.cancel")
      .Timeout(200)
      .Retry(retry)
      .Step("car", "cars", "car.reserve", "car.cancel")
      .Timeout(200)
      .Retry(retry)
      .Step("flight", "flights", "flight.book")
      .Pivot()
      .Timeout(200)
      .Retry(retry)
      .Step("email", "emails", "email.send")
      .Timeout(200)
      .Retry(retry)
      .Build()
      .value();
}

const std::array<const char*, kSteps> kTopics = {"hotels", "cars", "flights", "emails"};
const std::array<const char*, kSteps> kActions = {"hotel.reserve", "car.reserve", "flight.book",
                                                  "email.send"};
const std::array<const char*, kSteps> kCompensations = {"hotel.cancel", "car.cancel", "", ""};

struct Holdings {
  std::array<int, kSteps> held{};     // applies minus compensations
  std::array<int, kSteps> applies{};  // handler runs that applied
};

class World {
 public:
  World(uint64_t seed, Params params)
      : seed_(seed), params_(params), env_(seed), rng_(seed * 0x9E3779B97F4A7C15ULL + 1) {
    fs_ = env_.NewFileSystem("node");
    node_env_ = env_.NodeEnv(*fs_);
    fs_->SetTornWrites(params_.torn_writes);
    for (int s = 0; s < kSteps; ++s) {
      ledgers_[s] = NewMemorySagaLedger(env_.clock());
      cores_[s] = std::make_unique<SagaParticipantCore>(*ledgers_[s]);
      cores_[s]->Handle(kActions[s], [this, s](const SagaCommand& c, std::string*) {
        const double r = Faulty() ? Uniform() : 1.0;
        // Actions after the pivot may "refuse": the participant treats that as retryable.
        if (r < params_.refuse) return FailedPreconditionError("refused");
        if (r < params_.refuse + params_.transient) return UnavailableError("busy");
        Holdings& h = holdings_[std::string(c.saga_id)];
        ++h.held[s];
        ++h.applies[s];
        return Status::Ok();
      });
      if (kCompensations[s][0] != '\0') {
        cores_[s]->Handle(kCompensations[s], [this, s](const SagaCommand& c, std::string*) {
          if (Faulty() && Uniform() < params_.transient) return UnavailableError("busy");
          --holdings_[std::string(c.saga_id)].held[s];
          return Status::Ok();
        });
      }
    }
  }

  ~World() {
    orch_.reset();
    watches_.clear();
    log_.reset();
  }

  // Runs the scenario; returns a description of the first broken invariant, or "".
  std::string Run() {
    if (!OpenNode()) return "could not open the node";
    if (params_.crash_at_op) fs_->CrashAfterOps(params_.crash_at_op);
    ops_at_open_ = fs_->mutating_ops();
    for (int i = 0; i < params_.sagas; ++i) {
      const std::string id = "trip-" + std::to_string(i);
      ids_.push_back(id);
      env_.executor().Schedule(Between(0, 300) * 1'000'000, [this, id] { StartSaga(id); });
      if (Uniform() < params_.cancel) {
        env_.executor().Schedule(Between(0, 800) * 1'000'000, [this, id] {
          if (orch_ != nullptr) orch_->CancelAsync(id, "operator", [](Status) {});
        });
      }
    }
    for (int c = 0; c < params_.max_crashes; ++c) {
      env_.executor().Schedule(Between(1, 1500) * 1'000'000, [this] {
        if (!fs_->crashed()) fs_->CrashAfterOps(1 + rng_() % params_.crash_ops);
      });
    }
    const int64_t limit_ns = kFaultWindowNs + kSettleNs;
    while (env_.pending_events() > 0 && env_.now_nanos() < limit_ns) {
      env_.RunOne();
      if (fs_->crashed()) {
        if (!Restart()) return "could not reopen after a crash";
      }
      if (!healed_ && !Faulty()) {
        // The faults stop: no crash point stays armed past this.
        healed_ = true;
        fs_->CrashAfterOps(0);
        in_flight_at_heal_ = NotFinal();
      }
    }
    fs_->CrashAfterOps(0);
    if (env_.pending_events() > 0) {
      return "still busy ten virtual minutes after the faults stopped" + Dump();
    }
    return Check();
  }

  int crashes() const { return crashes_; }
  // Sagas not final when the faults stopped (0 if every saga ended while they went on).
  size_t in_flight_at_heal() const { return in_flight_at_heal_; }
  int forged() const { return forged_; }
  int completed() const { return completed_; }
  // Mutating filesystem operations since the node first opened (all of them without a crash).
  uint64_t ops_after_open() const { return fs_->mutating_ops() - ops_at_open_; }
  int compensated() const { return compensated_; }
  uint64_t trace() const { return env_.TraceHash(); }

 private:
  // Whether faults are still injected (see kFaultWindowNs). Random draws for faults are made
  // only while they are, so a run is the same as before up to the end of the window.
  bool Faulty() const { return env_.now_nanos() < kFaultWindowNs; }
  size_t NotFinal() const {
    if (orch_ == nullptr) return 0;
    size_t n = 0;
    for (const SagaSummary& s : orch_->List(SagaListFilter{})) n += IsFinal(s.state) ? 0 : 1;
    return n;
  }

  double Uniform() { return std::uniform_real_distribution<double>(0, 1)(rng_); }
  int64_t Between(int64_t lo, int64_t hi) {
    return lo + static_cast<int64_t>(rng_() % static_cast<uint64_t>(hi - lo + 1));
  }

  bool OpenNode() {
    LogOptions lo;
    lo.dir = "/log";
    Result<std::unique_ptr<Log>> log = Log::Open(*node_env_, lo);
    if (!log.ok()) return false;
    log_ = std::move(log).value();
    for (const char* t : kTopics) {
      Status s = log_->CreateTopic(t, TopicOptions{});
      if (!s.ok() && s.code() != StatusCode::kAlreadyExists) return false;
    }
    SagaOrchestratorOptions o;
    o.dir = "/saga";
    o.finished_retain_max = 100'000;
    o.compact_after_bytes = 16 << 10;  // compaction happens (and is crashed into) too
    o.segment_max_bytes = 4 << 10;
    Result<std::unique_ptr<SagaOrchestrator>> orch = SagaOrchestrator::Open(*node_env_, *log_, o);
    if (!orch.ok()) return false;
    orch_ = std::move(orch).value();
    if (!orch_->RegisterDefinition(TripSaga()).ok()) return false;
    offsets_.clear();
    for (int s = 0; s < kSteps; ++s) {
      offsets_[s] = log_->DescribeTopic(kTopics[s])->partitions[0].end_offset;
      auto watch = log_->WatchAppends(kTopics[s], [this, s](uint32_t, uint64_t) {
        env_.executor().Post([this, s] { ReadCommands(s); });
      });
      if (!watch.ok()) return false;
      watches_.push_back(std::move(watch).value());
    }
    return true;
  }

  bool Restart() {
    for (int attempt = 0; attempt < 4; ++attempt) {
      orch_.reset();
      watches_.clear();
      log_.reset();
      fs_->Crash();
      ++crashes_;
      ++epoch_;
      if (params_.crash_during_recovery && attempt == 0) {
        fs_->CrashAfterOps(1 + rng_() % 20);
      }
      if (OpenNode() && !fs_->crashed()) return true;
    }
    return false;
  }

  void StartSaga(const std::string& id) {
    if (orch_ == nullptr || acked_.count(id)) return;
    SagaStartRequest req;
    req.definition = "trip";
    req.id = id;
    req.data = R"({"who":")" + id + R"("})";
    orch_->StartAsync(req, [this, id](Result<std::string> r) {
      if (r.ok()) {
        acked_.insert(id);
      } else {
        // A client retries with the same id (idempotent start).
        env_.executor().Schedule(50'000'000, [this, id] { StartSaga(id); });
      }
    });
  }

  void ReadCommands(int s) {
    if (log_ == nullptr || fs_->crashed()) return;
    Result<ReadBatch> batch = log_->Read(kTopics[s], 0, offsets_[s], 1000, 1 << 20);
    if (!batch.ok()) return;
    offsets_[s] = batch->next_offset;
    for (const StoredRecord& rec : batch->records) {
      const bool faulty = Faulty();
      if (faulty && Uniform() < params_.drop) continue;
      const int copies = faulty && Uniform() < params_.duplicate ? 2 : 1;
      for (int c = 0; c < copies; ++c) {
        const int64_t delay_ms =
            faulty && Uniform() < params_.late ? Between(200, 700) : Between(0, 20);
        std::string bytes(rec.value);
        env_.executor().Schedule(delay_ms * 1'000'000,
                                 [this, s, bytes = std::move(bytes)] { Deliver(s, bytes); });
      }
    }
  }

  void Deliver(int s, const std::string& bytes) {
    Result<saga_internal::CommandView> cmd = saga_internal::DecodeCommand(bytes);
    if (!cmd.ok()) return;
    known_by_participants_.insert(std::string(cmd->command.saga_id));
    SagaReply reply = cores_[s]->Process(cmd->command);
    const bool faulty = Faulty();
    if (faulty && params_.forge > 0 && Uniform() < params_.forge) {
      SagaReply forged = reply;
      if (forged.outcome == SagaReply::Outcome::kOk) {
        forged.outcome = SagaReply::Outcome::kFailed;
        forged.status = FailedPreconditionError("forged");
      } else {
        forged.outcome = SagaReply::Outcome::kOk;
        forged.status = Status::Ok();
      }
      forged.applied = !forged.applied;
      if (Uniform() < 0.5) {
        forged.token.clear();
      } else if (!forged.token.empty()) {
        forged.token[0] = forged.token[0] == '0' ? '1' : '0';
      }
      std::string bytes;
      saga_internal::EncodeReply(forged, &bytes);
      ++forged_;
      env_.executor().Schedule(Between(0, 20) * 1'000'000,
                               [this, id = forged.saga_id, bytes] { AppendReply(id, bytes); });
    }
    if (faulty && Uniform() < params_.drop) return;
    std::string encoded;
    saga_internal::EncodeReply(reply, &encoded);
    const int copies = faulty && Uniform() < params_.duplicate ? 2 : 1;
    for (int c = 0; c < copies; ++c) {
      const int64_t delay_ms =
          faulty && Uniform() < params_.late ? Between(200, 700) : Between(0, 20);
      env_.executor().Schedule(delay_ms * 1'000'000,
                               [this, id = reply.saga_id, encoded] { AppendReply(id, encoded); });
    }
  }

  void AppendReply(const std::string& id, const std::string& encoded) {
    if (log_ == nullptr || fs_->crashed()) return;
    RecordView v;
    v.key = id;
    v.value = encoded;
    log_->Append("saga.replies", std::span<const RecordView>(&v, 1)).status().IgnoreError();
  }

  std::string Dump() {
    std::string out;
    if (orch_ == nullptr) return out;
    for (const SagaSummary& s : orch_->List(SagaListFilter{})) {
      if (IsFinal(s.state)) continue;
      out += "\n  " + s.id + " " + std::string(SagaStateName(s.state)) + " step " +
             std::to_string(s.step) + (s.stuck ? " stuck" : "");
    }
    return out;
  }

  std::string Check() {
    std::set<std::string> ids(ids_.begin(), ids_.end());
    for (const std::string& id : ids_) {
      if (!acked_.count(id)) return "saga " + id + " was never acknowledged";
      Result<SagaInfo> info = orch_->Describe(id);
      if (!info.ok()) return "acknowledged saga " + id + " is unknown after recovery";
      const SagaState state = info->summary.state;
      const Holdings h = holdings_[id];
      for (int s = 0; s < kSteps; ++s) {
        if (h.applies[s] > 1) return id + ": step " + std::to_string(s) + " applied twice";
        if (h.held[s] < 0 || h.held[s] > 1) {
          return id + ": step " + std::to_string(s) + " holds " + std::to_string(h.held[s]);
        }
        if (state == SagaState::kCompleted && h.held[s] != 1) {
          return id + " completed but step " + std::to_string(s) + " is not held";
        }
        if (state == SagaState::kCompensated && h.held[s] != 0) {
          return id + " compensated but step " + std::to_string(s) + " is still held (orphan)";
        }
      }
      if (!IsFinal(state)) {
        return id + " ended " + std::string(SagaStateName(state)) + " at step " +
               std::to_string(info->summary.step);
      }
      ++(state == SagaState::kCompleted ? completed_ : compensated_);
    }
    for (const auto& [id, h] : holdings_) {
      if (!ids.count(id)) return "a reservation exists for unknown saga " + id;
    }
    for (const std::string& id : known_by_participants_) {
      if (!ids.count(id)) return "a command was sent for unknown saga " + id;
    }
    return "";
  }

  uint64_t seed_;
  Params params_;
  sim::SimEnv env_;
  std::mt19937_64 rng_;
  std::unique_ptr<sim::SimFileSystem> fs_;
  std::unique_ptr<Env> node_env_;
  std::unique_ptr<Log> log_;
  std::unique_ptr<SagaOrchestrator> orch_;
  std::vector<std::unique_ptr<Log::Watch>> watches_;
  std::map<int, uint64_t> offsets_;
  std::array<std::unique_ptr<SagaLedger>, kSteps> ledgers_;
  std::array<std::unique_ptr<SagaParticipantCore>, kSteps> cores_;
  std::map<std::string, Holdings> holdings_;
  std::vector<std::string> ids_;
  std::set<std::string> acked_;
  std::set<std::string> known_by_participants_;
  int crashes_ = 0;
  int forged_ = 0;
  uint64_t ops_at_open_ = 0;
  int completed_ = 0;
  int compensated_ = 0;
  int epoch_ = 0;  // incremented per restart
  bool healed_ = false;
  size_t in_flight_at_heal_ = 0;
};

uint64_t EnvU64(const char* name, uint64_t fallback) {
  const char* v = std::getenv(name);
  return v ? std::strtoull(v, nullptr, 10) : fallback;
}

TEST(SagaSimTest, EverySagaEndsCommittedOrCompensatedUnderFaults) {
  const uint64_t one = EnvU64("CONVERGE_SIM_SEED", 0);
  const uint64_t seeds = EnvU64("CONVERGE_SIM_SEEDS", 1000);
  int total_crashes = 0, completed = 0, compensated = 0, forged = 0;
  for (uint64_t i = 0; i < (one ? 1 : seeds); ++i) {
    const uint64_t seed = one ? one : 1000 + i;
    std::mt19937_64 rng(seed);
    const Params p = RandomParams(rng);
    World world(seed, p);
    const std::string failure = world.Run();
    ASSERT_EQ(failure, "") << "seed " << seed << " (replay: CONVERGE_SIM_SEED=" << seed << ")";
    total_crashes += world.crashes();
    forged += world.forged();
    completed += world.completed();
    compensated += world.compensated();
  }
  std::printf("sagas completed %d, compensated %d, orchestrator crashes %d, forged replies %d\n",
              completed, compensated, total_crashes, forged);
  if (!one) {
    EXPECT_GT(total_crashes, 0);
    EXPECT_GT(forged, 0);
  }
}

// Seeds outside the default range that once failed, replayed on every run.
TEST(SagaSimTest, SeedsThatOnceFailed) {
  // 2505: the last step of trip-2 (retried without a bound) lost eleven attempts in a row to
  // dropped commands and replies; its twelfth waited the capped 5 minutes past the old fixed
  // ten-minute limit, which reported it "stuck". It must end once the faults stop.
  // 3333: the same with trip-7.
  for (const uint64_t seed : {2505, 3333}) {
    std::mt19937_64 rng(seed);
    const Params p = RandomParams(rng);
    World world(seed, p);
    ASSERT_EQ(world.Run(), "") << "seed " << seed;
    EXPECT_GE(world.in_flight_at_heal(), 1u) << "seed " << seed << " no longer replays its case";
  }
}

TEST(SagaSimTest, FaultFreeRunCompletesEverySaga) {
  Params p;
  p.sagas = 30;
  World world(7, p);
  EXPECT_EQ(world.Run(), "");
  EXPECT_EQ(world.completed(), 30);
}

TEST(SagaSimTest, SameSeedSameRun) {
  std::mt19937_64 rng(42);
  const Params p = RandomParams(rng);
  World a(42, p);
  World b(42, p);
  ASSERT_EQ(a.Run(), "");
  ASSERT_EQ(b.Run(), "");
  EXPECT_EQ(a.trace(), b.trace());
}

// A crash at every mutating operation of a run, one after the other: before and after each
// saga-log append and sync, each command and reply append, each segment roll and compaction.
TEST(SagaSimTest, CrashAtEveryOperation) {
  Params p;
  p.sagas = 3;
  p.transient = 0.2;
  p.refuse = 0.2;
  const uint64_t seed = 500;
  uint64_t ops = 0;
  {
    World baseline(seed, p);
    ASSERT_EQ(baseline.Run(), "");
    ops = baseline.ops_after_open();
  }
  ASSERT_GT(ops, 20u);
  // Same seed: every run is identical up to its crash point, so operation k is hit in run k.
  for (uint64_t op = 1; op <= ops; ++op) {
    p.crash_at_op = op;
    World world(seed, p);
    ASSERT_EQ(world.Run(), "") << "crash at operation " << op << " of " << ops;
    ASSERT_GE(world.crashes(), 1) << "operation " << op;
  }
}

}  // namespace
}  // namespace converge
