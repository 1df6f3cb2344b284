#include "store/http_handler.h"

#include <algorithm>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <charconv>
#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>

#include "core/event_internal.h"
#include "core/storage_full.h"

namespace converge::store_internal {
namespace {

namespace json = boost::json;

constexpr std::string_view kPrefix = "/v1/collections";
constexpr std::string_view kTransactionSegment = "_transaction";

void AppendJsonString(std::string_view s, std::string* out) {
  *out += json::serialize(json::string_view(s.data(), s.size()));
}

StoreHttpResponse JsonResponse(int status, std::string body) {
  StoreHttpResponse r;
  r.status = status;
  r.headers.emplace_back("Content-Type", "application/json");
  r.body = std::move(body);
  return r;
}

StoreHttpResponse Error(int status, std::string_view code, std::string_view message) {
  std::string body = "{\"code\":";
  AppendJsonString(code, &body);
  body += ",\"message\":";
  AppendJsonString(message, &body);
  body += "}";
  return JsonResponse(status, std::move(body));
}

StoreHttpResponse MethodNotAllowed(std::string_view allow) {
  StoreHttpResponse r = Error(405, "METHOD_NOT_ALLOWED", "allowed methods: " + std::string(allow));
  r.headers.emplace_back("Allow", std::string(allow));
  return r;
}

// The value of query parameter `name` (percent-decoded), or nullopt.
Result<std::optional<std::string>> QueryParam(std::string_view query, std::string_view name) {
  while (!query.empty()) {
    const size_t amp = query.find('&');
    const std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    const size_t eq = pair.find('=');
    if (pair.substr(0, eq) != name) continue;
    if (eq == std::string_view::npos) return std::optional<std::string>(std::string());
    CONVERGE_ASSIGN_OR_RETURN(std::string v, PercentDecode(pair.substr(eq + 1)));
    return std::optional<std::string>(std::move(v));
  }
  return std::optional<std::string>();
}

Result<int64_t> ParseInt(std::string_view text, std::string_view what) {
  int64_t v = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || ec != std::errc() || ptr != text.data() + text.size()) {
    return InvalidArgumentError(std::string(what) + " must be an integer, got '" +
                                std::string(text.substr(0, 64)) + "'");
  }
  return v;
}

bool IsJsonMediaType(std::string_view media_type) {
  std::string_view t = media_type.substr(0, media_type.find(';'));
  while (!t.empty() && t.back() == ' ') t.remove_suffix(1);
  std::string lower(t);
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  const size_t slash = lower.find('/');
  if (slash == std::string::npos) return false;
  const std::string_view sub = std::string_view(lower).substr(slash + 1);
  return sub == "json" || (sub.size() > 5 && sub.substr(sub.size() - 5) == "+json");
}

Status CheckJsonBody(const StoreHttpRequest& r) {
  if (r.content_type && !r.content_type->empty() && !IsJsonMediaType(*r.content_type)) {
    return Status(StatusCode::kInvalidArgument, "unsupported media type '" +
                                                    std::string(r.content_type->substr(0, 100)) +
                                                    "': send application/json");
  }
  return Status::Ok();
}

StoreHttpResponse UnsupportedMediaType(const Status& s) {
  return Error(415, "UNSUPPORTED_MEDIA_TYPE", s.message());
}

// Preconditions from the headers. If-None-Match accepts only "*" on writes.
Result<Precondition> PreconditionFrom(const StoreHttpRequest& r) {
  Precondition pre;
  if (r.if_match) {
    std::string_view v = *r.if_match;
    while (!v.empty() && v.front() == ' ') v.remove_prefix(1);
    while (!v.empty() && v.back() == ' ') v.remove_suffix(1);
    if (v != "*") {
      Result<uint64_t> version = VersionFromETag(v);
      if (!version.ok()) return version.status().WithContext("If-Match");
    }
    pre.if_match = std::string(v);
  }
  if (r.if_none_match) {
    std::string_view v = *r.if_none_match;
    while (!v.empty() && v.front() == ' ') v.remove_prefix(1);
    while (!v.empty() && v.back() == ' ') v.remove_suffix(1);
    if (v != "*") {
      return InvalidArgumentError("If-None-Match: only '*' (create only) is supported on writes");
    }
    pre.if_none_match_any = true;
  }
  return pre;
}

Result<json::value> ParseJson(std::string_view body, const StoreHttpOptions& options,
                              std::string_view what) {
  if (body.size() > options.max_request_json_bytes) {
    return ResourceExhaustedError(std::string(what) + " exceeds " +
                                  std::to_string(options.max_request_json_bytes) + " bytes");
  }
  json::parse_options po;
  po.max_depth = options.max_json_depth;
  json::error_code ec;
  json::value v = json::parse(json::string_view(body.data(), body.size()), ec, {}, po);
  if (ec) return InvalidArgumentError(std::string(what) + " is not valid JSON: " + ec.message());
  // The parser keeps the last of repeated members: {"if_match":"\"1\"","if_match":"*"} would
  // silently drop one of them. Refused instead.
  if (Status unique = ::converge::internal::CheckUniqueJsonKeys(body, options.max_json_depth);
      !unique.ok()) {
    return InvalidArgumentError(std::string(what) + ": " + std::string(unique.message()));
  }
  return v;
}

// InvalidArgument naming the first member of `o` that is not in `allowed` (a typo such as
// "if_macth" must not turn a conditional write into an unconditional one).
Status CheckMembers(const json::object& o, std::initializer_list<std::string_view> allowed,
                    std::string_view what) {
  for (const auto& kv : o) {
    const std::string_view k(kv.key());
    if (std::find(allowed.begin(), allowed.end(), k) != allowed.end()) continue;
    std::string m = "unknown field '";
    m += k.substr(0, 100);
    m += "' in ";
    m += what;
    m += " (allowed: ";
    bool first = true;
    for (std::string_view a : allowed) {
      if (!first) m += ", ";
      first = false;
      m += a;
    }
    m += ")";
    return InvalidArgumentError(m);
  }
  return Status::Ok();
}

// A TTL in milliseconds as clients may give it: 0 (never expires) .. kMaxTtlMs.
Status CheckTtl(int64_t ttl_ms, std::string_view what) {
  if (ttl_ms >= 0 && ttl_ms <= kMaxTtlMs) return Status::Ok();
  std::string m(what);
  m += " must be an integer in [0, ";
  m += std::to_string(kMaxTtlMs);
  m += "], got ";
  m += std::to_string(ttl_ms);
  return InvalidArgumentError(m);
}

// InvalidArgument naming the first query parameter not in `allowed`, or given twice.
Status CheckQuery(std::string_view query, std::initializer_list<std::string_view> allowed) {
  std::vector<std::string_view> seen;
  while (!query.empty()) {
    const size_t amp = query.find('&');
    const std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    if (pair.empty()) continue;
    const std::string_view name = pair.substr(0, pair.find('='));
    if (std::find(allowed.begin(), allowed.end(), name) == allowed.end()) {
      std::string m = "unknown query parameter '";
      m += name.substr(0, 100);
      m += "'";
      return InvalidArgumentError(m);
    }
    if (std::find(seen.begin(), seen.end(), name) != seen.end()) {
      std::string m = "query parameter '";
      m += name;
      m += "' appears more than once";
      return InvalidArgumentError(m);
    }
    seen.push_back(name);
  }
  return Status::Ok();
}

// "'<name>' <what>" (built by appending: GCC 12 warns falsely on "'" + std::string(...)).
Status MemberError(std::string_view name, std::string_view what) {
  std::string m = "'";
  m += name;
  m += "' ";
  m += what;
  return InvalidArgumentError(m);
}

Result<std::string> StringMember(const json::object& o, std::string_view name, bool required) {
  const json::value* v = o.if_contains(json::string_view(name.data(), name.size()));
  if (v == nullptr || v->is_null()) {
    if (required) return MemberError(name, "is required");
    return std::string();
  }
  if (!v->is_string()) return MemberError(name, "must be a string");
  return std::string(v->as_string());
}

// An optional string member that, when present, must be a non-empty string: an empty or null
// precondition must not quietly mean "no precondition".
Result<std::optional<std::string>> OptionalStringMember(const json::object& o,
                                                        std::string_view name) {
  const json::value* v = o.if_contains(json::string_view(name.data(), name.size()));
  if (v == nullptr) return std::optional<std::string>();
  if (!v->is_string() || v->as_string().empty()) {
    return MemberError(name, "must be a non-empty string (omit it for none)");
  }
  return std::optional<std::string>(std::string(v->as_string()));
}

Result<int64_t> IntMember(const json::object& o, std::string_view name, int64_t fallback) {
  const json::value* v = o.if_contains(json::string_view(name.data(), name.size()));
  if (v == nullptr || v->is_null()) return fallback;
  if (v->is_int64()) return v->as_int64();
  if (v->is_uint64() && v->as_uint64() <= static_cast<uint64_t>(INT64_MAX)) {
    return static_cast<int64_t>(v->as_uint64());
  }
  return MemberError(name, "must be an integer");
}

Result<CollectionConfig> ConfigFromJson(const json::value& v, const Caller& caller) {
  if (!v.is_object()) return InvalidArgumentError("a collection config must be a JSON object");
  const json::object& o = v.as_object();
  for (const auto& kv : o) {
    const std::string_view k(kv.key());
    if (k != "owner" && k != "writers" && k != "default_ttl_ms" && k != "max_document_bytes" &&
        k != "merge_fields") {
      return InvalidArgumentError("unknown collection config field '" + std::string(k) + "'");
    }
  }
  CollectionConfig config;
  CONVERGE_ASSIGN_OR_RETURN(config.owner, StringMember(o, "owner", false));
  if (config.owner.empty()) config.owner = caller.service;
  if (const json::value* w = o.if_contains("writers"); w != nullptr && !w->is_null()) {
    if (!w->is_array()) return InvalidArgumentError("'writers' must be an array of strings");
    for (const json::value& e : w->as_array()) {
      if (!e.is_string()) return InvalidArgumentError("'writers' must be an array of strings");
      config.writers.emplace_back(e.as_string());
    }
  }
  CONVERGE_ASSIGN_OR_RETURN(config.default_ttl_ms, IntMember(o, "default_ttl_ms", 0));
  CONVERGE_RETURN_IF_ERROR(CheckTtl(config.default_ttl_ms, "'default_ttl_ms'"));
  CONVERGE_ASSIGN_OR_RETURN(const int64_t max_doc, IntMember(o, "max_document_bytes", 0));
  if (max_doc < 0 || max_doc > static_cast<int64_t>(UINT32_MAX)) {
    return InvalidArgumentError("'max_document_bytes' out of range");
  }
  config.max_document_bytes = static_cast<uint32_t>(max_doc);
  if (const json::value* m = o.if_contains("merge_fields"); m != nullptr && !m->is_null()) {
    if (!m->is_object()) {
      return InvalidArgumentError("'merge_fields' must map field names to merge function names");
    }
    for (const auto& kv : m->as_object()) {
      if (!kv.value().is_string()) {
        return InvalidArgumentError("'merge_fields' must map field names to merge function names");
      }
      config.merge_fields.emplace(std::string(kv.key()), std::string(kv.value().as_string()));
    }
  }
  return config;
}

std::string ConfigJson(const std::string& name, const CollectionConfig& c,
                       const CollectionInfo* info) {
  json::object o;
  o["name"] = name;
  o["owner"] = c.owner;
  json::array writers;
  for (const auto& w : c.writers) writers.emplace_back(w);
  o["writers"] = std::move(writers);
  o["default_ttl_ms"] = c.default_ttl_ms;
  o["max_document_bytes"] = c.max_document_bytes;
  json::object merge;
  for (const auto& [f, fn] : c.merge_fields) merge[f] = fn;
  o["merge_fields"] = std::move(merge);
  if (info != nullptr) {
    o["documents"] = info->documents;
    o["bytes"] = info->bytes;
  }
  return json::serialize(o);
}

void AppendWriteResult(const WriteResult& w, std::string* out) {
  *out += "{\"version\":";
  *out += std::to_string(w.version);
  *out += ",\"etag\":";
  AppendJsonString(w.etag, out);
  *out += ",\"created\":";
  *out += w.created ? "true" : "false";
  *out += ",\"merged\":";
  *out += w.merged ? "true" : "false";
  *out += "}";
}

void AddVersionHeaders(uint64_t version, std::string etag, StoreHttpResponse* r) {
  r->headers.emplace_back("ETag", std::move(etag));
  r->headers.emplace_back("Converge-Version", std::to_string(version));
}

}  // namespace

