// The WAL outbox relay (mode "wal", docs/formats/wal-outbox.md) under the simulator: a
// simulated PostgreSQL (its WAL of committed and rolled-back transactions, one logical slot,
// replication sessions that stream pgoutput bytes) sits behind the seam where the replication
// connection hands bytes to the relay's WAL source (cdc::ReplicationStream). Above it everything
// is the real code: the WAL source, the pgoutput decoder, the confirm rules (cdc::WalReader),
// the relay's driver and state machine, the log sink and the log on the simulated filesystem.
//
// Faults, at random over each seed:
// - the relay process crashes at every step: after reading a batch (relay.claimed), after
//   each appended chunk (relay.chunk_published, mid-batch), after the whole batch is appended
//   and before the slot is confirmed (relay.published), after the confirm (relay.removed);
// - the replication connection breaks while reading and while sending a status update
//   (before or after the server took the update);
// - PostgreSQL restarts: every session ends and the slot's confirmed position falls back to
//   its last checkpoint, so WAL already confirmed is streamed again;
// - (machine crashes) the log's machine crashes at a random filesystem operation, losing what
//   it had not synced, and the relay with it.
// Streams arrive in pieces (a transaction may be half received when the relay reads), and the
// server interleaves keepalives and transactions of other consumers (another prefix).
// After the faults stop the relay must drain the WAL, and then: every committed message is in
// the log, in commit order per key (first occurrences; a re-read one is dropped by the
// idempotent publish, which this also counts), nothing of a rolled-back transaction and
// nothing of another prefix is there, and the slot is confirmed to the end of the WAL.
// With table capture (a third test), the same stream also carries the row changes of a table
// (inserts, updates, deletes, TRUNCATE): the capture topic, applied as a replica applies it,
// must equal the table as committed.
//
// Seeds: CONVERGE_SIM_SEEDS (how many per test) and CONVERGE_SIM_SEED (replay one), as in the
// other simulation tests; a failure prints its seed.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "cdc/pgoutput.h"
#include "cdc/replication.h"
#include "converge/event.h"
#include "converge/log.h"
#include "converge/relay.h"
#include "converge/sim_env.h"
#include "gtest/gtest.h"
#include "outbox/relay_source.h"

