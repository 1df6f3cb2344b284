#include "schema/regex.h"

#include <algorithm>
#include <utility>

namespace converge::schema {

// One instruction of the NFA program. kClass consumes one code point in the class (ASCII by
// bitmap, the rest by the class's sorted ranges); the others consume nothing.
struct Regex::Inst {
  enum Op : uint8_t { kClass, kSplit, kJmp, kBegin, kEnd, kMatch };
  Op op = kMatch;
  uint32_t x = 0, y = 0;       // kSplit: both targets; kJmp: x; kClass: ranges [x, x + y)
  uint64_t ascii[2] = {0, 0};  // kClass: code points < 128 that match (negation applied)
};

Regex::~Regex() = default;

namespace {

using Ranges = std::vector<std::pair<uint32_t, uint32_t>>;  // inclusive code point ranges

constexpr uint32_t kMaxCodePoint = 0x10FFFF;
constexpr int kMaxGroupDepth = 64;
constexpr int kUnbounded = -1;

// Sorts and merges overlapping or adjacent ranges.
Ranges Normalize(Ranges r) {
  std::sort(r.begin(), r.end());
  Ranges out;
  for (const auto& [lo, hi] : r) {
    if (!out.empty() && lo <= out.back().second + 1) {
      out.back().second = std::max(out.back().second, hi);
    } else {
      out.emplace_back(lo, hi);
    }
  }
  return out;
}

Ranges Complement(const Ranges& in) {
  Ranges r = Normalize(in);
  Ranges out;
  uint32_t next = 0;
  for (const auto& [lo, hi] : r) {
    if (lo > next) out.emplace_back(next, lo - 1);
    next = hi + 1;
  }
  if (next <= kMaxCodePoint) out.emplace_back(next, kMaxCodePoint);
  return out;
}

// Decodes one code point of UTF-8 at s[*i] and advances *i. The text is valid UTF-8; a stray
// byte is taken as itself, so nothing reads past the end.
uint32_t NextCodePoint(std::string_view s, size_t* i) {
  const auto b0 = static_cast<unsigned char>(s[*i]);
  if (b0 < 0x80) {
    ++*i;
    return b0;
  }
  int len = b0 >= 0xF0 ? 4 : b0 >= 0xE0 ? 3 : b0 >= 0xC0 ? 2 : 1;
  if (len == 1 || *i + len > s.size()) {
    ++*i;
    return b0;
  }
  uint32_t cp = b0 & (0x7F >> len);
  for (int k = 1; k < len; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[*i + k]) & 0x3F);
  *i += len;
  return cp;
}

// The pattern's syntax tree.
struct Node {
  enum Kind { kEmpty, kClass, kBegin, kEnd, kConcat, kAlt, kRepeat } kind = kEmpty;
  Ranges ranges;  // kClass (normalized, already negated when the class is)
  std::vector<Node> children;
  int min = 0, max = 0;  // kRepeat (max kUnbounded: no upper bound)
};

Ranges DigitRanges() { return {{'0', '9'}}; }
Ranges WordRanges() { return {{'0', '9'}, {'A', 'Z'}, {'_', '_'}, {'a', 'z'}}; }
Ranges SpaceRanges() {
  return {{'\t', '\r'},     {' ', ' '},       {0xA0, 0xA0},     {0x1680, 0x1680}, {0x2000, 0x200A},
          {0x2028, 0x2029}, {0x202F, 0x202F}, {0x205F, 0x205F}, {0x3000, 0x3000}, {0xFEFF, 0xFEFF}};
}

class Parser {
 public:
  explicit Parser(std::string_view p) : p_(p) {}

  Result<Node> Run() {
    Node n = Alternation(0);
    if (error_.empty() && pos_ < p_.size()) Fail("unbalanced ')'");
    if (!error_.empty()) {
      return Status(StatusCode::kInvalidArgument, error_);
    }
    return n;
  }

 private:
  void Fail(const std::string& why) {
    if (error_.empty()) error_ = why;
  }
  bool AtEnd() const { return pos_ >= p_.size() || !error_.empty(); }
  char Peek() const { return p_[pos_]; }

