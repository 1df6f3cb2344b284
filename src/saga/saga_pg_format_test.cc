// A PostgreSQL saga log of the release before the record-log header (rows of bare frames) still
// opens, and rows written now carry the header.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/crc32c.h"
#include "saga/records.h"
#include "saga/saga_log.h"
#include "support/postgres_server.h"

namespace converge {
namespace {

using saga_internal::RecordType;
using saga_internal::RecordView;

std::string Abort(const std::string& reason) {
  RecordView r;
  r.type = RecordType::kAbort;
  r.saga_id = "s";
  r.a = reason;
  std::string framed;
  saga_internal::AppendRecord(r, &framed);
  return framed;
}

// A byte-exact copy of the saga frame of before: u32 length | u32 CRC32C(payload) | payload.
std::string OldFrame(std::string_view payload) {
  std::string out;
  for (uint32_t v : {static_cast<uint32_t>(payload.size()), internal::Crc32c(payload)}) {
    for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  }
  return out + std::string(payload);
}

std::string Hex(std::string_view bytes) {
  static const char* kDigits = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out.push_back(kDigits[c >> 4]);
    out.push_back(kDigits[c & 15]);
  }
  return out;
}

TEST(SagaPgFormatTest, RowsOfTheFormatBeforeTheRecordLogHeaderStillOpen) {
  Result<std::unique_ptr<testing::PostgresServer>> pg = testing::PostgresServer::Start();
  ASSERT_TRUE(pg.ok()) << pg.status().ToString();
  // One row of the old kind: a batch of two bare frames.
  std::string old_row;
  for (const char* reason : {"a", "b"}) {
    const std::string framed = Abort(reason);  // the reader views it: it must outlive it
    saga_internal::FrameReader reader(framed);
    std::string_view payload;
    ASSERT_TRUE(reader.Next(&payload));
    old_row += OldFrame(payload);
  }
  ASSERT_TRUE(
      (*pg)
          ->Query("postgres",
                  "CREATE TABLE old_log (seq BIGSERIAL PRIMARY KEY, payload BYTEA NOT NULL)")
          .ok());
  ASSERT_TRUE((*pg)
                  ->Query("postgres", "INSERT INTO old_log (payload) VALUES (decode('" +
                                          Hex(old_row) + "', 'hex'))")
                  .ok());

  saga_internal::PostgresRecordStoreOptions o;
  o.conninfo = (*pg)->ConnInfo();
  o.table = "old_log";
  std::vector<std::string> seen;
  auto replay = [&](std::string_view payload) {
    Result<RecordView> r = saga_internal::DecodePayload(payload);
    if (!r.ok()) return r.status();
    seen.emplace_back(r->a);
    return Status::Ok();
  };
  {
    auto store = saga_internal::NewPostgresRecordStore(o, replay);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    EXPECT_EQ(seen, (std::vector<std::string>{"a", "b"}));
    ASSERT_TRUE((*store)->Append(Abort("c")).ok());
    ASSERT_TRUE((*store)->Sync().ok());
  }
  // The new row starts with the record-log header.
  Result<std::string> head =
      (*pg)->Query("postgres",
                   "SELECT encode(substring(payload from 1 for 4), 'escape') FROM old_log "
                   "ORDER BY seq DESC LIMIT 1");
  ASSERT_TRUE(head.ok()) << head.status().ToString();
  EXPECT_EQ(*head, "CVRL");
  seen.clear();
  auto store = saga_internal::NewPostgresRecordStore(o, replay);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  EXPECT_EQ(seen, (std::vector<std::string>{"a", "b", "c"}));
}

}  // namespace
}  // namespace converge
