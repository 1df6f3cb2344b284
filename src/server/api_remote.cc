// The sidecar-to-sidecar channel (docs/formats/replica.md, "Remote sources"): the change
// stream of one store collection, read by replicas on other converge serve nodes.
//
// GET /v1/collections/{collection}/changes?from=&limit=&wait_ms= reads the store's feed topic
// from offset `from`: at most `limit` records are scanned and those of the collection returned
// as CloudEvents (JSON form, as the feed holds them), with the offset to ask from next. A
// reply is sparse: offsets of other collections are passed without being named, and its
// `commitseq` covers them too, so a consistency token of any write is reached. Nothing is ever
// skipped silently: a record that is not a change event is returned as `malformed`, a damaged
// range as `damage`, and a position the feed's retention has removed is 410 POSITION_GONE.
#include <boost/json/parse.hpp>

#include "converge/replica.h"
#include "converge/store.h"
#include "reconcile/reconcile_set.h"
#include "reconcile/session.h"
#include "server/api_internal.h"
#include "server/json_util.h"

namespace converge::server {

namespace {

// The WakeupHub key of the store's feed (not a group key: those hold a NUL).
constexpr char kFeedKey[] = "store-feed-appends";
constexpr uint64_t kDefaultLimit = 1000;

struct ChangesReply {
  http::status status = http::status::ok;
  std::string body;
  bool empty = false;  // nothing past `from` yet: a long poll waits
};

}  // namespace

Status Api::WatchFeed() {
  std::lock_guard lock(watches_mu_);
  if (feed_watch_ != nullptr) return Status::Ok();
  WakeupHub* hub = d_.hub;
  CONVERGE_ASSIGN_OR_RETURN(
      feed_watch_, d_.log->WatchAppends(d_.config->store.feed_topic,
                                        [hub](uint32_t, uint64_t) { hub->Notify(kFeedKey); }));
  return Status::Ok();
}

namespace {
// Both routes of the sidecar-to-sidecar channel: read permission on the collection first (a
// token that may not read it learns nothing, not even whether its name or query is
// well-formed), then the name.
Status CheckCollectionRead(const Principal& who, const std::string& collection) {
  if (!who.CanReadCollection(collection)) {
    return PermissionDeniedError("service '" + who.service + "' may not read collection '" +
                                 collection.substr(0, 200) + "'");
  }
  return Store::ValidateCollectionName(collection);
}
}  // namespace

asio::awaitable<HttpReply> Api::CollectionChanges(Call& call) {
  const std::string& collection = call.Param("collection");
  const Principal& who = *call.principal;
  // Authorization before anything of the request is read: a token that may not read the
  // collection learns nothing, not even whether its query is well-formed.
  if (Status s = CheckCollectionRead(who, collection); !s.ok()) co_return Error(s);
  if (Status s = CheckQuery(call.query, {"from", "limit", "wait_ms"}); !s.ok()) co_return Error(s);
  uint64_t from = 0;
  uint64_t limit = std::min<uint64_t>(kDefaultLimit, d_.config->limits.max_fetch_events);
  int64_t wait_ms = 0;
  if (std::optional<std::string> v = call.Query("from")) {
    Result<uint64_t> n = ParseUintParam("from", *v, 0, UINT64_MAX - 1);
    if (!n.ok()) co_return Error(n.status());
    from = *n;
  }
  if (std::optional<std::string> v = call.Query("limit")) {
    Result<uint64_t> n = ParseUintParam("limit", *v, 1, UINT64_MAX);
    if (!n.ok()) co_return Error(n.status());
    // Lowered to this server's bound rather than refused: the puller cannot know it.
    limit = std::min<uint64_t>(*n, d_.config->limits.max_fetch_events);
  }
  if (std::optional<std::string> v = call.Query("wait_ms")) {
    Result<uint64_t> n =
        ParseUintParam("wait_ms", *v, 0, static_cast<uint64_t>(d_.config->limits.max_wait_ms));
    if (!n.ok()) co_return Error(n.status());
    wait_ms = static_cast<int64_t>(*n);
  }

  const std::string topic = d_.config->store.feed_topic;
  const uint64_t max_bytes = d_.config->limits.max_fetch_bytes;
  auto read = [this, topic, collection, from, limit, max_bytes]() -> ChangesReply {
    ChangesReply out;
    Result<TopicInfo> info = d_.log->DescribeTopic(topic);
    uint64_t start = 0, end = 0;
    if (info.ok() && !info->partitions.empty()) {
      start = info->partitions[0].start_offset;
      end = info->partitions[0].end_offset;
    } else if (!info.ok() && info.status().code() != StatusCode::kNotFound) {
      const HttpReply e = Error(info.status());
      out.status = e.response.result();
      out.body = e.response.body();
      return out;
    }
    // 410 POSITION_GONE, with what a bootstrap snapshot needs: `end`, the offset to go on
    // from after it, and `commitseq`, the commit sequence number of the record before `end`
    // (every commit up to it is visible to a collection listing that starts after this).
    auto Gone = [&](uint64_t kept, uint64_t end_now) {
      ChangesReply g;
      g.status = http::status::gone;
      uint64_t seq = 0;
      if (end_now > 0) {
        Result<ReadBatch> last = d_.log->Read(topic, 0, end_now - 1, 1, max_bytes);
        if (last.ok() && !last->records.empty()) {
          Result<replica::Change> c =
              replica::ParseChangeRecord(last->records[0].value, last->records[0].timestamp_micros);
          if (c.ok()) seq = c->commitseq;
        }
      }
      g.body = "{\"code\":\"POSITION_GONE\",\"message\":";
      AppendJsonString(&g.body, "the change feed '" + topic + "' no longer holds offsets [" +
                                    std::to_string(from) + ", " + std::to_string(kept) +
                                    "): removed by retention");
      g.body += ",\"start\":" + std::to_string(kept) + ",\"end\":" + std::to_string(end_now) +
                ",\"commitseq\":" + std::to_string(seq) + "}";
      return g;
    };
    auto head = [&](uint64_t next) {
      std::string b = "{\"collection\":";
      AppendJsonString(&b, collection);
      b += ",\"feed_topic\":";
      AppendJsonString(&b, topic);
      b += ",\"from\":" + std::to_string(from) + ",\"next\":" + std::to_string(next) +
           ",\"start\":" + std::to_string(start) + ",\"end\":" + std::to_string(end);
      return b;
    };
    if (from > end) {
      out.status = http::status::conflict;
      out.body = "{\"code\":\"FAILED_PRECONDITION\",\"message\":";
      AppendJsonString(&out.body, "position " + std::to_string(from) + " is past the end " +
                                      std::to_string(end) + " of the change feed '" + topic +
                                      "' (was this node's data replaced?)");
      out.body += "}";
      return out;
    }
    if (from < start) return Gone(start, end);
    if (from == end) {
      out.empty = true;
      out.body = head(from) + ",\"next_time_us\":0,\"commitseq\":0,\"changes\":[]}";
      return out;
    }
    Result<ReadBatch> batch = d_.log->Read(topic, 0, from, limit + 1, max_bytes);
    if (!batch.ok()) {
      if (std::optional<uint64_t> resume = DataLossResumeOffset(batch.status())) {
        out.body = head(*resume) + ",\"next_time_us\":0,\"commitseq\":0,\"damage\":";
        AppendJsonString(&out.body, batch.status().message());
        out.body += ",\"changes\":[]}";
        return out;
      }
      const HttpReply e = Error(batch.status());
      out.status = e.response.result();
      out.body = e.response.body();
      return out;
    }
    if (!batch->records.empty() && batch->records[0].offset > from) {
      // Retention ran between the describe and the read.
      return Gone(batch->records[0].offset, end);
    }
    const size_t n = std::min<size_t>(batch->records.size(), limit);
    const uint64_t next = n > 0 ? batch->records[n - 1].offset + 1 : batch->next_offset;
    const int64_t next_time = batch->records.size() > n ? batch->records[n].timestamp_micros : 0;
    uint64_t commitseq = 0;
    std::string changes;
    for (size_t i = 0; i < n; ++i) {
      const StoredRecord& r = batch->records[i];
      std::string item = "{\"offset\":" + std::to_string(r.offset) +
                         ",\"time_us\":" + std::to_string(r.timestamp_micros);
      Result<Event> event = DecodeBinary(r.value);
      Result<replica::Change> change = event.ok()
                                           ? replica::ParseChangeEvent(*event, r.timestamp_micros)
                                           : Result<replica::Change>(event.status());
      if (!change.ok()) {
        // Whose it is cannot be told: the replica decides (reported, then stop or skip).
        item += ",\"malformed\":";
        AppendJsonString(&item, change.status().message());
      } else {
        commitseq = std::max(commitseq, change->commitseq);
        if (change->collection != collection) continue;
        item += ",\"event\":";
        if (Status s = AppendJson(*event, &item); !s.ok()) {
          item.resize(item.size() - std::string_view(",\"event\":").size());
          item += ",\"malformed\":";
          AppendJsonString(&item, s.message());
        }
      }
      item += "}";
      if (!changes.empty()) changes += ',';
      changes += item;
    }
    out.body = head(next) + ",\"next_time_us\":" + std::to_string(next_time) +
               ",\"commitseq\":" + std::to_string(commitseq) + ",\"changes\":[" + changes + "]}";
    return out;
  };

  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(wait_ms);
  bool watching = false;
  for (;;) {
    const uint64_t seen = d_.hub->Generation(kFeedKey);
    ChangesReply r = co_await d_.pool->Run(read);
    const bool wait = r.empty && wait_ms > 0 && std::chrono::steady_clock::now() < deadline &&
                      ready_.load() && !d_.hub->shut_down();
    if (!wait) co_return Reply(JsonReply(r.status, std::move(r.body)));
    if (!watching) {
      Status watched = co_await d_.pool->Run([this] { return WatchFeed(); });
      if (watched.ok()) {
        watching = true;
        continue;  // read again: an append before the watch existed is not missed
      }
      if (watched.code() != StatusCode::kNotFound) co_return Error(watched);
      // No feed topic yet (nothing written to the store): look again shortly.
      co_await d_.hub->Wait(
          kFeedKey, seen,
          std::min(deadline, std::chrono::steady_clock::now() + std::chrono::milliseconds(100)));
      continue;
    }
    co_await d_.hub->Wait(kFeedKey, seen, deadline);
  }
}

// ---------------------------------------------------------------------------------------
// POST /v1/collections/{collection}/reconcile: the responder of docs/formats/reconcile.md over a
// digest of the collection's (key, version) entries that is kept, not rebuilt per run: it is
// built once (a listing, from a feed offset taken before it) and then brought up to date from
// the store's feed before each message, so an in-sync check reads no documents.

namespace {
// Collections with a digest at once (each holds ~120 bytes per key).
constexpr size_t kMaxDigests = 64;
constexpr size_t kFeedPage = 1000;
}  // namespace

struct Api::CollectionDigest {
  std::mutex mu;
  std::unique_ptr<reconcile::ReconcileSet> set;
  std::unique_ptr<reconcile::Responder> responder;
  uint64_t position = 0;  // the feed offset the digest has applied up to
  bool built = false;
};

Status Api::CatchUpDigest(const std::string& collection, CollectionDigest& g) {
  const std::string& topic = d_.config->store.feed_topic;
  for (int attempt = 0; attempt < 2; ++attempt) {
    if (!g.built) {
      // Sessions of the old digest are dropped with it: their initiators start over.
      g.responder.reset();
      g.set = std::make_unique<reconcile::ReconcileSet>();
      g.responder = std::make_unique<reconcile::Responder>(*g.set, *d_.env);
      uint64_t end = 0;
      Result<TopicInfo> info = d_.log->DescribeTopic(topic);
      if (info.ok() && !info->partitions.empty()) {
        end = info->partitions[0].end_offset;
      } else if (!info.ok() && info.status().code() != StatusCode::kNotFound) {
        return info.status();
      }
      // The listing starts after `end` was read: it reflects every change before it, and the
      // feed from `end` on is applied version-gated on top.
      ListOptions list;
      list.limit = 1000;
      while (true) {
        Result<ListResult> page = d_.store->store().List(collection, list);
        if (!page.ok()) {
          if (page.status().code() == StatusCode::kNotFound) break;
          return page.status();
        }
        for (const Document& doc : page->documents) g.set->Put(doc.key, doc.version);
        if (page->next_page_token.empty()) break;
        list.page_token = page->next_page_token;
      }
      g.position = end;
      g.built = true;
    }
    bool rebuild = false;
    while (true) {
      Result<ReadBatch> batch =
          d_.log->Read(topic, 0, g.position, kFeedPage, d_.config->limits.max_fetch_bytes);
      if (!batch.ok()) {
        if (batch.status().code() == StatusCode::kNotFound) break;  // no feed yet
        if (!DataLossResumeOffset(batch.status()).has_value()) return batch.status();
        rebuild = true;  // a damaged range: what it held is unknown
        break;
      }
      if (batch->records.empty()) break;
      if (batch->records[0].offset > g.position) {
        rebuild = true;  // retention removed changes the digest has not seen
        break;
      }
      for (const StoredRecord& r : batch->records) {
        g.position = r.offset + 1;
        Result<replica::Change> c = replica::ParseChangeRecord(r.value, r.timestamp_micros);
        if (!c.ok() || c->collection != collection) continue;
        const std::optional<uint64_t> now = g.set->Get(c->key);
        if (now && *now >= c->version) continue;  // the listing already had a newer state
        if (c->kind == replica::ChangeKind::kUpsert) {
          g.set->Put(c->key, c->version);
        } else {
          g.set->Erase(c->key);
        }
      }
    }
    if (!rebuild) return Status::Ok();
    g.built = false;
  }
  return UnavailableError("the change feed keeps changing under the digest of collection '" +
                          collection + "'; try again");
}

Result<std::optional<std::string>> Api::RespondToReconcile(const std::string& collection,
                                                           std::string_view message) {
  std::shared_ptr<CollectionDigest> g;
  {
    std::lock_guard lock(digests_mu_);
    auto it = digests_.find(collection);
    if (it == digests_.end()) {
      if (digests_.size() >= kMaxDigests) {
        return ResourceExhaustedError("digests of " + std::to_string(kMaxDigests) +
                                      " collections are kept already");
      }
      it = digests_.emplace(collection, std::make_shared<CollectionDigest>()).first;
    }
    g = it->second;
  }
  std::lock_guard lock(g->mu);
  CONVERGE_RETURN_IF_ERROR(CatchUpDigest(collection, *g));
  return g->responder->Handle(message);
}

asio::awaitable<HttpReply> Api::CollectionReconcile(Call& call) {
  const std::string& collection = call.Param("collection");
  const Principal& who = *call.principal;
  // Authorization before the body or query is looked at.
  if (Status s = CheckCollectionRead(who, collection); !s.ok()) co_return Error(s);
  if (Status s = CheckQuery(call.query, {}); !s.ok()) co_return Error(s);
  auto job = [this, collection, body = std::move(call.req.body())] {
    return RespondToReconcile(collection, body);
  };
  Result<std::optional<std::string>> reply = co_await d_.pool->Run(std::move(job));
  co_return BytesReply(std::move(reply));
}

HttpReply Api::BytesReply(Result<std::optional<std::string>> reply) {
  if (!reply.ok()) return Error(reply.status());
  if (!reply->has_value()) return Reply(HttpResponse{http::status::no_content, 11});
  HttpResponse res{http::status::ok, 11};
  res.set(http::field::content_type, "application/octet-stream");
  res.body() = std::move(**reply);
  res.prepare_payload();
  return Reply(std::move(res));
}

}  // namespace converge::server
