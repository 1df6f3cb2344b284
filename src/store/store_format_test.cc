// A store directory of the release before the WAL became a record-log file still opens.
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "converge/sim_env.h"
#include "converge/store.h"
#include "core/crc32c.h"
#include "core/record_log.h"
#include "store/format.h"

namespace converge {
namespace {

const Caller kOrders = Caller::Service("orders");

// A byte-exact copy of the WAL frame of before (store/format.cc then):
// fixed32 crc32c(length bytes + payload) | fixed32 length | payload.
std::string OldFrame(std::string_view payload) {
  std::string len(4, '\0');
  for (int i = 0; i < 4; ++i) len[i] = static_cast<char>((payload.size() >> (8 * i)) & 0xff);
  const uint32_t crc =
      internal::Crc32cExtend(internal::Crc32c(len.data(), 4), payload.data(), payload.size());
  std::string out(4, '\0');
  for (int i = 0; i < 4; ++i) out[i] = static_cast<char>((crc >> (8 * i)) & 0xff);
  return out + len + std::string(payload);
}

// The frames the store encoders build now, re-framed the old way.
std::string Reframe(const std::string& frames) {
  internal::record_log::Reader r = internal::record_log::Reader::ForFrames(frames);
  std::string out;
  std::string_view payload;
  while (r.Next(&payload)) out += OldFrame(payload);
  EXPECT_EQ(r.stop(), internal::record_log::Stop::kEnd);
  return out;
}

StoreOptions Options() {
  StoreOptions o;
  o.dir = "/data/store";
  o.feed_log = nullptr;
  o.ttl_sweep_interval_ms = 0;
  return o;
}

// The frame of a record that creates collection "c" (owner "orders") as change 1.
std::string CreateC() {
  std::string frames;
  CollectionConfig config;
  config.owner = "orders";
  store_internal::AppendPutCollectionRecord(1, "c", config, &frames);
  return frames;
}

TEST(StoreFormatTest, OpensAWalOfTheFormatBeforeTheRecordLogHeader) {
  sim::SimEnv env(9);
  FileSystem& fs = env.fs();
  const StoreOptions o = Options();
  ASSERT_TRUE(fs.CreateDirs(o.dir).ok());
  std::string frames = CreateC();
  store_internal::WalOp op;
  op.kind = store_internal::OpKind::kPut;
  op.collection = "c";
  op.key = "a";
  op.value = std::make_shared<const std::string>("1");
  store_internal::AppendTxnRecord(2, 1000, {op}, &frames);
  std::string torn;
  op.value = std::make_shared<const std::string>("2");
  store_internal::AppendTxnRecord(3, 1001, {op}, &torn);
  const std::string old_torn = Reframe(torn);
  const std::string wal = Reframe(frames) + old_torn.substr(0, old_torn.size() - 2);
  ASSERT_TRUE(fs.WriteFileAtomically(o.dir + "/" + store_internal::WalFileName(1), wal).ok());

  {
    auto store = Store::Open(env, o);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    auto doc = (*store)->Get("c", "a");
    ASSERT_TRUE(doc.ok()) << doc.status().ToString();
    EXPECT_EQ(doc->value, "1");  // the torn change was never acknowledged
    auto put = (*store)->Put(kOrders, "c", "b", "3");
    ASSERT_TRUE(put.ok()) << put.status().ToString();
  }
  // New changes went to a new WAL file in the current format.
  std::vector<std::string> wals;
  const std::vector<std::string> names = fs.ListDir(o.dir).value();
  for (const std::string& n : names) {
    if (n.rfind("wal-", 0) == 0) wals.push_back(n);
  }
  ASSERT_EQ(wals.size(), 2u);
  EXPECT_EQ(fs.ReadFileToString(o.dir + "/" + wals.back()).value().substr(0, 4), "CVRL");
  auto store = Store::Open(env, o);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  EXPECT_EQ((*store)->Get("c", "a")->value, "1");
  EXPECT_EQ((*store)->Get("c", "b")->value, "3");
}

// Damage before the tail of an old WAL is still refused, not cut.
TEST(StoreFormatTest, DamageInAnOldWalIsStillDataLoss) {
  sim::SimEnv env(10);
  FileSystem& fs = env.fs();
  const StoreOptions o = Options();
  ASSERT_TRUE(fs.CreateDirs(o.dir).ok());
  std::string frames = CreateC();
  store_internal::AppendDropCollectionRecord(2, "c", &frames);
  std::string wal = Reframe(frames);
  wal[10] ^= 0x40;  // inside the first record's payload
  ASSERT_TRUE(fs.WriteFileAtomically(o.dir + "/" + store_internal::WalFileName(1), wal).ok());
  auto store = Store::Open(env, o);
  EXPECT_EQ(store.status().code(), StatusCode::kDataLoss) << store.status().ToString();
}

}  // namespace
}  // namespace converge
