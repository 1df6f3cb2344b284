// The consumer's confirm rules, fed hand-built streams: what is handed out, in which order,
// and that the confirmed position never passes a transaction that is not durable.
#include "cdc/wal_reader.h"

#include <gtest/gtest.h>

#include "cdc/test_bytes.h"

namespace converge::cdc {
namespace {

using testing::BeginMsg;
using testing::CommitMsg;
using testing::Keepalive;
using testing::MessageMsg;
using testing::XLog;

class WalReaderTest : public ::testing::Test {
 protected:
  void Tx(Lsn end, std::vector<std::pair<std::string, std::string>> messages) {
    ASSERT_TRUE(reader_.OnCopyData(XLog(end - 0x20, BeginMsg(end - 0x10, 5, 1))).ok());
    Lsn lsn = end - 0x18;
    for (auto& [prefix, content] : messages) {
      ASSERT_TRUE(reader_.OnCopyData(XLog(lsn, MessageMsg(true, lsn, prefix, content))).ok());
      ++lsn;
    }
    ASSERT_TRUE(reader_.OnCopyData(XLog(end - 0x10, CommitMsg(end - 0x10, end, 5))).ok());
  }

  testing::TestClock clock_;
  WalReader reader_{clock_, WalReaderOptions{}};
};

TEST_F(WalReaderTest, HandsOutMatchingTransactionsInCommitOrder) {
  Tx(0x100, {{"converge:a", "1"}, {"other", "x"}, {"converge:b", "2"}});
  Tx(0x200, {{"other", "y"}});  // no matching message: not handed out
  Tx(0x300, {{"converge:a", "3"}});
  EXPECT_EQ(reader_.ready_transactions(), 2u);
  EXPECT_EQ(reader_.ready_messages(), 3u);
  std::vector<WalTransaction> out;
  EXPECT_EQ(reader_.TakeReady(100, 1 << 20, &out), 2u);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].end_lsn, 0x100u);
  ASSERT_EQ(out[0].messages.size(), 2u);
  EXPECT_EQ(out[0].messages[0].prefix, "converge:a");
  EXPECT_EQ(out[0].messages[1].content, "2");
  EXPECT_EQ(out[0].commit_time_unix_micros, 5 + kPgEpochUnixMicros);
  EXPECT_EQ(out[1].end_lsn, 0x300u);
}

TEST_F(WalReaderTest, ConfirmsOnlyWhatIsDurable) {
  Tx(0x100, {{"converge:a", "1"}});
  Tx(0x200, {{"converge:a", "2"}});
  // Nothing durable yet: the position stays where it was.
  EXPECT_EQ(reader_.flush_position(), 0u);
  std::vector<WalTransaction> out;
  reader_.TakeReady(1, 1 << 20, &out);  // whole transactions; the first only
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(reader_.flush_position(), 0u);
  reader_.Durable(0x100);
  EXPECT_EQ(reader_.flush_position(), 0x100u);
  // A keepalive past the second transaction must not move the position past it.
  ASSERT_TRUE(reader_.OnCopyData(Keepalive(0x900, false)).ok());
  EXPECT_EQ(reader_.flush_position(), 0x100u);
  reader_.TakeReady(10, 1 << 20, &out);
  EXPECT_EQ(reader_.flush_position(), 0x100u);
  reader_.Durable(0x200);
  // Nothing outstanding: everything received may be confirmed.
  EXPECT_EQ(reader_.flush_position(), 0x900u);
  EXPECT_EQ(reader_.lag_bytes(), 0x900);  // nothing sent yet
  ASSERT_TRUE(reader_.StatusDue());
  const std::string status = reader_.TakeStatus();
  EXPECT_EQ(status[0], 'r');
  EXPECT_EQ(reader_.last_sent_flush(), 0x900u);
  EXPECT_EQ(reader_.lag_bytes(), 0);
  EXPECT_FALSE(reader_.StatusDue());
}

