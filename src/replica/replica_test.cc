// Unit tests of the change-event convention, tokens, the memory and SQLite targets and the
// applier over a log on the simulated filesystem.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>

#include "converge/event.h"
#include "converge/log.h"
#include "converge/replica.h"
#include "converge/sim_env.h"
#include "converge/sql.h"
#include "replica/replica_test_util.h"
#include "support/temp_dir.h"

namespace converge::replica {
namespace {

using testing::MakeChange;
using testing::Record;

// An event built exactly as the store's change feed builds one (docs/formats/store.md).
Event StoreFeedEvent(std::string type, bool with_data) {
  Event e;
  e.set_source("/converge/store");
  e.set_id("orders/o1/42");
  e.set_type(std::move(type));
  e.set_subject("o1");
  e.set_time("2026-12-07T01:02:03.456Z");
  e.SetExtension("commitseq", "42");
  e.SetExtension("version", "42");
  e.SetExtension("collection", "orders");
  e.set_partitionkey("orders/o1");
  if (with_data) {
    e.set_datacontenttype("application/json");
    EXPECT_TRUE(e.SetJsonData("{\"total\":3}").ok());
  }
  return e;
}

TEST(ChangeEventTest, TheStoreFeedConforms) {
  Result<Change> put = ParseChangeEvent(StoreFeedEvent("converge.store.put", true));
  ASSERT_TRUE(put.ok()) << put.status().ToString();
  EXPECT_EQ(put->kind, ChangeKind::kUpsert);
  EXPECT_EQ(put->key, "o1");
  EXPECT_EQ(put->collection, "orders");
  EXPECT_EQ(put->version, 42u);
  EXPECT_EQ(put->commitseq, 42u);
  EXPECT_EQ(put->document, "{\"total\":3}");
  EXPECT_EQ(put->commit_time_micros, *ParseRfc3339Nanos("2026-12-07T01:02:03.456Z") / 1000);
  for (const char* type : {"converge.store.delete", "converge.store.expire"}) {
    Result<Change> del = ParseChangeEvent(StoreFeedEvent(type, false));
    ASSERT_TRUE(del.ok()) << del.status().ToString();
    EXPECT_EQ(del->kind, ChangeKind::kDelete);
    EXPECT_EQ(del->document, "");
  }
}

TEST(ChangeEventTest, RoundTripAndFallbackTime) {
  Change c = MakeChange("k", 3);
  c.collection = "col";
  c.commitseq = 9;
  Result<Change> back = ParseChangeRecord(Record(c), 1);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->key, "k");
  EXPECT_EQ(back->version, 3u);
  EXPECT_EQ(back->collection, "col");
  EXPECT_EQ(back->commitseq, 9u);
  EXPECT_EQ(back->commit_time_micros, c.commit_time_micros);
  Event no_time = StoreFeedEvent("converge.change.upsert", true);
  no_time.set_time(std::nullopt);
  EXPECT_EQ(ParseChangeEvent(no_time, 777)->commit_time_micros, 777);
}

TEST(ChangeEventTest, MalformedEventsNameWhatIsWrong) {
  struct Case {
    std::function<void(Event&)> mutate;
    std::string expect;
  };
  const std::vector<Case> cases = {
      {[](Event& e) { e.set_type("com.example.created"); }, "not an upsert or a delete"},
      {[](Event& e) { e.set_subject(std::nullopt); }, "no subject"},
      {[](Event& e) { e.set_subject(""); }, "no subject"},
      {[](Event& e) { e.RemoveExtension("version"); }, "no version"},
      {[](Event& e) { e.SetExtension("version", "0"); }, "version '0'"},
      {[](Event& e) { e.SetExtension("version", "-1"); }, "version '-1'"},
      {[](Event& e) { e.SetExtension("version", "12x"); }, "version '12x'"},
      {[](Event& e) { e.SetExtension("version", "99999999999999999999"); }, "version '9"},
      {[](Event& e) { e.SetExtension("commitseq", "x"); }, "commitseq 'x'"},
      {[](Event& e) { e.ClearData(); }, "without data"},
      {[](Event& e) { e.SetBinaryData("\x01\x02"); }, "binary data"},
      {[](Event& e) { e.set_time("yesterday"); }, "time"},
  };
  for (const Case& c : cases) {
    Event e = StoreFeedEvent("converge.store.put", true);
    c.mutate(e);
    Result<Change> r = ParseChangeEvent(e);
    ASSERT_FALSE(r.ok()) << c.expect;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find(c.expect), std::string_view::npos)
        << r.status().ToString();
  }
  EXPECT_FALSE(ParseChangeRecord("not a record", 0).ok());
}

