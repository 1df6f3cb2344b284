#include "converge/conflict/resolver.h"

#include <gtest/gtest.h>

#include "converge/conflict/counters.h"
#include "converge/conflict/sets.h"
#include "converge/conflict/versioned.h"

namespace converge::conflict {
namespace {

constexpr ReplicaId kA(1), kB(2);

// ---- ETags and versioned values ---------------------------------------------------------

TEST(ETagTest, ParsesStrongTagsOnly) {
  EXPECT_EQ(ETag::Parse("\"abc\"").value().text(), "\"abc\"");
  EXPECT_EQ(ETag::Parse("W/\"abc\"").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ETag::Parse("abc").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ETag::Parse("\"a\"b\"").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ETag::Parse("\"").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ETag::ForContent("x"), ETag::ForContent("x"));
  EXPECT_NE(ETag::ForContent("x"), ETag::ForContent("y"));
  EXPECT_EQ(ETag::ForContent("x").text().size(), 34u);
}

TEST(VersionedValueTest, StaleETagIsAborted) {
  VersionedValue v;
  const ETag first = v.Write(kA, "v1").value();
  const ETag second = v.Write(kB, "v2", WritePrecondition{first, false}).value();
  EXPECT_NE(first, second);
  // A client still holding the first ETag must redo its read-modify-write.
  Result<ETag> stale = v.Write(kA, "lost update?", WritePrecondition{first, false});
  EXPECT_EQ(stale.status().code(), StatusCode::kAborted);
  EXPECT_EQ(v.value(), "v2");
  EXPECT_EQ(v.etag(), second);
}

TEST(VersionedValueTest, NoAbaAcrossDeleteAndRecreate) {
  VersionedValue v;
  const ETag original = v.Write(kA, "same").value();
  const ETag deleted = v.Delete(kA, WritePrecondition{original, false}).value();
  EXPECT_FALSE(v.exists());
  EXPECT_EQ(v.Write(kA, "x", WritePrecondition{deleted, false}).status().code(),
            StatusCode::kAborted);  // If-Match on an absent value
  const ETag recreated = v.Write(kA, "same", WritePrecondition{std::nullopt, true}).value();
  EXPECT_NE(recreated, original);  // same content, new version
  EXPECT_EQ(v.Write(kA, "y", WritePrecondition{std::nullopt, true}).status().code(),
            StatusCode::kAlreadyExists);
}

TEST(VersionedValueTest, MergeRefusesConcurrentVersions) {
  VersionedValue base;
  ASSERT_TRUE(base.Write(kA, "v1").ok());
  VersionedValue a = base, b = base;
  ASSERT_TRUE(a.Write(kA, "from a").ok());
  EXPECT_TRUE(b.Merge(a).ok());  // a is after b: adopt
  EXPECT_EQ(b.value(), "from a");
  VersionedValue c = base;
  ASSERT_TRUE(c.Write(kB, "from c").ok());
  const VersionedValue before = b;
  EXPECT_EQ(b.Merge(c).code(), StatusCode::kAborted);
  EXPECT_EQ(b, before);
  EXPECT_EQ(VersionedValue::FromJson(b.ToJson()).value(), b);
  EXPECT_EQ(VersionedValue::FromBinary(b.ToBinary()).value(), b);
}

// ---- registry ---------------------------------------------------------------------------

WriteRequest Req(ReplicaId r, std::string value) {
  WriteRequest w;
  w.replica = r;
  w.value = std::move(value);
  return w;
}

TEST(ResolverRegistryTest, NoSilentDefault) {
  ResolverRegistry registry;
  EXPECT_EQ(registry.Lookup("order").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(registry.ApplyWrite("order", "", "", Req(kA, "x")).status().code(),
            StatusCode::kNotFound);
  ASSERT_TRUE(registry.Register("order", ResolverSpec::RejectOnConflict()).ok());
  ASSERT_TRUE(registry.RegisterField("order", "note", ResolverSpec::LastWriterWins()).ok());
  EXPECT_EQ(registry.Lookup("order", "note").value()->strategy, Strategy::kLastWriterWins);
  EXPECT_EQ(registry.Lookup("order", "total").value()->strategy, Strategy::kRejectOnConflict);
  EXPECT_EQ(registry.Register("order", ResolverSpec::MultiValue()).code(),
            StatusCode::kAlreadyExists);
  EXPECT_EQ(registry.Register("", ResolverSpec::MultiValue()).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(registry.Register("x", ResolverSpec::CustomMerge("none", nullptr)).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(registry.Register("x", ResolverSpec::CrdtMerge(CrdtKind::kLwwRegister)).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(registry.Register("x", ResolverSpec::MultiValue(0)).code(),
            StatusCode::kInvalidArgument);
}

TEST(ResolverRegistryTest, RejectOnConflictUsesETags) {
  ResolverRegistry registry;
  ASSERT_TRUE(registry.Register("account", ResolverSpec::RejectOnConflict()).ok());
  std::string state = registry.ApplyWrite("account", "", "", Req(kA, "balance=10")).value();
  const ReadResult read = registry.Read("account", "", state).value();
  EXPECT_EQ(read.value, "balance=10");
  // Without If-Match an update is refused; with a stale one it is Aborted.
  EXPECT_EQ(registry.ApplyWrite("account", "", state, Req(kA, "blind")).status().code(),
            StatusCode::kFailedPrecondition);
  WriteRequest update = Req(kA, "balance=7");
  update.precondition.if_match = read.etag;
  state = registry.ApplyWrite("account", "", state, update).value();
  EXPECT_EQ(registry.ApplyWrite("account", "", state, update).status().code(),
            StatusCode::kAborted);
  // Replicas that diverged cannot be merged under this strategy.
  std::string other = registry.ApplyWrite("account", "", "", Req(kB, "elsewhere")).value();
  EXPECT_EQ(registry.Merge("account", "", state, other).status().code(), StatusCode::kAborted);
}

TEST(ResolverRegistryTest, LastWriterWinsNeedsATimestampAndOptIn) {
  ResolverRegistry registry;
  ASSERT_TRUE(registry.Register("cursor", ResolverSpec::LastWriterWins()).ok());
  EXPECT_EQ(registry.ApplyWrite("cursor", "", "", Req(kA, "x")).status().code(),
            StatusCode::kInvalidArgument);
  WriteRequest w = Req(kA, "page 3");
  w.timestamp = HlcTimestamp{100, 0};
  const std::string s1 = registry.ApplyWrite("cursor", "", "", w).value();
  WriteRequest w2 = Req(kB, "page 4");
  w2.timestamp = HlcTimestamp{101, 0};
  const std::string s2 = registry.ApplyWrite("cursor", "", "", w2).value();
  const std::string merged = registry.Merge("cursor", "", s1, s2).value();
  EXPECT_EQ(registry.Read("cursor", "", merged).value().value, "page 4");
  w.timestamp = HlcTimestamp{50, 0};
  EXPECT_EQ(registry.ApplyWrite("cursor", "", merged, w).status().code(),
            StatusCode::kFailedPrecondition);
}

TEST(ResolverRegistryTest, MultiValueSurfacesSiblingsAndResolvesWithContext) {
  ResolverRegistry registry;
  ASSERT_TRUE(registry.Register("doc", ResolverSpec::MultiValue(/*max_siblings=*/2)).ok());
  const std::string a = registry.ApplyWrite("doc", "", "", Req(kA, "draft A")).value();
  const std::string b = registry.ApplyWrite("doc", "", "", Req(kB, "draft B")).value();
  const std::string both = registry.Merge("doc", "", a, b).value();
  ReadResult read = registry.Read("doc", "", both).value();
  EXPECT_TRUE(read.conflict);
  EXPECT_TRUE(read.value.empty());
  EXPECT_EQ(read.siblings, (std::vector<std::string>{"draft A", "draft B"}));
  // A third blind write would exceed the sibling limit.
  EXPECT_EQ(registry.ApplyWrite("doc", "", both, Req(kA, "draft C")).status().code(),
            StatusCode::kResourceExhausted);
  WriteRequest resolve = Req(kA, "merged draft");
  resolve.context = read.context;
  const std::string resolved = registry.ApplyWrite("doc", "", both, resolve).value();
  read = registry.Read("doc", "", resolved).value();
  EXPECT_FALSE(read.conflict);
  EXPECT_EQ(read.value, "merged draft");
}

TEST(ResolverRegistryTest, CrdtMergeAppliesDeltas) {
  ResolverRegistry registry;
  ASSERT_TRUE(registry.Register("post", ResolverSpec::CrdtMerge(CrdtKind::kPnCounter)).ok());
  PnCounter at_a, at_b;
  const std::string s1 =
      registry.ApplyWrite("post", "", "", Req(kA, at_a.Increment(kA, 3)->ToBinary())).value();
  const std::string s2 =
      registry.ApplyWrite("post", "", "", Req(kB, at_b.Decrement(kB, 1)->ToBinary())).value();
  const std::string merged = registry.Merge("post", "", s1, s2).value();
  EXPECT_EQ(PnCounter::FromBinary(merged).value().Value(), 2);
  EXPECT_EQ(registry.Read("post", "", merged).value().value,
            R"({"type":"pn-counter","entries":{"1":{"p":3,"n":0},"2":{"p":0,"n":1}}})");
  // A delta of the wrong type is a bad request; a corrupt stored state is data loss.
  EXPECT_EQ(registry.ApplyWrite("post", "", merged, Req(kA, GCounter().ToBinary())).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(registry.Merge("post", "", "\x04\x01garbage", s1).status().code(),
            StatusCode::kDataLoss);
  EXPECT_EQ(registry.Read("post", "", "junk").status().code(), StatusCode::kDataLoss);
}

TEST(ResolverRegistryTest, BoundedCounterDeltaCannotBreakTheBound) {
  ResolverRegistry registry;
  ASSERT_TRUE(registry.Register("stock", ResolverSpec::CrdtMerge(CrdtKind::kBoundedCounter)).ok());
  BoundedCounter c(0);
  std::string s =
      registry.ApplyWrite("stock", "", "", Req(kA, c.Increment(kA, 2)->ToBinary())).value();
  // A crafted state in which replica 1's row disagrees with the stored one.
  BoundedCounter forged(0);
  ASSERT_TRUE(forged.Increment(kA, 1).ok());
  ASSERT_TRUE(forged.Decrement(kA, 1).ok());
  BoundedCounter bigger(0);
  ASSERT_TRUE(bigger.Increment(kA, 2).ok());
  ASSERT_TRUE(bigger.TransferRights(kA, kB, 2).ok());
  ASSERT_TRUE(bigger.Decrement(kB, 2).ok());
  s = registry.ApplyWrite("stock", "", s, Req(kA, bigger.ToBinary())).value();
  EXPECT_EQ(registry.ApplyWrite("stock", "", s, Req(kA, forged.ToBinary())).status().code(),
            StatusCode::kFailedPrecondition);
}

TEST(ResolverRegistryTest, CustomMergeFunctionResolvesOnRead) {
  ResolverRegistry registry;
  auto longest = [](std::string_view a, std::string_view b) -> Result<std::string> {
    return std::string(a.size() >= b.size() ? a : b);
  };
  ASSERT_TRUE(registry.Register("title", ResolverSpec::CustomMerge("longest", longest)).ok());
  const std::string a = registry.ApplyWrite("title", "", "", Req(kA, "short")).value();
  const std::string b = registry.ApplyWrite("title", "", "", Req(kB, "much longer")).value();
  const ReadResult read =
      registry.Read("title", "", registry.Merge("title", "", a, b).value()).value();
  EXPECT_EQ(read.value, "much longer");
  EXPECT_EQ(read.siblings.size(), 2u);
  EXPECT_FALSE(read.conflict);
}

TEST(ResolverRegistryTest, MergeEntityUsesEachFieldsStrategyAllOrNothing) {
  ResolverRegistry registry;
  ASSERT_TRUE(registry.Register("product", ResolverSpec::RejectOnConflict(false)).ok());
  ASSERT_TRUE(
      registry.RegisterField("product", "views", ResolverSpec::CrdtMerge(CrdtKind::kGCounter))
          .ok());
  GCounter va, vb;
  ResolverRegistry::EntityState local, remote;
  local["views"] = va.Increment(kA, 5)->ToBinary();
  remote["views"] = vb.Increment(kB, 2)->ToBinary();
  local[""] = registry.ApplyWrite("product", "", "", Req(kA, "name=lamp")).value();
  remote[""] = local[""];
  ResolverRegistry::EntityState merged = registry.MergeEntity("product", local, remote).value();
  EXPECT_EQ(GCounter::FromBinary(merged["views"]).value().Value(), 7u);
  // A concurrent entity-level write makes the whole merge fail, nothing half-applied.
  remote[""] = registry.ApplyWrite("product", "", "", Req(kB, "name=desk")).value();
  Result<ResolverRegistry::EntityState> failed = registry.MergeEntity("product", local, remote);
  EXPECT_EQ(failed.status().code(), StatusCode::kAborted);
}

TEST(ResolverRegistryTest, PreconditionsApplyToEveryStrategy) {
  ResolverRegistry registry;
  ASSERT_TRUE(registry.Register("tags", ResolverSpec::CrdtMerge(CrdtKind::kGSet)).ok());
  GSet g;
  const std::string s = registry.ApplyWrite("tags", "", "", Req(kA, g.Add("a").ToBinary())).value();
  WriteRequest create_only = Req(kA, g.Add("b").ToBinary());
  create_only.precondition.if_none_match_any = true;
  EXPECT_EQ(registry.ApplyWrite("tags", "", s, create_only).status().code(),
            StatusCode::kAlreadyExists);
  WriteRequest stale = Req(kA, g.Add("c").ToBinary());
  stale.precondition.if_match = ETag::ForContent("something else");
  EXPECT_EQ(registry.ApplyWrite("tags", "", s, stale).status().code(), StatusCode::kAborted);
  stale.precondition.if_match = registry.Read("tags", "", s).value().etag;
  EXPECT_TRUE(registry.ApplyWrite("tags", "", s, stale).ok());
}

}  // namespace
}  // namespace converge::conflict
