#include "server/remote_source.h"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <boost/url/encode.hpp>
#include <boost/url/rfc/unreserved_chars.hpp>

#include "converge/client.h"
#include "converge/event.h"
#include "converge/log.h"
#include "converge/store.h"
#include "server/push_http_client.h"

namespace converge::server {

namespace json = boost::json;

Status CheckRemoteSource(const ReplicaConfig& r) {
  Result<PushUrl> url = ParsePushUrl(r.remote_url);
  if (!url.ok()) return InvalidArgumentError("url: " + std::string(url.status().message()));
  if (url->target != "/") {
    return InvalidArgumentError(
        "url: give the node's address only (scheme, host, port), not a path");
  }
  if (!url->https && !r.remote_ca_file.empty()) {
    return InvalidArgumentError("ca_file: the url is not https");
  }
  if (!r.remote_ca_file.empty()) CONVERGE_RETURN_IF_ERROR(CheckPushCaFile(r.remote_ca_file));
  if (Status s = Store::ValidateCollectionName(r.remote_collection); !s.ok()) {
    return InvalidArgumentError("collection: " + std::string(s.message()));
  }
  if (Status s = ValidateTopicName(r.source_topic); !s.ok()) {
    return InvalidArgumentError("feed_topic: " + std::string(s.message()));
  }
  return Status::Ok();
}

RemoteSourceOptions RemoteSourceOptionsFor(const ReplicaConfig& r) {
  RemoteSourceOptions o;
  o.url = r.remote_url;
  o.token = r.remote_token;
  o.collection = r.remote_collection;
  o.ca_file = r.remote_ca_file;
  o.feed_topic = r.source_topic;
  // The long poll is also how often a stop is noticed: keep it short.
  o.wait_ms = std::min<int64_t>(r.poll_interval_ms, 1000);
  o.rebootstrap = r.rebootstrap_on_position_gone;
  return o;
}

namespace {

// A key or page token as one percent-encoded path segment or query value (everything but
// RFC 3986's unreserved characters encoded).
std::string EncodePathSegment(std::string_view text) {
  return boost::urls::encode(text, boost::urls::unreserved_chars);
}


// A bootstrap snapshot is one target transaction: bounded.
constexpr uint64_t kMaxSnapshotBytes = 256ull << 20;

// The records of one reply, owned by the batch (views point into `values`).
struct Storage {
  std::vector<std::string> values;
};

class RemoteSource : public replica::Source {
 public:
  RemoteSource(Env& env, RemoteSourceOptions options, client::Options client_options)
      : env_(env), options_(std::move(options)), client_(std::move(client_options)) {}

  const std::string& topic() const override { return options_.feed_topic; }
  // The store's feed has one partition.
  Result<uint32_t> Partitions() override { return 1u; }