TEST(ConsistencyTokenTest, RoundTripAndRefusals) {
  ConsistencyToken t{"store-changes", 3, ConsistencyToken::Kind::kCommitSeq, 12345};
  const std::string text = EncodeToken(t);
  EXPECT_EQ(text, "ct1~store-changes~3~c12345");
  Result<ConsistencyToken> back = DecodeToken(text);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->topic, t.topic);
  EXPECT_EQ(back->partition, 3u);
  EXPECT_EQ(back->kind, t.kind);
  EXPECT_EQ(back->value, 12345u);
  for (const char* bad : {"", "ct1~", "ct2~t~0~o1", "ct1~t~0~x1", "ct1~t~0~o", "ct1~t~-1~o1",
                          "ct1~t~0~o1~", "ct1~~0~o1", "ct1~t~0~o18446744073709551616",
                          "ct1~t/x~0~o1", "ct1~t~9999~o1"}) {
    EXPECT_EQ(DecodeToken(bad).status().code(), StatusCode::kInvalidArgument) << bad;
  }
}

TEST(MemoryTargetTest, Conformance) {
  MemoryTarget target;
  testing::CheckTargetConformance(target, [&](const std::string& key) -> std::optional<Row> {
    auto it = target.rows().find(key);
    if (it == target.rows().end()) return std::nullopt;
    return it->second;
  });
}

TEST(MemoryTargetTest, FaultsBeforeAndAfterCommit) {
  MemoryTarget target;
  target.InjectFault(MemoryTarget::Fault::kFailBeforeCommit);
  EXPECT_FALSE(testing::ApplyChanges(target, {MakeChange("a", 1)}, 0, 1, 1).ok());
  EXPECT_TRUE(target.rows().empty());
  target.InjectFault(MemoryTarget::Fault::kFailAfterCommit);
  EXPECT_FALSE(testing::ApplyChanges(target, {MakeChange("a", 1)}, 0, 1, 1).ok());
  EXPECT_EQ(target.rows().size(), 1u);
  EXPECT_EQ(target.state().positions[0].next_offset, 1u);
}

// One temporary directory per test (tests/support/temp_dir.h).
using ::converge::testing::TempDir;

std::optional<Row> ReadSqlRow(sql::Database& db, const std::string& table,
                              const std::string& key) {
  std::optional<Row> out;
  const sql::Value k[] = {sql::Value::Text(key)};
  Status s = db.Query("SELECT version, deleted, document, commit_time_us, applied_us FROM " +
                          table + " WHERE key = $1",
                      k,
                      [&](const sql::Row& row) {
                        Row r;
                        r.version = static_cast<uint64_t>(*row.Int(0));
                        r.deleted = row.Bytes(1) == "1" || row.Bytes(1) == "t";
                        r.document = std::string(row.Bytes(2));
                        r.commit_time_micros = *row.Int(3);
                        r.applied_time_micros = *row.Int(4);
                        out = r;
                        return Status::Ok();
                      })
                 .status();
  EXPECT_TRUE(s.ok()) << s.ToString();
  return out;
}

TEST(SqliteTargetTest, Conformance) {
  TempDir dir;
  sql::SqliteOptions so;
  so.path = dir.Sub("r.db");
  auto db = sql::Database::OpenSqlite(so);
  ASSERT_TRUE(db.ok()) << db.status().ToString();
  auto target = NewSqlTarget(**db, {"customers", "customers_copy", "customer-changes"});
  ASSERT_TRUE(target.ok()) << target.status().ToString();
  testing::CheckTargetConformance(**target, [&](const std::string& key) {
    return ReadSqlRow(**db, "customers_copy", key);
  });
}

