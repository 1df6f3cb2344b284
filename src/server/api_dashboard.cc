// GET /ui and GET /ui/{asset}: the dashboard's static files (src/server/dashboard/), built into
// the binary. They hold no data, so they need no token; the page asks for one and sends it as
// `Authorization: Bearer` on every API call it makes (docs/server.md, "Dashboard").
#include <chrono>

#include "server/api.h"
#include "server/api_internal.h"
#include "server/dashboard_assets.h"
#include "server/json_util.h"
#include "server/wakeup_hub.h"

namespace converge::server {

namespace {
// Not a group key (those hold a newline between topic and group: see GroupKey).
constexpr char kOverviewKey[] = "overview-stream";
}  // namespace

asio::awaitable<HttpReply> Api::Dashboard(Call& call) {
  if (Status s = CheckQuery(call.query, {}); !s.ok()) co_return Error(s);
  const std::string name =
      call.route.id == RouteId::kDashboard ? std::string("index.html") : call.Param("asset");
  const DashboardAsset* asset = FindDashboardAsset(name);
  if (asset == nullptr) {
    co_return Error(http::status::not_found, "NOT_FOUND",
                    "no such dashboard file: " + name.substr(0, 200));
  }
  HttpResponse res{http::status::ok, 11};
  res.set(http::field::content_type, asset->content_type);
  // The files change only with the binary; a browser revalidates on every load.
  res.set(http::field::cache_control, "no-cache");
  // Only this origin's scripts, styles and API; nothing inline and nothing elsewhere.
  res.set("Content-Security-Policy",
          "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'");
  res.set("X-Content-Type-Options", "nosniff");
  res.body() = std::string(asset->content);
  res.prepare_payload();
  co_return Reply(std::move(res));
}

// The numbers of the dashboard's overview that cost no more than a topic listing: per topic
// the caller may see (the same filter as GET /v1/topics without internal topics), its end
// offsets, retained events and events published through this server since it started.
std::string Api::OverviewJson(const Principal& who) {
  std::string out =
      "{\"at_ms\":" + std::to_string(d_.env->clock().NowWallMicros() / 1000) + ",\"topics\":[";
  uint64_t events_total = 0, published_total = 0;
  bool first = true;
  for (const std::string& name : d_.log->ListTopics()) {
    if (name.empty() || name.front() == '_' || !who.CanSee(name)) continue;
    Result<TopicInfo> info = d_.log->DescribeTopic(name);
    if (!info.ok()) continue;  // deleted meanwhile
    uint64_t events = 0;
    std::string ends;
    for (const PartitionInfo& p : info->partitions) {
      events += p.end_offset - p.start_offset;
      if (!ends.empty()) ends += ',';
      ends += std::to_string(p.end_offset);
    }
    uint64_t published = 0;
    {
      // Only a topic published to since start has a counter; none is created here.
      std::shared_lock lock(publish_counters_mu_);
      if (auto it = publish_counters_.find(name); it != publish_counters_.end()) {
        published = it->second.published->value();
      }
    }
    events_total += events;
    published_total += published;
    if (!first) out += ',';
    first = false;
    out += "{\"name\":";
    AppendJsonString(&out, name);
    out += ",\"end_offsets\":[" + ends + "],\"events\":" + std::to_string(events) +
           ",\"published\":" + std::to_string(published) + '}';
  }
  out += "],\"events\":" + std::to_string(events_total) +
         ",\"published\":" + std::to_string(published_total) + '}';
  return out;
}

// GET /v1/overview/stream: an `overview` event every interval_ms until the client goes or the
// server drains. Read-only (it leases nothing) and idle between events: the wait is a timer
// in the wakeup hub, woken early by a disconnect or the shutdown.
asio::awaitable<HttpReply> Api::OverviewStream(Call& call) {
  Status s = CheckQuery(call.query, {"interval_ms"});
  uint64_t interval_ms = 2000;
  if (auto v = call.Query("interval_ms"); s.ok() && v) {
    Result<uint64_t> n = ParseUintParam("interval_ms", *v, 100, 60'000);
    if (n.ok())
      interval_ms = *n;
    else
      s = n.status();
  }
  if (!s.ok()) co_return Error(s);
  std::shared_ptr<void> slot = TakeSubscriberSlot();  // released however the stream ends
  if (slot == nullptr) co_return TooManySubscribers();
  // The principal lives with the request; the stream keeps its own copy.
  auto who = std::make_shared<Principal>(*call.principal);

  HttpReply reply;
  reply.response = HttpResponse{http::status::ok, 11};
  reply.response.set(http::field::content_type, "text/event-stream");
  reply.response.set(http::field::cache_control, "no-store");
  reply.stream = [this, slot, who, interval_ms](StreamSink& sink) -> asio::awaitable<void> {
    WakeupHub* hub = d_.hub;
    // All overview streams share one hub key (a key per stream would stay in the hub for
    // good): a disconnect wakes them all, and those still wanted go back to sleep below.
    sink.OnPeerClosed([hub] { hub->Notify(kOverviewKey); });
    auto live = [&] {
      return !sink.Closing() && !sink.PeerClosed() && ready_.load() && !hub->shut_down();
    };
    const std::string key = kOverviewKey;
    bool open = co_await sink.Write("retry: 1000\n\n");
    while (open && live()) {
      // Named, not a temporary in the co_await (see the GCC 12 note in blocking_pool.h).
      auto job = [this, who] { return OverviewJson(*who); };
      std::string data = co_await d_.pool->Run(std::move(job));
      open = co_await sink.Write("event: overview\ndata: " + data + "\n\n");
      const auto next = std::chrono::steady_clock::now() + std::chrono::milliseconds(interval_ms);
      while (open && live() && std::chrono::steady_clock::now() < next) {
        const uint64_t seen = hub->Generation(key);
        co_await hub->Wait(key, seen, next);
      }
    }
  };
  co_return reply;
}

}  // namespace converge::server