Result<std::string> PercentDecode(std::string_view in) {
  std::string out;
  out.reserve(in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '%') {
      out.push_back(in[i]);
      continue;
    }
    auto hex = [](char c) -> int {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      if (c >= 'A' && c <= 'F') return c - 'A' + 10;
      return -1;
    };
    if (i + 2 >= in.size()) {
      return InvalidArgumentError("malformed percent-escape in the request target");
    }
    const int hi = hex(in[i + 1]), lo = hex(in[i + 2]);
    if (hi < 0 || lo < 0) {
      return InvalidArgumentError("malformed percent-escape in the request target");
    }
    out.push_back(static_cast<char>(hi * 16 + lo));
    i += 2;
  }
  return out;
}

StoreHttpResponse StoreErrorResponse(const Status& given, bool precondition_route) {
  // A write the disk refused is a retryable 503 (like every route), never the 413 of a limit.
  const Status status = StorageFullAsUnavailable(given);
  int code = 500;
  switch (status.code()) {
    case StatusCode::kInvalidArgument:
    case StatusCode::kOutOfRange:
      code = 400;
      break;
    case StatusCode::kUnauthenticated:
      code = 401;
      break;
    case StatusCode::kPermissionDenied:
      code = 403;
      break;
    case StatusCode::kNotFound:
      code = 404;
      break;
    case StatusCode::kAlreadyExists:
      code = precondition_route ? 412 : 409;
      break;
    case StatusCode::kFailedPrecondition:
      code = 409;
      break;
    case StatusCode::kAborted:
      code = 412;
      break;
    case StatusCode::kResourceExhausted:
      code = 413;
      break;
    case StatusCode::kUnavailable:
      code = 503;
      break;
    case StatusCode::kDeadlineExceeded:
      code = 504;
      break;
    default:
      code = 500;
  }
  // Cancelled (the store is closing) reads as Unavailable: retry elsewhere or later.
  if (status.code() == StatusCode::kCancelled) code = 503;
  const std::string_view name =
      status.code() == StatusCode::kCancelled ? "UNAVAILABLE" : StatusCodeName(status.code());
  StoreHttpResponse r = Error(code, name, status.message());
  if (code == 503) r.headers.emplace_back("Retry-After", "1");
  return r;
}