TEST(SqliteTargetTest, RefusesBadNamesAndARepointedReplica) {
  TempDir dir;
  sql::SqliteOptions so;
  so.path = dir.Sub("r.db");
  auto db = sql::Database::OpenSqlite(so);
  ASSERT_TRUE(db.ok());
  for (const char* bad : {"", "1abc", "a-b", "a;drop", "converge_replicas"}) {
    EXPECT_EQ(NewSqlTarget(**db, {"r", bad, "t"}).status().code(), StatusCode::kInvalidArgument)
        << bad;
  }
  ASSERT_TRUE(NewSqlTarget(**db, {"r", "copy", "t1"}).ok());
  ASSERT_TRUE(NewSqlTarget(**db, {"r", "copy", "t1"}).ok());  // reopens
  EXPECT_EQ(NewSqlTarget(**db, {"r", "copy", "t2"}).status().code(),
            StatusCode::kFailedPrecondition);
  EXPECT_EQ(NewSqlTarget(**db, {"r", "other", "t1"}).status().code(),
            StatusCode::kFailedPrecondition);
}

// ---------------------------------------------------------------------------------------
// The applier over a real log on the simulated filesystem.

class ApplierTest : public ::testing::Test {
 protected:
  void SetUp() override {
    LogOptions lo;
    lo.dir = "/log";
    auto log = Log::Open(sim_, lo);
    ASSERT_TRUE(log.ok()) << log.status().ToString();
    log_ = std::move(log).value();
    ASSERT_TRUE(log_->CreateTopic("changes", TopicOptions{}).ok());
    source_ = NewLogSource(*log_, "changes");
  }

  uint64_t Append(const std::string& value) {
    RecordView rv{"", "k", value, 0};
    auto r = log_->Append("changes", std::span<const RecordView>(&rv, 1));
    CONVERGE_CHECK(r.ok());
    return (*r)[0].offset;
  }
  uint64_t Append(const Change& c) { return Append(Record(c)); }

  std::unique_ptr<Applier> Open(ApplierOptions options = {}) {
    options.name = "test";
    if (!options.report) {
      options.report = [this](const std::string& m) { reports_.push_back(m); };
    }
    auto a = Applier::Open(sim_, *source_, target_, std::move(options));
    CONVERGE_CHECK(a.ok());
    return std::move(a).value();
  }

  sim::SimEnv sim_{1};
  std::unique_ptr<Log> log_;
  std::unique_ptr<Source> source_;
  MemoryTarget target_;
  std::vector<std::string> reports_;
};

TEST_F(ApplierTest, AppliesInOrderAndResumesFromTheTargetPosition) {
  Append(MakeChange("a", 1));
  Append(MakeChange("a", 2));
  Append(MakeChange("b", 1));
  auto applier = Open();
  ASSERT_TRUE(applier->CatchUp().ok());
  EXPECT_EQ(target_.rows().at("a").version, 2u);
  EXPECT_EQ(target_.rows().at("b").version, 1u);
  ReplicaStats s = applier->Stats();
  EXPECT_EQ(s.applied, 2u);
  EXPECT_EQ(s.superseded, 1u);
  EXPECT_EQ(s.lag_changes, 0u);
  EXPECT_EQ(s.positions[0].next_offset, 3u);
  // A new applier starts where the target is.
  applier.reset();
  Append(MakeChange("a", 1));  // a late duplicate of an old change
  Append(MakeChange("c", 4, true));
  applier = Open();
  ASSERT_TRUE(applier->CatchUp().ok());
  s = applier->Stats();
  EXPECT_EQ(s.applied, 1u);
  EXPECT_EQ(s.stale, 1u);
  EXPECT_TRUE(target_.rows().at("c").deleted);
  for (const auto& [kv, n] : target_.applies()) EXPECT_EQ(n, 1u) << kv.first << "@" << kv.second;
}

