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
  std::vector<Inst> prog_;
  std::vector<std::pair<uint32_t, uint32_t>> ranges_;  // code point ranges of the classes
  bool anchored_start_ = false;                         // every alternative begins with ^
};

}  // namespace converge::schema