  Node Alternation(int depth) {
    if (depth > kMaxGroupDepth) {
      Fail("groups nested deeper than " + std::to_string(kMaxGroupDepth));
      return {};
    }
    Node alt;
    alt.kind = Node::kAlt;
    alt.children.push_back(Sequence(depth));
    while (!AtEnd() && Peek() == '|') {
      ++pos_;
      alt.children.push_back(Sequence(depth));
    }
    if (alt.children.size() == 1) return std::move(alt.children[0]);
    return alt;
  }

  Node Sequence(int depth) {
    Node seq;
    seq.kind = Node::kConcat;
    while (!AtEnd() && Peek() != '|' && Peek() != ')') {
      Node atom = Atom(depth);
      if (!error_.empty()) return {};
      Quantify(atom);
      seq.children.push_back(std::move(atom));
    }
    return seq;
  }

  // A quantifier after an atom, if any; `{` that does not start a well-formed quantifier is a
  // literal (as ECMA 262's web-compatibility grammar reads it).
  void Quantify(Node& atom) {
    if (AtEnd()) return;
    int min = 0, max = 0;
    const size_t start = pos_;
    char c = Peek();
    if (c == '*') {
      min = 0, max = kUnbounded;
      ++pos_;
    } else if (c == '+') {
      min = 1, max = kUnbounded;
      ++pos_;
    } else if (c == '?') {
      min = 0, max = 1;
      ++pos_;
    } else if (c == '{') {
      if (!Braces(&min, &max)) {
        pos_ = start;
        return;
      }
    } else {
      return;
    }
    if (atom.kind == Node::kBegin || atom.kind == Node::kEnd) {
      Fail("a quantifier after an anchor");
      return;
    }
    if (!AtEnd() && Peek() == '?') ++pos_;  // lazy: the same yes/no answer
    if (!AtEnd() && (Peek() == '*' || Peek() == '+' || Peek() == '?')) {
      Fail("nothing to repeat");
      return;
    }
    Node rep;
    rep.kind = Node::kRepeat;
    rep.min = min;
    rep.max = max;
    rep.children.push_back(std::move(atom));
    atom = std::move(rep);
  }

  bool Number(int* out) {
    size_t start = pos_;
    long v = 0;
    while (pos_ < p_.size() && Peek() >= '0' && Peek() <= '9') {
      v = std::min<long>(v * 10 + (Peek() - '0'), 1'000'000);
      ++pos_;
    }
    *out = static_cast<int>(v);
    return pos_ > start;
  }

  bool Braces(int* min, int* max) {
    ++pos_;  // '{'
    if (!Number(min)) return false;
    *max = *min;
    if (pos_ < p_.size() && Peek() == ',') {
      ++pos_;
      if (!Number(max)) *max = kUnbounded;
    }
    if (pos_ >= p_.size() || Peek() != '}') return false;
    ++pos_;
    if (*max != kUnbounded && *max < *min) {
      Fail("numbers out of order in {} quantifier");
      return false;
    }
    return true;
  }

  static Node Class(Ranges r) {
    Node n;
    n.kind = Node::kClass;
    n.ranges = Normalize(std::move(r));
    return n;
  }

  Node Atom(int depth) {
    char c = Peek();
    switch (c) {
      case '^': {
        ++pos_;
        Node n;
        n.kind = Node::kBegin;
        return n;
      }
      case '$': {
        ++pos_;
        Node n;
        n.kind = Node::kEnd;
        return n;
      }
      case '.':
        ++pos_;
        return Class(Complement({{'\n', '\n'}, {'\r', '\r'}, {0x2028, 0x2029}}));
      case '(': {
        ++pos_;
        if (pos_ < p_.size() && Peek() == '?') {
          if (pos_ + 1 < p_.size() && p_[pos_ + 1] == ':') {
            pos_ += 2;
          } else {
            Fail("lookaround and named groups are not supported");
            return {};
          }
        }
        Node inner = Alternation(depth + 1);
        if (pos_ >= p_.size() || Peek() != ')') {
          Fail("missing ')'");
          return {};
        }
        ++pos_;
        return inner;
      }
      case ')':
        Fail("unbalanced ')'");
        return {};
      case '*':
      case '+':
      case '?':
        Fail("nothing to repeat");
        return {};
      case '{': {
        int min = 0, max = 0;
        size_t start = pos_;
        if (Braces(&min, &max)) {
          Fail("nothing to repeat");
          return {};
        }
        pos_ = start + 1;
        return Class({{'{', '{'}});
      }
      case '[':
        return Bracket();
      case '\\': {
        Ranges r;
        if (!Escape(false, &r)) return {};
        return Class(std::move(r));
      }
      default: {
        uint32_t cp = NextCodePoint(p_, &pos_);
        return Class({{cp, cp}});
      }
    }
  }

