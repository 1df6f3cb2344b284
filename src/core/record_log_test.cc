#include "core/record_log.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "converge/sim_env.h"
#include "core/coding.h"

namespace converge::internal::record_log {
namespace {

std::vector<std::string> ReadAll(Reader& r) {
  std::vector<std::string> out;
  std::string_view p;
  while (r.Next(&p)) out.emplace_back(p);
  return out;
}

std::string File(const std::vector<std::string>& payloads) {
  std::string f;
  AppendFileHeader(&f);
  for (const std::string& p : payloads) AppendFrame(&f, p);
  return f;
}

TEST(RecordLogTest, HeaderAndFrameLayout) {
  std::string f = File({"ab"});
  ASSERT_EQ(f.size(), kFileHeaderBytes + kFrameHeaderBytes + 2);
  EXPECT_EQ(f.substr(0, 8), std::string("CVRL\x01\xff\xff\xff", 8));
  // crc | length | payload; the CRC (masked) covers the length and the payload.
  EXPECT_EQ(DecodeFixed32(f.data() + 12), 2u);
  EXPECT_EQ(DecodeFixed32(f.data() + 8), MaskCrc(Crc32c(f.data() + 12, 6)));
  EXPECT_EQ(f.substr(16), "ab");
}

TEST(RecordLogTest, RoundTripIncludingEmptyPayloads) {
  const std::vector<std::string> in = {"first", "", std::string(70000, 'x'), "last"};
  const std::string f = File(in);
  Reader r = Reader::ForFile(f, Legacy::kNone);
  EXPECT_EQ(ReadAll(r), in);
  EXPECT_EQ(r.stop(), Stop::kEnd);
  EXPECT_FALSE(r.damaged());
  EXPECT_EQ(r.valid_bytes(), f.size());
  EXPECT_EQ(r.version(), kVersion);
  // Bare frames (a batch) read the same without the header.
  std::string batch;
  for (const std::string& p : in) AppendFrame(&batch, p);
  Reader b = Reader::ForFrames(batch);
  EXPECT_EQ(ReadAll(b), in);
  EXPECT_EQ(b.stop(), Stop::kEnd);
}

TEST(RecordLogTest, EveryCutIsATornTailWithTheRecordsBeforeIt) {
  const std::vector<std::string> in = {"one", "two-two", "three-three-three"};
  const std::string f = File(in);
  std::vector<size_t> ends = {kFileHeaderBytes};
  for (const std::string& p : in) ends.push_back(ends.back() + kFrameHeaderBytes + p.size());
  for (size_t cut = 0; cut < f.size(); ++cut) {
    Reader r = Reader::ForFile(std::string_view(f).substr(0, cut), Legacy::kNone);
    const std::vector<std::string> got = ReadAll(r);
    size_t whole = 0;
    while (whole + 1 < ends.size() && ends[whole + 1] <= cut) ++whole;
    EXPECT_EQ(got.size(), whole) << cut;
    const bool at_boundary = cut == 0 || cut == ends[whole];
    EXPECT_EQ(r.stop(), at_boundary ? Stop::kEnd : Stop::kTorn) << cut;
    EXPECT_EQ(r.valid_bytes(), cut < kFileHeaderBytes ? 0 : ends[whole]) << cut;
  }
}

TEST(RecordLogTest, ZeroFilledTailIsTornButZerosThenDataAreDamage) {
  std::string f = File({"a", "b"});
  const size_t good = f.size();
  const std::string padded = f + std::string(100, '\0');
  Reader r = Reader::ForFile(padded, Legacy::kNone);
  EXPECT_EQ(ReadAll(r).size(), 2u);
  EXPECT_EQ(r.stop(), Stop::kTorn);
  EXPECT_EQ(r.valid_bytes(), good);
  // Zero frame header followed by a valid frame: not a tail a crash leaves.
  std::string z = f + std::string(8, '\0');
  AppendFrame(&z, "c");
  Reader r2 = Reader::ForFile(z, Legacy::kNone);
  EXPECT_EQ(ReadAll(r2).size(), 2u);
  EXPECT_EQ(r2.stop(), Stop::kCorrupt);
}

TEST(RecordLogTest, ChecksumMismatchBeforeTheTailIsDamageNotATornTail) {
  const std::string f = File({"first", "second", "third"});
  const size_t second = kFileHeaderBytes + kFrameHeaderBytes + 5;
  // A flipped payload byte of the second record: the third follows, so it is damage.
  std::string bad = f;
  bad[second + kFrameHeaderBytes + 1] ^= 0x20;
  Reader r = Reader::ForFile(bad, Legacy::kNone);
  EXPECT_EQ(ReadAll(r), (std::vector<std::string>{"first"}));
  EXPECT_EQ(r.stop(), Stop::kCorrupt);
  EXPECT_EQ(r.valid_bytes(), second);
  // The same flip in the last record: nothing follows, a torn final write.
  std::string last = f;
  last[last.size() - 1] ^= 0x20;
  Reader r2 = Reader::ForFile(last, Legacy::kNone);
  EXPECT_EQ(ReadAll(r2).size(), 2u);
  EXPECT_EQ(r2.stop(), Stop::kTorn);
  // A damaged length is caught by the CRC (it covers the length).
  std::string len = f;
  len[second + 4] ^= 0x01;
  Reader r3 = Reader::ForFile(len, Legacy::kNone);
  EXPECT_EQ(ReadAll(r3).size(), 1u);
  EXPECT_NE(r3.stop(), Stop::kEnd);
}

TEST(RecordLogTest, TornHeaderIsAnEmptyVersionOneFile) {
  const std::string f = File({});
  for (size_t n = 1; n < kFileHeaderBytes; ++n) {
    Reader r = Reader::ForFile(std::string_view(f).substr(0, n), Legacy::kStoreV0);
    EXPECT_TRUE(ReadAll(r).empty());
    EXPECT_EQ(r.stop(), Stop::kTorn);
    EXPECT_EQ(r.valid_bytes(), 0u);
    EXPECT_FALSE(r.legacy());
  }
  Reader empty = Reader::ForFile("", Legacy::kSagaV0);
  EXPECT_TRUE(ReadAll(empty).empty());
  EXPECT_EQ(empty.stop(), Stop::kEnd);
}

// Each legacy format reads as its old reader did; a header-less file with valid v1 frames is
// not mistaken for anything but its owner's legacy format.
TEST(RecordLogTest, LegacyFormatsAreReadByTheirOwnersFormat) {
  for (Legacy format : {Legacy::kGroupsV0, Legacy::kSagaV0, Legacy::kStoreV0}) {
    std::string f;
    AppendLegacyFrame(format, &f, "alpha");
    AppendLegacyFrame(format, &f, std::string(300, 'b'));
    const size_t good = f.size();
    Reader r = Reader::ForFile(f, format);
    EXPECT_EQ(ReadAll(r), (std::vector<std::string>{"alpha", std::string(300, 'b')}));
    EXPECT_EQ(r.stop(), Stop::kEnd);
    EXPECT_TRUE(r.legacy());
    EXPECT_EQ(r.version(), 0u);
    // A torn tail.
    Reader t = Reader::ForFile(std::string_view(f).substr(0, good - 7), format);
    EXPECT_EQ(ReadAll(t).size(), 1u);
    EXPECT_EQ(t.stop(), Stop::kTorn);
    // Damage in the first record with the second after it.
    std::string bad = f;
    bad[kFrameHeaderBytes + 2] ^= 0x40;
    Reader d = Reader::ForFile(bad, format);
    EXPECT_TRUE(ReadAll(d).empty());
    EXPECT_EQ(d.stop(), Stop::kCorrupt) << static_cast<int>(format);
  }
  // The byte layouts of the old writers.
  std::string g;
  AppendLegacyFrame(Legacy::kGroupsV0, &g, "x");
  EXPECT_EQ(DecodeFixed32(g.data()), 1u);
  EXPECT_EQ(DecodeFixed32(g.data() + 4), MaskCrc(Crc32c(std::string_view("x"))));
  std::string s;
  AppendLegacyFrame(Legacy::kSagaV0, &s, "x");
  EXPECT_EQ(DecodeFixed32(s.data() + 4), Crc32c(std::string_view("x")));
  std::string w;
  AppendLegacyFrame(Legacy::kStoreV0, &w, "x");
  EXPECT_EQ(DecodeFixed32(w.data()), Crc32c(w.data() + 4, 5));
  EXPECT_EQ(DecodeFixed32(w.data() + 4), 1u);
  // A saga frame of length 0 was never written: damage (or a torn tail), not a record.
  std::string zero_len(8, '\0');
  Reader z = Reader::ForFile(zero_len, Legacy::kSagaV0);
  EXPECT_TRUE(ReadAll(z).empty());
  EXPECT_TRUE(z.damaged());
}

TEST(RecordLogTest, WriterCreatesReopensAndSurvivesACrash) {
  sim::SimEnv env(7);
  FileSystem& fs = env.fs();
  ASSERT_TRUE(fs.CreateDirs("/d").ok());
  {
    auto w = Writer::Create(fs, "/d/log", OpenMode::kCreateNew);
    ASSERT_TRUE(w.ok()) << w.status().ToString();
    ASSERT_TRUE(fs.SyncDir("/d").ok());
    ASSERT_TRUE((*w)->AddRecord("one").ok());
    std::string batch;
    AppendFrame(&batch, "two");
    AppendFrame(&batch, "three");
    ASSERT_TRUE((*w)->AddFrames(batch).ok());
    ASSERT_TRUE((*w)->Sync().ok());
    ASSERT_TRUE((*w)->AddRecord("unsynced").ok());
  }
  env.sim_fs().Crash();
  std::string data = fs.ReadFileToString("/d/log").value();
  Reader r = Reader::ForFile(data, Legacy::kNone);
  EXPECT_EQ(ReadAll(r), (std::vector<std::string>{"one", "two", "three"}));
  {
    auto w = Writer::Reopen(fs, "/d/log");
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE((*w)->AddRecord("four").ok());
    ASSERT_TRUE((*w)->Sync().ok());
  }
  data = fs.ReadFileToString("/d/log").value();
  Reader r2 = Reader::ForFile(data, Legacy::kNone);
  EXPECT_EQ(ReadAll(r2), (std::vector<std::string>{"one", "two", "three", "four"}));
  EXPECT_EQ(r2.stop(), Stop::kEnd);
  // An empty file gets its header on reopen.
  ASSERT_TRUE(fs.NewWritableFile("/d/empty", OpenMode::kCreateNew).ok());
  {
    auto w = Writer::Reopen(fs, "/d/empty");
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE((*w)->AddRecord("x").ok());
    ASSERT_TRUE((*w)->Sync().ok());
  }
  data = fs.ReadFileToString("/d/empty").value();
  Reader r3 = Reader::ForFile(data, Legacy::kGroupsV0);
  EXPECT_FALSE(r3.legacy());
  EXPECT_EQ(ReadAll(r3), (std::vector<std::string>{"x"}));
}

}  // namespace
}  // namespace converge::internal::record_log
