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
#include "converge/saga.h"
#include "converge/relay.h"
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
  std::unique_ptr<SagaOrchestrator> sagas;  // sends commands into `log`, reads replies from it
  // Publish into `log`; stopped before the log's final sync. The metrics collector holds a weak
  // reference (the relays' connections and lock files must go before `env` and `log`).
  std::shared_ptr<RelayService> relays;
  asio::io_context ioc;
  std::unique_ptr<BlockingPool> pool;
  WakeupHub hub;
  std::unique_ptr<Api> api;
  std::unique_ptr<HttpServer> http;
  std::atomic<bool> shutdown_requested{false};
};

namespace {

Result<std::string> ReadWholeFile(Env& env, const std::string& path) {
  CONVERGE_ASSIGN_OR_RETURN(std::unique_ptr<RandomAccessFile> file,
                            env.fs().NewRandomAccessFile(path));
  CONVERGE_ASSIGN_OR_RETURN(uint64_t size, file->Size());
  constexpr uint64_t kMaxDefinitionBytes = 1 << 20;
  if (size > kMaxDefinitionBytes) {
    return InvalidArgumentError(path + ": larger than 1 MiB, not a saga definition");
  }
  std::string text(size, '\0');
  uint64_t done = 0;
  while (done < size) {
    CONVERGE_ASSIGN_OR_RETURN(
        size_t n, file->Read(done, size - done, reinterpret_cast<uint8_t*>(text.data() + done)));
    if (n == 0) break;
    done += n;
  }
  text.resize(done);
  return text;
}

// The orchestrator on <data_dir>/sagas, with the definition files of the config registered.
Result<std::unique_ptr<SagaOrchestrator>> OpenSagas(Env& env, Log& log,
                                                    const ServerConfig& config) {
  const SagaConfig& sc = config.sagas;
  SagaOrchestratorOptions options;
  options.dir = config.data_dir + "/sagas";
  options.reply_topic = sc.reply_topic;
  options.postgres_conninfo = sc.postgres_conninfo;
  options.postgres_table = sc.postgres_table;
  options.topic_options = config.topic_defaults;
  options.max_in_flight = sc.max_in_flight;
  options.finished_retain_max = sc.finished_retain_max;
  options.finished_retain_ms = sc.finished_retain_ms;
  options.max_data_bytes = static_cast<uint32_t>(
      std::min<uint64_t>(config.limits.max_body_bytes, options.max_data_bytes));
  CONVERGE_ASSIGN_OR_RETURN(std::unique_ptr<SagaOrchestrator> orchestrator,
                            SagaOrchestrator::Open(env, log, options));
  for (const std::string& path : sc.definitions) {
    Result<std::string> text = ReadWholeFile(env, path);
    if (!text.ok()) return text.status().WithContext("sagas.definitions");
    Result<SagaDefinition> definition = ParseSagaDefinition(*text);
    if (!definition.ok()) return definition.status().WithContext("saga definition " + path);
    Status registered = orchestrator->RegisterDefinition(*definition);
    if (!registered.ok()) return registered.WithContext("saga definition " + path);
  }
  return orchestrator;
}

}  // namespace

Result<std::unique_ptr<Server>> Server::Open(const ServerConfig& config) {
  CONVERGE_RETURN_IF_ERROR(ValidateConfig(config));
  auto impl = std::make_unique<Impl>();
  impl->config = config;
  impl->env = std::make_unique<MeteredEnv>(Env::Default(), impl->metrics);
  const std::string& dir = impl->config.data_dir;
  CONVERGE_RETURN_IF_ERROR(impl->env->fs().CreateDirs(dir));

  LogOptions log_options;
  log_options.dir = dir + "/log";
  // What recovery repaired or found damaged (torn tails cut, damaged or missing records,
  // quarantined topics) goes where the operator looks.
  log_options.report_recovery = [](const std::string& message) {
    std::fprintf(stderr, "converge serve: log recovery: %s\n", message.c_str());
  };
  CONVERGE_ASSIGN_OR_RETURN(impl->log, Log::Open(*impl->env, log_options));

  ConsumerGroupsOptions group_options;
  group_options.dir = dir + "/groups";
  group_options.commit_mode =
      impl->config.groups.sync_acks ? CommitMode::kSync : CommitMode::kPeriodic;
  group_options.commit_interval_ms = impl->config.groups.commit_interval_ms;
  group_options.on_damage = impl->config.groups.on_damage;
  group_options.report_damage = [](const std::string& message) {
    std::fprintf(stderr, "converge serve: damage: %s\n", message.c_str());
  };
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

  if (impl->config.sagas.enabled) {
    CONVERGE_ASSIGN_OR_RETURN(impl->sagas, OpenSagas(*impl->env, *impl->log, impl->config));
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
  deps.sagas = impl->sagas.get();
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
  if (impl->config.relays.enabled) {
    // Last, so that nothing after it can fail with relay threads running. The relays connect
    // lazily: a service database that is down is retried in the background, not an error.
    CONVERGE_ASSIGN_OR_RETURN(
        impl->relays, RelayService::Start(*impl->env, *impl->log, impl->config.relays.service));
    std::weak_ptr<RelayService> weak = impl->relays;
    impl->metrics.AddCollector([weak](std::vector<MetricsRegistry::Sample>* out) {
      std::shared_ptr<RelayService> relays = weak.lock();
      if (relays == nullptr) return;
      for (const auto& [name, st] : relays->stats()) {
        Labels labels = {{"source", name}};
        out->push_back({"converge_relay_published_total",
                        "Outbox events a relay appended to the log (including duplicates the "
                        "log dropped).",
                        "counter", labels, static_cast<double>(st.published)});
        out->push_back({"converge_relay_dead_lettered_total",
                        "Malformed outbox rows a relay sent to the dead letters.", "counter",
                        labels, static_cast<double>(st.dead_lettered)});
        out->push_back({"converge_relay_failures_total",
                        "Failed relay steps (database or log), each followed by a backoff.",
                        "counter", labels, static_cast<double>(st.failures)});
        out->push_back({"converge_relay_active",
                        "1 if the relay holds its outbox (SQLite lock, PostgreSQL buckets).",
                        "gauge", labels, st.active ? 1.0 : 0.0});
      }
    });
    std::fprintf(stderr, "converge serve: relaying %zu outbox source(s) into the log\n",
                 impl->config.relays.service.sources.size());
  }
  return std::unique_ptr<Server>(new Server(std::move(impl)));
}

Server::Server(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Server::~Server() {
  if (!impl_) return;
  // Destroy in an order that never leaves a callback pointing at freed state: the relays
  // (they append to the log), the pool (joined: nothing more is posted to the io_context), the
  // HTTP server, the watches, the groups, the log.
  if (impl_->relays) impl_->relays->Stop();
  impl_->relays.reset();
  impl_->pool.reset();
  impl_->http.reset();
  impl_->api.reset();
  impl_->store_http.reset();
  impl_->store.reset();
  impl_->sagas.reset();
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
  // The saga log is synced batch by batch; stopping the orchestrator here means no command is
  // appended after the log's final sync (one in flight is sent again on the next start).
  impl->sagas.reset();
  // The relays stop between batches (a batch being published finishes first; rows not yet
  // deleted are published again at the next start and dropped by the log's dedup), so their
  // last appends are covered by the log's final sync below.
  if (impl->relays) impl->relays->Stop();
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