namespace converge {
namespace {

using cdc::Lsn;

constexpr char kTopic[] = "orders";
constexpr int64_t kMs = 1'000'000;

uint64_t EnvNumber(const char* name, uint64_t fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  return std::strtoull(v, nullptr, 10);
}

// ---- replication-stream bytes (big-endian, as PostgreSQL sends them) ----

void PutBig(std::string* out, uint64_t v, int bytes) {
  for (int i = bytes - 1; i >= 0; --i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

std::string XLogData(Lsn start, Lsn wal_end, const std::string& payload) {
  std::string out = "w";
  PutBig(&out, start, 8);
  PutBig(&out, wal_end, 8);
  PutBig(&out, 0, 8);
  out += payload;
  return out;
}

std::string KeepaliveMsg(Lsn wal_end, bool reply) {
  std::string out = "k";
  PutBig(&out, wal_end, 8);
  PutBig(&out, 0, 8);
  out.push_back(reply ? 1 : 0);
  return out;
}

uint64_t GetBig(std::string_view in, size_t at, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v = (v << 8) | static_cast<uint8_t>(in[at + i]);
  return v;
}

// ---- the simulated PostgreSQL ----

// A row change of the captured table public.items (id int4 primary key, v int4): 'I' insert,
// 'U' update, 'D' delete of `id`, 'T' truncate.
struct RowOp {
  char op = 'I';
  int id = 0;
  int v = 0;
};

struct WalTx {
  uint32_t xid = 0;
  Lsn begin_lsn = 0, commit_lsn = 0, end_lsn = 0;
  int64_t commit_time_pg = 0;
  bool committed = true;
  std::vector<std::pair<std::string, std::string>> messages;  // (prefix, content)
  std::vector<RowOp> rows;                                    // after the messages
};

struct Coverage {
  std::map<std::string, uint64_t> crashes;
  uint64_t committed = 0, rolled_back = 0, republished = 0, replayed_sessions = 0;
  uint64_t handed = 0;  // messages the relay published (re-reads included)
  uint64_t row_ops = 0, truncates = 0;
};

class FakePostgres {
 public:
  // Appends a transaction to the WAL (a rolled-back one takes WAL too, and is never decoded).
  void Write(WalTx tx, int64_t now_wall_micros) {
    tx.xid = next_xid_++;
    tx.begin_lsn = next_lsn_;
    Lsn lsn = next_lsn_ + 0x18;
    lsn += 0x30 * (tx.messages.size() + tx.rows.size());
    tx.commit_lsn = lsn;
    tx.end_lsn = lsn + 0x20;
    tx.commit_time_pg = now_wall_micros - cdc::kPgEpochUnixMicros;
    next_lsn_ = tx.end_lsn + 0x08;
    wal_.push_back(std::move(tx));
  }

  // The slot's confirmed position is saved at checkpoints; a restart goes back to it.
  void Checkpoint() { saved_confirmed_ = confirmed_; }
  void Restart() {
    confirmed_ = saved_confirmed_;
    ++epoch_;
    active_ = 0;
  }

  Lsn end() const { return next_lsn_; }
  Lsn confirmed() const { return confirmed_; }
  const std::vector<WalTx>& wal() const { return wal_; }

 private:
  friend class FakeStream;
  std::vector<WalTx> wal_;
  Lsn next_lsn_ = 0x1000'0000;
  uint32_t next_xid_ = 700;
  Lsn confirmed_ = 0x1000'0000;  // the slot was created at the start of the WAL
  Lsn saved_confirmed_ = 0x1000'0000;
  uint64_t epoch_ = 1;   // a restart ends every session of an older epoch
  uint64_t active_ = 0;  // the session streaming from the slot (0: none)
  uint64_t next_session_ = 1;
};

// One replication session. Its decisions (break now, deliver less) come from the test's
// random source, so a seed replays.
class FakeStream final : public cdc::ReplicationStream {
 public:
  FakeStream(FakePostgres& pg, std::mt19937_64& rng, double break_p, Coverage* coverage)
      : pg_(pg),
        rng_(rng),
        break_p_(break_p),
        coverage_(coverage),
        epoch_(pg.epoch_),
        id_(pg.next_session_++) {}
  ~FakeStream() override {
    if (pg_.active_ == id_ && pg_.epoch_ == epoch_) pg_.active_ = 0;
  }

  // The relay's checks of a capture source: the publication publishes every kind of change,
  // and the slot's initial snapshot completed (the table was empty when the slot was made).
  Result<std::vector<std::vector<std::string>>> Exec(const std::string& command) override {
    CONVERGE_RETURN_IF_ERROR(Alive());
    if (command.find("pubtruncate") != std::string::npos) {
      return std::vector<std::vector<std::string>>{{"t"}};
    }
    if (command.find("converge_cdc_snapshot") != std::string::npos) {
      return std::vector<std::vector<std::string>>{{"1"}};
    }
    return std::vector<std::vector<std::string>>{};
  }

  Result<cdc::SlotInfo> GetSlot(const std::string& slot) override {
    CONVERGE_RETURN_IF_ERROR(Alive());
    cdc::SlotInfo info;
    info.exists = slot == "sim_slot";
    info.plugin = "pgoutput";
    info.wal_status = "reserved";
    info.confirmed_flush = pg_.confirmed_;
    info.active_elsewhere = pg_.active_ != 0 && pg_.active_ != id_;
    return info;
  }

  Status StartReplication(const std::string&, const std::string&, Lsn start) override {
    CONVERGE_RETURN_IF_ERROR(Alive());
    if (pg_.active_ != 0 && pg_.active_ != id_) {
      return FailedPreconditionError("replication slot \"sim_slot\" is active for another PID");
    }
    pg_.active_ = id_;
    streaming_ = true;
    relation_sent_ = false;  // a new session announces the relation again
    // From the slot's confirmed position (the request's 0/0): transactions that end at or
    // before it are not decoded again.
    const Lsn from = std::max(start, pg_.confirmed_);
    sent_ptr_ = from;
    next_tx_ = 0;
    while (next_tx_ < pg_.wal_.size() && pg_.wal_[next_tx_].end_lsn <= from) ++next_tx_;
    if (next_tx_ < pg_.wal_.size()) ++coverage_->replayed_sessions;
    return Status::Ok();
  }

  Result<bool> ReadAvailable(std::string* out) override {
    CONVERGE_RETURN_IF_ERROR(Alive());
    if (!streaming_) return FailedPreconditionError("not streaming");
    if (Chance(break_p_)) return Break("reading");
    if (pending_.empty()) {
      // Nothing buffered: the next transaction of the WAL, a keepalive, or nothing now. A
      // keepalive carries the position decoding has reached (walsender's sentPtr): the end of
      // the WAL once every transaction was sent, else the end of the last one decoded.
      while (next_tx_ < pg_.wal_.size() && !pg_.wal_[next_tx_].committed) {
        sent_ptr_ = pg_.wal_[next_tx_++].end_lsn;
      }
      if (next_tx_ < pg_.wal_.size() && !Chance(0.1)) {
        Queue(pg_.wal_[next_tx_]);
        sent_ptr_ = pg_.wal_[next_tx_++].end_lsn;
      } else if (Chance(0.3)) {
        if (next_tx_ == pg_.wal_.size()) sent_ptr_ = pg_.next_lsn_;
        pending_.push_back(KeepaliveMsg(sent_ptr_, Chance(0.2)));
      } else {
        return false;
      }
    }
    // Sometimes the rest of what is buffered has not arrived yet (mid-transaction reads).
    if (Chance(0.15)) return false;
    *out = std::move(pending_.front());
    pending_.pop_front();
    return true;
  }

  Status SendCopyData(std::string_view data) override {
    CONVERGE_RETURN_IF_ERROR(Alive());
    if (Chance(break_p_)) return Break("sending a status update (lost)");
    if (data.size() != 34 || data[0] != 'r') return InvalidArgumentError("not a status update");
    const Lsn flush = GetBig(data, 9, 8);
    if (flush > pg_.next_lsn_) return InvalidArgumentError("flush past the end of WAL");
    pg_.confirmed_ = std::max(pg_.confirmed_, flush);
    // The update reached the server, but the connection broke before the caller heard back.
    if (Chance(break_p_)) return Break("after a status update was taken");
    return Status::Ok();
  }

  int socket() const override { return -1; }

 private:
  bool Chance(double p) { return p > 0 && std::uniform_real_distribution<double>(0, 1)(rng_) < p; }

  Status Alive() const {
    if (epoch_ != pg_.epoch_ || broken_) {
      return UnavailableError("server closed the connection unexpectedly");
    }
    return Status::Ok();
  }

  Status Break(const std::string& when) {
    broken_ = true;
    if (pg_.active_ == id_) pg_.active_ = 0;
    ++coverage_->crashes["connection lost " + when];
    return UnavailableError("connection lost " + when);
  }

  // A transaction's messages; each XLogData's start and end are the record's position, as the
  // walsender sends them for logical decoding.
  void Queue(const WalTx& tx) {
    std::string b = "B";
    PutBig(&b, tx.commit_lsn, 8);
    PutBig(&b, static_cast<uint64_t>(tx.commit_time_pg), 8);
    PutBig(&b, tx.xid, 4);
    pending_.push_back(XLogData(tx.begin_lsn, tx.begin_lsn, b));
    Lsn lsn = tx.begin_lsn + 0x18;
    for (const auto& [prefix, content] : tx.messages) {
      std::string m = "M";
      m.push_back(1);  // transactional
      PutBig(&m, lsn, 8);
      m += prefix;
      m.push_back('\0');
      PutBig(&m, content.size(), 4);
      m += content;
      pending_.push_back(XLogData(lsn, lsn, m));
      lsn += 0x30;
    }
    for (const RowOp& r : tx.rows) {
      if (!relation_sent_) {
        pending_.push_back(XLogData(lsn, lsn, RelationMsg()));
        relation_sent_ = true;
      }
      pending_.push_back(XLogData(lsn, lsn, RowMsg(r)));
      lsn += 0x30;
    }
    std::string c = "C";
    c.push_back(0);
    PutBig(&c, tx.commit_lsn, 8);
    PutBig(&c, tx.end_lsn, 8);
    PutBig(&c, static_cast<uint64_t>(tx.commit_time_pg), 8);
    pending_.push_back(XLogData(tx.commit_lsn, tx.commit_lsn, c));
  }

  static constexpr uint32_t kRelation = 16384;

  static void PutText(std::string* out, const std::string& text) {
    out->push_back('t');
    PutBig(out, text.size(), 4);
    *out += text;
  }

  static std::string RelationMsg() {
    std::string m = "R";
    PutBig(&m, kRelation, 4);
    m += "public";
    m.push_back('\0');
    m += "items";
    m.push_back('\0');
    m.push_back('d');
    PutBig(&m, 2, 2);
    for (const char* col : {"id", "v"}) {
      m.push_back(std::string_view(col) == "id" ? 1 : 0);
      m += col;
      m.push_back('\0');
      PutBig(&m, 23, 4);  // int4
      PutBig(&m, 0xFFFFFFFFu, 4);
    }
    return m;
  }

  static std::string RowMsg(const RowOp& r) {
    std::string m(1, r.op);
    if (r.op == 'T') {
      PutBig(&m, 1, 4);
      m.push_back(0);
      PutBig(&m, kRelation, 4);
      return m;
    }
    PutBig(&m, kRelation, 4);
    if (r.op == 'D') {
      m.push_back('K');
      PutBig(&m, 2, 2);
      PutText(&m, std::to_string(r.id));
      m.push_back('n');
      return m;
    }
    m.push_back('N');
    PutBig(&m, 2, 2);
    PutText(&m, std::to_string(r.id));
    PutText(&m, std::to_string(r.v));
    return m;
  }

  FakePostgres& pg_;
  std::mt19937_64& rng_;
  const double break_p_;
  Coverage* coverage_;
  const uint64_t epoch_;
  const uint64_t id_;
  bool streaming_ = false;
  bool broken_ = false;
  bool relation_sent_ = false;
  size_t next_tx_ = 0;
  Lsn sent_ptr_ = 0;
  std::deque<std::string> pending_;
};

// The log sink, counting what the relay hands it (a re-read message is handed over again; the
// log's idempotent publish drops it).
class CountingSink final : public RelaySink {
 public:
  CountingSink(RelaySink& inner, uint64_t* handed) : inner_(inner), handed_(handed) {}
  Status Publish(std::span<const SinkRecord> records,
                 std::vector<SinkRejection>* rejected) override {
    Status s = inner_.Publish(records, rejected);
    if (!s.ok()) return s;
    // The outbox topic's messages (not the capture's row changes).
    for (size_t i = 0; i < records.size(); ++i) {
      const bool refused = std::any_of(rejected->begin(), rejected->end(),
                                       [&](const SinkRejection& r) { return r.index == i; });
      if (records[i].topic == kTopic && !refused) ++*handed_;
    }
    return s;
  }
  Status DeadLetter(std::span<const RecordView> dead_letters) override {
    return inner_.DeadLetter(dead_letters);
  }

 private:
  RelaySink& inner_;
  uint64_t* handed_;
};

struct Params {
  bool machine_crashes = false;
  bool capture = false;  // table capture of public.items too
};

class World {
 public:
  World(uint64_t seed, const Params& params, Coverage* coverage)
      : env_(seed), rng_(seed * 0x9E3779B97F4A7C15ull + 29), params_(params), coverage_(coverage) {
    keys_ = Pick(1, 6);
    transactions_ = Pick(5, 40);
    partitions_ = static_cast<uint32_t>(Pick(1, 3));
    batch_max_events_ = static_cast<uint32_t>(Pick(1, 8));
    chunk_max_events_ = static_cast<uint32_t>(Pick(1, 4));
    poll_interval_ms_ = Pick(20, 300);
    const double levels[] = {0.02, 0.1, 0.25};
    relay_crash_p_ = levels[Pick(0, 2)];
    break_p_ = levels[Pick(0, 2)] / 4;
  }

  ~World() {
    relay_.reset();
    counting_.reset();
    sink_.reset();
    log_.reset();
  }

  std::string Run() {
    std::string failure = OpenMachine();
    if (!failure.empty()) return failure;
    int64_t at = 0;
    for (int i = 0; i < transactions_; ++i) {
      at += Pick(0, 200) * kMs;
      env_.executor().Schedule(at, [this] { WriteTransaction(); });
    }
    const int64_t faults_end = at + 500 * kMs;
    for (int i = 0; i < 3; ++i) {
      env_.executor().Schedule(Pick(0, at / kMs + 500) * kMs, [this] { pg_.Checkpoint(); });
    }
    for (int64_t i = Pick(0, 2); i > 0; --i) {
      env_.executor().Schedule(Pick(0, at / kMs + 500) * kMs, [this] { RestartPostgres(); });
    }
    if (params_.machine_crashes) ArmMachineCrash();
    while (env_.now_nanos() < faults_end && failure_.empty()) {
      env_.RunFor(10 * kMs);
      if (env_.sim_fs().crashed()) failure_ = CrashMachine();
    }
    faults_on_ = false;
    env_.sim_fs().CrashAfterOps(0);
    if (env_.sim_fs().crashed() && failure_.empty()) failure_ = CrashMachine();
    const int64_t drain_deadline = env_.now_nanos() + 600'000 * kMs;
    while (failure_.empty() && env_.now_nanos() < drain_deadline) {
      env_.RunFor(200 * kMs);
      if (pg_.confirmed() >= LastCommittedEnd()) break;
    }
    if (!failure_.empty()) return failure_;
    return Check();
  }

 private:
  int64_t Pick(int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng_);
  }
  bool Chance(double p) { return p > 0 && std::uniform_real_distribution<double>(0, 1)(rng_) < p; }

  std::string OpenMachine() {
    LogOptions lo;
    lo.dir = "/data/log";
    auto log = Log::Open(env_, lo);
    if (!log.ok()) return "open log: " + log.status().ToString();
    log_ = std::move(log).value();
    LogSinkOptions so;
    so.topic_options.partitions = partitions_;
    so.topic_options.durability = Durability::kFsync;
    auto sink = NewLogSink(*log_, so);
    if (!sink.ok()) return "sink: " + sink.status().ToString();
    sink_ = std::move(sink).value();
    counting_ = std::make_unique<CountingSink>(*sink_, &coverage_->handed);
    return StartRelay();
  }

  std::string StartRelay() {
    relay_.reset();
    RelayOptions ro;
    ro.name = "sim-wal-relay";
    ro.mode = "wal";
    ro.wal_slot = "sim_slot";
    ro.wal_publication = "sim_pub";
    ro.batch_max_events = batch_max_events_;
    ro.publish_chunk_max_events = chunk_max_events_;
    ro.poll_interval_ms = poll_interval_ms_;
    ro.retry_base_delay_ms = 5;
    ro.retry_max_delay_ms = 200;
    ro.standby_retry_ms = 50;
    ro.steps_on_env_executor = true;
    ro.fault_point = [this](std::string_view point) { return Fault(point); };
    ro.wal_capture_tables = params_.capture;
    outbox_internal::SourceOptions so;
    so.name = ro.name;
    so.wal_slot = ro.wal_slot;
    so.wal_publication = ro.wal_publication;
    so.wal_capture_tables = ro.wal_capture_tables;
    outbox_internal::WalConnector connect =
        [this]() -> Result<std::unique_ptr<cdc::ReplicationStream>> {
      if (Chance(break_p_)) return UnavailableError("could not connect to the server");
      return std::unique_ptr<cdc::ReplicationStream>(
          std::make_unique<FakeStream>(pg_, rng_, faults_on_ ? break_p_ : 0.0, coverage_));
    };
    auto relay = outbox_internal::NewRelayWithSource(
        env_, *counting_, ro, outbox_internal::NewWalSourceWith(env_, std::move(connect), so));
    if (!relay.ok()) return "relay: " + relay.status().ToString();
    relay_ = std::move(relay).value();
    Status s = relay_->Start();
    return s.ok() ? "" : "relay start: " + s.ToString();
  }

  // A fault point of the relay: with some probability the process crashes there and is
  // restarted a little later (from another event: the dead relay is on the stack now).
  Status Fault(std::string_view point) {
    if (!faults_on_ || !Chance(relay_crash_p_)) return Status::Ok();
    ++coverage_->crashes[std::string(point)];
    const uint64_t incarnation = ++relay_incarnation_;
    env_.executor().Schedule(Pick(0, 100) * kMs, [this, incarnation] {
      if (!failure_.empty() || incarnation != relay_incarnation_) return;
      std::string f = StartRelay();
      if (!f.empty()) failure_ = f;
    });
    return InternalError("simulated crash at " + std::string(point));
  }

  void RestartPostgres() {
    if (!faults_on_) return;
    ++coverage_->crashes["postgres restart"];
    pg_.Restart();
  }

  void ArmMachineCrash() {
    env_.executor().Schedule(Pick(0, 300) * kMs, [this] {
      if (faults_on_ && machine_crashes_ < 3) {
        env_.sim_fs().CrashAfterOps(static_cast<uint64_t>(Pick(1, 60)));
      }
    });
  }

  std::string CrashMachine() {
    ++machine_crashes_;
    ++coverage_->crashes["machine"];
    ++relay_incarnation_;
    relay_.reset();
    counting_.reset();
    sink_.reset();
    log_.reset();
    env_.sim_fs().Crash();
    std::string failure = OpenMachine();
    if (failure.empty() && params_.machine_crashes) ArmMachineCrash();
    return failure;
  }

  // One service transaction: 1..4 events on random keys (and sometimes a message of another
  // consumer's prefix), committed or rolled back; or a transaction with no message at all.
  void WriteTransaction() {
    WalTx tx;
    tx.committed = !Chance(0.2);
    if (Chance(0.1)) tx.messages.emplace_back("other:audit", "not ours");
    std::vector<std::pair<std::string, int64_t>> keyed;
    if (!Chance(0.1)) {
      for (int64_t i = Pick(1, 4); i > 0; --i) {
        const std::string key = "k" + std::to_string(Pick(0, keys_ - 1));
        const int64_t n = next_n_++;
        Event e;
        e.set_source("/sim/orders");
        e.set_id("e" + std::to_string(n));
        e.set_type("order.updated");
        e.set_partitionkey(key);
        CONVERGE_CHECK(e.SetJsonData("{\"n\":" + std::to_string(n) + "}").ok());
        Result<std::string> content = EncodeJson(e);
        CONVERGE_CHECK(content.ok());
        tx.messages.emplace_back(std::string("converge:") + kTopic, std::move(content).value());
        keyed.emplace_back(key, n);
      }
    }
    if (params_.capture) AddRowChanges(&tx);
    for (const auto& [key, n] : keyed) {
      if (tx.committed) {
        committed_[key].push_back(n);
        ++coverage_->committed;
      } else {
        rolled_back_.insert(n);
        ++coverage_->rolled_back;
      }
    }
    pg_.Write(std::move(tx), env_.clock().NowWallMicros());
  }

  // 0..4 row changes of public.items; the table as committed is kept in table_.
  void AddRowChanges(WalTx* tx) {
    std::map<int, int> table = table_;
    for (int64_t i = Pick(0, 4); i > 0; --i) {
      RowOp r;
      r.id = static_cast<int>(Pick(0, 9));
      r.v = static_cast<int>(next_v_++);
      const int64_t what = Pick(0, 99);
      if (what < 3) {
        r.op = 'T';
        table.clear();
        ++coverage_->truncates;
      } else if (what < 25 && table.count(r.id)) {
        r.op = 'D';
        table.erase(r.id);
      } else if (what < 25) {
        continue;
      } else {
        r.op = table.count(r.id) ? 'U' : 'I';
        table[r.id] = r.v;
      }
      ++coverage_->row_ops;
      tx->rows.push_back(r);
    }
    if (tx->committed) table_ = std::move(table);
  }

  Lsn LastCommittedEnd() const {
    Lsn end = 0;
    for (const WalTx& tx : pg_.wal()) {
      if (tx.committed) end = tx.end_lsn;
    }
    return end;
  }

  std::string Check() {
    std::string out;
    auto fail = [&](const std::string& what) {
      if (out.size() < 2000) out += what + "; ";
    };
    if (pg_.confirmed() < LastCommittedEnd()) {
      fail("the slot was not confirmed to the end of the WAL: " + cdc::FormatLsn(pg_.confirmed()) +
           " < " + cdc::FormatLsn(LastCommittedEnd()) + " (" + relay_->stats().last_error + ")");
    }
    // First occurrences per key, in log order; duplicates counted.
    std::map<std::string, std::vector<int64_t>> order;
    std::set<int64_t> seen;
    for (uint32_t p = 0; p < partitions_; ++p) {
      uint64_t next = 0;
      for (;;) {
        auto batch = log_->Read(kTopic, p, next, 256, 1 << 20);
        if (!batch.ok()) {
          if (batch.status().code() != StatusCode::kNotFound) {
            fail("log read: " + batch.status().ToString());
          }
          break;
        }
        if (batch->records.empty()) break;
        for (const StoredRecord& r : batch->records) {
          Result<Event> e = DecodeBinary(r.value);
          if (!e.ok()) {
            fail("undecodable record: " + e.status().ToString());
            continue;
          }
          const std::string& d = e->data();
          const int64_t n = std::stoll(d.substr(d.find(':') + 1));
          if (rolled_back_.count(n)) fail("rolled-back event in the log: " + std::to_string(n));
          if (!seen.insert(n).second) {
            ++coverage_->republished;
            continue;
          }
          order[std::string(e->partitionkey().value_or(""))].push_back(n);
        }
        next = batch->next_offset;
      }
    }
    for (const auto& [key, ns] : committed_) {
      if (order[key] != ns) {
        std::string got, want;
        for (int64_t n : order[key]) got += " " + std::to_string(n);
        for (int64_t n : ns) want += " " + std::to_string(n);
        fail("key " + key + ": the log has" + got + ", committed in order:" + want);
      }
    }
    for (const auto& [key, ns] : order) {
      if (!committed_.count(key)) fail("events of an unknown key " + key);
    }
    if (params_.capture) CheckCapture(fail);
    // Nothing of another prefix, no dead letters.
    for (const std::string& t : log_->ListTopics()) {
      if (t != kTopic && !(params_.capture && t == "public.items")) fail("unexpected topic " + t);
    }
    return out;
  }

  // The capture topic, applied as a replica applies it (per key the highest version; a
  // truncate removes every key below its version), equals the table; and along each
  // partition the versions of a key's changes grow (first occurrences).
  template <typename Fail>
  void CheckCapture(Fail& fail) {
    struct Latest {
      uint64_t version = 0;
      bool upsert = false;
      std::string data;
    };
    std::map<std::string, Latest> latest;
    uint64_t truncated_below = 0;
    std::set<std::string> ids;
    for (uint32_t p = 0; p < partitions_; ++p) {
      std::map<std::string, uint64_t> last_version;
      uint64_t next = 0;
      for (;;) {
        auto batch = log_->Read("public.items", p, next, 256, 1 << 20);
        if (!batch.ok() || batch->records.empty()) break;
        for (const StoredRecord& r : batch->records) {
          next = r.offset + 1;
          Result<Event> e = DecodeBinary(r.value);
          if (!e.ok()) {
            fail("undecodable change: " + e.status().ToString());
            continue;
          }
          if (!ids.insert(e->id()).second) continue;  // a duplicate (dropped in effect)
          const Extension* ext = e->FindExtension("version");
          const uint64_t version = ext == nullptr ? 0 : std::stoull(ext->value);
          if (e->type() == "converge.change.truncate") {
            truncated_below = std::max(truncated_below, version);
            continue;
          }
          const std::string key(e->subject().value_or(""));
          if (last_version[key] >= version) fail("key " + key + ": versions out of order");
          last_version[key] = version;
          Latest& l = latest[key];
          if (version > l.version) {
            l.version = version;
            l.upsert = e->type() == "converge.change.upsert";
            l.data = e->data();
          }
        }
      }
    }
    std::map<std::string, std::string> copy, want;
    for (const auto& [key, l] : latest) {
      if (l.upsert && l.version >= truncated_below) copy[key] = l.data;
    }
    for (const auto& [id, v] : table_) {
      want[std::to_string(id)] =
          "{\"id\":" + std::to_string(id) + ",\"v\":" + std::to_string(v) + "}";
    }
    if (copy != want) {
      std::string got, expected;
      for (const auto& [k, d] : copy) got += " " + k + "=" + d;
      for (const auto& [k, d] : want) expected += " " + k + "=" + d;
      fail("the capture applied is" + got + ", the table is" + expected);
    }
  }

  sim::SimEnv env_;
  std::mt19937_64 rng_;
  Params params_;
  Coverage* coverage_;
  FakePostgres pg_;

  int64_t keys_ = 1, transactions_ = 1;
  uint32_t partitions_ = 1, batch_max_events_ = 1, chunk_max_events_ = 1;
  int64_t poll_interval_ms_ = 100;
  double relay_crash_p_ = 0, break_p_ = 0;
  bool faults_on_ = true;
  int machine_crashes_ = 0;
  uint64_t relay_incarnation_ = 0;
  std::string failure_;

  std::unique_ptr<Log> log_;
  std::unique_ptr<RelaySink> sink_;
  std::unique_ptr<CountingSink> counting_;
  std::unique_ptr<Relay> relay_;

  int64_t next_n_ = 0;
  int64_t next_v_ = 1;
  std::map<int, int> table_;                               // public.items as committed
  std::map<std::string, std::vector<int64_t>> committed_;  // key -> n in commit order
  std::set<int64_t> rolled_back_;
};

void RunSeeds(const Params& params, uint64_t default_seeds, uint64_t first_seed) {
  const uint64_t only = EnvNumber("CONVERGE_SIM_SEED", 0);
  const uint64_t seeds = only != 0 ? 1 : EnvNumber("CONVERGE_SIM_SEEDS", default_seeds);
  Coverage coverage;
  for (uint64_t i = 0; i < seeds; ++i) {
    const uint64_t seed = only != 0 ? only : first_seed + i;
    World world(seed, params, &coverage);
    const std::string failure = world.Run();
    ASSERT_EQ(failure, "") << "seed " << seed << " (replay: CONVERGE_SIM_SEED=" << seed << ")";
  }
  std::string crashes;
  for (const auto& [point, n] : coverage.crashes) crashes += " " + point + "=" + std::to_string(n);
  std::printf(
      "  %llu seeds: %llu committed, %llu rolled back, %llu published again after a re-read "
      "(%llu of them twice in the log), %llu sessions replayed WAL, %llu row changes, %llu "
      "truncates; crashes:%s\n",
      static_cast<unsigned long long>(seeds), static_cast<unsigned long long>(coverage.committed),
      static_cast<unsigned long long>(coverage.rolled_back),
      static_cast<unsigned long long>(coverage.handed - coverage.committed),
      static_cast<unsigned long long>(coverage.republished),
      static_cast<unsigned long long>(coverage.replayed_sessions),
      static_cast<unsigned long long>(coverage.row_ops),
      static_cast<unsigned long long>(coverage.truncates), crashes.c_str());
  if (only == 0 && seeds >= 100) {
    std::vector<std::string> points = {"relay.claimed", "relay.chunk_published", "relay.published",
                                       "relay.removed", "postgres restart"};
    if (params.machine_crashes) points.push_back("machine");
    for (const std::string& p : points) EXPECT_GT(coverage.crashes[p], 0u) << "no crash at " << p;
    EXPECT_GT(coverage.rolled_back, 0u);
    EXPECT_GT(coverage.handed, coverage.committed);  // re-reads happened
  }
}

TEST(OutboxWalSimTest, CrashesAtEveryStepReplaysAndRestarts) {
  Params p;
  RunSeeds(p, 1000, 1);
}

// Table capture on the same stream: row changes (with TRUNCATE) next to the messages.
TEST(OutboxWalSimTest, TableCaptureWithTruncatesUnderTheSameFaults) {
  Params p;
  p.capture = true;
  RunSeeds(p, 1000, 700'001);
}

TEST(OutboxWalSimTest, MachineCrashesOfTheLog) {
  Params p;
  p.machine_crashes = true;
  RunSeeds(p, 300, 500'001);
}

}  // namespace
}  // namespace converge