StoreHttpHandler::StoreHttpHandler(Store& store, StoreHttpOptions options)
    : store_(store), options_(options) {}

bool StoreHttpHandler::Matches(std::string_view target) {
  const std::string_view path = target.substr(0, target.find('?'));
  if (path.substr(0, kPrefix.size()) != kPrefix) return false;
  return path.size() == kPrefix.size() || path[kPrefix.size()] == '/';
}

bool StoreHttpHandler::IsDocumentWrite(std::string_view method, std::string_view target) {
  const std::string_view path = target.substr(0, target.find('?'));
  if (!Matches(path) || path.size() < kPrefix.size() + 2) return false;
  const std::string_view rest = path.substr(kPrefix.size() + 1);
  const size_t slash = rest.find('/');
  if (slash == std::string_view::npos) return method == "POST" && rest == kTransactionSegment;
  const std::string_view after = rest.substr(slash + 1);
  return (method == "PUT" || method == "DELETE") && after.size() > 5 &&
         after.substr(0, 5) == "docs/";
}

std::vector<StoreHttpHandler::RouteInfo> StoreHttpHandler::Routes() {
  return {
      {"GET", "/v1/collections"},
      {"PUT", "/v1/collections/{collection}"},
      {"GET", "/v1/collections/{collection}"},
      {"DELETE", "/v1/collections/{collection}"},
      {"GET", "/v1/collections/{collection}/docs"},
      {"GET", "/v1/collections/{collection}/docs/{key}"},
      {"PUT", "/v1/collections/{collection}/docs/{key}"},
      {"DELETE", "/v1/collections/{collection}/docs/{key}"},
      {"POST", "/v1/collections/_transaction"},
  };
}