TEST_F(ApplierTest, MalformedStopsByDefault) {
  Append(MakeChange("a", 1));
  const uint64_t bad = Append(std::string("garbage"));
  Append(MakeChange("b", 1));
  auto applier = Open();
  Status s = applier->CatchUp();
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("offset " + std::to_string(bad)), std::string_view::npos)
      << s.ToString();
  EXPECT_NE(s.message().find("on_malformed=skip"), std::string_view::npos);
  EXPECT_EQ(target_.rows().count("a"), 1u);  // what came before is applied
  EXPECT_EQ(target_.rows().count("b"), 0u);
  EXPECT_EQ(applier->Stats().malformed, 1u);
  EXPECT_EQ(applier->Stats().positions[0].next_offset, bad);
  ASSERT_EQ(reports_.size(), 1u);
  EXPECT_EQ(applier->Step().status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(applier->CheckStaleness(1'000'000).code(), StatusCode::kUnavailable);
}

TEST_F(ApplierTest, MalformedSkippedWithReportWhenAsked) {
  Append(MakeChange("a", 1));
  Event wrong = *MakeChangeEvent(MakeChange("x", 1), "/t");
  wrong.RemoveExtension("version");
  std::string rec;
  ASSERT_TRUE(EncodeBinary(wrong, &rec).ok());
  Append(rec);
  Append(MakeChange("b", 1));
  ApplierOptions o;
  o.on_malformed = OnMalformed::kSkip;
  auto applier = Open(o);
  ASSERT_TRUE(applier->CatchUp().ok());
  EXPECT_EQ(target_.rows().size(), 2u);
  EXPECT_EQ(applier->Stats().malformed, 1u);
  ASSERT_EQ(reports_.size(), 1u);
  EXPECT_NE(reports_[0].find("no version extension"), std::string::npos) << reports_[0];
  EXPECT_NE(reports_[0].find("skipped"), std::string::npos);
}

TEST_F(ApplierTest, CollectionFilter) {
  Change a = MakeChange("a", 1);
  a.collection = "orders";
  Change b = MakeChange("b", 2);
  b.collection = "customers";
  Append(a);
  Append(b);
  ApplierOptions o;
  o.collection = "orders";
  auto applier = Open(o);
  ASSERT_TRUE(applier->CatchUp().ok());
  EXPECT_EQ(target_.rows().size(), 1u);
  EXPECT_EQ(applier->Stats().filtered, 1u);
  EXPECT_EQ(applier->Stats().positions[0].next_offset, 2u);
}

