// The validator's JSON parser against Boost.JSON's (which the event decoder uses): the publish
// path of a topic bound to a schema parses an event's data only with the former, so it must
// never accept a text the decoder would refuse. Checked on random edits of valid texts.
#include "schema/json_tape.h"

#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <cmath>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

namespace converge::schema {
namespace {

namespace json = boost::json;

bool BoostAccepts(const std::string& text, uint32_t max_depth) {
  json::parse_options opt;
  opt.max_depth = max_depth;
  boost::system::error_code ec;
  json::parse(text, ec, {}, opt);
  return !ec;
}

TEST(SchemaTapeTest, AcceptsExactlyWhatBoostJsonAccepts) {
  const std::vector<std::string> seeds = {
      R"({"order_id":"o-1","customer":"c-1042","items":[{"sku":"S","qty":1,"price":9.75}],"total":1.5e2})",
      R"([null,true,false,-0,0.5,-1E-5,1e+3,"\u00e9\ud83d\ude00\n\"\\\/",{},[]])",
      "\"\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80\"",
      R"({"a":{"b":{"c":[1,[2,[3]]]}}})",
      " 123456789012345678901234567890 ",
  };
  const char kBytes[] = {'"',    '\\',   '{',    '}',    '[',    ']',    ',',    ':',    '0',
                         '1',    '-',    '+',    'e',    'E',    '.',    'u',    'n',    't',
                         ' ',    '\n',   '\x01', '\x7F', '\x80', '\xBF', '\xC0', '\xC3', '\xE0',
                         '\xED', '\xF0', '\xF4', '\xF5', '\xFF', 'd',    '8'};
  std::mt19937 rng(20261207);
  auto pick = [&](size_t n) { return std::uniform_int_distribution<size_t>(0, n - 1)(rng); };
  Tape tape;
  int accepted = 0, refused = 0;
  for (int i = 0; i < 200000; ++i) {
    std::string text = seeds[pick(seeds.size())];
    const int edits = 1 + static_cast<int>(pick(3));
    for (int e = 0; e < edits && !text.empty(); ++e) {
      const size_t at = pick(text.size());
      switch (pick(3)) {
        case 0:
          text.erase(at, 1);
          break;
        case 1:
          text.insert(text.begin() + static_cast<std::ptrdiff_t>(at), kBytes[pick(sizeof kBytes)]);
          break;
        default:
          text[at] = kBytes[pick(sizeof kBytes)];
      }
    }
    const bool mine = tape.Parse(text, 64) == TapeError::kNone;
    const bool boost = BoostAccepts(text, 64);
    ASSERT_EQ(mine, boost) << "'" << text << "'";
    (mine ? accepted : refused)++;
  }
  EXPECT_GT(accepted, 1000);
  EXPECT_GT(refused, 1000);
}

TEST(SchemaTapeTest, DepthAndNumbersAsBoostJson) {
  Tape tape;
  for (int depth : {1, 63, 64, 65, 100}) {
    std::string arrays = std::string(depth, '[') + std::string(depth, ']');
    std::string objects;
    for (int i = 0; i < depth; ++i) objects.append("{\"a\":");
    objects.push_back('1');
    objects.append(static_cast<size_t>(depth), '}');
    for (const std::string& t : {arrays, objects}) {
      EXPECT_EQ(tape.Parse(t, 64) == TapeError::kNone, BoostAccepts(t, 64)) << depth;
    }
  }
  EXPECT_EQ(tape.Parse(std::string(65, '[') + std::string(65, ']'), 64), TapeError::kTooDeep);
  // Exponents: Boost.JSON refuses one past 32 bits; this parser refuses at least that.
  for (const char* t : {"1e400", "-1e400", "1e-400", "1e2147483647", "1e2147483648",
                        "1e99999999999", "0.5e-2147483648"}) {
    if (tape.Parse(t, 64) == TapeError::kNone) {
      EXPECT_TRUE(BoostAccepts(t, 64)) << t;
    }
  }
  EXPECT_NE(tape.Parse("1e99999999999", 64), TapeError::kNone);
  EXPECT_EQ(tape.Parse("1e400", 64), TapeError::kNone);
  EXPECT_EQ(tape.values()[0].kind, TapeValue::kDouble);
}

// Short decimals take a fast conversion: the same doubles as a full one.
TEST(SchemaTapeTest, DecimalsConvertExactly) {
  std::mt19937_64 rng(7);
  Tape tape;
  for (int i = 0; i < 200000; ++i) {
    std::string text;
    if (rng() % 2) text += '-';
    text += std::to_string(rng() % (uint64_t{1} << (rng() % 54)));
    text += '.';
    const int frac = 1 + static_cast<int>(rng() % 24);
    for (int k = 0; k < frac; ++k) text += static_cast<char>('0' + rng() % 10);
    ASSERT_EQ(tape.Parse(text, 64), TapeError::kNone) << text;
    const double want = std::strtod(text.c_str(), nullptr);
    ASSERT_EQ(tape.values()[0].d, want) << text;
    ASSERT_EQ(std::signbit(tape.values()[0].d), std::signbit(want)) << text;
  }
}

}  // namespace
}  // namespace converge::schema