StoreHttpResponse StoreHttpHandler::Handle(const StoreHttpRequest& r) {
  struct Slot {
    std::mutex mu;
    std::condition_variable cv;
    std::optional<StoreHttpResponse> response;
  };
  auto slot = std::make_shared<Slot>();
  HandleAsync(r, [slot](StoreHttpResponse resp) {
    std::lock_guard<std::mutex> g(slot->mu);
    slot->response = std::move(resp);
    slot->cv.notify_one();
  });
  std::unique_lock<std::mutex> l(slot->mu);
  slot->cv.wait(l, [&] { return slot->response.has_value(); });
  return std::move(*slot->response);
}

void StoreHttpHandler::HandleAsync(const StoreHttpRequest& r, Done done) {
  try {
    Route(r, done);
  } catch (const std::exception& e) {
    // Third-party code (JSON) must not take the server down. `done` is only moved from when
    // the store accepted the write, which throws nothing afterwards.
    if (done) done(StoreErrorResponse(InternalError(std::string("store API: ") + e.what())));
  }
}

bool StoreHttpHandler::TryHandleInline(const StoreHttpRequest& r, Done& done) {
  const std::string_view path = r.target.substr(0, r.target.find('?'));
  if (!Matches(path)) return false;
  std::string_view rest = path.substr(kPrefix.size());
  if (rest.size() < 2) return false;
  rest.remove_prefix(1);
  const size_t slash = rest.find('/');
  if (slash == std::string_view::npos) {
    // Only the transaction route here, and only when writes do not block.
    if (!options_.inline_writes || r.method != "POST" || rest != kTransactionSegment) {
      return false;
    }
    HandleAsync(r, std::move(done));
    return true;
  }
  const std::string_view after = rest.substr(slash + 1);
  if (after.size() <= 5 || after.substr(0, 5) != "docs/") return false;
  if (r.method == "GET") {
    if (std::optional<StoreHttpResponse> read = TryRead(r)) {
      done(std::move(*read));
      return true;
    }
    // A read of a change still being synced: answered when it is durable, without holding a
    // thread meanwhile (when the store syncs in the background).
    if (!options_.inline_writes) return false;
    Result<std::string> collection = PercentDecode(rest.substr(0, slash));
    Result<std::string> key = PercentDecode(after.substr(5));
    if (!collection.ok() || !key.ok()) return false;  // HandleAsync replies 400
    store_.GetAsync(*collection, *key, [done = std::move(done)](Result<Document> doc) {
      done(DocumentResponse(std::move(doc)));
    });
    return true;
  }
  if (!options_.inline_writes || (r.method != "PUT" && r.method != "DELETE")) return false;
  HandleAsync(r, std::move(done));
  return true;
}

