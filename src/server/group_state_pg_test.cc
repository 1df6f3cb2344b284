// The consumer-group state in PostgreSQL (server/group_state_pg.h) on a real PostgreSQL: what
// one owner made durable is what the next one recovers, and every write is fenced by the
// group's lease, so a sidecar that lost the group can never write its state again.
#include "server/group_state_pg.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "converge/sql.h"
#include "core/record_log.h"
#include "groups/codec.h"
#include "lease/lease.h"
#include "support/postgres_suite.h"

namespace converge::server {
namespace {

namespace record_log = ::converge::internal::record_log;

class GroupStatePgTest : public testing::PostgresSuite {
 protected:

  void SetUp() override {
    PostgresSuite::SetUp();
    if (HasFatalFailure()) return;
    lease::PostgresLeaseStoreOptions o;
    o.conninfo = server_->ConnInfo();
    o.table = "gs_leases";
    Result<std::unique_ptr<lease::LeaseStore>> leases = lease::OpenPostgresLeaseStore(o);
    ASSERT_TRUE(leases.ok()) << leases.status().ToString();
    leases_ = std::move(leases).value();
    std::unique_ptr<sql::Database> db = Connect();
    ASSERT_NE(db, nullptr);
    ASSERT_TRUE(CreatePgGroupStateTable(*db, "gs_state").ok());
  }

  static std::unique_ptr<sql::Database> Connect() {
    sql::PostgresOptions o;
    o.conninfo = server_->ConnInfo();
    Result<std::unique_ptr<sql::Database>> db = sql::Database::ConnectPostgres(o);
    EXPECT_TRUE(db.ok()) << db.status().ToString();
    return db.ok() ? std::move(db).value() : nullptr;
  }

  // Opens scope `scope` as the holder of `token`; the recovered payloads go to *records.
  static std::unique_ptr<::converge::internal::groups::StateStore> Open(
      const std::string& scope, int64_t token, std::string* bytes,
      std::vector<std::string_view>* records) {
    PgGroupStateOptions o;
    o.table = "gs_state";
    o.lease_table = "gs_leases";
    o.scope = scope;
    o.lease_name = "group:" + scope;
    o.token = token;
    auto store = OpenPgGroupState(Connect(), o, bytes, records);
    EXPECT_TRUE(store.ok()) << store.status().ToString();
    return store.ok() ? std::move(store).value() : nullptr;
  }

  static std::string Frame(std::string_view payload) {
    std::string out;
    record_log::AppendFrame(&out, payload);
    return out;
  }

  std::unique_ptr<lease::LeaseStore> leases_;
};

TEST_F(GroupStatePgTest, TheNextOwnerRecoversSnapshotAndJournalInOrder) {
  Result<lease::Acquired> first = leases_->Acquire("group:t/g", "a", 60'000);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  std::string bytes;
  std::vector<std::string_view> records;
  auto a = Open("t/g", first->token, &bytes, &records);
  ASSERT_NE(a, nullptr);
  EXPECT_TRUE(records.empty());  // never written
  EXPECT_TRUE(a->broken());      // until the owner compacts
  ASSERT_TRUE(a->Compact(Frame("s1") + Frame("s2"), 7).ok());
  ASSERT_TRUE(a->Append(Frame("j1")).ok());
  ASSERT_TRUE(a->Append(Frame("j2") + Frame("j3")).ok());
  ASSERT_TRUE(leases_->Release("group:t/g", "a", first->token).ok());

  Result<lease::Acquired> second = leases_->Acquire("group:t/g", "b", 60'000);
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  auto b = Open("t/g", second->token, &bytes, &records);
  ASSERT_NE(b, nullptr);
  ASSERT_EQ(records.size(), 6u);
  ::converge::internal::groups::HeaderRecord header;
  ASSERT_TRUE(::converge::internal::groups::DecodeHeader(records[0], &header));
  EXPECT_EQ(header.generation, 1u);
  EXPECT_EQ(header.next_group_id, 7u);
  EXPECT_EQ(std::vector<std::string_view>(records.begin() + 1, records.end()),
            (std::vector<std::string_view>{"s1", "s2", "j1", "j2", "j3"}));
  // A compaction replaces snapshot and journal: the next open sees only it.
  ASSERT_TRUE(b->Compact(Frame("s3"), 9).ok());
  auto again = Open("t/g", second->token, &bytes, &records);
  ASSERT_NE(again, nullptr);
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[1], "s3");
}

TEST_F(GroupStatePgTest, AnOwnerThatLostTheLeaseCanNoLongerWrite) {
  Result<lease::Acquired> first = leases_->Acquire("group:t/h", "a", 60'000);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  std::string bytes;
  std::vector<std::string_view> records;
  auto old_owner = Open("t/h", first->token, &bytes, &records);
  ASSERT_NE(old_owner, nullptr);
  ASSERT_TRUE(old_owner->Compact(Frame("mine"), 1).ok());
  ASSERT_TRUE(old_owner->Append(Frame("ack-1")).ok());
  // Another sidecar takes the group (the old holder's lease released or expired).
  ASSERT_TRUE(leases_->Release("group:t/h", "a", first->token).ok());
  Result<lease::Acquired> second = leases_->Acquire("group:t/h", "b", 60'000);
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  auto new_owner = Open("t/h", second->token, &bytes, &records);
  ASSERT_NE(new_owner, nullptr);
  ASSERT_TRUE(new_owner->Compact(Frame("theirs"), 1).ok());

  // The old owner's writes are refused (fenced), and leave nothing behind.
  Status s = old_owner->Append(Frame("ack-2"));
  EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s.ToString();
  EXPECT_NE(s.message().find("fenced"), std::string_view::npos) << s.ToString();
  EXPECT_TRUE(old_owner->broken());
  EXPECT_FALSE(old_owner->Compact(Frame("mine-again"), 1).ok());
  auto check = Open("t/h", second->token, &bytes, &records);
  ASSERT_NE(check, nullptr);
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[1], "theirs");
  // The new owner writes on.
  EXPECT_TRUE(new_owner->Append(Frame("ack-3")).ok());
}

}  // namespace
}  // namespace converge::server
