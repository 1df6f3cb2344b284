// The shared store's routes (store_routes.h): the handlers the router (Api::RouteTable)
// dispatches /v1/collections/... to, and Api::HandleStore, which runs them without blocking
// an I/O thread where it can.
#include <algorithm>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <charconv>
#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>

#include "converge/replica.h"
#include "core/event_internal.h"
#include "server/api_internal.h"
#include "server/blocking_pool.h"
#include "server/store_routes.h"

namespace converge::server {
namespace {
// The refusal of a store call outside a service's topology manifest or its token's
// collection lists (403).
Status CollectionNotInManifest(std::string_view service, std::string_view action,
                               std::string_view collection) {
  // The limits come from the service's topology manifest or from its token's
  // read_collections / write_collections in the server's configuration.
  return PermissionDeniedError("service '" + std::string(service) + "' may not " +
                               std::string(action) + " collection '" + std::string(collection) +
                               "': its topology manifest (or its token's " +
                               (action == "write" ? "write_collections" : "read_collections") +
                               ") does not " +
                               (action == "write" ? "own it" : "own it or keep a replica of it"));
}

// A service limited by its topology manifest writes only the collections it owns: a request
// touching another is refused as a whole, before anything is written.
Status CheckManifestWrites(const StoreRequest& r, const std::vector<WriteOp>& ops) {
  if (r.read_only != nullptr) {
    for (const WriteOp& w : ops) {
      if (w.kind == WriteOp::Kind::kCheck) continue;
      auto it = r.read_only->find(w.collection);
      if (it != r.read_only->end()) return FailedPreconditionError(it->second);
    }
  }
  if (r.writable == nullptr) return Status::Ok();
  for (const WriteOp& w : ops) {
    if (std::find(r.writable->begin(), r.writable->end(), w.collection) == r.writable->end()) {
      return CollectionNotInManifest(r.caller.service, "write", w.collection);
    }
  }
  return Status::Ok();
}
}  // namespace
namespace {

namespace json = boost::json;

void AppendJsonString(std::string_view s, std::string* out) {
  *out += json::serialize(json::string_view(s.data(), s.size()));
}

HttpResponse JsonResponse(int status, std::string body) {
  HttpResponse r{static_cast<http::status>(status), 11};
  r.set(http::field::content_type, "application/json");
  r.body() = std::move(body);
  return r;
}

// Every error of a store route: the server's one mapping. Each store route reads input
// (names, keys, documents, configs, transactions), so a ResourceExhausted is the request
// crossing one of its bounds: 413 (InputErrorReply).
HttpResponse Fail(const Status& status, bool conditional_write = false) {
  return InputErrorReply(status, 11, conditional_write);
}

// The value of query parameter `name` (decoded by the router), or nullopt.
std::optional<std::string> QueryParam(const QueryParams& query, std::string_view name) {
  for (const auto& [k, v] : query) {
    if (k == name) return v;
  }
  return std::nullopt;
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

Status CheckJsonBody(const StoreRequest& r) {
  if (r.content_type && !r.content_type->empty() && !IsJsonMediaType(*r.content_type)) {
    return Status(StatusCode::kInvalidArgument, "unsupported media type '" +
                                                    std::string(r.content_type->substr(0, 100)) +
                                                    "': send application/json");
  }
  return Status::Ok();
}

HttpResponse UnsupportedMediaType(const Status& s) {
  return JsonError(http::status::unsupported_media_type, "UNSUPPORTED_MEDIA_TYPE", s.message());
}

// Preconditions from the headers. If-None-Match accepts only "*" on writes.
Result<Precondition> PreconditionFrom(const StoreRequest& r) {
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

Result<json::value> ParseJson(std::string_view body, const StoreRoutesOptions& options,
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

void AddVersionHeaders(uint64_t version, std::string etag, HttpResponse* r) {
  r->set(http::field::etag, std::move(etag));
  r->set("Converge-Version", std::to_string(version));
}

// The token naming commit `commit_seq` in the feed (one partition, docs/formats/store.md).
void AddConsistencyToken(const std::string& feed_topic, uint64_t commit_seq, HttpResponse* r) {
  if (feed_topic.empty()) return;
  r->set("Converge-Consistency-Token",
         replica::EncodeToken(replica::ConsistencyToken{
             feed_topic, 0, replica::ConsistencyToken::Kind::kCommitSeq, commit_seq}));
}

bool IsDocumentRoute(RouteId route) {
  return route == RouteId::kGetDocument || route == RouteId::kPutDocument ||
         route == RouteId::kDeleteDocument;
}

}  // namespace

StoreRoutes::StoreRoutes(Store& store, StoreRoutesOptions options)
    : store_(store), options_(options) {}

bool StoreRoutes::IsDocumentWrite(RouteId route) {
  return route == RouteId::kPutDocument || route == RouteId::kDeleteDocument ||
         route == RouteId::kTransaction;
}

bool StoreRoutes::IsCollectionWrite(RouteId route) {
  return route == RouteId::kPutDocument || route == RouteId::kDeleteDocument ||
         route == RouteId::kPutCollection || route == RouteId::kDeleteCollection;
}

HttpResponse StoreRoutes::Handle(const StoreRequest& r) {
  struct Slot {
    std::mutex mu;
    std::condition_variable cv;
    std::optional<HttpResponse> response;
  };
  auto slot = std::make_shared<Slot>();
  HandleAsync(r, [slot](HttpResponse resp) {
    std::lock_guard<std::mutex> g(slot->mu);
    slot->response = std::move(resp);
    slot->cv.notify_one();
  });
  std::unique_lock<std::mutex> l(slot->mu);
  slot->cv.wait(l, [&] { return slot->response.has_value(); });
  return std::move(*slot->response);
}

void StoreRoutes::HandleAsync(const StoreRequest& r, Done done) {
  try {
    Route(r, done);
  } catch (const std::exception& e) {
    // Third-party code (JSON) must not take the server down. `done` is only moved from when
    // the store accepted the write, which throws nothing afterwards.
    if (done) done(Fail(InternalError(std::string("store API: ") + e.what())));
  }
}

bool StoreRoutes::TryHandleInline(const StoreRequest& r, Done& done) {
  if (r.route == RouteId::kTransaction) {
    // Only when writes do not block.
    if (!options_.inline_writes) return false;
    HandleAsync(r, std::move(done));
    return true;
  }
  if (!IsDocumentRoute(r.route)) return false;
  if (r.route == RouteId::kGetDocument) {
    if (std::optional<HttpResponse> read = TryRead(r)) {
      done(std::move(*read));
      return true;
    }
    // A read of a change still being synced: answered when it is durable, without holding a
    // thread meanwhile (when the store syncs in the background).
    if (!options_.inline_writes) return false;
    store_.GetAsync(r.collection, r.key, [done = std::move(done)](Result<Document> doc) {
      done(DocumentResponse(std::move(doc)));
    });
    return true;
  }
  if (!options_.inline_writes) return false;
  HandleAsync(r, std::move(done));
  return true;
}

std::optional<HttpResponse> StoreRoutes::TryRead(const StoreRequest& r) {
  if (r.route != RouteId::kGetDocument) return std::nullopt;
  // A read takes no query parameters either (reads are open to every token: nothing to
  // authorize first).
  if (Status s = CheckQuery(r.query, {}); !s.ok()) return Fail(s);
  try {
    Result<Document> doc = store_.TryGet(r.collection, r.key);
    if (!doc.ok() && doc.status().code() == StatusCode::kUnavailable) return std::nullopt;
    return DocumentResponse(std::move(doc));
  } catch (const std::exception& e) {
    return Fail(InternalError(std::string("store API: ") + e.what()));
  }
}

void StoreRoutes::Route(const StoreRequest& r, Done& done) {
  auto reply = [&](HttpResponse resp) { done(std::move(resp)); };
  switch (r.route) {
    case RouteId::kListCollections:
      if (Status s = CheckQuery(r.query, {}); !s.ok()) return reply(Fail(s));
      return reply(ListCollections(r.readable));
    case RouteId::kTransaction:
      return Transaction(r, done);
    case RouteId::kGetCollection:
    case RouteId::kPutCollection:
    case RouteId::kDeleteCollection: {
      Status valid = Store::ValidateCollectionName(r.collection);
      if (!valid.ok()) return reply(Fail(valid));
      if (r.route != RouteId::kGetCollection) {
        // The caller is authorized before its body or query is read. A PUT of a missing
        // collection creates it (the store checks the owner it names).
        Status access = store_.CheckWriteAccess(r.caller, r.collection, /*administer=*/true);
        if (!access.ok() &&
            (r.route == RouteId::kDeleteCollection || access.code() != StatusCode::kNotFound)) {
          return reply(Fail(access));
        }
      }
      // These routes take no query parameters: a misspelt option must not be ignored.
      if (Status s = CheckQuery(r.query, {}); !s.ok()) return reply(Fail(s));
      if (r.route == RouteId::kGetCollection) return reply(GetCollection(r));
      if (r.route == RouteId::kPutCollection) return reply(PutCollection(r));
      return reply(DeleteCollection(r));
    }
    case RouteId::kListDocuments:
      return reply(ListDocuments(r));
    case RouteId::kGetDocument:
      if (Status s = CheckQuery(r.query, {}); !s.ok()) return reply(Fail(s));
      return reply(DocumentResponse(store_.Get(r.collection, r.key)));
    case RouteId::kPutDocument:
    case RouteId::kDeleteDocument: {
      // Authorized before the body, the preconditions and the query are read (a malformed
      // name names no collection, so it is refused as such).
      if (Status valid = Store::ValidateCollectionName(r.collection); !valid.ok()) {
        return reply(Fail(valid));
      }
      Status access = store_.CheckWriteAccess(r.caller, r.collection, /*administer=*/false);
      if (!access.ok()) return reply(Fail(access));
      if (r.route == RouteId::kPutDocument) return PutDocument(r, done);
      if (Status s = CheckQuery(r.query, {}); !s.ok()) return reply(Fail(s));
      return DeleteDocument(r, done);
    }
    default:
      return reply(Fail(InternalError("not a store route")));
  }
}

HttpResponse StoreRoutes::ListCollections(const std::vector<std::string>* readable) {
  const std::vector<std::string> names = store_.ListCollections();
  // The list has no error of its own: an empty one from a store whose database does not
  // answer (a shared store in PostgreSQL) is that error, not "no collections".
  if (names.empty()) {
    if (Status health = store_.Health(); health.code() == StatusCode::kUnavailable) {
      return Fail(health);
    }
  }
  std::string body = "{\"collections\":[";
  bool first = true;
  for (const std::string& name : names) {
    // A service limited by its manifest sees only the collections it may read.
    if (readable != nullptr &&
        std::find(readable->begin(), readable->end(), name) == readable->end()) {
      continue;
    }
    if (!first) body.push_back(',');
    first = false;
    AppendJsonString(name, &body);
  }
  body += "]}";
  return JsonResponse(200, std::move(body));
}

HttpResponse StoreRoutes::PutCollection(const StoreRequest& r) {
  const std::string& name = r.collection;
  if (Status s = CheckJsonBody(r); !s.ok()) return UnsupportedMediaType(s);
  Result<json::value> v =
      ParseJson(r.body.empty() ? std::string_view("{}") : r.body, options_, "collection config");
  if (!v.ok()) return Fail(v.status());
  Result<CollectionConfig> config = ConfigFromJson(*v, r.caller);
  if (!config.ok()) return Fail(config.status());
  int status = 201;
  Status s = store_.CreateCollection(r.caller, name, *config);
  if (s.code() == StatusCode::kAlreadyExists) {
    status = 200;
    s = store_.UpdateCollection(r.caller, name, *config);
  }
  if (!s.ok()) return Fail(s);
  return JsonResponse(status, ConfigJson(name, *config, nullptr));
}

HttpResponse StoreRoutes::GetCollection(const StoreRequest& r) {
  const std::string& name = r.collection;
  Result<CollectionInfo> info = store_.DescribeCollection(name);
  if (!info.ok()) return Fail(info.status());
  return JsonResponse(200, ConfigJson(name, info->config, &*info));
}

HttpResponse StoreRoutes::DeleteCollection(const StoreRequest& r) {
  Status s = store_.DeleteCollection(r.caller, r.collection);
  if (!s.ok()) return Fail(s);
  return HttpResponse{http::status::no_content, 11};
}

HttpResponse StoreRoutes::ListDocuments(const StoreRequest& r) {
  const std::string& collection = r.collection;
  const QueryParams& query = r.query;
  if (Status s = CheckQuery(query, {"start_key", "end_key", "prefix", "page_token", "limit"});
      !s.ok()) {
    return Fail(s);
  }
  ListOptions lo;
  struct Param {
    std::string_view name;
    std::string* out;
  };
  for (const Param& p : {Param{"start_key", &lo.start_key}, Param{"end_key", &lo.end_key},
                         Param{"prefix", &lo.prefix}, Param{"page_token", &lo.page_token}}) {
    if (std::optional<std::string> v = QueryParam(query, p.name)) *p.out = std::move(*v);
  }
  if (std::optional<std::string> limit = QueryParam(query, "limit")) {
    Result<int64_t> n = ParseInt(*limit, "limit");
    if (!n.ok()) return Fail(n.status());
    if (*n <= 0) return Fail(InvalidArgumentError("limit must be > 0"));
    lo.limit = static_cast<size_t>(*n);
  }
  Result<ListResult> page = store_.List(collection, lo);
  if (!page.ok()) return Fail(page.status());
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

HttpResponse StoreRoutes::DocumentResponse(Result<Document> doc) {
  if (!doc.ok()) return Fail(doc.status());
  HttpResponse r = JsonResponse(200, std::move(doc->value));
  AddVersionHeaders(doc->version, std::move(doc->etag), &r);
  if (doc->expires_at_ms != 0) r.set("Converge-Expires-At-Ms", std::to_string(doc->expires_at_ms));
  return r;
}

void StoreRoutes::PutDocument(const StoreRequest& r, Done& done) {
  const QueryParams& query = r.query;
  if (Status s = CheckJsonBody(r); !s.ok()) return done(UnsupportedMediaType(s));
  Result<Precondition> pre = PreconditionFrom(r);
  if (!pre.ok()) return done(Fail(pre.status()));
  if (Status s = CheckQuery(query, {"ttl_ms"}); !s.ok()) return done(Fail(s));
  int64_t ttl_ms = kCollectionDefaultTtl;
  std::optional<std::string> ttl_text;
  if (r.ttl_ms) ttl_text = std::string(*r.ttl_ms);
  if (std::optional<std::string> q = QueryParam(query, "ttl_ms")) {
    if (ttl_text && *ttl_text != *q) {
      return done(Fail(InvalidArgumentError(
          "the Converge-TTL-Ms header and the ttl_ms query parameter disagree: send one")));
    }
    ttl_text = std::move(*q);
  }
  if (ttl_text) {
    Result<int64_t> t = ParseInt(*ttl_text, "ttl_ms");
    if (!t.ok()) return done(Fail(t.status()));
    if (Status s = CheckTtl(*t, "ttl_ms"); !s.ok()) return done(Fail(s));
    ttl_ms = *t;
  }
  std::vector<WriteOp> ops;
  ops.push_back(WriteOp::Put(r.collection, r.key, std::string(r.body), std::move(*pre), ttl_ms));
  if (Status s = CheckManifestWrites(r, ops); !s.ok()) return done(Fail(s));
  store_.CommitAsync(r.caller, std::move(ops),
                     [done = std::move(done), feed = options_.feed_topic](Result<CommitResult> c) {
                       if (!c.ok()) return done(Fail(c.status(), /*conditional_write=*/true));
                       const WriteResult& w = c->results[0];
                       std::string body;
                       AppendWriteResult(w, &body);
                       HttpResponse resp = JsonResponse(w.created ? 201 : 200, std::move(body));
                       AddVersionHeaders(w.version, w.etag, &resp);
                       AddConsistencyToken(feed, c->commit_seq, &resp);
                       done(std::move(resp));
                     });
}

void StoreRoutes::DeleteDocument(const StoreRequest& r, Done& done) {
  Result<Precondition> pre = PreconditionFrom(r);
  if (!pre.ok()) return done(Fail(pre.status()));
  std::vector<WriteOp> ops;
  ops.push_back(WriteOp::Delete(r.collection, r.key, std::move(*pre)));
  if (Status s = CheckManifestWrites(r, ops); !s.ok()) return done(Fail(s));
  store_.CommitAsync(r.caller, std::move(ops),
                     [done = std::move(done), feed = options_.feed_topic](Result<CommitResult> c) {
                       if (!c.ok()) return done(Fail(c.status(), /*conditional_write=*/true));
                       HttpResponse resp{http::status::no_content, 11};
                       resp.set("Converge-Version", std::to_string(c->results[0].version));
                       AddConsistencyToken(feed, c->commit_seq, &resp);
                       done(std::move(resp));
                     });
}

void StoreRoutes::Transaction(const StoreRequest& r, Done& done) {
  if (Status s = CheckJsonBody(r); !s.ok()) return done(UnsupportedMediaType(s));
  if (Status s = CheckQuery(r.query, {}); !s.ok()) return done(Fail(s));
  Result<json::value> v = ParseJson(r.body, options_, "transaction");
  if (!v.ok()) return done(Fail(v.status()));
  const json::object* o = v->if_object();
  const json::value* ops_v = o ? o->if_contains("ops") : nullptr;
  if (ops_v == nullptr || !ops_v->is_array()) {
    return done(Fail(InvalidArgumentError("a transaction is {\"ops\": [...]}")));
  }
  if (Status s = CheckMembers(*o, {"ops"}, "the transaction"); !s.ok()) {
    return done(Fail(s));
  }
  // Every op is checked before anything is submitted: one bad op rejects the whole
  // transaction and nothing is written.
  std::vector<WriteOp> ops;
  ops.reserve(ops_v->as_array().size());
  size_t i = 0;
  for (const json::value& e : ops_v->as_array()) {
    auto fail = [&](std::string_view why) {
      done(Fail(InvalidArgumentError("op " + std::to_string(i) + ": " + std::string(why))));
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
  if (Status s = CheckManifestWrites(r, ops); !s.ok()) return done(Fail(s));
  store_.CommitAsync(r.caller, std::move(ops),
                     [done = std::move(done), feed = options_.feed_topic](Result<CommitResult> c) {
                       if (!c.ok()) return done(Fail(c.status(), /*conditional_write=*/true));
                       std::string body =
                           "{\"commit_seq\":" + std::to_string(c->commit_seq) + ",\"results\":[";
                       for (size_t j = 0; j < c->results.size(); ++j) {
                         if (j > 0) body.push_back(',');
                         AppendWriteResult(c->results[j], &body);
                       }
                       body += "]}";
                       HttpResponse resp = JsonResponse(200, std::move(body));
                       AddConsistencyToken(feed, c->commit_seq, &resp);
                       done(std::move(resp));
                     });
}

}  // namespace converge::server

namespace converge::server {

asio::awaitable<HttpReply> Api::HandleStore(Call& call) {
  HttpRequest& request = call.req;
  auto header = [&](auto field) -> std::optional<std::string_view> {
    auto it = request.find(field);
    if (it == request.end()) return std::nullopt;
    return std::string_view(it->value().data(), it->value().size());
  };
  // A precondition, TTL or media type given twice would be read as the first one only: an
  // `If-Match: "3"` next to `If-Match: *` must not quietly become either.
  for (const auto& [field, name] : {std::pair{http::field::if_match, "If-Match"},
                                    std::pair{http::field::if_none_match, "If-None-Match"},
                                    std::pair{http::field::content_type, "Content-Type"}}) {
    if (request.count(field) > 1) {
      co_return Error(http::status::bad_request, "INVALID_ARGUMENT",
                      std::string("header '") + name + "' appears more than once");
    }
  }
  if (request.count("Converge-TTL-Ms") > 1) {
    co_return Error(http::status::bad_request, "INVALID_ARGUMENT",
                    "header 'Converge-TTL-Ms' appears more than once");
  }
  StoreRequest r;
  r.route = call.route.id;
  r.collection = call.Param("collection");
  r.key = call.Param("key");
  r.query = std::move(call.query);
  r.if_match = header(http::field::if_match);
  r.if_none_match = header(http::field::if_none_match);
  r.ttl_ms = header("Converge-TTL-Ms");
  r.content_type = header(http::field::content_type);
  r.body = request.body();
  // With auth disabled every request is the anonymous principal, which may do everything.
  r.caller = Caller{call.principal->service, call.principal->admin || call.principal->anonymous};
  // A replica's copy, refused to every writer before the body is read: other services by the
  // store's own rule (its owner is the replica: 403), admins here (409, naming the replica),
  // who the store's rules would let through.
  if (r.caller.admin) r.read_only = &read_only_collections_;
  if (r.caller.admin && !r.collection.empty() && StoreRoutes::IsCollectionWrite(r.route)) {
    auto it = read_only_collections_.find(r.collection);
    if (it != read_only_collections_.end()) co_return Error(FailedPreconditionError(it->second));
  }
  // A service limited by its topology manifest: refused before the body is read.
  if (const Principal& who = *call.principal; who.restrict_collections && !who.admin) {
    r.writable = &who.write_collections;
    r.readable = &who.read_collections;
    if (!r.collection.empty()) {
      const bool writes = r.route == RouteId::kPutCollection ||
                          r.route == RouteId::kDeleteCollection ||
                          r.route == RouteId::kPutDocument || r.route == RouteId::kDeleteDocument;
      if (writes ? !who.CanWriteCollection(r.collection) : !who.CanReadCollection(r.collection)) {
        co_return Error(
            CollectionNotInManifest(who.service, writes ? "write" : "read", r.collection));
      }
    }
  }
  auto to_reply = [&request](HttpResponse res) {
    res.version(request.version());
    res.prepare_payload();
    return Reply(std::move(res));
  };
  // A durable document read is answered right here: no hop through the executor.
  StoreRoutes* store = d_.store;
  if (std::optional<HttpResponse> read = store->TryRead(r)) co_return to_reply(std::move(*read));
  // Writes, and reads of a change still being synced, are handed to the store right here on
  // the I/O thread when that cannot block (the store syncs on the pool, see Server::Open) and
  // resume this coroutine when durable; the rest runs on the pool. The handler reads `r` (in
  // this frame) only until it calls done or returns.
  const bool write = StoreRoutes::IsDocumentWrite(r.route);
  const int64_t write_start = write ? d_.env->clock().NowMonotonicNanos() : 0;
  BlockingPool* pool = d_.pool;
  auto job = [store, pool, &r](std::function<void(HttpResponse)> done) {
    if (store->TryHandleInline(r, done)) return;
    pool->Post(
        [store, &r, done = std::move(done)]() mutable { store->HandleAsync(r, std::move(done)); });
  };
  HttpResponse res = co_await BlockingPool::RunInline<HttpResponse>(std::move(job));
  if (write && res.result_int() >= 200 && res.result_int() < 300) {
    store_commit_seconds_->Observe(
        static_cast<double>(d_.env->clock().NowMonotonicNanos() - write_start) * 1e-9);
  }
  co_return to_reply(std::move(res));
}

}  // namespace converge::server