std::optional<StoreHttpResponse> StoreHttpHandler::TryRead(const StoreHttpRequest& r) {
  if (r.method != "GET") return std::nullopt;
  const std::string_view path = r.target.substr(0, r.target.find('?'));
  if (!Matches(path)) return std::nullopt;
  std::string_view rest = path.substr(kPrefix.size());
  if (rest.size() < 2) return std::nullopt;
  rest.remove_prefix(1);
  const size_t slash = rest.find('/');
  if (slash == std::string_view::npos) return std::nullopt;
  const std::string_view after = rest.substr(slash + 1);
  if (after.size() <= 5 || after.substr(0, 5) != "docs/") return std::nullopt;
  Result<std::string> collection = PercentDecode(rest.substr(0, slash));
  Result<std::string> key = PercentDecode(after.substr(5));
  if (!collection.ok() || !key.ok()) return std::nullopt;  // HandleAsync replies 400
  try {
    Result<Document> doc = store_.TryGet(*collection, *key);
    if (!doc.ok() && doc.status().code() == StatusCode::kUnavailable) return std::nullopt;
    return DocumentResponse(std::move(doc));
  } catch (const std::exception& e) {
    return StoreErrorResponse(InternalError(std::string("store API: ") + e.what()));
  }
}

void StoreHttpHandler::Route(const StoreHttpRequest& r, Done& done) {
  auto reply = [&](StoreHttpResponse resp) { done(std::move(resp)); };
  const size_t q = r.target.find('?');
  const std::string_view path = r.target.substr(0, q);
  const std::string_view query =
      q == std::string_view::npos ? std::string_view() : r.target.substr(q + 1);
  if (!Matches(path)) return reply(Error(404, "NOT_FOUND", "no such route"));
  std::string_view rest = path.substr(kPrefix.size());
  if (rest.empty() || rest == "/") {
    if (r.method != "GET") return reply(MethodNotAllowed("GET"));
    return reply(ListCollections());
  }
  rest.remove_prefix(1);
  const size_t slash = rest.find('/');
  Result<std::string> collection = PercentDecode(rest.substr(0, slash));
  if (!collection.ok()) return reply(StoreErrorResponse(collection.status()));
  if (slash == std::string_view::npos) {
    if (*collection == kTransactionSegment) {
      if (r.method != "POST") return reply(MethodNotAllowed("POST"));
      return Transaction(r, done);
    }
    Status valid = Store::ValidateCollectionName(*collection);
    if (!valid.ok()) return reply(StoreErrorResponse(valid));
    if (r.method == "PUT" || r.method == "DELETE") {
      // The caller is authorized before its body or query is read. A PUT of a missing
      // collection creates it (the store checks the owner it names).
      Status access = store_.CheckWriteAccess(r.caller, *collection, /*administer=*/true);
      if (!access.ok() && (r.method == "DELETE" || access.code() != StatusCode::kNotFound)) {
        return reply(StoreErrorResponse(access));
      }
      // No write takes query parameters: a misspelt option must not be ignored.
      if (Status s = CheckQuery(query, {}); !s.ok()) return reply(StoreErrorResponse(s));
    }
    if (r.method == "GET") return reply(GetCollection(*collection));
    if (r.method == "PUT") return reply(PutCollection(r, *collection));
    if (r.method == "DELETE") return reply(DeleteCollection(r, *collection));
    return reply(MethodNotAllowed("GET, PUT, DELETE"));
  }
  std::string_view after = rest.substr(slash + 1);
  if (after == "docs" || after == "docs/") {
    if (r.method != "GET") return reply(MethodNotAllowed("GET"));
    return reply(ListDocuments(*collection, query));
  }
  if (after.substr(0, 5) != "docs/") return reply(Error(404, "NOT_FOUND", "no such route"));
  Result<std::string> key = PercentDecode(after.substr(5));
  if (!key.ok()) return reply(StoreErrorResponse(key.status()));
  if (r.method == "GET") return reply(GetDocument(*collection, *key));
  if (r.method == "PUT" || r.method == "DELETE") {
    // Authorized before the body, the preconditions and the query are read (a malformed
    // name names no collection, so it is refused as such).
    if (Status valid = Store::ValidateCollectionName(*collection); !valid.ok()) {
      return reply(StoreErrorResponse(valid));
    }
    Status access = store_.CheckWriteAccess(r.caller, *collection, /*administer=*/false);
    if (!access.ok()) return reply(StoreErrorResponse(access));
  }
  if (r.method == "PUT") return PutDocument(r, *collection, *key, query, done);
  if (r.method == "DELETE") {
    if (Status s = CheckQuery(query, {}); !s.ok()) return reply(StoreErrorResponse(s));
    return DeleteDocument(r, *collection, *key, done);
  }
  return reply(MethodNotAllowed("GET, PUT, DELETE"));
}

