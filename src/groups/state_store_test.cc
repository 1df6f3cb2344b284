#include "groups/state_store.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "converge/sim_env.h"
#include "core/crc32c.h"
#include "groups/codec.h"

namespace converge::internal::groups {
namespace {

// A byte-exact copy of the frame the groups state files had before they became record-log
// files (groups/codec.cc then): fixed32 length | fixed32 masked CRC32C of the payload | payload.
std::string OldFrame(std::string_view payload) {
  auto fixed32 = [](uint32_t v) {
    std::string b(4, '\0');
    for (int i = 0; i < 4; ++i) b[i] = static_cast<char>((v >> (8 * i)) & 0xff);
    return b;
  };
  const uint32_t crc = Crc32c(payload);
  const uint32_t masked = ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
  return fixed32(static_cast<uint32_t>(payload.size())) + fixed32(masked) + std::string(payload);
}

// The payload of the one frame an Encode* call appended.
std::string Payload(const std::string& framed) {
  size_t valid = 0;
  std::vector<std::string_view> frames = ReadFrames(framed, &valid);
  EXPECT_EQ(frames.size(), 1u);
  return frames.empty() ? std::string() : std::string(frames[0]);
}

GroupRecord Group(uint64_t id) {
  GroupRecord g;
  g.group_id = id;
  g.topic = "orders";
  g.group = "billing";
  g.committed = {0, 4};
  return g;
}

// A data directory of the previous release (SNAPSHOT and journal without the record-log
// header) opens with every record, including a torn journal tail cut as before; the compaction
// after it writes both files in the record-log format, and they open again.
TEST(StateStoreTest, OpensTheFormatBeforeTheRecordLogHeader) {
  sim::SimEnv env(3);
  FileSystem& fs = env.fs();
  ASSERT_TRUE(fs.CreateDirs("/g").ok());
  std::string header, group, part, del;
  EncodeHeader(HeaderRecord{7, 12}, &header);
  EncodeGroup(Group(11), &group);
  EncodePartition(PartitionRecord{11, 1, 40, {{42, 44}}}, &part);
  EncodeDelete(11, &del);
  const std::string old_snapshot = OldFrame(Payload(header)) + OldFrame(Payload(group));
  const std::string torn = OldFrame(Payload(del));
  const std::string old_journal = OldFrame(Payload(part)) + torn.substr(0, torn.size() - 2);
  ASSERT_TRUE(fs.WriteFileAtomically("/g/SNAPSHOT", old_snapshot).ok());
  ASSERT_TRUE(fs.WriteFileAtomically("/g/journal-7", old_journal).ok());

  std::string bytes;
  std::vector<std::string_view> records;
  auto store = StateStore::Open(fs, "/g", &bytes, &records);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  ASSERT_EQ(records.size(), 3u);
  HeaderRecord h;
  ASSERT_TRUE(DecodeHeader(records[0], &h));
  EXPECT_EQ(h.generation, 7u);
  EXPECT_EQ(h.next_group_id, 12u);
  GroupRecord g;
  ASSERT_TRUE(DecodeGroup(records[1], &g));
  EXPECT_EQ(g.group_id, 11u);
  EXPECT_EQ(g.committed, (std::vector<uint64_t>{0, 4}));
  PartitionRecord p;
  ASSERT_TRUE(DecodePartition(records[2], &p));
  EXPECT_EQ(p.committed, 40u);
  EXPECT_TRUE((*store)->damage().empty()) << (*store)->damage();
  EXPECT_EQ((*store)->generation(), 7u);

  // The owner compacts after every open: new files, in the record-log format.
  std::string snap;
  EncodeGroup(Group(11), &snap);
  ASSERT_TRUE((*store)->Compact(snap, 12).ok());
  std::string change;
  EncodePartition(PartitionRecord{11, 1, 44, {}}, &change);
  ASSERT_TRUE((*store)->Append(change).ok());
  store->reset();
  EXPECT_FALSE(fs.FileExists("/g/journal-7"));
  EXPECT_EQ(fs.ReadFileToString("/g/SNAPSHOT").value().substr(0, 4), "CVRL");
  EXPECT_EQ(fs.ReadFileToString("/g/journal-8").value().substr(0, 4), "CVRL");

  auto reopened = StateStore::Open(fs, "/g", &bytes, &records);
  ASSERT_TRUE(reopened.ok()) << reopened.status().ToString();
  ASSERT_EQ(records.size(), 3u);
  ASSERT_TRUE(DecodeHeader(records[0], &h));
  EXPECT_EQ(h.generation, 8u);
  ASSERT_TRUE(DecodePartition(records[2], &p));
  EXPECT_EQ(p.committed, 44u);
}

// Damage inside the journal (a frame that fails its checksum with whole frames after it) is
// reported; recovery still goes on from the records before it, as it did.
TEST(StateStoreTest, DamageInsideTheJournalIsReported) {
  sim::SimEnv env(4);
  FileSystem& fs = env.fs();
  std::string bytes;
  std::vector<std::string_view> records;
  {
    auto store = StateStore::Open(fs, "/g", &bytes, &records);
    ASSERT_TRUE(store.ok());
    ASSERT_TRUE((*store)->Compact("", 1).ok());
    for (uint64_t c : {10, 20, 30}) {
      std::string change;
      EncodePartition(PartitionRecord{1, 0, c, {}}, &change);
      ASSERT_TRUE((*store)->Append(change).ok());
    }
  }
  const std::string journal = "/g/journal-1";
  const uint64_t size = fs.ReadFileToString(journal).value().size();
  // A byte inside the second record's payload.
  const uint64_t record = (size - 8) / 3;
  ASSERT_TRUE(env.sim_fs().CorruptByte(journal, 8 + record + record - 1, 0x10).ok());
  auto store = StateStore::Open(fs, "/g", &bytes, &records);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  EXPECT_EQ(records.size(), 2u);  // the header and the first change
  EXPECT_NE((*store)->damage().find(journal + ": bytes [" + std::to_string(8 + record) + ", " +
                                    std::to_string(size) + ") are damaged"),
            std::string::npos)
      << (*store)->damage();
}

}  // namespace
}  // namespace converge::internal::groups