  // An escape after '\' (pos_ at the backslash): the code points it stands for.
  bool Escape(bool in_class, Ranges* out) {
    ++pos_;
    if (pos_ >= p_.size()) {
      Fail("'\\' at the end of the pattern");
      return false;
    }
    char c = Peek();
    auto one = [&](uint32_t cp) {
      out->emplace_back(cp, cp);
      return true;
    };
    auto hex = [&](int digits, uint32_t* v) {
      if (pos_ + digits > p_.size()) return false;
      *v = 0;
      for (int k = 0; k < digits; ++k) {
        char h = p_[pos_ + k];
        int d = h >= '0' && h <= '9'   ? h - '0'
                : h >= 'a' && h <= 'f' ? h - 'a' + 10
                : h >= 'A' && h <= 'F' ? h - 'A' + 10
                                       : -1;
        if (d < 0) return false;
        *v = *v * 16 + static_cast<uint32_t>(d);
      }
      pos_ += digits;
      return true;
    };
    ++pos_;
    switch (c) {
      case 'd':
        *out = DigitRanges();
        return true;
      case 'D':
        *out = Complement(DigitRanges());
        return true;
      case 'w':
        *out = WordRanges();
        return true;
      case 'W':
        *out = Complement(WordRanges());
        return true;
      case 's':
        *out = SpaceRanges();
        return true;
      case 'S':
        *out = Complement(SpaceRanges());
        return true;
      case 't':
        return one('\t');
      case 'n':
        return one('\n');
      case 'v':
        return one('\v');
      case 'f':
        return one('\f');
      case 'r':
        return one('\r');
      case 'b':
        if (in_class) return one('\b');
        Fail("word boundaries (\\b) are not supported");
        return false;
      case '0':
        if (pos_ < p_.size() && Peek() >= '0' && Peek() <= '9') {
          Fail("octal escapes are not supported");
          return false;
        }
        return one(0);
      case 'x': {
        uint32_t v;
        if (!hex(2, &v)) {
          Fail("\\x needs two hex digits");
          return false;
        }
        return one(v);
      }
      case 'u': {
        uint32_t v;
        if (!hex(4, &v)) {
          Fail("\\u needs four hex digits");
          return false;
        }
        // A surrogate pair written as two escapes is one code point.
        if (v >= 0xD800 && v <= 0xDBFF && pos_ + 1 < p_.size() && p_[pos_] == '\\' &&
            p_[pos_ + 1] == 'u') {
          size_t save = pos_;
          pos_ += 2;
          uint32_t low;
          if (hex(4, &low) && low >= 0xDC00 && low <= 0xDFFF) {
            return one(0x10000 + ((v - 0xD800) << 10) + (low - 0xDC00));
          }
          pos_ = save;
        }
        return one(v);
      }
      default:
        break;
    }
    const auto uc = static_cast<unsigned char>(c);
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) {
      Fail(std::string("the escape \\") + c + " is not supported");
      return false;
    }
    if (uc >= 0x80) {  // an escaped non-ASCII character is itself
      pos_ -= 1;
      uint32_t cp = NextCodePoint(p_, &pos_);
      return one(cp);
    }
    return one(uc);  // an escaped metacharacter or punctuation is itself
  }