StoreHttpResponse StoreHttpHandler::ListCollections() {
  std::string body = "{\"collections\":[";
  bool first = true;
  for (const std::string& name : store_.ListCollections()) {
    if (!first) body.push_back(',');
    first = false;
    AppendJsonString(name, &body);
  }
  body += "]}";
  return JsonResponse(200, std::move(body));
}

StoreHttpResponse StoreHttpHandler::PutCollection(const StoreHttpRequest& r,
                                                  const std::string& name) {
  if (Status s = CheckJsonBody(r); !s.ok()) return UnsupportedMediaType(s);
  Result<json::value> v =
      ParseJson(r.body.empty() ? std::string_view("{}") : r.body, options_, "collection config");
  if (!v.ok()) return StoreErrorResponse(v.status());
  Result<CollectionConfig> config = ConfigFromJson(*v, r.caller);
  if (!config.ok()) return StoreErrorResponse(config.status());
  int status = 201;
  Status s = store_.CreateCollection(r.caller, name, *config);
  if (s.code() == StatusCode::kAlreadyExists) {
    status = 200;
    s = store_.UpdateCollection(r.caller, name, *config);
  }
  if (!s.ok()) return StoreErrorResponse(s);
  return JsonResponse(status, ConfigJson(name, *config, nullptr));
}

StoreHttpResponse StoreHttpHandler::GetCollection(const std::string& name) {
  Result<CollectionInfo> info = store_.DescribeCollection(name);
  if (!info.ok()) return StoreErrorResponse(info.status());
  return JsonResponse(200, ConfigJson(name, info->config, &*info));
}

StoreHttpResponse StoreHttpHandler::DeleteCollection(const StoreHttpRequest& r,
                                                     const std::string& name) {
  Status s = store_.DeleteCollection(r.caller, name);
  if (!s.ok()) return StoreErrorResponse(s);
  StoreHttpResponse resp;
  resp.status = 204;
  return resp;
}

StoreHttpResponse StoreHttpHandler::ListDocuments(const std::string& collection,
                                                  std::string_view query) {
  if (Status s = CheckQuery(query, {"start_key", "end_key", "prefix", "page_token", "limit"});
      !s.ok()) {
    return StoreErrorResponse(s);
  }
  ListOptions lo;
  struct Param {
    std::string_view name;
    std::string* out;
  };
  for (const Param& p : {Param{"start_key", &lo.start_key}, Param{"end_key", &lo.end_key},
                         Param{"prefix", &lo.prefix}, Param{"page_token", &lo.page_token}}) {
    Result<std::optional<std::string>> v = QueryParam(query, p.name);
    if (!v.ok()) return StoreErrorResponse(v.status());
    if (*v) *p.out = std::move(**v);
  }
  Result<std::optional<std::string>> limit = QueryParam(query, "limit");
  if (!limit.ok()) return StoreErrorResponse(limit.status());
  if (*limit) {
    Result<int64_t> n = ParseInt(**limit, "limit");
    if (!n.ok()) return StoreErrorResponse(n.status());
    if (*n <= 0) return StoreErrorResponse(InvalidArgumentError("limit must be > 0"));
    lo.limit = static_cast<size_t>(*n);
  }
  Result<ListResult> page = store_.List(collection, lo);
  if (!page.ok()) return StoreErrorResponse(page.status());
  std::string body = "{\"documents\":[";
  size_t bytes = 0;
  for (const Document& d : page->documents) bytes += d.value.size() + d.key.size() + 64;
  body.reserve(bytes + 64);
  bool first = true;
  for (const Document& d : page->documents) {
    if (!first) body.push_back(',');
    first = false;
    body += "{\"key\":";
    AppendJsonString(d.key, &body);
    body += ",\"version\":";
    body += std::to_string(d.version);
    body += ",\"etag\":";
    AppendJsonString(d.etag, &body);
    if (d.expires_at_ms != 0) {
      body += ",\"expires_at_ms\":";
      body += std::to_string(d.expires_at_ms);
    }
    body += ",\"value\":";
    body += d.value;
    body += "}";
  }
  body += "],\"next_page_token\":";
  AppendJsonString(page->next_page_token, &body);
  body += "}";
  return JsonResponse(200, std::move(body));
}

