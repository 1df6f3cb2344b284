// Requests that run in another sidecar (cluster:): forwarded there as they came, with the
// caller's credentials, and its answer returned. Used for shared consumer groups
// (api_groups.cc, RouteToGroupOwner) and for the routes of leased singleton work that runs in
// another sidecar: the saga routes (lease "sagas") and a parked replica's routes that need its
// applier (lease "replica:<name>"), RouteToLeaseHolder below.
#include <boost/beast/core/string.hpp>
#include <cctype>
#include <map>
#include <mutex>
#include <optional>

#include "converge/client.h"
#include "server/api.h"
#include "server/api_internal.h"
#include "server/cluster_groups.h"
#include "server/leases.h"
#include "server/push_http_client.h"

namespace converge::server {

namespace {

// Header fields that belong to one connection, not to the request or reply.
bool HopByHop(std::string_view name) {
  static constexpr std::string_view kFields[] = {"host",
                                                 "connection",
                                                 "content-length",
                                                 "transfer-encoding",
                                                 "keep-alive",
                                                 "te",
                                                 "trailer",
                                                 "upgrade",
                                                 "proxy-connection",
                                                 "expect",
                                                 "proxy-authorization"};
  for (std::string_view f : kFields) {
    if (name.size() == f.size() &&
        std::equal(name.begin(), name.end(), f.begin(),
                   [](char a, char b) { return std::tolower(a) == std::tolower(b); })) {
      return true;
    }
  }
  return false;
}
}  // namespace

// Forwarded requests block a thread of their own pools, never the storage pool: fetches (a
// long poll waits at the owner up to limits.max_wait_ms) on one, everything else (acks, nacks,
// the lookups of where a group runs) on another, so that acks never queue behind long polls.
// At most kFetchThreads forwarded fetches wait at once per sidecar; more queue. Connections to
// each owner are kept for reuse, per slot (the owner's URL, and the kind of call: a client's
// timeout is fixed when it is made), and dropped when a call to that slot fails.
constexpr int64_t kForwardTimeoutMs = 30'000;

struct Api::Forwarder {
  static constexpr size_t kFetchThreads = 64;
  BlockingPool pool{16};
  BlockingPool fetch_pool{kFetchThreads};
  std::mutex mu;
  std::map<std::string, std::vector<std::unique_ptr<client::Client>>> idle;

