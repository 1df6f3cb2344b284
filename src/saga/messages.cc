#include "saga/messages.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <optional>

#include "converge/event.h"
#include "core/coding.h"

namespace converge::saga_internal {
namespace {

constexpr uint8_t kVersion = 0x01;
constexpr uint8_t kExtString = 0, kExtInteger = 1, kExtBoolean = 2;
constexpr uint8_t kDataJson = 1, kDataBinary = 3;

void PutZigzag(std::string* out, int64_t v) { PutVarint(out, internal::ZigZagEncode(v)); }

void ExtString(std::string* out, std::string_view name, std::string_view value) {
  out->push_back(static_cast<char>(kExtString));
  PutString(out, name);
  PutString(out, value);
}

void ExtInt(std::string* out, std::string_view name, int64_t value) {
  out->push_back(static_cast<char>(kExtInteger));
  PutString(out, name);
  PutZigzag(out, value);
}

void ExtBool(std::string* out, std::string_view name, bool value) {
  out->push_back(static_cast<char>(kExtBoolean));
  PutString(out, name);
  out->push_back(value ? 1 : 0);
}

// The fields a saga message needs out of a binary record. Views point into the record.
struct Parsed {
  std::string_view id, source, type;
  std::array<std::pair<std::string_view, std::string_view>, 16> strings{};
  size_t n_strings = 0;
  std::array<std::pair<std::string_view, int64_t>, 16> ints{};  // ints and booleans
  size_t n_ints = 0;
  std::string_view data;
  uint8_t data_kind = 0;