TEST_F(WalReaderTest, IdleStreamAdvancesAndAnswersKeepalives) {
  Tx(0x100, {{"unrelated", "x"}});
  EXPECT_EQ(reader_.flush_position(), 0x100u);
  reader_.TakeStatus();
  EXPECT_FALSE(reader_.StatusDue());
  ASSERT_TRUE(reader_.OnCopyData(Keepalive(0x100, true)).ok());
  EXPECT_TRUE(reader_.StatusDue());  // the server asked for a reply
  reader_.TakeStatus();
  EXPECT_FALSE(reader_.StatusDue());
  clock_.Advance(10'000'000'000);  // the status interval
  EXPECT_TRUE(reader_.StatusDue());
}

TEST_F(WalReaderTest, KeepaliveInsideTransactionDoesNotMove) {
  ASSERT_TRUE(reader_.OnCopyData(XLog(0x10, BeginMsg(0x50, 5, 1))).ok());
  ASSERT_TRUE(reader_.OnCopyData(Keepalive(0x80, false)).ok());
  EXPECT_EQ(reader_.flush_position(), 0u);
  ASSERT_TRUE(reader_.OnCopyData(XLog(0x20, MessageMsg(true, 0x20, "converge:t", "payload"))).ok());
  ASSERT_TRUE(reader_.OnCopyData(XLog(0x50, CommitMsg(0x50, 0x60, 5))).ok());
  EXPECT_EQ(reader_.flush_position(), 0u);
  EXPECT_EQ(reader_.ready_transactions(), 1u);
}

TEST_F(WalReaderTest, LagInTime) {
  Tx(0x100, {{"converge:a", "1"}});
  // The transaction committed at pg time 5 us; the test clock is far later.
  EXPECT_GT(reader_.lag_ms(), 0);
  std::vector<WalTransaction> out;
  reader_.TakeReady(10, 1 << 20, &out);
  EXPECT_GT(reader_.lag_ms(), 0);
  reader_.Durable(0x100);
  EXPECT_EQ(reader_.lag_ms(), 0);
}

TEST_F(WalReaderTest, ProtocolOrderErrors) {
  EXPECT_EQ(reader_.OnCopyData(XLog(1, CommitMsg(1, 2, 0))).code(),
            StatusCode::kFailedPrecondition);
  reader_.Reset(0);
  ASSERT_TRUE(reader_.OnCopyData(XLog(1, BeginMsg(1, 0, 1))).ok());
  EXPECT_EQ(reader_.OnCopyData(XLog(1, BeginMsg(1, 0, 1))).code(), StatusCode::kFailedPrecondition);
  reader_.Reset(0);
  EXPECT_EQ(reader_.OnCopyData(XLog(1, MessageMsg(true, 1, "converge:t", "x"))).code(),
            StatusCode::kFailedPrecondition);
  reader_.Reset(0);
  EXPECT_EQ(reader_.OnCopyData("garbage").code(), StatusCode::kDataLoss);
  // Truncated XLogData payloads of every length: errors, no crash.
  const std::string tx = XLog(1, MessageMsg(true, 1, "converge:t", "payload"));
  for (size_t n = 0; n < tx.size(); ++n) {
    reader_.Reset(0);
    ASSERT_TRUE(reader_.OnCopyData(XLog(1, BeginMsg(1, 0, 1))).ok());
    EXPECT_FALSE(reader_.OnCopyData(tx.substr(0, n)).ok()) << n;
  }
}

TEST_F(WalReaderTest, ResetForgetsUndurable) {
  Tx(0x100, {{"converge:a", "1"}});
  std::vector<WalTransaction> out;
  reader_.TakeReady(10, 1 << 20, &out);
  reader_.Reset(0x40);
  EXPECT_EQ(reader_.ready_transactions(), 0u);
  EXPECT_EQ(reader_.flush_position(), 0x40u);
  EXPECT_TRUE(reader_.StatusDue());  // a new session hears where we are
}

}  // namespace
}  // namespace converge::cdc