TEST_F(ApplierTest, WaitForTokensAndDeadline) {
  auto applier = Open();
  const uint64_t off = Append(MakeChange("a", 1));
  const std::string token = applier->TokenForOffset(0, off);
  EXPECT_FALSE(*applier->Reached(token));
  std::optional<Status> first, second;
  applier->WaitForAsync(token, 1000, [&](Status s) { first = s; });
  applier->WaitForAsync(applier->TokenForOffset(0, off + 1), 1000,
                        [&](Status s) { second = s; });
  EXPECT_FALSE(first.has_value());
  ASSERT_TRUE(applier->Step().ok());
  ASSERT_TRUE(first.has_value());
  EXPECT_TRUE(first->ok());
  EXPECT_TRUE(*applier->Reached(token));
  EXPECT_FALSE(second.has_value());
  sim_.RunFor(2'000'000'000);
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(second->code(), StatusCode::kDeadlineExceeded);
  EXPECT_NE(second->message().find("within 1000 ms"), std::string_view::npos) << second->ToString();
  // Bad tokens answer at once.
  std::optional<Status> bad;
  applier->WaitForAsync("nope", 1000, [&](Status s) { bad = s; });
  EXPECT_EQ(bad->code(), StatusCode::kInvalidArgument);
  applier->WaitForAsync("ct1~other~0~o1", 1000, [&](Status s) { bad = s; });
  EXPECT_EQ(bad->code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad->message().find("topic 'other'"), std::string_view::npos);
  // Commit-sequence tokens.
  Change c = MakeChange("b", 1);
  c.commitseq = 77;
  Append(c);
  const std::string seq_token = EncodeToken({"changes", 0, ConsistencyToken::Kind::kCommitSeq, 77});
  EXPECT_FALSE(*applier->Reached(seq_token));
  ASSERT_TRUE(applier->CatchUp().ok());
  EXPECT_TRUE(*applier->Reached(seq_token));
}

TEST_F(ApplierTest, LagAndStaleness) {
  ApplierOptions o;
  o.max_batch = 2;
  auto applier = Open(o);
  for (const char* k : {"k0", "k1", "k2", "k3", "k4"}) Append(MakeChange(k, 1));
  sim_.AdvanceTime(300'000'000);  // the records are 300 ms old
  ASSERT_TRUE(applier->Step().ok());
  ReplicaStats s = applier->Stats();
  EXPECT_EQ(s.lag_changes, 3u);
  EXPECT_GE(s.lag_ms, 300);
  EXPECT_LT(s.lag_ms, 400);
  EXPECT_EQ(applier->CheckStaleness(250).code(), StatusCode::kUnavailable);
  EXPECT_NE(applier->CheckStaleness(250).message().find("more than max_staleness_ms=250"),
            std::string_view::npos);
  EXPECT_TRUE(applier->CheckStaleness(1000).ok());
  ASSERT_TRUE(applier->CatchUp().ok());
  s = applier->Stats();
  EXPECT_EQ(s.lag_changes, 0u);
  EXPECT_EQ(s.lag_ms, 0);
  EXPECT_TRUE(applier->CheckStaleness(0).ok());
}

TEST_F(ApplierTest, TombstonePurgeNeverResurrects) {
  Append(MakeChange("a", 1));
  Append(MakeChange("a", 2, true));
  ApplierOptions o;
  o.tombstone_retention_ms = 1000;
  o.purge_interval_ms = 100;
  auto applier = Open(o);
  ASSERT_TRUE(applier->CatchUp().ok());
  EXPECT_TRUE(target_.rows().at("a").deleted);
  sim_.AdvanceTime(2'000'000'000);
  ASSERT_TRUE(applier->Step().ok());  // purges
  EXPECT_EQ(target_.rows().count("a"), 0u);
  EXPECT_EQ(applier->Stats().tombstones_purged, 1u);
  Append(MakeChange("a", 1));  // a late old upsert
  ASSERT_TRUE(applier->CatchUp().ok());
  EXPECT_EQ(target_.rows().count("a"), 0u);
  EXPECT_EQ(applier->Stats().below_watermark, 1u);
  EXPECT_EQ(applier->Stats().purge_watermark, 2u);
  Append(MakeChange("a", 3));  // a real re-creation
  ASSERT_TRUE(applier->CatchUp().ok());
  EXPECT_EQ(target_.rows().at("a").version, 3u);
}

TEST_F(ApplierTest, TruncateRemovesOlderRowsAndRefusesOlderChanges) {
  Append(MakeChange("a", 1));
  Append(MakeChange("b", 2));
  Change truncate;
  truncate.kind = ChangeKind::kTruncate;
  truncate.key = "public.items";
  truncate.version = 5;
  Append(truncate);
  Append(MakeChange("c", 5));  // written after the truncate, in its transaction
  Append(MakeChange("a", 3));  // written before it, arriving late
  auto applier = Open();
  ASSERT_TRUE(applier->CatchUp().ok());
  EXPECT_EQ(target_.rows().count("a"), 0u);
  EXPECT_EQ(target_.rows().count("b"), 0u);
  EXPECT_EQ(target_.rows().at("c").version, 5u);
  EXPECT_EQ(applier->Stats().purge_watermark, 4u);
  Append(MakeChange("a", 6));
  ASSERT_TRUE(applier->CatchUp().ok());
  EXPECT_EQ(target_.rows().at("a").version, 6u);
}

// A target that cannot remove rows below a version.
class NoTruncateTarget : public Target {
 public:
  Result<TargetState> Load() override { return inner.Load(); }
  Result<ApplyOutcome> Apply(const ApplyBatch& batch) override { return inner.Apply(batch); }
  Result<uint64_t> PurgeTombstones(int64_t before) override {
    return inner.PurgeTombstones(before);
  }
  MemoryTarget inner;
};

TEST_F(ApplierTest, TruncateStopsATargetThatCannotApplyIt) {
  Append(MakeChange("a", 1));
  Change truncate;
  truncate.kind = ChangeKind::kTruncate;
  truncate.version = 5;
  Append(truncate);
  Append(MakeChange("c", 6));
  NoTruncateTarget target;
  ApplierOptions o;
  o.name = "t";
  o.on_malformed = OnMalformed::kSkip;  // a truncate is never skipped
  auto applier = Applier::Open(sim_, *source_, target, o);
  ASSERT_TRUE(applier.ok());
  Status s = (*applier)->CatchUp();
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition) << s.ToString();
  EXPECT_NE(s.message().find("truncate"), std::string_view::npos) << s.ToString();
  EXPECT_EQ(target.inner.rows().at("a").version, 1u);  // applied up to it
  EXPECT_EQ(target.inner.rows().count("c"), 0u);
  EXPECT_EQ((*applier)->Stats().positions[0].next_offset, 1u);
}

TEST_F(ApplierTest, TargetErrorReloadsThePosition) {
  Append(MakeChange("a", 1));
  Append(MakeChange("b", 1));
  auto applier = Open();
  target_.InjectFault(MemoryTarget::Fault::kFailAfterCommit);
  EXPECT_FALSE(applier->Step().ok());
  EXPECT_EQ(applier->Stats().target_errors, 1u);
  Append(MakeChange("c", 1));
  ASSERT_TRUE(applier->CatchUp().ok());
  EXPECT_EQ(target_.rows().size(), 3u);
  for (const auto& [kv, n] : target_.applies()) EXPECT_EQ(n, 1u);
}

}  // namespace
}  // namespace converge::replica