  std::optional<std::string_view> Str(std::string_view name) const {
    for (size_t i = 0; i < n_strings; ++i) {
      if (strings[i].first == name) return strings[i].second;
    }
    return std::nullopt;
  }
  std::optional<int64_t> Int(std::string_view name) const {
    for (size_t i = 0; i < n_ints; ++i) {
      if (ints[i].first == name) return ints[i].second;
    }
    return std::nullopt;
  }
};

Status Malformed(const char* what) {
  return DataLossError(std::string("saga message: malformed event record (") + what + ")");
}

Result<Parsed> Parse(std::string_view record) {
  ByteReader in(record);
  Parsed p;
  uint8_t version = 0, flags = 0;
  if (!in.U8(&version) || version != kVersion) return Malformed("version");
  if (!in.U8(&flags) || (flags & 0xC0) != 0) return Malformed("flags");
  if (!in.String(&p.id) || !in.String(&p.source) || !in.String(&p.type)) {
    return Malformed("attributes");
  }
  std::string_view skip;
  for (uint8_t bit : {0x01, 0x02, 0x04, 0x08}) {
    if ((flags & bit) && !in.String(&skip)) return Malformed("optional attributes");
  }
  uint64_t n = 0;
  if (!in.Varint(&n) || n > 64) return Malformed("extension count");
  for (uint64_t i = 0; i < n; ++i) {
    uint8_t kind = 0;
    std::string_view name;
    if (!in.U8(&kind) || !in.String(&name)) return Malformed("extension");
    if (kind == kExtString) {
      std::string_view value;
      if (!in.String(&value)) return Malformed("extension value");
      if (p.n_strings < p.strings.size()) p.strings[p.n_strings++] = {name, value};
    } else if (kind == kExtInteger) {
      uint64_t z = 0;
      if (!in.Varint(&z)) return Malformed("extension value");
      const auto v = internal::ZigZagDecode(z);
      if (p.n_ints < p.ints.size()) p.ints[p.n_ints++] = {name, v};
    } else if (kind == kExtBoolean) {
      uint8_t b = 0;
      if (!in.U8(&b) || b > 1) return Malformed("extension value");
      if (p.n_ints < p.ints.size()) p.ints[p.n_ints++] = {name, b};
    } else {
      return Malformed("extension kind");
    }
  }
  p.data_kind = (flags >> 4) & 0x03;
  if (p.data_kind != 0 && !in.String(&p.data)) return Malformed("data");
  if (!in.done()) return Malformed("trailing bytes");
  return p;
}

Result<SagaCommandKind> KindFromName(std::string_view s) {
  if (s == "action") return SagaCommandKind::kAction;
  if (s == "compensate") return SagaCommandKind::kCompensate;
  if (s == "cancel") return SagaCommandKind::kCancel;
  return InvalidArgumentError("saga message: unknown kind '" + std::string(s) + "'");
}

std::optional<StatusCode> CodeFromName(std::string_view s) {
  for (int c = 1; c <= 16; ++c) {
    const auto code = static_cast<StatusCode>(c);
    if (StatusCodeName(code) == s) return code;
  }
  return std::nullopt;
}

// An Integer attribute, or its CloudEvents binary-mode spelling (every extension arrives as a
// String there): decimal digits only, no sign, no leading zeros, no spaces. nullopt if absent;
// InvalidArgument naming the attribute if present but not an integer.
Result<std::optional<int64_t>> IntAttribute(const Parsed& p, std::string_view name) {
  if (std::optional<int64_t> v = p.Int(name)) return std::optional<int64_t>(*v);
  std::optional<std::string_view> s = p.Str(name);
  if (!s) return std::optional<int64_t>();
  int64_t v = 0;
  const char* end = s->data() + s->size();
  auto [ptr, ec] = std::from_chars(s->data(), end, v);
  const bool digits_only = !s->empty() && (*s)[0] != '-' && (s->size() == 1 || (*s)[0] != '0');
  if (ec != std::errc() || ptr != end || !digits_only) {
    return InvalidArgumentError("saga message: attribute '" + std::string(name) +
                                "' must be a non-negative integer, got the string '" +
                                std::string(s->substr(0, 40)) + "'");
  }
  return std::optional<int64_t>(v);
}

// A Boolean attribute, or its binary-mode spelling "true" / "false" (exactly).
Result<std::optional<bool>> BoolAttribute(const Parsed& p, std::string_view name) {
  if (std::optional<int64_t> v = p.Int(name)) return std::optional<bool>(*v != 0);
  std::optional<std::string_view> s = p.Str(name);
  if (!s) return std::optional<bool>();
  if (*s == "true") return std::optional<bool>(true);
  if (*s == "false") return std::optional<bool>(false);
  return InvalidArgumentError("saga message: attribute '" + std::string(name) +
                              "' must be a boolean (true or false), got the string '" +
                              std::string(s->substr(0, 40)) + "'");
}

}  // namespace

std::string ReplyToken(std::string_view key, std::string_view command_id) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(command_id.data()), command_id.size(), mac, &len);
  // 128 bits are plenty for a value that cannot be tried offline.
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(32);
  for (unsigned int i = 0; i < 16 && i < len; ++i) {
    out.push_back(kHex[mac[i] >> 4]);
    out.push_back(kHex[mac[i] & 0x0f]);
  }
  return out;
}

namespace {

// Trace and span ids need to be unique, not secret: a fast 64-bit mix (SplitMix64's finalizer
// over FNV-1a) instead of an HMAC, which would cost more than the rest of a command.
uint64_t Mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

uint64_t Hash64(std::string_view bytes, uint64_t seed) {
  uint64_t h = 0xcbf29ce484222325ULL ^ Mix64(seed);
  for (char c : bytes) {
    h ^= static_cast<uint8_t>(c);
    h *= 0x100000001b3ULL;
  }
  return Mix64(h);
}

template <size_t N>
void PutId(uint64_t v, std::array<uint8_t, N>& out, size_t at) {
  for (size_t i = 0; i < 8; ++i) out[at + i] = static_cast<uint8_t>(v >> (56 - 8 * i));
}

template <size_t N>
void NotAllZero(std::array<uint8_t, N>& id) {
  if (std::all_of(id.begin(), id.end(), [](uint8_t b) { return b == 0; })) id.back() = 1;
}

}  // namespace

