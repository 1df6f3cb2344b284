// SchemaRegistry's file (docs/formats/schema_registry.md): what a restart finds after writes,
// after a torn tail and after damage with records behind it.
#include "server/schema_registry.h"

#include <gtest/gtest.h>

#include "converge/sim_env.h"

namespace converge::server {
namespace {

namespace json = boost::json;

const char* const kV1 = R"({"type":"object","properties":{"id":{"type":"string"}}})";
const char* const kV2 = R"({"type":"object","properties":{"id":{"type":"string"}},
                            "required":["id"]})";

TEST(SchemaRegistryTest, ReopenFindsVersionsModesAndBindings) {
  sim::SimEnv env(1);
  {
    auto r = SchemaRegistry::Open(env, "/data/schemas");
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    auto v1 = (*r)->Register("t", json::parse(kV1));
    ASSERT_TRUE(v1.ok());
    EXPECT_EQ(v1->version, 1u);
    // Backward: a field made required is refused, nothing stored.
    auto refused = (*r)->Register("t", json::parse(kV2));
    ASSERT_TRUE(refused.ok());
    EXPECT_FALSE(refused->findings.empty());
    ASSERT_TRUE((*r)->SetCompatibility("t", schema::Compatibility::kNone).ok());
    auto v2 = (*r)->Register("t", json::parse(kV2));
    ASSERT_TRUE(v2.ok());
    EXPECT_EQ(v2->version, 2u);
    ASSERT_TRUE((*r)->Bind("orders", {"t", 1}).ok());
    EXPECT_EQ((*r)->Bind("x", {"nope", 0}).code(), StatusCode::kNotFound);
  }
  env.sim_fs().Crash();  // only what was synced survives
  auto r = SchemaRegistry::Open(env, "/data/schemas");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  auto t = (*r)->DescribeType("t");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->versions, (std::vector<uint32_t>{1, 2}));
  EXPECT_EQ(t->mode, schema::Compatibility::kNone);
  auto bound = (*r)->ForTopic("orders");
  ASSERT_TRUE(bound.has_value());
  EXPECT_EQ(bound->version, 1u);
  EXPECT_TRUE(bound->validator->ValidateText(R"({"id":1})").has_value());
  EXPECT_FALSE((*r)->ForTopic("x").has_value());
}

TEST(SchemaRegistryTest, ATornTailIsCutAndDamageWithRecordsAfterItStopsTheOpen) {
  sim::SimEnv env(2);
  const std::string path = "/data/schemas/registry.log";
  uint64_t first_end = 0;
  {
    auto r = SchemaRegistry::Open(env, "/data/schemas");
    ASSERT_TRUE(r.ok());
    ASSERT_TRUE((*r)->Register("t", json::parse(kV1)).ok());
    first_end = *env.fs().GetFileSize(path);
    ASSERT_TRUE((*r)->SetCompatibility("t", schema::Compatibility::kFull).ok());
  }
  // A torn last record: cut, the first one kept.
  const uint64_t size = *env.fs().GetFileSize(path);
  ASSERT_TRUE(env.sim_fs().CorruptTruncate(path, size - 3).ok());
  {
    auto r = SchemaRegistry::Open(env, "/data/schemas");
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    auto t = (*r)->DescribeType("t");
    ASSERT_TRUE(t.ok());
    EXPECT_EQ(t->versions, (std::vector<uint32_t>{1}));
    EXPECT_EQ(t->mode, schema::Compatibility::kBackward);
    EXPECT_EQ(*env.fs().GetFileSize(path), first_end);
    // Appends after the cut work.
    ASSERT_TRUE((*r)->SetCompatibility("t", schema::Compatibility::kForward).ok());
  }
  // Damage inside the first record, with a valid one after it: refused, never dropped.
  ASSERT_TRUE(env.sim_fs().CorruptByte(path, first_end - 5, 0x40).ok());
  auto damaged = SchemaRegistry::Open(env, "/data/schemas");
  ASSERT_FALSE(damaged.ok());
  EXPECT_EQ(damaged.status().code(), StatusCode::kDataLoss);
}

}  // namespace
}  // namespace converge::server
