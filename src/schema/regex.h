// The regular expressions of JSON Schema's `pattern` and `patternProperties`: a subset of ECMA
// 262 compiled to a Thompson NFA and matched by simulating it, so a match takes time linear in
// the input (times the pattern's size) and recurses nowhere, whatever the input. Backtracking
// engines (std::regex) can take exponential time and exhaust the stack on hostile input.
//
// Supported: literals, `.`, classes `[...]` / `[^...]` with ranges, the escapes `\d \D \w \W
// \s \S`, `\t \n \v \f \r \0 \uXXXX \xXX` and escaped metacharacters, groups `(...)` and
// `(?:...)`, alternation, the quantifiers `* + ? {n} {n,} {n,m}` (greedy or lazy: a yes/no
// match does not tell them apart), and the anchors `^` and `$` (at the start and end of the
// input, as ECMA 262 without the multiline flag). Not supported (Compile refuses them):
// backreferences, lookaround, word boundaries, named groups, and patterns longer than
// kMaxRegexStates after repetitions are expanded.
//
// A compiled Regex is immutable: any number of threads may match with one at once, each with
// its own RegexScratch.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "converge/status.h"

namespace converge::schema {

inline constexpr size_t kMaxRegexStates = 4096;

// Per-thread matching state: reused from one match to the next, so a warm match allocates
// nothing.
struct RegexScratch {
  std::vector<uint32_t> current, next;  // sparse sets of program counters
  std::vector<uint32_t> mark;           // per pc: the generation that last added it
  std::vector<uint32_t> stack;          // the epsilon closure's work list
  uint32_t generation = 0;
};

class Regex {
 public:
  // InvalidArgument naming what is not supported or not well-formed.
  static Result<std::shared_ptr<const Regex>> Compile(std::string_view pattern);

  // True if the pattern matches somewhere in `text` (valid UTF-8), as ECMA 262's test().
  bool Search(std::string_view text, RegexScratch& scratch) const;

  struct Inst;
  ~Regex();

 private:
  Regex() = default;
  void BuildSmall();
  uint64_t Closure(uint32_t pc, bool at_start, bool at_end) const;
  bool SearchSmall(std::string_view text) const;
  bool ClassMatches(const Inst& in, uint32_t cp) const;

  std::vector<Inst> prog_;
  std::vector<std::pair<uint32_t, uint32_t>> ranges_;  // code point ranges of the classes
  bool anchored_start_ = false;                        // every alternative begins with ^

  // A program of at most 64 instructions (most patterns) is simulated with its set of states
  // as one 64-bit mask: per ASCII character, the states it lets through; per state, the states
  // reached after it (epsilon closure precomputed, in the middle or at the end of the input).
  // Same answers as the general simulation, no scratch state at all.
  bool small_ = false;
  uint64_t match_bit_ = 0;
  uint64_t ascii_accept_[128] = {};
  uint64_t follow_[64][2] = {};  // [pc][at end]
  uint64_t start_[2] = {};       // the closure of pc 0 at position 0 [input empty]
  uint64_t restart_[2] = {};     // the closure of pc 0 later on [at end] (unanchored search)
};

}  // namespace converge::schema