std::string StartTrace(std::string_view requested, std::string_view key, std::string_view saga_id,
                       Random& random) {
  // (Most starts have none: no parse, whose error message costs more than the rest.)
  Result<TraceParent> tp = requested.empty() ? Result<TraceParent>(InvalidArgumentError(""))
                                             : TraceParent::Parse(requested);
  if (tp.ok()) {
    tp->version = 0;  // the fields of version 00 are the ones this code knows
    return tp->ToString();
  }
  TraceParent fresh;
  if (!key.empty()) {
    // Keyed by the reply-token key: ids unique per saga id, not derived from it alone.
    const uint64_t k = Hash64(key, 0);
    PutId(Hash64(saga_id, k ^ 1), fresh.trace_id, 0);
    PutId(Hash64(saga_id, k ^ 2), fresh.trace_id, 8);
    PutId(Hash64(saga_id, k ^ 3), fresh.parent_id, 0);
  } else {
    random.Fill(fresh.trace_id);
    random.Fill(fresh.parent_id);
  }
  NotAllZero(fresh.trace_id);
  NotAllZero(fresh.parent_id);
  return fresh.ToString();
}

bool ValidTraceparent(std::string_view t) {
  // The rules of TraceParent::Parse (converge/event.h), without building a value.
  auto hex = [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); };
  auto hex_run = [&](size_t from, size_t n, bool* zero) {
    *zero = true;
    for (size_t i = from; i < from + n; ++i) {
      if (!hex(t[i])) return false;
      if (t[i] != '0') *zero = false;
    }
    return true;
  };
  if (t.size() < 55 || t[2] != '-' || t[35] != '-' || t[52] != '-') return false;
  bool version_zero = false, trace_zero = false, span_zero = false, flags_zero = false;
  if (!hex_run(0, 2, &version_zero) || !hex_run(3, 32, &trace_zero) ||
      !hex_run(36, 16, &span_zero) || !hex_run(53, 2, &flags_zero)) {
    return false;
  }
  if (t[0] == 'f' && t[1] == 'f') return false;
  if (version_zero && t.size() != 55) return false;
  if (t.size() > 55 && t[55] != '-') return false;
  return !trace_zero && !span_zero;
}

bool ChildTraceparentInto(std::string_view parent, std::string_view id,
                          std::array<char, 55>* child) {
  if (!ValidTraceparent(parent)) return false;
  static constexpr char kHex[] = "0123456789abcdef";
  std::array<char, 55>& out = *child;
  std::copy(parent.begin(), parent.begin() + 55, out.begin());
  out[0] = '0';
  out[1] = '0';
  // Seeded by the trace id and the parent's span id: a child per (parent, id).
  uint64_t seed = 0;
  for (size_t i = 3; i < 52; ++i) seed = seed * 131 + static_cast<uint8_t>(parent[i]);
  uint64_t span = Hash64(id, seed);
  if (span == 0) span = 1;  // all zeros is not a valid span id
  for (size_t i = 0; i < 16; ++i) out[36 + i] = kHex[(span >> (60 - 4 * i)) & 0xF];
  return true;
}

std::string ChildTraceparent(std::string_view parent, std::string_view id) {
  std::array<char, 55> child;
  if (!ChildTraceparentInto(parent, id, &child)) return "";
  return std::string(child.data(), child.size());
}

bool ReplyTokenMatches(std::string_view expected, std::string_view got) {
  return expected.size() == got.size() &&
         CRYPTO_memcmp(expected.data(), got.data(), expected.size()) == 0;
}

std::optional<std::string> ReplySagaId(std::string_view record) {
  Result<Parsed> p = Parse(record);
  if (!p.ok() || p->type != kReplyType) return std::nullopt;
  std::optional<std::string_view> id = p->Str("sagaid");
  if (!id) return std::nullopt;
  return std::string(*id);
}

std::string CommandEventId(std::string_view saga_id, uint32_t step, SagaCommandKind kind,
                           uint32_t attempt) {
  std::string id;
  id.reserve(saga_id.size() + 24);
  id.append(saga_id);
  id.push_back('/');
  id.append(std::to_string(step));
  id.push_back('/');
  id.append(SagaCommandKindName(kind));
  id.push_back('/');
  id.append(std::to_string(attempt));
  return id;
}