  Result<replica::SourceBatch> Read(uint32_t partition, uint64_t from_offset,
                                    size_t max_records) override {
    if (partition != 0) {
      return NotFoundError("the change feed of a store has one partition, not " +
                           std::to_string(partition));
    }
    client::HttpRequest req;
    req.method = "GET";
    req.target =
        "/v1/collections/" + options_.collection + "/changes?from=" + std::to_string(from_offset) +
        "&limit=" + std::to_string(max_records) + "&wait_ms=" + std::to_string(options_.wait_ms);
    Result<client::HttpResponse> res = client_.Send(req);
    if (!res.ok()) {
      return UnavailableError(Where() + ": " + std::string(res.status().message()));
    }
    const std::string what = Where() + ": HTTP " + std::to_string(res->status);
    json::error_code ec;
    json::value body = json::parse(res->body, ec);
    auto message = [&]() -> std::string {
      if (!ec && body.is_object()) {
        if (const json::value* m = body.as_object().if_contains("message"); m && m->is_string()) {
          return std::string(m->as_string());
        }
      }
      return res->body.substr(0, 300);
    };
    replica::SourceBatch out;
    out.partition = 0;
    out.from_offset = from_offset;
    out.next_offset = from_offset;
    out.sparse = true;
    switch (res->status) {
      case 200:
        break;
      case 410: {
        // The other node's retention removed what this replica has not applied yet: a
        // damaged range, reported and (by on_malformed) stopped at or skipped, never passed
        // silently.
        uint64_t start = 0;
        if (!ec && body.is_object()) {
          if (const json::value* s = body.as_object().if_contains("start"); s && s->is_number()) {
            start = s->to_number<uint64_t>();
          }
        }
        if (start <= from_offset) return UnavailableError(what + ": " + message());
        if (from_offset == 0) {
          // Nothing applied yet: bootstrap from a snapshot of the collection instead.
          uint64_t end = 0, seq = 0;
          const json::object& g = body.as_object();
          if (const json::value* e = g.if_contains("end"); e && e->is_number()) {
            end = e->to_number<uint64_t>();
          }
          if (const json::value* c = g.if_contains("commitseq"); c && c->is_number()) {
            seq = c->to_number<uint64_t>();
          }
          if (end < start) return UnavailableError(what + ": a 410 reply without its end");
          return Snapshot(0, end, seq);
        }
        if (options_.rebootstrap) {
          // on_position_gone: rebootstrap. A listing of every live document as of `commitseq`,
          // the copy's other keys deleted below it by the target (version-gated).
          uint64_t end = 0, seq = 0;
          const json::object& g = body.as_object();
          if (const json::value* e = g.if_contains("end"); e && e->is_number()) {
            end = e->to_number<uint64_t>();
          }
          if (const json::value* c = g.if_contains("commitseq"); c && c->is_number()) {
            seq = c->to_number<uint64_t>();
          }
          if (end < start || seq == 0) {
            return UnavailableError(what + ": a 410 reply without its end or commitseq");
          }
          return Snapshot(from_offset, end, seq);
        }
        out.damage = DataLossError(what + ": " + message());
        out.next_offset = start;
        out.end_offset = start;
        return out;
      }
      case 401:
        return UnauthenticatedError(what + ": " + message());
      case 403:
        return PermissionDeniedError(what + ": " + message());
      case 404:
      case 409:
        return FailedPreconditionError(what + ": " + message());
      default:
        return UnavailableError(what + ": " + message());
    }
    if (ec || !body.is_object()) return UnavailableError(what + ": the reply is not a JSON object");
    const json::object& o = body.as_object();
    auto number = [&o](const char* name, uint64_t* v) {
      const json::value* x = o.if_contains(name);
      if (x == nullptr || !(x->is_uint64() || x->is_int64())) return false;
      *v = x->to_number<uint64_t>();
      return true;
    };
    uint64_t next = 0, end = 0, next_time = 0, commitseq = 0;
    const json::value* changes = o.if_contains("changes");
    if (!number("next", &next) || !number("end", &end) || !number("next_time_us", &next_time) ||
        !number("commitseq", &commitseq) || changes == nullptr || !changes->is_array() ||
        next < from_offset) {
      return UnavailableError(what + ": the reply is not a change stream page");
    }
    if (const json::value* t = o.if_contains("feed_topic");
        t == nullptr || !t->is_string() || t->as_string() != options_.feed_topic) {
      return FailedPreconditionError(Where() + ": the node's change feed is not '" +
                                     options_.feed_topic +
                                     "' (set source.remote.feed_topic to its store.feed_topic)");
    }
    out.next_offset = next;
    out.end_offset = std::max(end, next);
    out.next_timestamp_micros = static_cast<int64_t>(next_time);
    out.passed_commitseq = commitseq;
    if (const json::value* d = o.if_contains("damage"); d != nullptr && d->is_string()) {
      out.damage = DataLossError(Where() + ": " + std::string(d->as_string()));
      return out;
    }
    auto storage = std::make_shared<Storage>();
    std::vector<std::pair<uint64_t, int64_t>> where;
    uint64_t last = from_offset;
    for (const json::value& item : changes->as_array()) {
      if (!item.is_object()) return UnavailableError(what + ": a change is not an object");
      const json::object& c = item.as_object();
      const json::value* offset = c.if_contains("offset");
      const json::value* time = c.if_contains("time_us");
      if (offset == nullptr || !offset->is_number() || time == nullptr || !time->is_number()) {
        return UnavailableError(what + ": a change has no offset or time_us");
      }
      const uint64_t off = offset->to_number<uint64_t>();
      if (off < last || off >= next) return UnavailableError(what + ": offsets out of order");
      last = off + 1;
      // The record as the feed holds it (binary CloudEvent). One that does not decode, or
      // that the node marked malformed, stays unreadable: the applier reports it.
      std::string value;
      if (const json::value* e = c.if_contains("event"); e != nullptr && e->is_object()) {
        Result<Event> event = DecodeJson(json::serialize(*e));
        if (event.ok() && !EncodeBinary(*event, &value).ok()) value.clear();
      }
      storage->values.push_back(std::move(value));
      where.emplace_back(off, time->to_number<int64_t>());
    }
    out.records.reserve(where.size());
    for (size_t i = 0; i < where.size(); ++i) {
      out.records.push_back(
          replica::SourceRecord{where[i].first, where[i].second, storage->values[i]});
    }
    out.storage = std::move(storage);
    return out;
  }