  std::unique_ptr<client::Client> Take(const std::string& slot, const std::string& url,
                                       int64_t timeout_ms) {
    {
      std::lock_guard<std::mutex> lock(mu);
      auto& v = idle[slot];
      if (!v.empty()) {
        std::unique_ptr<client::Client> c = std::move(v.back());
        v.pop_back();
        return c;
      }
    }
    Result<PushUrl> u = ParsePushUrl(url);
    if (!u.ok()) return nullptr;
    client::Options o;
    o.host = u->host;
    o.port = u->port;
    o.tls = u->https;
    o.timeout_ms = timeout_ms;
    o.max_response_bytes = 256ull << 20;
    return std::make_unique<client::Client>(o);
  }
  void Give(const std::string& slot, std::unique_ptr<client::Client> c) {
    std::lock_guard<std::mutex> lock(mu);
    auto& v = idle[slot];
    if (v.size() < 32) v.push_back(std::move(c));
  }
  void Forget(const std::string& slot) {
    std::lock_guard<std::mutex> lock(mu);
    idle.erase(slot);
  }
};

BlockingPool& Api::ForwardPool() {
  std::lock_guard lock(watches_mu_);
  if (forwarder_ == nullptr) forwarder_ = std::make_shared<Forwarder>();
  return forwarder_->pool;
}

asio::awaitable<std::optional<HttpReply>> Api::RouteToLeaseHolder(Call& call,
                                                                  const std::string& lease) {
  // Only with the lease in use here and the cluster's node registry (advertised URLs); a
  // request that was forwarded once is served here or refused (the work answers 503 where it
  // does not run), never forwarded again.
  if (d_.cluster_groups == nullptr || leases_ == nullptr) co_return std::nullopt;
  if (call.req.find(std::string(kForwardedHeader)) != call.req.end()) co_return std::nullopt;
  // Not leased here (nullopt), or running here (true): this sidecar answers. So it does while
  // it holds the lease and its work is still starting (the route answers 503 then): the
  // holder would be this sidecar itself.
  if (leases_->Running(lease).value_or(true) || leases_->Held(lease)) co_return std::nullopt;
  ClusterGroups* cluster = d_.cluster_groups;
  // Named, not a temporary in the co_await (see the GCC 12 note in blocking_pool.h).
  auto locate = [cluster, lease] { return cluster->UrlOfLeaseHolder(lease); };
  Result<std::string> url = co_await ForwardPool().Run(std::move(locate));
  if (!url.ok()) co_return Error(url.status());
  co_return co_await ForwardToOwner(call, *url, "");
}

asio::awaitable<HttpReply> Api::ForwardToOwner(Call& call, const std::string& url,
                                               const std::string& get_target,
                                               const std::string& method) {
  client::HttpRequest req;
  req.method = get_target.empty() ? std::string(call.req.method_string()) : method;
  req.target = get_target.empty() ? std::string(call.req.target()) : get_target;
  for (const auto& field : call.req) {
    const std::string_view name(field.name_string().data(), field.name_string().size());
    if (HopByHop(name)) continue;
    if (!get_target.empty() && !boost::beast::iequals(name, "authorization")) continue;
    req.headers.emplace_back(std::string(name), std::string(field.value()));
  }
  req.headers.emplace_back(std::string(kForwardedHeader), d_.config->cluster.instance_id);
  if (get_target.empty()) req.body = call.req.body();
  // A long poll waits at the owner for up to limits.max_wait_ms; any other call is bounded by
  // kForwardTimeoutMs, so calls to an owner that stopped answering free their threads.
  const bool fetch = call.route.id == RouteId::kFetch;
  const int64_t timeout_ms =
      fetch ? d_.config->limits.max_wait_ms + kForwardTimeoutMs : kForwardTimeoutMs;
  ForwardPool();  // creates the forwarder if needed
  std::shared_ptr<Forwarder> f;
  {
    std::lock_guard lock(watches_mu_);
    f = forwarder_;
  }
  // Idle connections are kept per owner and per kind (their timeout is fixed when made).
  const std::string slot = fetch ? url + " fetch" : url;
  // `req` lives in this frame until the job is done; the job is named (the GCC 12 note in
  // blocking_pool.h).
  auto send = [f, url, slot, &req, timeout_ms]() {
    std::unique_ptr<client::Client> c = f->Take(slot, url, timeout_ms);
    if (c == nullptr) {
      return Result<client::HttpResponse>(InternalError("bad owner url '" + url + "'"));
    }
    Result<client::HttpResponse> r = c->Send(req);
    if (r.ok()) {
      f->Give(slot, std::move(c));
    } else {
      f->Forget(slot);  // the owner's other idle connections are likely dead too
    }
    return r;
  };
  BlockingPool& pool = fetch ? f->fetch_pool : f->pool;
  Result<client::HttpResponse> res = co_await pool.Run(std::move(send));
  if (d_.cluster_groups != nullptr) d_.cluster_groups->CountForward(res.ok());
  if (!res.ok()) {
    co_return Error(UnavailableError("the sidecar running it (" + url + ") did not answer: " +
                                     std::string(res.status().message()) +
                                     "; retry (a dead sidecar's groups and singleton work are "
                                     "taken over once its leases expire)"));
  }
  HttpResponse out{static_cast<http::status>(res->status), 11};
  for (const auto& [name, value] : res->headers) {
    if (HopByHop(name)) continue;
    out.set(name, value);
  }
  out.body() = std::move(res->body);
  out.prepare_payload();
  co_return Reply(std::move(out));
}

}  // namespace converge::server