void EncodeCommand(const OutCommand& c, std::string_view source, std::string_view reply_topic,
                   std::string* out) {
  const SagaStepDefinition& step = c.def->steps[c.step];
  const bool has_data = c.data != nullptr && !c.data->empty();
  out->push_back(static_cast<char>(kVersion));
  out->push_back(static_cast<char>(has_data ? (kDataJson << 4) : 0));
  PutString(out, CommandEventId(c.saga_id, c.step, c.kind, c.attempt));
  PutString(out, source);
  std::string_view type = c.kind == SagaCommandKind::kAction       ? step.action
                          : c.kind == SagaCommandKind::kCompensate ? step.compensation
                                                                   : kCancelType;
  PutString(out, type);
  PutVarint(out, 9 + (c.token.empty() ? 0 : 1) + (c.traceparent.empty() ? 0 : 1));
  ExtInt(out, "sagaattempt", c.attempt);
  ExtString(out, "sagadef", c.def->name);
  ExtString(out, "sagaid", c.saga_id);
  ExtString(out, "sagakind", SagaCommandKindName(c.kind));
  ExtString(out, "sagareplyto", reply_topic);
  ExtBool(out, "sagaretriable", c.retriable);
  ExtInt(out, "sagastep", c.step);
  ExtString(out, "sagastepname", step.name);
  if (!c.token.empty()) ExtString(out, "sagatoken", c.token);
  ExtInt(out, "sagaversion", c.def->version);
  if (!c.traceparent.empty()) ExtString(out, "traceparent", c.traceparent.view());
  if (has_data) PutString(out, *c.data);
}

Result<CommandView> DecodeCommand(std::string_view record) {
  CONVERGE_ASSIGN_OR_RETURN(Parsed p, Parse(record));
  auto id = p.Str("sagaid");
  auto def = p.Str("sagadef");
  auto kind = p.Str("sagakind");
  auto reply_to = p.Str("sagareplyto");
  auto step_name = p.Str("sagastepname");
  CONVERGE_ASSIGN_OR_RETURN(std::optional<int64_t> step, IntAttribute(p, "sagastep"));
  CONVERGE_ASSIGN_OR_RETURN(std::optional<int64_t> attempt, IntAttribute(p, "sagaattempt"));
  CONVERGE_ASSIGN_OR_RETURN(std::optional<int64_t> version, IntAttribute(p, "sagaversion"));
  CONVERGE_ASSIGN_OR_RETURN(std::optional<bool> retriable, BoolAttribute(p, "sagaretriable"));
  if (!id || !def || !kind || !reply_to || !step || !attempt || !version) {
    return InvalidArgumentError("saga message: event '" + std::string(p.id) +
                                "' is not a saga command (missing saga extensions)");
  }
  if (*step < 0 || *step >= static_cast<int64_t>(SagaLimits::kMaxSteps) || *attempt < 1 ||
      *attempt > UINT32_MAX || *version < 1 || *version > UINT32_MAX) {
    return InvalidArgumentError("saga message: command with step/attempt/version out of range");
  }
  CONVERGE_ASSIGN_OR_RETURN(SagaCommandKind k, KindFromName(*kind));
  CommandView v;
  v.command.saga_id = *id;
  v.command.definition = *def;
  v.command.version = static_cast<uint32_t>(*version);
  v.command.step = static_cast<uint32_t>(*step);
  v.command.step_name = step_name.value_or("");
  v.command.kind = k;
  v.command.attempt = static_cast<uint32_t>(*attempt);
  v.command.type = p.type;
  v.command.data = p.data;
  v.command.retriable = retriable.value_or(false);
  v.command.token = p.Str("sagatoken").value_or("");
  v.command.traceparent = p.Str("traceparent").value_or("");
  v.reply_to = *reply_to;
  v.event_id = p.id;
  return v;
}

