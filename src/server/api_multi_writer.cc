// The multi-writer routes (/v1/multi-writer, docs/api/openapi.yaml; docs/formats/replica.md,
// "Multi-writer collections"): read a key with its siblings and the context to resolve them,
// write or delete a key (naming the versions it resolves), and the peers' pull of this node's
// origin log.
#include <boost/json/parse.hpp>

#include "server/api_internal.h"
#include "server/json_util.h"
#include "server/multi_writers.h"

namespace converge::server {

namespace {

constexpr char kContextHeader[] = "Converge-Context";
constexpr uint64_t kDefaultExportLimit = 100;
constexpr uint64_t kMaxExportLimit = 400;

// Authorization first (a token that may not read, or write, the collection learns nothing,
// not even whether it is a multi-writer collection here), then the name.
Status Authorize(const Principal& who, const std::string& collection, bool write) {
  if (write ? !who.CanWriteCollection(collection) : !who.CanReadCollection(collection)) {
    return PermissionDeniedError("service '" + who.service + "' may not " +
                                 (write ? "write" : "read") + " collection '" +
                                 collection.substr(0, 200) + "'");
  }
  return Store::ValidateCollectionName(collection);
}

void AppendDocument(std::string* out, const std::string& doc) {
  boost::system::error_code ec;
  boost::json::parse(doc, ec);
  if (ec) {
    AppendJsonString(out, doc);  // never stored (writes are JSON), kept printable anyway
  } else {
    *out += doc;
  }
}

std::string ReadBody(const std::string& collection, const std::string& key,
                     const MultiWriters::Read& r) {
  std::string body = "{\"collection\":";
  AppendJsonString(&body, collection);
  body += ",\"key\":";
  AppendJsonString(&body, key);
  body += ",\"deleted\":";
  body += r.document ? "false" : "true";
  body += ",\"document\":";
  if (r.document) {
    AppendDocument(&body, *r.document);
  } else {
    body += "null";
  }
  body += ",\"context\":";
  AppendJsonString(&body, FormatContext(r.state.vv));
  body += ",\"siblings\":[";
  bool first = true;
  for (const replica::mw::Sibling& s : r.state.siblings) {
    if (!first) body += ',';
    first = false;
    body += "{\"node\":" + std::to_string(s.dot.replica.value()) +
            ",\"counter\":" + std::to_string(s.dot.counter) + ",\"hlc\":\"" + s.hlc.ToString() +
            "\",\"deleted\":" + (s.deleted ? "true" : "false") + ",\"document\":";
    if (s.deleted) {
      body += "null";
    } else {
      AppendDocument(&body, s.document);
    }
    body += "}";
  }
  body += "]}";
  return body;
}

}  // namespace

asio::awaitable<HttpReply> Api::MultiWriterChanges(Call& call) {
  const std::string& collection = call.Param("collection");
  if (Status s = Authorize(*call.principal, collection, /*write=*/false); !s.ok()) {
    co_return Error(s);
  }
  if (d_.multi_writers == nullptr || d_.multi_writers->Find(collection) == nullptr) {
    co_return Error(http::status::not_found, "NOT_FOUND",
                    "collection '" + collection + "' is not a multi-writer collection here");
  }
  if (Status s = CheckQuery(call.query, {"from", "limit"}); !s.ok()) co_return Error(s);
  uint64_t from = 1;
  uint64_t limit = kDefaultExportLimit;
  if (std::optional<std::string> v = call.Query("from")) {
    Result<uint64_t> n = ParseUintParam("from", *v, 1, UINT64_MAX - 1);
    if (!n.ok()) co_return Error(n.status());
    from = *n;
  }
  if (std::optional<std::string> v = call.Query("limit")) {
    Result<uint64_t> n = ParseUintParam("limit", *v, 1, UINT64_MAX);
    if (!n.ok()) co_return Error(n.status());
    limit = std::min(*n, kMaxExportLimit);  // lowered, not refused: the puller cannot know
  }
  MultiWriters* mw = d_.multi_writers;
  auto job = [mw, collection, from, limit] { return mw->Export(collection, from, limit); };
  Result<std::string> page = co_await d_.pool->Run(std::move(job));
  if (!page.ok()) co_return Error(page.status());
  HttpResponse res{http::status::ok, 11};
  res.set(http::field::content_type, "application/octet-stream");
  res.body() = std::move(*page);
  res.prepare_payload();
  co_return Reply(std::move(res));
}

asio::awaitable<HttpReply> Api::MultiWriterDocument(Call& call) {
  const std::string& collection = call.Param("collection");
  const http::verb method = call.req.method();
  const bool write = method != http::verb::get;
  if (Status s = Authorize(*call.principal, collection, write); !s.ok()) co_return Error(s);
  if (d_.multi_writers == nullptr || d_.multi_writers->Find(collection) == nullptr) {
    co_return Error(http::status::not_found, "NOT_FOUND",
                    "collection '" + collection + "' is not a multi-writer collection here");
  }
  if (Status s = CheckQuery(call.query, {}); !s.ok()) co_return Error(s);
  const std::string key = call.Param("key");
  if (Status s = Store::ValidateKey(key, 512); !s.ok()) co_return Error(s);
  MultiWriters* mw = d_.multi_writers;
  if (!write) {
    auto job = [mw, collection, key] { return mw->Get(collection, key); };
    Result<std::optional<MultiWriters::Read>> r = co_await d_.pool->Run(std::move(job));
    if (!r.ok()) co_return Error(r.status());
    if (!r->has_value()) {
      co_return Error(
          http::status::not_found, "NOT_FOUND",
          "no document '" + key.substr(0, 200) + "' in collection '" + collection + "'");
    }
    HttpResponse res = JsonReply(http::status::ok, ReadBody(collection, key, **r));
    res.set(kContextHeader, FormatContext((*r)->state.vv));
    co_return Reply(std::move(res));
  }
  std::optional<conflict::VersionVector> context;
  if (call.req.count(kContextHeader) != 0) {
    Result<conflict::VersionVector> c = ParseContext(call.req[kContextHeader]);
    if (!c.ok()) co_return Error(c.status());
    context = std::move(*c);
  }
  std::optional<std::string> document;
  if (method == http::verb::put) {
    std::string body = std::move(call.req.body());
    boost::system::error_code ec;
    boost::json::parse(body, ec);
    if (ec || body.empty()) {
      co_return Error(InvalidArgumentError("the document must be JSON"));
    }
    document = std::move(body);
  }
  auto job = [mw, collection, key, document = std::move(document), context]() mutable {
    return mw->Write(collection, key, std::move(document), context);
  };
  Result<MultiWriters::Read> r = co_await d_.pool->Run(std::move(job));
  if (!r.ok()) co_return Error(r.status());
  HttpResponse res = JsonReply(http::status::ok, ReadBody(collection, key, *r));
  res.set(kContextHeader, FormatContext(r->state.vv));
  co_return Reply(std::move(res));
}

// Anti-entropy between peers: POST .../reconcile answers a reconciliation message over this
// node's (key, state) digest; POST .../states answers the states of the keys listed (one per
// line), which the peer merges. Both binary, both authorized like the pull of the origin log.
asio::awaitable<HttpReply> Api::MultiWriterReconcile(Call& call) {
  const std::string& collection = call.Param("collection");
  if (Status s = Authorize(*call.principal, collection, /*write=*/false); !s.ok()) {
    co_return Error(s);
  }
  if (d_.multi_writers == nullptr || d_.multi_writers->Find(collection) == nullptr) {
    co_return Error(http::status::not_found, "NOT_FOUND",
                    "collection '" + collection + "' is not a multi-writer collection here");
  }
  if (Status s = CheckQuery(call.query, {}); !s.ok()) co_return Error(s);
  const bool states = call.req.target().ends_with("/states");
  MultiWriters* mw = d_.multi_writers;
  auto job = [mw, collection, states,
              body = std::move(call.req.body())]() -> Result<std::optional<std::string>> {
    if (states) {
      CONVERGE_ASSIGN_OR_RETURN(std::string out, mw->States(collection, body));
      return std::optional<std::string>(std::move(out));
    }
    return mw->Reconcile(collection, body);
  };
  Result<std::optional<std::string>> reply = co_await d_.pool->Run(std::move(job));
  co_return BytesReply(std::move(reply));
}

}  // namespace converge::server