StoreHttpResponse StoreHttpHandler::GetDocument(const std::string& collection,
                                                const std::string& key) {
  return DocumentResponse(store_.Get(collection, key));
}

StoreHttpResponse StoreHttpHandler::DocumentResponse(Result<Document> doc) {
  if (!doc.ok()) return StoreErrorResponse(doc.status());
  StoreHttpResponse r = JsonResponse(200, std::move(doc->value));
  AddVersionHeaders(doc->version, std::move(doc->etag), &r);
  if (doc->expires_at_ms != 0) {
    r.headers.emplace_back("Converge-Expires-At-Ms", std::to_string(doc->expires_at_ms));
  }
  return r;
}

void StoreHttpHandler::PutDocument(const StoreHttpRequest& r, const std::string& collection,
                                   const std::string& key, std::string_view query, Done& done) {
  if (Status s = CheckJsonBody(r); !s.ok()) return done(UnsupportedMediaType(s));
  Result<Precondition> pre = PreconditionFrom(r);
  if (!pre.ok()) return done(StoreErrorResponse(pre.status()));
  if (Status s = CheckQuery(query, {"ttl_ms"}); !s.ok()) return done(StoreErrorResponse(s));
  int64_t ttl_ms = kCollectionDefaultTtl;
  std::optional<std::string> ttl_text;
  if (r.ttl_ms) ttl_text = std::string(*r.ttl_ms);
  Result<std::optional<std::string>> q = QueryParam(query, "ttl_ms");
  if (!q.ok()) return done(StoreErrorResponse(q.status()));
  if (*q) {
    if (ttl_text && *ttl_text != **q) {
      return done(StoreErrorResponse(InvalidArgumentError(
          "the Converge-TTL-Ms header and the ttl_ms query parameter disagree: send one")));
    }
    ttl_text = **q;
  }
  if (ttl_text) {
    Result<int64_t> t = ParseInt(*ttl_text, "ttl_ms");
    if (!t.ok()) return done(StoreErrorResponse(t.status()));
    if (Status s = CheckTtl(*t, "ttl_ms"); !s.ok()) return done(StoreErrorResponse(s));
    ttl_ms = *t;
  }
  std::vector<WriteOp> ops;
  ops.push_back(WriteOp::Put(collection, key, std::string(r.body), std::move(*pre), ttl_ms));
  store_.CommitAsync(r.caller, std::move(ops), [done = std::move(done)](Result<CommitResult> c) {
    if (!c.ok()) return done(StoreErrorResponse(c.status(), /*precondition_route=*/true));
    const WriteResult& w = c->results[0];
    std::string body;
    AppendWriteResult(w, &body);
    StoreHttpResponse resp = JsonResponse(w.created ? 201 : 200, std::move(body));
    AddVersionHeaders(w.version, w.etag, &resp);
    done(std::move(resp));
  });
}

void StoreHttpHandler::DeleteDocument(const StoreHttpRequest& r, const std::string& collection,
                                      const std::string& key, Done& done) {
  Result<Precondition> pre = PreconditionFrom(r);
  if (!pre.ok()) return done(StoreErrorResponse(pre.status()));
  std::vector<WriteOp> ops;
  ops.push_back(WriteOp::Delete(collection, key, std::move(*pre)));
  store_.CommitAsync(r.caller, std::move(ops), [done = std::move(done)](Result<CommitResult> c) {
    if (!c.ok()) return done(StoreErrorResponse(c.status(), /*precondition_route=*/true));
    StoreHttpResponse resp;
    resp.status = 204;
    resp.headers.emplace_back("Converge-Version", std::to_string(c->results[0].version));
    done(std::move(resp));
  });
}