void EncodeReply(const SagaReply& reply, std::string* out) {
  std::string_view outcome = reply.outcome == SagaReply::Outcome::kOk       ? "ok"
                             : reply.outcome == SagaReply::Outcome::kFailed ? "failed"
                                                                            : "retry";
  std::string_view body = reply.outcome == SagaReply::Outcome::kOk ? std::string_view(reply.result)
                                                                   : reply.status.message();
  out->push_back(static_cast<char>(kVersion));
  out->push_back(static_cast<char>(body.empty() ? 0 : (kDataBinary << 4)));
  std::string id = CommandEventId(reply.saga_id, reply.step, reply.kind, reply.attempt);
  id.append("/reply");
  PutString(out, id);
  PutString(out, "/converge/saga/participant");
  PutString(out, kReplyType);
  PutVarint(out, 7 + (reply.token.empty() ? 0 : 1) + (reply.traceparent.empty() ? 0 : 1));
  ExtBool(out, "sagaapplied", reply.applied);
  ExtInt(out, "sagaattempt", reply.attempt);
  ExtString(out, "sagacode", StatusCodeName(reply.status.code()));
  ExtString(out, "sagaid", reply.saga_id);
  ExtString(out, "sagakind", SagaCommandKindName(reply.kind));
  ExtString(out, "sagaoutcome", outcome);
  ExtInt(out, "sagastep", reply.step);
  if (!reply.token.empty()) ExtString(out, "sagatoken", reply.token);
  if (!reply.traceparent.empty()) ExtString(out, "traceparent", reply.traceparent);
  if (!body.empty()) PutString(out, body);
}

Result<SagaReply> DecodeReply(std::string_view record, bool with_trace) {
  CONVERGE_ASSIGN_OR_RETURN(Parsed p, Parse(record));
  if (p.type != kReplyType) {
    return InvalidArgumentError("saga message: event type '" + std::string(p.type) +
                                "' is not a saga reply");
  }
  auto id = p.Str("sagaid");
  auto kind = p.Str("sagakind");
  auto outcome = p.Str("sagaoutcome");
  auto code = p.Str("sagacode");
  CONVERGE_ASSIGN_OR_RETURN(std::optional<int64_t> step, IntAttribute(p, "sagastep"));
  CONVERGE_ASSIGN_OR_RETURN(std::optional<int64_t> attempt, IntAttribute(p, "sagaattempt"));
  CONVERGE_ASSIGN_OR_RETURN(std::optional<bool> applied, BoolAttribute(p, "sagaapplied"));
  if (!id || !kind || !outcome || !step || !attempt) {
    std::string missing;
    for (auto [name, present] : {std::pair<const char*, bool>{"sagaid", id.has_value()},
                                 {"sagakind", kind.has_value()},
                                 {"sagaoutcome", outcome.has_value()},
                                 {"sagastep", step.has_value()},
                                 {"sagaattempt", attempt.has_value()}}) {
      if (present) continue;
      if (!missing.empty()) missing += ", ";
      missing += name;
    }
    return InvalidArgumentError("saga message: reply without " + missing);
  }
  if (*step < 0 || *step > UINT32_MAX || *attempt < 0 || *attempt > UINT32_MAX) {
    return InvalidArgumentError("saga message: reply step/attempt out of range");
  }
  SagaReply r;
  r.saga_id.assign(id->data(), id->size());
  r.step = static_cast<uint32_t>(*step);
  r.attempt = static_cast<uint32_t>(*attempt);
  CONVERGE_ASSIGN_OR_RETURN(r.kind, KindFromName(*kind));
  if (*outcome == "ok") {
    r.outcome = SagaReply::Outcome::kOk;
    r.result.assign(p.data.data(), p.data.size());
  } else if (*outcome == "failed" || *outcome == "retry") {
    r.outcome = *outcome == "failed" ? SagaReply::Outcome::kFailed : SagaReply::Outcome::kRetry;
    std::optional<StatusCode> c = code ? CodeFromName(*code) : std::nullopt;
    if (!c) {
      c = r.outcome == SagaReply::Outcome::kFailed ? StatusCode::kFailedPrecondition
                                                   : StatusCode::kUnavailable;
    }
    r.status = Status(*c, p.data);
  } else {
    return InvalidArgumentError("saga message: unknown outcome '" + std::string(*outcome) + "'");
  }
  r.applied = applied.value_or(false);
  r.token = std::string(p.Str("sagatoken").value_or(""));
  // The orchestrator does not use it (replies are correlated by the saga attributes).
  if (with_trace) r.traceparent = std::string(p.Str("traceparent").value_or(""));
  return r;
}

}  // namespace converge::saga_internal