 private:
  // The collection as the other node lists it now, as one batch from offset 0 to `end` (the
  // feed's end before the listing started): every change up to `end` is reflected in it
  // (later ones too, possibly; the feed from `end` brings them again, version-gated), so the
  // position can move to `end` in the same transaction. Documents get offsets 0..n-1 (n <=
  // end: every live document has a feed record).
  // From a position `from` > 0 (a re-bootstrap), the batch is a snapshot_version batch: the
  // offsets of its documents are not positions.
  Result<replica::SourceBatch> Snapshot(uint64_t from, uint64_t end, uint64_t commitseq) {
    const std::string what = Where() + ": bootstrap snapshot";
    auto storage = std::make_shared<Storage>();
    const int64_t now = env_.clock().NowWallMicros();
    uint64_t bytes = 0;
    std::string page;
    while (true) {
      client::HttpRequest req;
      req.method = "GET";
      req.target = "/v1/collections/" + options_.collection + "/docs?limit=1000";
      if (!page.empty()) req.target += "&page_token=" + EncodePathSegment(page);
      Result<client::HttpResponse> res = client_.Send(req);
      if (!res.ok()) return UnavailableError(what + ": " + std::string(res.status().message()));
      if (res->status == 404) break;  // no such collection (yet): empty
      if (res->status == 401 || res->status == 403) {
        return PermissionDeniedError(what + ": HTTP " + std::to_string(res->status) + ": " +
                                     res->body.substr(0, 300));
      }
      if (res->status != 200) {
        return UnavailableError(what + ": HTTP " + std::to_string(res->status) + ": " +
                                res->body.substr(0, 300));
      }
      json::error_code ec;
      json::value body = json::parse(res->body, ec);
      const json::value* docs =
          !ec && body.is_object() ? body.as_object().if_contains("documents") : nullptr;
      if (docs == nullptr || !docs->is_array()) {
        return UnavailableError(what + ": the reply is not a document page");
      }
      for (const json::value& d : docs->as_array()) {
        const json::object* o = d.if_object();
        const json::value* key = o ? o->if_contains("key") : nullptr;
        const json::value* version = o ? o->if_contains("version") : nullptr;
        const json::value* value = o ? o->if_contains("value") : nullptr;
        if (key == nullptr || !key->is_string() || version == nullptr || !version->is_number() ||
            value == nullptr) {
          return UnavailableError(what + ": a document without key, version or value");
        }
        replica::Change c;
        c.collection = options_.collection;
        c.key = std::string(key->as_string());
        c.version = version->to_number<uint64_t>();
        c.document = json::serialize(*value);
        c.commit_time_micros = now;
        Result<Event> event = replica::MakeChangeEvent(c, "converge-snapshot");
        std::string record;
        if (!event.ok() || !EncodeBinary(*event, &record).ok()) {
          return UnavailableError(what + ": document '" + c.key.substr(0, 200) +
                                  "' is not a change event");
        }
        bytes += record.size();
        if (bytes > kMaxSnapshotBytes) {
          return FailedPreconditionError(
              what + ": the collection is larger than a bootstrap snapshot may be (" +
              std::to_string(kMaxSnapshotBytes) + " bytes)");
        }
        storage->values.push_back(std::move(record));
      }
      const json::value* next = body.as_object().if_contains("next_page_token");
      if (next == nullptr || !next->is_string() || next->as_string().empty()) break;
      page = std::string(next->as_string());
    }
    if (from == 0 && storage->values.size() > end) {
      return UnavailableError(what + ": more documents than feed records; try again");
    }
    replica::SourceBatch out;
    out.partition = 0;
    out.from_offset = from;
    if (from > 0) out.snapshot_version = commitseq;
    out.next_offset = end;
    out.end_offset = end;
    out.sparse = true;
    out.passed_commitseq = commitseq;
    out.records.reserve(storage->values.size());
    for (size_t i = 0; i < storage->values.size(); ++i) {
      out.records.push_back(replica::SourceRecord{i, now, storage->values[i]});
    }
    out.storage = std::move(storage);
    return out;
  }

  std::string Where() const {
    return "collection '" + options_.collection + "' of " + options_.url;
  }