void StoreHttpHandler::Transaction(const StoreHttpRequest& r, Done& done) {
  if (Status s = CheckJsonBody(r); !s.ok()) return done(UnsupportedMediaType(s));
  if (const size_t q = r.target.find('?'); q != std::string_view::npos) {
    if (Status s = CheckQuery(r.target.substr(q + 1), {}); !s.ok()) {
      return done(StoreErrorResponse(s));
    }
  }
  Result<json::value> v = ParseJson(r.body, options_, "transaction");
  if (!v.ok()) return done(StoreErrorResponse(v.status()));
  const json::object* o = v->if_object();
  const json::value* ops_v = o ? o->if_contains("ops") : nullptr;
  if (ops_v == nullptr || !ops_v->is_array()) {
    return done(StoreErrorResponse(InvalidArgumentError("a transaction is {\"ops\": [...]}")));
  }
  if (Status s = CheckMembers(*o, {"ops"}, "the transaction"); !s.ok()) {
    return done(StoreErrorResponse(s));
  }
  // Every op is checked before anything is submitted: one bad op rejects the whole
  // transaction and nothing is written.
  std::vector<WriteOp> ops;
  ops.reserve(ops_v->as_array().size());
  size_t i = 0;
  for (const json::value& e : ops_v->as_array()) {
    auto fail = [&](std::string_view why) {
      done(StoreErrorResponse(
          InvalidArgumentError("op " + std::to_string(i) + ": " + std::string(why))));
    };
    const json::object* op = e.if_object();
    if (op == nullptr) return fail("each op is an object");
    WriteOp w;
    Result<std::string> kind = StringMember(*op, "op", true);
    if (!kind.ok()) return fail(kind.status().message());
    Status members;
    if (*kind == "put") {
      w.kind = WriteOp::Kind::kPut;
      members = CheckMembers(
          *op, {"op", "collection", "key", "value", "if_match", "if_none_match", "ttl_ms"},
          "a put op");
    } else if (*kind == "delete" || *kind == "check") {
      w.kind = *kind == "delete" ? WriteOp::Kind::kDelete : WriteOp::Kind::kCheck;
      members = CheckMembers(*op, {"op", "collection", "key", "if_match", "if_none_match"},
                             *kind == "delete" ? "a delete op" : "a check op");
    } else {
      return fail("'op' must be put, delete or check");
    }
    if (!members.ok()) return fail(members.message());
    Result<std::string> coll = StringMember(*op, "collection", true);
    Result<std::string> key = StringMember(*op, "key", true);
    for (const Result<std::string>* f : {&coll, &key}) {
      if (!f->ok()) return fail(f->status().message());
    }
    Result<std::optional<std::string>> if_match = OptionalStringMember(*op, "if_match");
    Result<std::optional<std::string>> if_none_match = OptionalStringMember(*op, "if_none_match");
    for (const auto* f : {&if_match, &if_none_match}) {
      if (!f->ok()) return fail(f->status().message());
    }
    if (*if_match && **if_match != "*") {
      if (Result<uint64_t> version = VersionFromETag(**if_match); !version.ok()) {
        return fail("'if_match': " + std::string(version.status().message()));
      }
    }
    if (w.kind == WriteOp::Kind::kPut) {
      const json::value* value = op->if_contains("value");
      if (value == nullptr) return fail("a put needs a 'value'");
      w.value = json::serialize(*value);
      if (const json::value* t = op->if_contains("ttl_ms"); t != nullptr) {
        Result<int64_t> ttl = IntMember(*op, "ttl_ms", 0);
        if (!ttl.ok() || t->is_null()) return fail("'ttl_ms' must be an integer");
        if (Status s = CheckTtl(*ttl, "'ttl_ms'"); !s.ok()) return fail(s.message());
        w.ttl_ms = *ttl;
      } else {
        w.ttl_ms = kCollectionDefaultTtl;
      }
    }
    w.collection = std::move(*coll);
    w.key = std::move(*key);
    if (*if_match) w.precondition.if_match = std::move(**if_match);
    if (*if_none_match) {
      if (**if_none_match != "*") return fail("'if_none_match' may only be \"*\"");
      w.precondition.if_none_match_any = true;
    }
    ops.push_back(std::move(w));
    ++i;
  }
  store_.CommitAsync(r.caller, std::move(ops), [done = std::move(done)](Result<CommitResult> c) {
    if (!c.ok()) return done(StoreErrorResponse(c.status(), /*precondition_route=*/true));
    std::string body = "{\"commit_seq\":" + std::to_string(c->commit_seq) + ",\"results\":[";
    for (size_t j = 0; j < c->results.size(); ++j) {
      if (j > 0) body.push_back(',');
      AppendWriteResult(c->results[j], &body);
    }
    body += "]}";
    done(JsonResponse(200, std::move(body)));
  });
}

}  // namespace converge::store_internal
