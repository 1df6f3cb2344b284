#include "server/server.h"

#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <chrono>
#include <cstdio>
#include <thread>
#include <vector>

#include "converge/consumer_group.h"
#include "converge/env.h"
#include "converge/log.h"
#include "converge/store.h"
#include "server/api.h"
#include "server/blocking_pool.h"
#include "server/http_server.h"
#include "server/metered_env.h"
#include "server/metrics.h"
#include "server/store_metrics.h"
#include "server/wakeup_hub.h"
#include "store/http_handler.h"

namespace converge::server {

// Members are declared in dependency order: later ones use earlier ones, and are destroyed
// first.
struct Server::Impl {
  ServerConfig config;
  MetricsRegistry metrics;
  std::unique_ptr<MeteredEnv> env;
  std::unique_ptr<Log> log;
  std::unique_ptr<ConsumerGroups> groups;
  std::unique_ptr<Store> store;  // feeds its change events into `log`
  std::unique_ptr<store_internal::StoreHttpHandler> store_http;
  asio::io_context ioc;
  std::unique_ptr<BlockingPool> pool;
  WakeupHub hub;
  std::unique_ptr<Api> api;
  std::unique_ptr<HttpServer> http;
  std::atomic<bool> shutdown_requested{false};
};

Result<std::unique_ptr<Server>> Server::Open(const ServerConfig& config) {
  CONVERGE_RETURN_IF_ERROR(ValidateConfig(config));
  auto impl = std::make_unique<Impl>();
  impl->config = config;
  impl->env = std::make_unique<MeteredEnv>(Env::Default(), impl->metrics);
  const std::string& dir = impl->config.data_dir;
  CONVERGE_RETURN_IF_ERROR(impl->env->fs().CreateDirs(dir));

  LogOptions log_options;
  log_options.dir = dir + "/log";
  CONVERGE_ASSIGN_OR_RETURN(impl->log, Log::Open(*impl->env, log_options));

  ConsumerGroupsOptions group_options;
  group_options.dir = dir + "/groups";
  group_options.commit_mode =
      impl->config.groups.sync_acks ? CommitMode::kSync : CommitMode::kPeriodic;
  group_options.commit_interval_ms = impl->config.groups.commit_interval_ms;
  group_options.fetch_max_records = impl->config.limits.max_fetch_events;
  group_options.fetch_max_bytes = impl->config.limits.max_fetch_bytes;
  group_options.list_max_records = impl->config.limits.max_fetch_events;
  group_options.replay_max_records = impl->config.limits.max_fetch_events;
  CONVERGE_ASSIGN_OR_RETURN(impl->groups,
                            ConsumerGroups::Open(*impl->env, *impl->log, group_options));

  impl->pool = std::make_unique<BlockingPool>(impl->config.storage_threads);
  if (impl->config.store.enabled) {
    const StoreConfig& sc = impl->config.store;
    StoreOptions store_options;
    store_options.dir = dir + "/store";
    store_options.durability = sc.durability;
    store_options.sync_interval_ms = sc.sync_interval_ms;
    store_options.max_document_bytes = sc.max_document_bytes;
    store_options.max_store_bytes = sc.max_store_bytes;
    store_options.checkpoint_wal_bytes = sc.checkpoint_wal_bytes;
    store_options.ttl_sweep_interval_ms = sc.ttl_sweep_interval_ms;
    store_options.feed_log = impl->log.get();
    store_options.feed_topic = sc.feed_topic;
    store_options.feed_topic_options = impl->config.topic_defaults;
    // Group commits run on the pool, so writes never block an I/O thread (the pool is joined
    // before the store is destroyed).
    BlockingPool* pool = impl->pool.get();
    store_options.background = [pool](std::function<void()> task) { pool->Post(std::move(task)); };
    CONVERGE_ASSIGN_OR_RETURN(impl->store, Store::Open(*impl->env, store_options));
    // Computed at scrape time (scrapes run on the pool and end before the store is closed).
    impl->metrics.AddCollector(
        [store = impl->store.get()](std::vector<MetricsRegistry::Sample>* out) {
          CollectStoreMetrics(*store, out);
        });
    store_internal::StoreHttpOptions http_options;
    http_options.inline_writes = true;
    impl->store_http =
        std::make_unique<store_internal::StoreHttpHandler>(*impl->store, http_options);
  }

  ApiDeps deps;
  deps.config = &impl->config;
  deps.env = impl->env.get();
  deps.log = impl->log.get();
  deps.groups = impl->groups.get();
  deps.metrics = &impl->metrics;
  deps.pool = impl->pool.get();
  deps.hub = &impl->hub;
  deps.store = impl->store_http.get();
  impl->api = std::make_unique<Api>(deps);

  HttpServerOptions http_options;
  http_options.address = impl->config.listen_address;
  http_options.port = impl->config.listen_port;
  http_options.tls_cert_file = impl->config.tls_cert_file;
  http_options.tls_key_file = impl->config.tls_key_file;
  http_options.limits = impl->config.limits;
  Api* api = impl->api.get();
  impl->http = std::make_unique<HttpServer>(
      impl->ioc, http_options, [api](HttpRequest& req) { return api->Handle(req); },
      &impl->metrics);
  return std::unique_ptr<Server>(new Server(std::move(impl)));
}

Server::Server(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Server::~Server() {
  if (!impl_) return;
  // Destroy in an order that never leaves a callback pointing at freed state: the pool
  // (joined: nothing more is posted to the io_context), the HTTP server, the watches, the
  // groups, the log.
  impl_->pool.reset();
  impl_->http.reset();
  impl_->api.reset();
  impl_->store_http.reset();
  impl_->store.reset();
  impl_->groups.reset();
  impl_->log.reset();
}

Status Server::Listen() { return impl_->http->Listen(); }

uint16_t Server::port() const { return impl_->http->port(); }

std::string Server::url() const {
  std::string host = impl_->config.listen_address;
  if (host.find(':') != std::string::npos) host = "[" + host + "]";
  return std::string(impl_->config.tls_enabled() ? "https://" : "http://") + host + ":" +
         std::to_string(port());
}

void Server::Shutdown() {
  Impl* impl = impl_.get();
  if (impl->shutdown_requested.exchange(true)) return;
  impl->api->BeginShutdown();
  impl->hub.Shutdown();
  impl->http->BeginShutdown([impl] { impl->ioc.stop(); });
}

Status Server::Run(bool handle_signals) {
  Impl* impl = impl_.get();
  boost::asio::signal_set signals(impl->ioc);
  if (handle_signals) {
    signals.add(SIGTERM);
    signals.add(SIGINT);
    signals.async_wait([this](boost::system::error_code ec, int signo) {
      if (ec) return;
      std::fprintf(stderr, "converge serve: %s received: draining\n",
                   signo == SIGTERM ? "SIGTERM" : "SIGINT");
      Shutdown();
    });
  }
  impl->http->Start();
  unsigned threads = impl->config.io_threads;
  if (threads == 0) threads = std::clamp(std::thread::hardware_concurrency(), 1u, 2u);
  std::vector<std::thread> extra;
  for (unsigned i = 1; i < threads; ++i) extra.emplace_back([impl] { impl->ioc.run(); });
  impl->ioc.run();
  for (auto& t : extra) t.join();
  // Every request has been answered (or the drain timed out). No new work can arrive; wait
  // for storage calls still running, then let the coroutines they resume finish (their
  // sockets are closed, so they end at once) before making everything durable.
  impl->pool->Join();
  signals.cancel();
  impl->ioc.restart();
  impl->ioc.run_for(std::chrono::seconds(2));
  impl->api->ReleaseWatches();
  Status flushed = impl->groups->Flush();
  Status store_synced = impl->store ? impl->store->Sync() : Status::Ok();
  // Every change event of the store into the log before the log's final sync.
  if (store_synced.ok() && impl->store) store_synced = impl->store->FlushFeed();
  Status synced = impl->log->Sync();
  if (!flushed.ok()) return flushed.WithContext("flushing consumer groups");
  if (!store_synced.ok()) return store_synced.WithContext("syncing the store");
  if (!synced.ok()) return synced.WithContext("syncing the log");
  return Status::Ok();
}

}  // namespace converge::server