  Node Bracket() {
    ++pos_;  // '['
    bool negated = false;
    if (pos_ < p_.size() && Peek() == '^') {
      negated = true;
      ++pos_;
    }
    Ranges r;
    while (true) {
      if (pos_ >= p_.size()) {
        Fail("missing ']'");
        return {};
      }
      if (Peek() == ']') {
        ++pos_;
        break;
      }
      Ranges lo;
      if (!ClassAtom(&lo)) return {};
      // A range a-b (a '-' before ']' or after a class escape is a literal '-').
      if (pos_ + 1 < p_.size() && Peek() == '-' && p_[pos_ + 1] != ']') {
        ++pos_;
        Ranges hi;
        if (!ClassAtom(&hi)) return {};
        if (lo.size() != 1 || hi.size() != 1 || lo[0].first != lo[0].second ||
            hi[0].first != hi[0].second) {
          Fail("a class escape cannot bound a range");
          return {};
        }
        if (hi[0].first < lo[0].first) {
          Fail("range out of order in character class");
          return {};
        }
        r.emplace_back(lo[0].first, hi[0].first);
        continue;
      }
      r.insert(r.end(), lo.begin(), lo.end());
    }
    return Class(negated ? Complement(r) : Normalize(std::move(r)));
  }

  bool ClassAtom(Ranges* out) {
    if (Peek() == '\\') return Escape(true, out);
    uint32_t cp = NextCodePoint(p_, &pos_);
    out->emplace_back(cp, cp);
    return true;
  }

  std::string_view p_;
  size_t pos_ = 0;
  std::string error_;
};

// How many instructions a node compiles to, saturating above the limit (so `(a{1000}){1000}`
// is refused before anything is expanded).
size_t Size(const Node& n) {
  auto sat = [](size_t v) { return std::min(v, kMaxRegexStates + 1); };
  switch (n.kind) {
    case Node::kEmpty:
      return 0;
    case Node::kClass:
    case Node::kBegin:
    case Node::kEnd:
      return 1;
    case Node::kConcat: {
      size_t s = 0;
      for (const auto& c : n.children) s = sat(s + Size(c));
      return s;
    }
    case Node::kAlt: {
      size_t s = 0;
      for (const auto& c : n.children) s = sat(s + Size(c) + 2);
      return s;
    }
    case Node::kRepeat: {
      size_t body = Size(n.children[0]) + 1;
      size_t copies = n.max == kUnbounded ? static_cast<size_t>(n.min) + 1 : n.max;
      if (copies != 0 && body > (kMaxRegexStates + 1) / copies) return kMaxRegexStates + 1;
      return sat(body * copies + 1);
    }
  }
  return 0;
}

}  // namespace

// Compiles the syntax tree to a program (Thompson's construction).
class RegexCompiler {
 public:
  RegexCompiler(std::vector<Regex::Inst>& prog, Ranges& ranges) : prog_(prog), ranges_(ranges) {}

  void Emit(const Node& n) {
    using Inst = Regex::Inst;
    switch (n.kind) {
      case Node::kEmpty:
        return;
      case Node::kClass: {
        Inst in;
        in.op = Inst::kClass;
        // Stored as the class's ranges from 128 up; ASCII by bitmap.
        in.x = static_cast<uint32_t>(ranges_.size());
        for (const auto& [lo, hi] : n.ranges) {
          for (uint32_t c = lo; c <= std::min<uint32_t>(hi, 127); ++c) {
            in.ascii[c >> 6] |= uint64_t{1} << (c & 63);
          }
          if (hi >= 128) ranges_.emplace_back(std::max<uint32_t>(lo, 128), hi);
        }
        in.y = static_cast<uint32_t>(ranges_.size()) - in.x;
        prog_.push_back(in);
        return;
      }
      case Node::kBegin:
      case Node::kEnd: {
        Inst in;
        in.op = n.kind == Node::kBegin ? Inst::kBegin : Inst::kEnd;
        prog_.push_back(in);
        return;
      }
      case Node::kConcat:
        for (const auto& c : n.children) Emit(c);
        return;
      case Node::kAlt: {
        // split L1, next; L1: a; jmp end; next: split L2, next2; ... last alternative.
        std::vector<size_t> jumps;
        for (size_t k = 0; k < n.children.size(); ++k) {
          if (k + 1 < n.children.size()) {
            size_t split = Add(Inst::kSplit);
            prog_[split].x = static_cast<uint32_t>(prog_.size());
            Emit(n.children[k]);
            jumps.push_back(Add(Inst::kJmp));
            prog_[split].y = static_cast<uint32_t>(prog_.size());
          } else {
            Emit(n.children[k]);
          }
        }
        for (size_t j : jumps) prog_[j].x = static_cast<uint32_t>(prog_.size());
        return;
      }
      case Node::kRepeat: {
        const Node& body = n.children[0];
        for (int k = 0; k < n.min; ++k) Emit(body);
        if (n.max == kUnbounded) {
          // loop: split body, out; body; jmp loop
          size_t split = Add(Inst::kSplit);
          prog_[split].x = static_cast<uint32_t>(prog_.size());
          Emit(body);
          size_t jmp = Add(Inst::kJmp);
          prog_[jmp].x = static_cast<uint32_t>(split);
          prog_[split].y = static_cast<uint32_t>(prog_.size());
          return;
        }
        // Optional copies: split body, end; body; split body, end; ...
        std::vector<size_t> splits;
        for (int k = n.min; k < n.max; ++k) {
          size_t split = Add(Inst::kSplit);
          prog_[split].x = static_cast<uint32_t>(prog_.size());
          splits.push_back(split);
          Emit(body);
        }
        for (size_t s : splits) prog_[s].y = static_cast<uint32_t>(prog_.size());
        return;
      }
    }
  }

