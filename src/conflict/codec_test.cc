// Decoding garbage never crashes: random bytes, truncations and bit flips of valid encodings
// (binary and JSON) either decode into a state that re-encodes stably, or return a Status.
// Meant to run under ASan/UBSan too (make asan).
#include <gtest/gtest.h>

#include "conflict/binary_codec.h"
#include "conflict/test_util.h"
#include "converge/conflict/counters.h"
#include "converge/conflict/crdt_kind.h"
#include "converge/conflict/lww_map.h"
#include "converge/conflict/or_map.h"
#include "converge/conflict/registers.h"
#include "converge/conflict/sets.h"
#include "converge/conflict/versioned.h"

namespace converge::conflict {
namespace {

using testing::Rng;
constexpr ReplicaId kA(1), kB(2);

template <typename T>
void FuzzDecoders(const T& sample, uint64_t seed) {
  Rng rng(seed);
  const std::string bin = sample.ToBinary();
  const std::string json = sample.ToJson();
  ASSERT_EQ(T::FromBinary(bin).value(), sample);
  ASSERT_EQ(T::FromJson(json).value(), sample);
  auto probe = [](const std::string& input, bool binary) {
    Result<T> r = binary ? T::FromBinary(input) : T::FromJson(input);
    if (!r.ok()) {
      EXPECT_TRUE(r.status().code() == StatusCode::kInvalidArgument ||
                  r.status().code() == StatusCode::kResourceExhausted)
          << r.status().ToString();
      return;
    }
    // Whatever decodes must be a well-formed state: stable under re-encoding.
    const std::string again = binary ? r->ToBinary() : r->ToJson();
    Result<T> r2 = binary ? T::FromBinary(again) : T::FromJson(again);
    ASSERT_TRUE(r2.ok()) << r2.status().ToString();
    EXPECT_EQ(*r2, *r);
  };
  for (int i = 0; i < 3000; ++i) {
    // Truncation.
    probe(bin.substr(0, rng.Uniform(bin.size() + 1)), true);
    probe(json.substr(0, rng.Uniform(json.size() + 1)), false);
    // Bit flips and byte overwrites.
    std::string b = bin, j = json;
    const int flips = 1 + static_cast<int>(rng.Uniform(4));
    for (int f = 0; f < flips; ++f) {
      b[rng.Uniform(b.size())] ^= static_cast<char>(1u << rng.Uniform(8));
      j[rng.Uniform(j.size())] = static_cast<char>(rng.Uniform(256));
    }
    probe(b, true);
    probe(j, false);
    // Random bytes behind a valid header.
    std::string junk = bin.substr(0, 2);
    const size_t n = rng.Uniform(40);
    for (size_t k = 0; k < n; ++k) junk.push_back(static_cast<char>(rng.Uniform(256)));
    probe(junk, true);
  }
}

TEST(CodecFuzzTest, EveryTypeSurvivesGarbage) {
  GCounter g;
  ASSERT_TRUE(g.Increment(kA, 300).ok());
  ASSERT_TRUE(g.Increment(ReplicaId(1u << 20), 7).ok());
  FuzzDecoders(g, 1);

  PnCounter pn;
  ASSERT_TRUE(pn.Add(kA, 5).ok());
  ASSERT_TRUE(pn.Add(kB, -9).ok());
  FuzzDecoders(pn, 2);

  BoundedCounter bc(-2);
  ASSERT_TRUE(bc.Increment(kA, 20).ok());
  ASSERT_TRUE(bc.TransferRights(kA, kB, 5).ok());
  ASSERT_TRUE(bc.Decrement(kB, 3).ok());
  FuzzDecoders(bc, 3);

  GSet gs;
  gs.Add("alpha");
  gs.Add(std::string("\x00\xff", 2));
  FuzzDecoders(gs, 4);

  OrSet os;
  ASSERT_TRUE(os.Add(kA, "x").ok());
  ASSERT_TRUE(os.Add(kB, "y").ok());
  os.Merge(OrSet().Add(ReplicaId(9), "z").value());
  FuzzDecoders(os, 5);

  EwFlag flag;
  ASSERT_TRUE(flag.Enable(kA).ok());
  FuzzDecoders(flag, 6);

  LwwRegister lww;
  ASSERT_TRUE(lww.Set(kA, HlcTimestamp{1'700'000'000'000'000, 3}, "value").ok());
  FuzzDecoders(lww, 7);

  MvRegister mv;
  mv.Merge(MvRegister().Write(kA, "a").value());
  mv.Merge(MvRegister().Write(kB, "b").value());
  FuzzDecoders(mv, 8);

  LwwMap lm;
  ASSERT_TRUE(lm.Set(kA, HlcTimestamp{10, 0}, "k1", "v1").ok());
  ASSERT_TRUE(lm.Remove(kB, HlcTimestamp{11, 0}, "k2").ok());
  FuzzDecoders(lm, 9);

  OrMap om;
  ASSERT_TRUE(
      om.IncrementCounter(kA, {{"m", ValueKind::kMap}, {"c", ValueKind::kCounter}}, 4).ok());
  ASSERT_TRUE(om.AddToSet(kB, {{"s", ValueKind::kOrSet}}, "e").ok());
  ASSERT_TRUE(om.AssignLww(kA, {{"l", ValueKind::kLwwRegister}}, HlcTimestamp{5, 0}, "v").ok());
  ASSERT_TRUE(om.AssignRegister(kA, {{"r", ValueKind::kMvRegister}}, "v").ok());
  ASSERT_TRUE(om.EnableFlag(kA, {{"f", ValueKind::kFlag}}).ok());
  FuzzDecoders(om, 10);

  VersionedValue vv;
  ASSERT_TRUE(vv.Write(kA, "x").ok());
  FuzzDecoders(vv, 11);
}

TEST(CodecFuzzTest, HostileCountsDoNotAllocate) {
  // A header followed by a count of 2^63 items must fail fast, not reserve memory.
  std::string bin;
  internal::BinaryWriter w(&bin);
  w.Header(static_cast<uint8_t>(conflict::CrdtKind::kGSet));
  w.U64(uint64_t{1} << 63);
  EXPECT_EQ(GSet::FromBinary(bin).status().code(), StatusCode::kInvalidArgument);
  // Overlong and overflowing varints are rejected.
  EXPECT_FALSE(VersionVector::FromBinary(std::string("\x80\x00", 2)).ok());
  EXPECT_FALSE(VersionVector::FromBinary(std::string(11, '\xff')).ok());
  // Deeply nested JSON is refused by the parser's depth bound.
  std::string deep(10000, '[');
  EXPECT_EQ(OrMap::FromJson(deep).status().code(), StatusCode::kInvalidArgument);
  // Wrong type tag.
  EXPECT_FALSE(OrSet::FromBinary(GSet().ToBinary()).ok());
}

TEST(CodecTest, VarintsAndBase64) {
  std::string out;
  internal::BinaryWriter w(&out);
  const uint64_t values[] = {0, 1, 127, 128, 300, UINT64_MAX};
  for (uint64_t v : values) w.U64(v);
  w.I64(-1);
  w.I64(INT64_MIN);
  internal::BinaryReader r(out, "test");
  for (uint64_t v : values) {
    uint64_t got;
    ASSERT_TRUE(r.U64(&got));
    EXPECT_EQ(got, v);
  }
  int64_t s;
  ASSERT_TRUE(r.I64(&s));
  EXPECT_EQ(s, -1);
  ASSERT_TRUE(r.I64(&s));
  EXPECT_EQ(s, INT64_MIN);
  EXPECT_TRUE(r.Finish().ok());
  for (std::string text : {std::string(), std::string("f"), std::string("fo"), std::string("foo"),
                           std::string("\xff\x00\x80", 3)}) {
    std::string back;
    ASSERT_TRUE(internal::Base64Decode(internal::Base64Encode(text), &back));
    EXPECT_EQ(back, text);
  }
  std::string ignored;
  EXPECT_FALSE(internal::Base64Decode("Zm9=", &ignored));  // non-canonical padding bits
  EXPECT_FALSE(internal::Base64Decode("Zg=a", &ignored));
  EXPECT_TRUE(internal::IsValidUtf8("h\xc3\xa9llo"));
  EXPECT_FALSE(internal::IsValidUtf8("\xc0\xaf"));      // overlong
  EXPECT_FALSE(internal::IsValidUtf8("\xed\xa0\x80"));  // surrogate
  EXPECT_EQ(internal::HexHash("abc"), internal::HexHash("abc"));
  EXPECT_NE(internal::HexHash("abc"), internal::HexHash("abd"));
}

}  // namespace
}  // namespace converge::conflict