  Env& env_;
  const RemoteSourceOptions options_;
  client::Client client_;
};

}  // namespace

namespace {
Result<client::Options> ClientOptionsFor(const RemoteSourceOptions& options) {
  Result<PushUrl> url = ParsePushUrl(options.url);
  if (!url.ok()) return url.status();
  client::Options co;
  co.host = url->host;
  co.port = url->port;
  co.tls = url->https;
  co.tls_ca_file = options.ca_file;
  co.token = options.token;
  co.timeout_ms = options.wait_ms + options.timeout_ms;
  return co;
}

std::string ErrorMessage(const client::HttpResponse& res) {
  json::error_code ec;
  json::value body = json::parse(res.body, ec);
  if (!ec && body.is_object()) {
    if (const json::value* m = body.as_object().if_contains("message"); m && m->is_string()) {
      return std::string(m->as_string());
    }
  }
  return res.body.substr(0, 300);
}
}  // namespace

struct RemoteNode::Impl {
  RemoteSourceOptions options;
  std::unique_ptr<client::Client> client;
  std::string Where() const { return "collection '" + options.collection + "' of " + options.url; }
};

RemoteNode::RemoteNode(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
RemoteNode::~RemoteNode() = default;

Result<std::unique_ptr<RemoteNode>> RemoteNode::Open(const RemoteSourceOptions& options) {
  CONVERGE_ASSIGN_OR_RETURN(client::Options co, ClientOptionsFor(options));
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->client = std::make_unique<client::Client>(std::move(co));
  return std::unique_ptr<RemoteNode>(new RemoteNode(std::move(impl)));
}

Result<std::string> RemoteNode::Reconcile(std::string_view message) {
  return SendBytes("POST", "/v1/collections/" + impl_->options.collection + "/reconcile",
                   std::string(message));
}

Result<std::string> RemoteNode::MultiWriterChanges(uint64_t from, uint64_t limit) {
  return SendBytes("GET",
                         "/v1/multi-writer/" + impl_->options.collection + "/changes?from=" +
                             std::to_string(from) + "&limit=" + std::to_string(limit),
                         "");
}

Result<std::string> RemoteNode::MultiWriterPost(const std::string& what, std::string body) {
  return SendBytes("POST", "/v1/multi-writer/" + impl_->options.collection + "/" + what,
                         std::move(body));
}

Result<std::string> RemoteNode::SendBytes(const std::string& method, const std::string& target,
                                          std::string body) {
  client::HttpRequest req;
  req.method = method;
  req.target = target;
  if (method == "POST") req.headers.push_back({"Content-Type", "application/octet-stream"});
  req.body = std::move(body);
  Result<client::HttpResponse> res = impl_->client->Send(req);
  if (!res.ok()) {
    return UnavailableError(impl_->Where() + ": " + std::string(res.status().message()));
  }
  const std::string what = impl_->Where() + ": HTTP " + std::to_string(res->status) + ": ";
  switch (res->status) {
    case 200:
      return std::move(res->body);
    case 204:
      return std::string();
    case 401:
    case 403:
      return PermissionDeniedError(what + ErrorMessage(*res));
    case 400:
      return InvalidArgumentError(what + ErrorMessage(*res));
    case 404:
    case 409:
      return FailedPreconditionError(what + ErrorMessage(*res));
    default:
      return UnavailableError(what + ErrorMessage(*res));
  }
}

Result<std::optional<Document>> RemoteNode::GetDocument(const std::string& key) {
  client::HttpRequest req;
  req.method = "GET";
  req.target = "/v1/collections/" + impl_->options.collection + "/docs/" + EncodePathSegment(key);
  Result<client::HttpResponse> res = impl_->client->Send(req);
  if (!res.ok()) {
    return UnavailableError(impl_->Where() + ": " + std::string(res.status().message()));
  }
  if (res->status == 404) return std::optional<Document>();
  if (res->status != 200) {
    return Status(res->status == 401 || res->status == 403 ? StatusCode::kPermissionDenied
                                                           : StatusCode::kUnavailable,
                  impl_->Where() + ": reading '" + key.substr(0, 200) + "': HTTP " +
                      std::to_string(res->status) + ": " + ErrorMessage(*res));
  }
  Document d;
  d.key = key;
  d.value = std::move(res->body);
  const std::string version = res->Header("Converge-Version");
  try {
    d.version = std::stoull(version);
  } catch (...) {
    return UnavailableError(impl_->Where() + ": reading '" + key.substr(0, 200) +
                            "': no Converge-Version");
  }
  return std::optional<Document>(std::move(d));
}

Result<std::unique_ptr<replica::Source>> NewRemoteSource(Env& env,
                                                         const RemoteSourceOptions& options) {
  CONVERGE_ASSIGN_OR_RETURN(client::Options co, ClientOptionsFor(options));
  return std::unique_ptr<replica::Source>(new RemoteSource(env, options, std::move(co)));
}

}  // namespace converge::server