 private:
  size_t Add(Regex::Inst::Op op) {
    Regex::Inst in;
    in.op = op;
    prog_.push_back(in);
    return prog_.size() - 1;
  }
  std::vector<Regex::Inst>& prog_;
  Ranges& ranges_;
};

namespace {
// True when every way through the pattern starts with ^ (so a search need only start at 0).
bool StartsAnchored(const Node& n) {
  switch (n.kind) {
    case Node::kBegin:
      return true;
    case Node::kConcat:
      return !n.children.empty() && StartsAnchored(n.children[0]);
    case Node::kAlt:
      for (const auto& c : n.children) {
        if (!StartsAnchored(c)) return false;
      }
      return true;
    default:
      return false;
  }
}
}  // namespace

Result<std::shared_ptr<const Regex>> Regex::Compile(std::string_view pattern) {
  if (pattern.find('\0') != std::string_view::npos) {
    return Status(StatusCode::kInvalidArgument, "a NUL character in the pattern");
  }
  CONVERGE_ASSIGN_OR_RETURN(Node tree, Parser(pattern).Run());
  if (Size(tree) > kMaxRegexStates) {
    return Status(StatusCode::kInvalidArgument, "the pattern expands to more than " +
                                                    std::to_string(kMaxRegexStates) + " states");
  }
  std::shared_ptr<Regex> re(new Regex());
  RegexCompiler(re->prog_, re->ranges_).Emit(tree);
  Inst match;
  match.op = Inst::kMatch;
  re->prog_.push_back(match);
  re->anchored_start_ = StartsAnchored(tree);
  re->BuildSmall();
  return std::shared_ptr<const Regex>(std::move(re));
}

uint64_t Regex::Closure(uint32_t pc0, bool at_start, bool at_end) const {
  uint64_t out = 0, seen = 0;
  std::vector<uint32_t> stack{pc0};
  while (!stack.empty()) {
    const uint32_t pc = stack.back();
    stack.pop_back();
    if ((seen >> pc) & 1) continue;
    seen |= uint64_t{1} << pc;
    const Inst& in = prog_[pc];
    switch (in.op) {
      case Inst::kClass:
      case Inst::kMatch:
        out |= uint64_t{1} << pc;
        break;
      case Inst::kJmp:
        stack.push_back(in.x);
        break;
      case Inst::kSplit:
        stack.push_back(in.y);
        stack.push_back(in.x);
        break;
      case Inst::kBegin:
        if (at_start) stack.push_back(pc + 1);
        break;
      case Inst::kEnd:
        if (at_end) stack.push_back(pc + 1);
        break;
    }
  }
  return out;
}

void Regex::BuildSmall() {
  if (prog_.size() > 64) return;
  small_ = true;
  match_bit_ = uint64_t{1} << (prog_.size() - 1);
  for (uint32_t pc = 0; pc < prog_.size(); ++pc) {
    const Inst& in = prog_[pc];
    if (in.op != Inst::kClass) continue;
    for (uint32_t c = 0; c < 128; ++c) {
      if ((in.ascii[c >> 6] >> (c & 63)) & 1) ascii_accept_[c] |= uint64_t{1} << pc;
    }
    follow_[pc][0] = Closure(pc + 1, false, false);
    follow_[pc][1] = Closure(pc + 1, false, true);
  }
  start_[0] = Closure(0, true, false);
  start_[1] = Closure(0, true, true);
  if (!anchored_start_) {
    restart_[0] = Closure(0, false, false);
    restart_[1] = Closure(0, false, true);
  }
}