namespace converge::replica {
namespace {

// A source that reports a damaged range [0, 5) of partition 0, then records from 5 on.
class DamagedSource : public Source {
 public:
  const std::string& topic() const override { return topic_; }
  Result<uint32_t> Partitions() override { return 1u; }
  Result<SourceBatch> Read(uint32_t partition, uint64_t from, size_t max) override {
    SourceBatch b;
    b.partition = partition;
    b.from_offset = from;
    b.end_offset = 6;
    if (from < 5) {
      b.damage = DataLossError("topic 't' partition 0: records [0, 5) are damaged (test); "
                               "resume at offset 5");
      b.next_offset = 5;
      return b;
    }
    if (from == 5) {
      auto rec = std::make_shared<std::string>(Record(MakeChange("a", 1)));
      b.storage = rec;
      b.records.push_back(SourceRecord{5, 1, *rec});
    }
    b.next_offset = 6;
    return b;
  }

 private:
  const std::string topic_ = "t";
};

TEST(ApplierDamageTest, DamagedRangeStopsOrIsSkippedWithAReport) {
  for (OnMalformed policy : {OnMalformed::kStop, OnMalformed::kSkip}) {
    SCOPED_TRACE(std::string(OnMalformedName(policy)));
    sim::SimEnv sim(3);
    DamagedSource source;
    MemoryTarget target;
    std::vector<std::string> reports;
    ApplierOptions o;
    o.name = "d";
    o.on_malformed = policy;
    o.report = [&](const std::string& m) { reports.push_back(m); };
    auto applier = Applier::Open(sim, source, target, o);
    ASSERT_TRUE(applier.ok());
    Status s = (*applier)->CatchUp();
    ASSERT_EQ(reports.size(), 1u);
    EXPECT_NE(reports[0].find("damaged range at topic 't' partition 0 offset 0"),
              std::string::npos)
        << reports[0];
    EXPECT_EQ((*applier)->Stats().damaged_ranges, 1u);
    if (policy == OnMalformed::kStop) {
      EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
      EXPECT_TRUE(target.rows().empty());
      EXPECT_TRUE(target.state().positions.empty());
    } else {
      EXPECT_TRUE(s.ok()) << s.ToString();
      EXPECT_EQ(target.rows().count("a"), 1u);
      EXPECT_EQ(target.state().positions[0].next_offset, 6u);
    }
  }
}

}  // namespace
}  // namespace converge::replica
