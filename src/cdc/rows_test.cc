// Table capture without a server: rows as JSON, keys from the replica identity, and the net
// change per row and transaction that WalReader hands out.
#include "cdc/rows.h"

#include <gtest/gtest.h>

#include "cdc/test_bytes.h"
#include "cdc/wal_reader.h"

namespace converge::cdc {
namespace {

using testing::Bytes;

Relation Orders() {
  Relation r;
  r.id = 7;
  r.schema = "public";
  r.name = "orders";
  r.columns = {{true, "id", 23, -1},
               {false, "note", 25, -1},
               {false, "paid", 16, -1},
               {false, "amount", 1700, -1},
               {false, "meta", 3802, -1}};
  return r;
}

TupleValue T(std::string_view v) { return TupleValue{'t', v}; }
TupleValue N() { return TupleValue{'n', {}}; }

TEST(RowsTest, RowJsonByType) {
  auto j = RowJson(Orders(), {T("42"), T("say \"hi\"\n"), T("t"), T("12.50"), T("{\"a\": [1]}")});
  ASSERT_TRUE(j.ok()) << j.status().ToString();
  EXPECT_EQ(*j, R"({"id":42,"note":"say \"hi\"\n","paid":true,"amount":12.50,"meta":{"a": [1]}})");
  // Other control characters as \u escapes, so any text column gives valid JSON.
  auto ctl = RowJson(Orders(), {T("1"), T("a\x01" "b\\"), T("f"), T("1"), N()});
  ASSERT_TRUE(ctl.ok());
  EXPECT_EQ(*ctl, R"({"id":1,"note":"a\u0001b\\","paid":false,"amount":1,"meta":null})");
  auto nulls = RowJson(Orders(), {T("1"), N(), T("f"), T("NaN"), N()});
  ASSERT_TRUE(nulls.ok());
  EXPECT_EQ(*nulls, R"({"id":1,"note":null,"paid":false,"amount":"NaN","meta":null})");
  // Unchanged TOASTed value: refused, naming the column and the cure.
  auto toast = RowJson(Orders(), {T("1"), TupleValue{'u', {}}, T("f"), T("1"), N()});
  EXPECT_EQ(toast.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(toast.status().message().find("'note'"), std::string_view::npos);
  EXPECT_NE(toast.status().message().find("REPLICA IDENTITY FULL"), std::string_view::npos);
  EXPECT_EQ(RowJson(Orders(), {T("1")}).status().code(), StatusCode::kDataLoss);
}

TEST(RowsTest, KeysFromTheReplicaIdentity) {
  EXPECT_EQ(*RowKey(Orders(), {T("42"), N(), N(), N(), N()}), "42");
  Relation two = Orders();
  two.columns[1].key = true;
  EXPECT_EQ(*RowKey(two, {T("42"), T("a\"b"), N(), N(), N()}), R"(["42","a\"b"])");
  EXPECT_EQ(RowKey(two, {T("42"), N(), N(), N(), N()}).status().code(),
            StatusCode::kFailedPrecondition);
  Relation none = Orders();
  none.columns[0].key = false;
  auto k = RowKey(none, {T("42"), N(), N(), N(), N()});
  EXPECT_EQ(k.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(k.status().message().find("primary key"), std::string_view::npos);
}

std::string RelationBytes() {
  return Bytes()
      .U8('R')
      .U32(7)
      .Str("public")
      .Str("orders")
      .U8('d')
      .U16(2)
      .U8(1)
      .Str("id")
      .U32(23)
      .U32(0xFFFFFFFF)
      .U8(0)
      .Str("note")
      .U32(25)
      .U32(0xFFFFFFFF)
      .str();
}

std::string Insert(std::string_view id, std::string_view note) {
  return Bytes()
      .U8('I')
      .U32(7)
      .U8('N')
      .U16(2)
      .U8('t')
      .U32(static_cast<uint32_t>(id.size()))
      .Raw(id)
      .U8('t')
      .U32(static_cast<uint32_t>(note.size()))
      .Raw(note)
      .str();
}

std::string UpdateKey(std::string_view old_id, std::string_view id, std::string_view note) {
  return Bytes()
      .U8('U')
      .U32(7)
      .U8('K')
      .U16(2)
      .U8('t')
      .U32(static_cast<uint32_t>(old_id.size()))
      .Raw(old_id)
      .U8('n')
      .U8('N')
      .U16(2)
      .U8('t')
      .U32(static_cast<uint32_t>(id.size()))
      .Raw(id)
      .U8('t')
      .U32(static_cast<uint32_t>(note.size()))
      .Raw(note)
      .str();
}

std::string Delete(std::string_view id) {
  return Bytes()
      .U8('D')
      .U32(7)
      .U8('K')
      .U16(2)
      .U8('t')
      .U32(static_cast<uint32_t>(id.size()))
      .Raw(id)
      .U8('n')
      .str();
}

TEST(RowsTest, WalReaderHandsOutTheNetChangePerRowAndTransaction) {
  testing::TestClock clock;
  WalReaderOptions o;
  o.capture_changes = true;
  WalReader reader(clock, o);
  auto feed = [&](const std::string& payload) {
    Status s = reader.OnCopyData(testing::XLog(1, payload));
    ASSERT_TRUE(s.ok()) << s.ToString();
  };
  feed(testing::BeginMsg(0x100, 5, 1));
  feed(RelationBytes());
  feed(Insert("1", "a"));
  feed(Insert("2", "b"));
  feed(Insert("1", "a2"));             // the same row again: only the last state counts
  feed(UpdateKey("2", "3", "moved"));  // key change: delete 2, upsert 3
  feed(Insert("4", "x"));
  feed(Delete("4"));  // inserted and deleted in one transaction: a delete (tombstone)
  feed(testing::CommitMsg(0x100, 0x140, 5));
  std::vector<WalTransaction> out;
  reader.TakeReady(100, 1 << 20, &out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].commit_lsn, 0x100u);
  std::vector<std::string> got;
  for (const WalMessage& m : out[0].messages) {
    ASSERT_TRUE(m.error.empty()) << m.error;
    EXPECT_EQ(m.table, "public.orders");
    got.push_back((m.kind == WalMessage::Kind::kUpsert ? "upsert " : "delete ") + m.key +
                  (m.row_json.empty() ? "" : " " + m.row_json));
  }
  EXPECT_EQ(got, (std::vector<std::string>{"upsert 1 {\"id\":1,\"note\":\"a2\"}", "delete 2",
                                           "upsert 3 {\"id\":3,\"note\":\"moved\"}", "delete 4"}));
  // A change of a relation never announced is a protocol error, not a guess.
  reader.Reset(0);
  feed(testing::BeginMsg(0x200, 5, 2));
  EXPECT_EQ(reader.OnCopyData(testing::XLog(1, Insert("9", "z"))).code(),
            StatusCode::kFailedPrecondition);
}

// TRUNCATE: the table's earlier changes in the transaction are gone with it; the changes after
// it follow it; another table's changes are untouched.
TEST(RowsTest, TruncateReplacesTheTablesEarlierChangesInTheTransaction) {
  testing::TestClock clock;
  WalReaderOptions o;
  o.capture_changes = true;
  WalReader reader(clock, o);
  auto feed = [&](const std::string& payload) {
    Status s = reader.OnCopyData(testing::XLog(1, payload));
    ASSERT_TRUE(s.ok()) << s.ToString();
  };
  const std::string other = Bytes()
                                .U8('R')
                                .U32(8)
                                .Str("public")
                                .Str("other")
                                .U8('d')
                                .U16(1)
                                .U8(1)
                                .Str("id")
                                .U32(23)
                                .U32(0xFFFFFFFF)
                                .str();
  const std::string other_insert =
      Bytes().U8('I').U32(8).U8('N').U16(1).U8('t').U32(1).Raw("9").str();
  feed(testing::BeginMsg(0x100, 5, 1));
  feed(RelationBytes());
  feed(other);
  feed(Insert("1", "a"));
  feed(other_insert);
  feed(UpdateKey("1", "2", "b"));
  feed(Bytes().U8('T').U32(1).U8(2).U32(7).str());  // TRUNCATE orders RESTART IDENTITY
  feed(Insert("1", "after"));
  feed(Bytes().U8('T').U32(1).U8(0).U32(7).str());  // a second one in the same transaction
  feed(Insert("3", "last"));
  feed(testing::CommitMsg(0x100, 0x140, 5));
  std::vector<WalTransaction> out;
  reader.TakeReady(100, 1 << 20, &out);
  ASSERT_EQ(out.size(), 1u);
  std::vector<std::string> got;
  for (const WalMessage& m : out[0].messages) {
    const char* kind = m.kind == WalMessage::Kind::kTruncate ? "truncate "
                       : m.kind == WalMessage::Kind::kUpsert ? "upsert "
                                                             : "delete ";
    got.push_back(kind + m.table + (m.key.empty() ? "" : " " + m.key));
  }
  EXPECT_EQ(got, (std::vector<std::string>{"upsert public.other 9", "truncate public.orders",
                                           "upsert public.orders 3"}));
  // A truncate of a relation never announced is a protocol error.
  reader.Reset(0);
  feed(testing::BeginMsg(0x200, 5, 2));
  EXPECT_EQ(reader.OnCopyData(testing::XLog(1, Bytes().U8('T').U32(1).U8(0).U32(99).str())).code(),
            StatusCode::kFailedPrecondition);
  // Without table capture a truncate is nothing to hand out.
  WalReader messages_only(clock, WalReaderOptions{});
  ASSERT_TRUE(messages_only.OnCopyData(testing::XLog(1, testing::BeginMsg(0x300, 5, 3))).ok());
  ASSERT_TRUE(
      messages_only.OnCopyData(testing::XLog(1, Bytes().U8('T').U32(1).U8(0).U32(7).str())).ok());
  ASSERT_TRUE(messages_only.OnCopyData(testing::XLog(1, testing::CommitMsg(0x300, 0x340, 5))).ok());
  EXPECT_EQ(messages_only.ready_transactions(), 0u);
}

}  // namespace
}  // namespace converge::cdc