bool Regex::ClassMatches(const Inst& in, uint32_t cp) const {
  if (cp < 128) return (in.ascii[cp >> 6] >> (cp & 63)) & 1;
  for (uint32_t k = in.x; k < in.x + in.y; ++k) {
    if (cp >= ranges_[k].first && cp <= ranges_[k].second) return true;
  }
  return false;
}

bool Regex::SearchSmall(std::string_view text) const {
  uint64_t state = start_[text.empty()];
  if (state & match_bit_) return true;
  size_t pos = 0;
  while (pos < text.size()) {
    const auto b = static_cast<unsigned char>(text[pos]);
    uint64_t live;
    size_t after = pos;
    if (b < 0x80) {
      live = state & ascii_accept_[b];
      after = pos + 1;
    } else {
      const uint32_t cp = NextCodePoint(text, &after);
      live = 0;
      for (uint64_t m = state & ~match_bit_; m != 0; m &= m - 1) {
        const int pc = __builtin_ctzll(m);
        if (ClassMatches(prog_[pc], cp)) live |= uint64_t{1} << pc;
      }
    }
    const bool end = after == text.size();
    uint64_t next = restart_[end];
    for (; live != 0; live &= live - 1) next |= follow_[__builtin_ctzll(live)][end];
    if (next & match_bit_) return true;
    if (next == 0 && anchored_start_) return false;  // nothing alive, no new start
    state = next;
    pos = after;
  }
  return false;
}

bool Regex::Search(std::string_view text, RegexScratch& s) const {
  if (small_) return SearchSmall(text);
  const size_t n = prog_.size();
  if (s.mark.size() < n) s.mark.assign(n, 0);
  s.current.clear();
  s.next.clear();
  bool matched = false;
  // Adds pc and everything reachable from it without consuming input, at input position pos.
  auto add = [&](std::vector<uint32_t>& list, uint32_t pc0, size_t pos) {
    s.stack.clear();
    s.stack.push_back(pc0);
    while (!s.stack.empty()) {
      uint32_t pc = s.stack.back();
      s.stack.pop_back();
      if (s.mark[pc] == s.generation) continue;
      s.mark[pc] = s.generation;
      const Inst& in = prog_[pc];
      switch (in.op) {
        case Inst::kClass:
          list.push_back(pc);
          break;
        case Inst::kMatch:
          matched = true;
          break;
        case Inst::kJmp:
          s.stack.push_back(in.x);
          break;
        case Inst::kSplit:
          s.stack.push_back(in.y);
          s.stack.push_back(in.x);
          break;
        case Inst::kBegin:
          if (pos == 0) s.stack.push_back(pc + 1);
          break;
        case Inst::kEnd:
          if (pos == text.size()) s.stack.push_back(pc + 1);
          break;
      }
    }
  };
  auto next_generation = [&] {
    if (++s.generation == 0) {  // wrapped: no mark may look current
      std::fill(s.mark.begin(), s.mark.end(), 0);
      s.generation = 1;
    }
  };
  next_generation();
  size_t pos = 0;
  add(s.current, 0, 0);
  while (!matched) {
    if (pos >= text.size()) break;
    if (s.current.empty() && anchored_start_) break;
    size_t after = pos;
    const uint32_t cp = NextCodePoint(text, &after);
    next_generation();
    s.next.clear();
    for (uint32_t pc : s.current) {
      const Inst& in = prog_[pc];
      bool hit;
      if (cp < 128) {
        hit = (in.ascii[cp >> 6] >> (cp & 63)) & 1;
      } else {
        hit = false;
        for (uint32_t k = in.x; k < in.x + in.y; ++k) {
          if (cp >= ranges_[k].first && cp <= ranges_[k].second) {
            hit = true;
            break;
          }
        }
      }
      if (hit) add(s.next, pc + 1, after);
    }
    // Unanchored: a match may also start here.
    if (!anchored_start_) add(s.next, 0, after);
    std::swap(s.current, s.next);
    pos = after;
  }
  return matched;
}

}  // namespace converge::schema
