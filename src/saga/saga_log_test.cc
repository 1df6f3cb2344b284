// The saga log's segments of releases before the record-log header still open.
#include "saga/saga_log.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "converge/sim_env.h"
#include "core/crc32c.h"
#include "saga/records.h"

namespace converge {
namespace {

using saga_internal::RecordType;
using saga_internal::RecordView;

// A byte-exact copy of the frame the saga log wrote before it became a record-log file
// (saga/records.cc then): u32 payload length | u32 CRC32C of the payload | payload.
std::string OldFrame(std::string_view payload) {
  auto fixed32 = [](uint32_t v) {
    std::string b(4, '\0');
    for (int i = 0; i < 4; ++i) b[i] = static_cast<char>((v >> (8 * i)) & 0xff);
    return b;
  };
  return fixed32(static_cast<uint32_t>(payload.size())) + fixed32(internal::Crc32c(payload)) +
         std::string(payload);
}

// `r` framed the old way.
std::string OldRecord(const RecordView& r) {
  std::string framed;
  saga_internal::AppendRecord(r, &framed);
  saga_internal::FrameReader reader(framed);
  std::string_view payload;
  EXPECT_TRUE(reader.Next(&payload));
  return OldFrame(payload);
}

std::string OldAbort(const std::string& reason) {
  RecordView r;
  r.type = RecordType::kAbort;
  r.saga_id = "s";
  r.a = reason;
  return OldRecord(r);
}

TEST(RecordLogFormatTest, OpensSegmentsOfTheFormatBeforeTheRecordLogHeader) {
  sim::SimEnv env(5);
  FileSystem& fs = env.fs();
  saga_internal::RecordLogOptions o;
  o.dir = "/saga";
  ASSERT_TRUE(fs.CreateDirs("/saga").ok());
  const std::string torn = OldAbort("torn");
  ASSERT_TRUE(
      fs.WriteFileAtomically("/saga/saga-00000000000000000001.log", OldAbort("a") + OldAbort("b"))
          .ok());
  ASSERT_TRUE(fs.WriteFileAtomically("/saga/saga-00000000000000000002.log",
                                     OldAbort("c") + torn.substr(0, torn.size() - 3))
                  .ok());
  std::vector<std::string> seen;
  auto replay = [&](std::string_view payload) {
    Result<RecordView> r = saga_internal::DecodePayload(payload);
    if (!r.ok()) return r.status();
    seen.emplace_back(r->a);
    return Status::Ok();
  };
  {
    saga_internal::RecordLogRecovery rec;
    auto log = saga_internal::RecordLog::Open(env, o, replay, &rec);
    ASSERT_TRUE(log.ok()) << log.status().ToString();
    EXPECT_EQ(seen, (std::vector<std::string>{"a", "b", "c"}));
    EXPECT_EQ(rec.records, 3u);
    EXPECT_EQ(rec.truncated_bytes, torn.size() - 3);  // the old segment's torn tail, cut
    ASSERT_EQ(rec.reports.size(), 1u);
    // New records go to a new segment in the current format, never after old frames.
    std::string batch;
    RecordView d;
    d.type = RecordType::kAbort;
    d.saga_id = "s";
    d.a = "d";
    saga_internal::AppendRecord(d, &batch);
    ASSERT_TRUE((*log)->Append(batch).ok());
    ASSERT_TRUE((*log)->Sync().ok());
  }
  EXPECT_EQ(fs.ReadFileToString("/saga/saga-00000000000000000003.log").value().substr(0, 4),
            "CVRL");
  seen.clear();
  ASSERT_TRUE(saga_internal::RecordLog::ReadOnly(env, o, replay).ok());
  EXPECT_EQ(seen, (std::vector<std::string>{"a", "b", "c", "d"}));
  seen.clear();
  auto reopened = saga_internal::RecordLog::Open(env, o, replay, nullptr);
  ASSERT_TRUE(reopened.ok()) << reopened.status().ToString();
  EXPECT_EQ(seen, (std::vector<std::string>{"a", "b", "c", "d"}));
}

// An old segment whose first record is a complete compaction base is still the start.
TEST(RecordLogFormatTest, AnOldBaseSegmentIsStillTheStart) {
  sim::SimEnv env(6);
  FileSystem& fs = env.fs();
  saga_internal::RecordLogOptions o;
  o.dir = "/saga";
  ASSERT_TRUE(fs.CreateDirs("/saga").ok());
  auto marker = [](RecordType t) {
    RecordView r;
    r.type = t;
    return OldRecord(r);
  };
  ASSERT_TRUE(fs.WriteFileAtomically("/saga/saga-00000000000000000001.log", OldAbort("gone")).ok());
  ASSERT_TRUE(fs.WriteFileAtomically("/saga/saga-00000000000000000002.log",
                                     marker(RecordType::kBaseBegin) + OldAbort("base") +
                                         marker(RecordType::kBaseEnd) + OldAbort("after"))
                  .ok());
  std::vector<std::string> seen;
  auto replay = [&](std::string_view payload) {
    seen.emplace_back(saga_internal::DecodePayload(payload)->a);
    return Status::Ok();
  };
  auto log = saga_internal::RecordLog::Open(env, o, replay, nullptr);
  ASSERT_TRUE(log.ok()) << log.status().ToString();
  EXPECT_EQ(seen, (std::vector<std::string>{"", "base", "", "after"}));
  EXPECT_FALSE(fs.FileExists("/saga/saga-00000000000000000001.log"));
}

}  // namespace
}  // namespace converge
