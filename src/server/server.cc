#include "server/server.h"

#include <signal.h>
#include <sys/resource.h>

#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <thread>
#include <tuple>
#include <vector>

#include "audit/audited_log.h"
#include "converge/consumer_group.h"
#include "converge/env.h"
#include "converge/log.h"
#include "converge/relay.h"
#include "converge/saga.h"
#include "converge/store.h"
#include "env/metered_env.h"
#include "server/api.h"
#include "server/blocking_pool.h"
#include "server/cluster_groups.h"
#include "server/http_server.h"
#include "server/leases.h"
#include "server/metrics.h"
#include "server/multi_writers.h"
#include "server/push_service.h"
#include "server/replicas.h"
#include "server/store_metrics.h"
#include "server/system_topics.h"
#include "server/topology_config.h"
#include "server/wakeup_hub.h"

namespace converge::server {

// Members are declared in dependency order: later ones use earlier ones, and are destroyed
// first.
struct Server::Impl {
  ServerConfig config;
  MetricsRegistry metrics;
  std::unique_ptr<converge::internal::MeteredEnv> env;
  // The audit's (audit.enabled), declared before `log` so they outlive it: `log` is then an
  // audit::AuditedLog recording into them.
  std::unique_ptr<audit::Stamper> audit_stamper;
  std::unique_ptr<audit::AckJournal> audit_journal;
  std::unique_ptr<Log> log;
  std::unique_ptr<ConsumerGroups> groups;
  // `groups` itself when consumer groups are shared by the sidecars (cluster.consumer_groups).
  ClusterGroups* cluster_groups = nullptr;
  std::unique_ptr<Store> store;  // feeds its change events into `log`
  std::unique_ptr<StoreRoutes> store_http;
  std::unique_ptr<SagaOrchestrator> sagas;  // sends commands into `log`, reads replies from it
  std::unique_ptr<SystemTopics> system_topics;  // uses `config` and `sagas`
  std::unique_ptr<SchemaRegistry> schemas;
  // Singleton work under leases (cluster:); stopped (its works first, then its leases released)
  // before the works' components are.
  std::unique_ptr<LeasedWork> leases;
  // Publish into `log`; stopped before the log's final sync. The metrics collector holds a weak
  // reference (the relays' connections and lock files must go before `env` and `log`).
  std::shared_ptr<RelayService> relays;
  // Read `log` (and the store's feed in it) into SQL tables; stopped before the log closes.
  std::unique_ptr<Replicas> replicas;
  std::unique_ptr<MultiWriters> multi_writers;
  // POST `log`'s events to the subscriptions' endpoints, settling leases in `groups`; stopped
  // before the groups' final flush.
  std::unique_ptr<PushService> push;
  // The end-to-end audit's runs (audit.enabled): read `log` on the Env's executor; stopped
  // before the log closes.
  std::unique_ptr<audit::AuditService> audit;
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

// The definition files of the config, parsed and checked (a bad one stops the start).
Result<std::vector<SagaDefinition>> LoadSagaDefinitions(Env& env, const ServerConfig& config) {
  std::vector<SagaDefinition> out;
  for (const std::string& path : config.sagas.definitions) {
    Result<std::string> text = ReadWholeFile(env, path);
    if (!text.ok()) return text.status().WithContext("sagas.definitions");
    Result<SagaDefinition> definition = ParseSagaDefinition(*text);
    if (!definition.ok()) return definition.status().WithContext("saga definition " + path);
    // As over HTTP: the orchestrator may not send commands into a topic another part of
    // converge writes (see system_topics.h).
    SystemTopics owners(config, nullptr);
    for (const SagaStepDefinition& step : definition->steps) {
      if (std::string owner = owners.OwnerOfOutsideSagas(step.participant); !owner.empty()) {
        return InvalidArgumentError("saga definition " + path + ": step '" + step.name +
                                    "' has participant '" + step.participant +
                                    "', a topic written only by " + owner);
      }
    }
    out.push_back(std::move(definition).value());
  }
  return out;
}

// The orchestrator on <data_dir>/sagas (or its PostgreSQL table), with the definition files
// of the config registered.
Result<std::unique_ptr<SagaOrchestrator>> OpenSagas(Env& env, Log& log, const ServerConfig& config,
                                                    MetricsRegistry& metrics) {
  CONVERGE_ASSIGN_OR_RETURN(std::vector<SagaDefinition> definitions,
                            LoadSagaDefinitions(env, config));
  SagaOrchestratorOptions options = SagaOptionsFor(config);
  // Step latencies, observed once each outcome is durable (the registry outlives the
  // orchestrator). Labels are bounded by the registered definitions' steps.
  options.on_step_finished = [&metrics](const SagaStepOutcome& o) {
    metrics
        .GetHistogram("converge_saga_step_duration_seconds",
                      "Time from a saga step's first command to the reply that settled it "
                      "(retries included), by definition, step, command kind and outcome.",
                      {{"definition", o.definition},
                       {"step", o.step},
                       {"kind", std::string(SagaCommandKindName(o.kind))},
                       {"outcome", o.ok ? "ok" : "failed"}},
                      LatencyBucketsSeconds())
        ->Observe(static_cast<double>(o.duration_micros) / 1e6);
  };
  options.report_recovery = [](const std::string& message) {
    std::fprintf(stderr, "converge serve: saga log recovery: %s\n", message.c_str());
  };
  CONVERGE_ASSIGN_OR_RETURN(std::unique_ptr<SagaOrchestrator> orchestrator,
                            SagaOrchestrator::Open(env, log, options));
  for (size_t i = 0; i < definitions.size(); ++i) {
    Status registered = orchestrator->RegisterDefinition(definitions[i]);
    if (!registered.ok()) {
      return registered.WithContext("saga definition " + config.sagas.definitions[i]);
    }
  }
  return orchestrator;
}

// The production Env, with every file and directory sync timed into /metrics.
std::unique_ptr<converge::internal::MeteredEnv> MeteredDefaultEnv(MetricsRegistry& metrics) {
  const char* help = "Latency of file syncs (fdatasync) made by the storage engine.";
  Histogram* file_sync = metrics.GetHistogram("converge_fsync_duration_seconds", help,
                                              {{"kind", "file"}}, LatencyBucketsSeconds());
  Histogram* dir_sync = metrics.GetHistogram("converge_fsync_duration_seconds", help,
                                             {{"kind", "directory"}}, LatencyBucketsSeconds());
  return std::make_unique<converge::internal::MeteredEnv>(
      Env::Default(), [file_sync, dir_sync](converge::internal::SyncKind kind, double seconds) {
        (kind == converge::internal::SyncKind::kFile ? file_sync : dir_sync)->Observe(seconds);
      });
}

}  // namespace

// The audit's producer id, epoch and journal in <data_dir>/audit (docs/formats/audit.md), and
// impl->log wrapped in an audit::AuditedLog before any module gets it, so every append (the
// publish route, dead-letter replays, relays, the store's feed, sagas) is stamped and its
// acknowledgement journaled in one place.
static Status OpenAuditedLog(Server::Impl* impl) {
  const AuditConfig& c = impl->config.audit;
  const std::string dir = impl->config.data_dir + "/audit";
  Env& env = *impl->env;
  CONVERGE_ASSIGN_OR_RETURN(std::string producer, audit::LoadOrCreateProducerId(env, dir));
  CONVERGE_ASSIGN_OR_RETURN(uint64_t epoch, audit::NextEpoch(env, dir));
  impl->audit_stamper = std::make_unique<audit::Stamper>(producer, epoch);
  CONVERGE_ASSIGN_OR_RETURN(impl->audit_journal,
                            audit::AckJournal::Open(env, dir, c.max_tracked_events));
  impl->log = std::make_unique<audit::AuditedLog>(std::move(impl->log), *impl->audit_stamper,
                                                  *impl->audit_journal);
  return Status::Ok();
}

// The audit's runs every audit.interval_ms and its metrics.
static Status OpenAudit(Server::Impl* impl) {
  const AuditConfig& c = impl->config.audit;
  Env& env = *impl->env;
  audit::AuditorOptions options;
  options.producer = impl->audit_stamper->producer();
  options.max_findings = c.max_findings;
  impl->audit = std::make_unique<audit::AuditService>(env, *impl->log, *impl->audit_journal,
                                                      options, c.interval_ms);
  // Computed at scrape time (scrapes run on the pool, joined before the audit stops).
  impl->metrics.AddCollector([a = impl->audit.get(), j = impl->audit_journal.get()](
                                 std::vector<MetricsRegistry::Sample>* out) {
    for (const auto& [where, counts] : a->totals()) {
      Labels labels = {{"topic", where.first},
                                        {"partition", std::to_string(where.second)}};
      out->push_back({"converge_audit_missing_total",
                      "Acknowledged events the audit could not read (distinct events).",
                      "counter", labels, static_cast<double>(counts.missing)});
      out->push_back({"converge_audit_duplicates_total",
                      "Extra copies of events the audit read (distinct events).", "counter",
                      labels, static_cast<double>(counts.duplicates)});
      out->push_back({"converge_audit_out_of_order_total",
                      "Acknowledged events the audit read at another offset (distinct events).",
                      "counter", labels, static_cast<double>(counts.out_of_order)});
    }
    out->push_back({"converge_audit_checked_total",
                    "Acknowledged events checked, summed over audit runs.", "counter", {},
                    static_cast<double>(a->checked_total())});
    out->push_back({"converge_audit_tracked_events",
                    "Acknowledged events the audit journal holds for checking.", "gauge", {},
                    static_cast<double>(j->tracked())});
    out->push_back({"converge_audit_untracked_total",
                    "Acknowledged events dropped unchecked to make room in the audit journal.", "counter",
                    {}, static_cast<double>(j->untracked())});
    const audit::AuditReport last = a->last();
    out->push_back({"converge_audit_last_run_timestamp_seconds",
                    "Wall time the last audit run finished (0: none yet).", "gauge", {},
                    static_cast<double>(last.run_wall_micros) / 1e6});
  });
  impl->audit->Start();
  return Status::Ok();
}

Result<std::unique_ptr<Server>> Server::Open(const ServerConfig& config) {
  CONVERGE_RETURN_IF_ERROR(ValidateConfig(config));
  auto impl = std::make_unique<Impl>();
  impl->config = config;
  // Each service's permissions from its manifest (a no-op when the caller applied it).
  CONVERGE_RETURN_IF_ERROR(ApplyTopology(&impl->config));
  impl->env = MeteredDefaultEnv(impl->metrics);
  const std::string& dir = impl->config.data_dir;
  CONVERGE_RETURN_IF_ERROR(impl->env->fs().CreateDirs(dir));

  LogOptions log_options;
  log_options.dir = dir + "/log";
  // What recovery repaired or found damaged (torn tails cut, damaged or missing records,
  // quarantined topics) goes where the operator looks.
  log_options.report_recovery = [](const std::string& message) {
    std::fprintf(stderr, "converge serve: log recovery: %s\n", message.c_str());
  };
  // Blocking storage calls run on the pool, and so do the log's group commits of publishes:
  // a request waiting for its sync holds no thread (Log::AppendAsync), so the pool's size
  // bounds the syncs running at once (one per topic at a time), not the requests waiting.
  impl->pool = std::make_unique<BlockingPool>(impl->config.storage_threads);
  BlockingPool* pool = impl->pool.get();
  log_options.background = [pool](std::function<void()> task) { pool->Post(std::move(task)); };
  if (impl->config.log.backend == LogBackend::kJetStream) {
    // The log on NATS JetStream (shared by every server naming the same stream_prefix); group
    // state, the store and sagas stay in data_dir.
    CONVERGE_ASSIGN_OR_RETURN(impl->log,
                              jetstream::OpenJetStreamLog(*impl->env, impl->config.log.jetstream));
  } else {
    CONVERGE_ASSIGN_OR_RETURN(impl->log, Log::Open(*impl->env, log_options));
  }
  if (impl->config.audit.enabled) CONVERGE_RETURN_IF_ERROR(OpenAuditedLog(impl.get()));

  ConsumerGroupsOptions group_options = GroupsOptionsFor(impl->config);
  // Ack commits are synced on the pool: an ack waiting for its sync holds no thread.
  group_options.background = [pool](std::function<void()> task) { pool->Post(std::move(task)); };
  group_options.report_damage = [](const std::string& message) {
    std::fprintf(stderr, "converge serve: damage: %s\n", message.c_str());
  };
  if (SharedConsumerGroups(impl->config)) {
    // Each group runs in the sidecar holding its lease, its state in PostgreSQL; the others
    // forward its requests there (docs/scaling.md, "Consumer groups across sidecars").
    CONVERGE_ASSIGN_OR_RETURN(
        std::unique_ptr<ClusterGroups> cluster,
        ClusterGroups::Open(*impl->env, *impl->log, impl->config, group_options));
    impl->cluster_groups = cluster.get();
    impl->groups = std::move(cluster);
    impl->metrics.AddCollector(
        [cluster = impl->cluster_groups](std::vector<MetricsRegistry::Sample>* out) {
          cluster->CollectMetrics(out);
        });
  } else {
    CONVERGE_ASSIGN_OR_RETURN(impl->groups,
                              ConsumerGroups::Open(*impl->env, *impl->log, group_options));
  }

  if (impl->config.store.enabled) {
    StoreOptions store_options = StoreOptionsFor(impl->config);
    store_options.feed_log = impl->log.get();
    // Group commits run on the pool, so writes never block an I/O thread (the pool is joined
    // before the store is destroyed).
    store_options.background = [pool](std::function<void()> task) { pool->Post(std::move(task)); };
    const bool shared_store = impl->config.store.backend == "postgres";
    if (shared_store) {
      CONVERGE_ASSIGN_OR_RETURN(
          impl->store,
          OpenPostgresStore(*impl->env, store_options, PostgresStoreOptionsFor(impl->config)));
    } else {
      CONVERGE_ASSIGN_OR_RETURN(impl->store, Store::Open(*impl->env, store_options));
    }
    // Computed at scrape time (scrapes run on the pool and end before the store is closed).
    impl->metrics.AddCollector(
        [store = impl->store.get()](std::vector<MetricsRegistry::Sample>* out) {
          CollectStoreMetrics(*store, out);
        });
    StoreRoutesOptions http_options;
    // The PostgreSQL store blocks on the network for every call: requests go to the pool.
    http_options.inline_writes = !shared_store;
    http_options.feed_topic = impl->config.store.feed_topic;
    impl->store_http = std::make_unique<StoreRoutes>(*impl->store, http_options);
  }

  if (impl->config.cluster.enabled) {
    // The lease table must answer at start, as a shared store must.
    CONVERGE_ASSIGN_OR_RETURN(impl->leases, LeasedWork::Open(*impl->env, impl->config));
    impl->metrics.AddCollector(
        [leases = impl->leases.get()](std::vector<MetricsRegistry::Sample>* out) {
          leases->CollectMetrics(out);
        });
  }

  // With cluster: and the saga log in PostgreSQL, the orchestrator runs only in the sidecar
  // holding the lease "sagas" (it recovers the shared saga log when it takes over). An embedded
  // saga log is this sidecar's own: its orchestrator is not leased.
  const bool leased_sagas = impl->leases && !impl->config.sagas.orchestrator.postgres_conninfo.empty();
  if (impl->config.sagas.enabled && leased_sagas) {
    // The definition files are checked now, so that a bad one stops the start here too.
    CONVERGE_RETURN_IF_ERROR(LoadSagaDefinitions(*impl->env, impl->config).status());
    Impl* raw = impl.get();
    CONVERGE_ASSIGN_OR_RETURN(
        impl->sagas,
        StartLeasedSagas(
            [raw] { return OpenSagas(*raw->env, *raw->log, raw->config, raw->metrics); },
            *impl->leases));
  } else if (impl->config.sagas.enabled) {
    CONVERGE_ASSIGN_OR_RETURN(impl->sagas,
                              OpenSagas(*impl->env, *impl->log, impl->config, impl->metrics));
  }
  if (impl->sagas) {
    // Computed at scrape time (scrapes run on the pool, joined before the orchestrator closes).
    impl->metrics.AddCollector([sagas =
                                    impl->sagas.get()](std::vector<MetricsRegistry::Sample>* out) {
      const SagaOrchestratorStats st = sagas->stats();
      // Counted since the server started (a restart starts them at 0, as Prometheus expects).
      for (const auto& [name, help, n] :
           {std::tuple<const char*, const char*, uint64_t>{"converge_sagas_started_total",
                                                           "Sagas started.", st.started},
            {"converge_sagas_completed_total", "Sagas that completed (every step applied).",
             st.completed},
            {"converge_sagas_compensated_total",
             "Sagas that ended compensated (every applied step undone).", st.compensated},
            {"converge_sagas_failed_total",
             "Sagas that turned to compensation because a step failed (refused, or out of "
             "attempts) or their deadline passed; cancels are not counted.",
             st.failed}}) {
        out->push_back({name, help, "counter", {}, static_cast<double>(n)});
      }
      out->push_back({"converge_sagas_in_flight",
                      "Sagas running or compensating.",
                      "gauge",
                      {},
                      static_cast<double>(st.in_flight)});
      out->push_back({"converge_saga_log_damaged_segments",
                      "Saga-log segments the recovery at start found damaged (their damaged "
                      "tail was cut; each is named in the server's log).",
                      "gauge",
                      {},
                      static_cast<double>(st.log_damaged_segments)});
      out->push_back({"converge_saga_log_truncated_bytes",
                      "Bytes the recovery at start cut off the newest saga-log segment (a torn "
                      "write, or damage there).",
                      "gauge",
                      {},
                      static_cast<double>(st.log_truncated_bytes)});
      out->push_back({"converge_saga_log_write_errors_total",
                      "Saga batches the saga log could not write (a full disk): each was undone "
                      "and its requests answered 503.",
                      "counter",
                      {},
                      static_cast<double>(st.write_errors)});
      const char* help =
          "Saga replies the orchestrator did not use, by reason (each one is also recorded in "
          "the history of the saga it names).";
      for (const auto& [reason, n] : {std::pair<const char*, uint64_t>{"stale", st.replies_stale},
                                      {"unknown_saga", st.replies_unknown_saga},
                                      {"bad_token", st.replies_bad_token},
                                      {"malformed", st.replies_malformed},
                                      {"not_a_reply", st.bad_replies - st.replies_malformed}}) {
        out->push_back({"converge_saga_replies_rejected_total",
                        help,
                        "counter",
                        {{"reason", reason}},
                        static_cast<double>(n)});
      }
    });
  }

  // Event types' schemas and the topics validated against them (<data_dir>/schemas).
  CONVERGE_ASSIGN_OR_RETURN(impl->schemas, SchemaRegistry::Open(*impl->env, dir + "/schemas"));

  impl->system_topics = std::make_unique<SystemTopics>(impl->config, impl->sagas.get());
  if (impl->config.relays.enabled) {
    // The relays dead-letter rows addressed to topics converge writes itself, as the HTTP
    // publish path refuses them.
    impl->config.relays.service.sink.system_topic_owner =
        [topics = impl->system_topics.get()](std::string_view topic) {
          return topics->OwnerOf(topic);
        };
  }

  ApiDeps deps;
  deps.config = &impl->config;
  deps.env = impl->env.get();
  deps.log = impl->log.get();
  deps.groups = impl->groups.get();
  deps.cluster_groups = impl->cluster_groups;
  deps.metrics = &impl->metrics;
  deps.pool = impl->pool.get();
  deps.hub = &impl->hub;
  deps.store = impl->store_http.get();
  deps.sagas = impl->sagas.get();
  deps.system_topics = impl->system_topics.get();
  deps.schemas = impl->schemas.get();
  if (!impl->config.replicas.empty()) {
    // With cluster:, a replica into a shared target (a PostgreSQL table, or a collection of a
    // store in PostgreSQL) runs only in the sidecar holding its lease "replica:<name>"; a
    // replica into this sidecar's own SQLite file or embedded store is this sidecar's copy.
    const bool shared_store = impl->config.store.backend == "postgres";
    auto leased = [has_leases = impl->leases != nullptr, shared_store](const ReplicaConfig& r) {
      if (!has_leases) return false;
      return r.target_collection.empty() ? r.engine == sql::Engine::kPostgres : shared_store;
    };
    impl->replicas =
        Replicas::Start(*impl->env, *impl->log, impl->store.get(), impl->config, leased);
    for (const ReplicaConfig& r : impl->config.replicas) {
      if (!leased(r)) continue;
      Replicas* replicas = impl->replicas.get();
      const std::string name = r.name;
      CONVERGE_RETURN_IF_ERROR(impl->leases->Add(
          "replica:" + name,
          [replicas, name] {
            replicas->SetRunning(name, true);
            return Status::Ok();
          },
          [replicas, name] { replicas->SetRunning(name, false); }));
    }
    // Scrapes run on the pool, joined before the replicas stop.
    impl->metrics.AddCollector(
        [replicas = impl->replicas.get()](std::vector<MetricsRegistry::Sample>* out) {
          replicas->CollectMetrics(out);
        });
    std::fprintf(stderr, "converge serve: running %zu replica(s)\n", impl->config.replicas.size());
  }
  deps.replicas = impl->replicas.get();
  if (!impl->config.multi_writer.empty() && impl->store != nullptr) {
    impl->multi_writers = MultiWriters::Start(*impl->env, *impl->store, impl->config);
    impl->metrics.AddCollector(
        [mw = impl->multi_writers.get()](std::vector<MetricsRegistry::Sample>* out) {
          mw->CollectMetrics(out);
        });
    std::fprintf(stderr, "converge serve: running %zu multi-writer collection(s)\n",
                 impl->config.multi_writer.size());
  }
  deps.multi_writers = impl->multi_writers.get();
  CONVERGE_ASSIGN_OR_RETURN(impl->push,
                            PushService::Start(*impl->env, *impl->groups, impl->config,
                                               impl->metrics));
  deps.push = impl->push.get();
  if (impl->config.audit.enabled) {
    CONVERGE_RETURN_IF_ERROR(OpenAudit(impl.get()));
    deps.audit_stamper = impl->audit_stamper.get();
    deps.audit_journal = impl->audit_journal.get();
    deps.audit = impl->audit.get();
  }
  impl->api = std::make_unique<Api>(deps);

  HttpServerOptions http_options;
  http_options.address = impl->config.listen_address;
  http_options.port = impl->config.listen_port;
  http_options.tls_cert_file = impl->config.tls_cert_file;
  http_options.tls_key_file = impl->config.tls_key_file;
  http_options.limits = impl->config.limits;
  http_options.probe_paths = {"/healthz", "/readyz"};
  Api* api = impl->api.get();
  impl->http = std::make_unique<HttpServer>(
      impl->ioc, http_options, [api](HttpRequest& req) { return api->Handle(req); },
      &impl->metrics);
  if (impl->leases) impl->api->SetLeases(impl->leases.get());
  if (impl->config.relays.enabled) {
    // Last, so that nothing after it can fail with relay threads running. The relays connect
    // lazily: a service database that is down is retried in the background, not an error.
    // With cluster:, each source runs only while this sidecar holds its lease.
    if (impl->leases) {
      CONVERGE_ASSIGN_OR_RETURN(
          impl->relays,
          StartLeasedRelays(*impl->env, *impl->log, impl->config.relays.service, *impl->leases));
    } else {
      CONVERGE_ASSIGN_OR_RETURN(
          impl->relays, RelayService::Start(*impl->env, *impl->log, impl->config.relays.service));
    }
    std::weak_ptr<RelayService> weak = impl->relays;
    impl->api->SetRelays(weak);
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
        out->push_back({"converge_relay_wal_lag_bytes",
                        "WAL outbox: WAL bytes between the server's end of WAL and the slot "
                        "position the relay confirmed (0 for table sources).",
                        "gauge", labels, static_cast<double>(st.wal_lag_bytes)});
        out->push_back({"converge_relay_wal_lag_seconds",
                        "WAL outbox: age of the oldest committed transaction read from the slot "
                        "and not yet confirmed (0 when none is outstanding).",
                        "gauge", labels, static_cast<double>(st.wal_lag_ms) / 1000.0});
      }
    });
    std::fprintf(stderr, "converge serve: relaying %zu outbox source(s) into the log%s\n",
                 impl->config.relays.service.sources.size(),
                 impl->leases ? " (each under its lease)" : "");
  }
  // The leases are taken from Listen on: only a sidecar listening on its URL may take over the
  // leases its previous incarnation holds there.
  return std::unique_ptr<Server>(new Server(std::move(impl)));
}

Server::Server(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Server::~Server() {
  if (!impl_) return;
  // Destroy in an order that never leaves a callback pointing at freed state: the relays
  // (they append to the log), the pool (joined: nothing more is posted to the io_context), the
  // HTTP server, the watches, the groups, the log.
  if (impl_->leases) impl_->leases->Stop();
  if (impl_->relays) impl_->relays->Stop();
  impl_->relays.reset();
  if (impl_->audit) impl_->audit->Stop();
  impl_->pool.reset();
  if (impl_->replicas) impl_->replicas->Stop();
  if (impl_->multi_writers) impl_->multi_writers->Stop();
  impl_->push.reset();
  // After push (it acks into them): the groups running here stop (a last fenced flush) and
  // their leases are released, so the other sidecars take them at their next request.
  if (impl_->cluster_groups) impl_->cluster_groups->Stop();
  impl_->http.reset();
  impl_->api.reset();
  impl_->store_http.reset();
  impl_->store.reset();
  impl_->sagas.reset();
  impl_->groups.reset();
  impl_->audit.reset();
  impl_->log.reset();  // its audit wrapper records into the journal
  impl_->audit_journal.reset();
}

namespace {

// File descriptors open in this process now.
uint64_t OpenDescriptors() {
  std::error_code ec;
  uint64_t n = 0;
  for (auto it = std::filesystem::directory_iterator("/proc/self/fd", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    ++n;
  }
  return n > 0 ? n - 1 : 0;  // the iterator's own descriptor
}

// Every connection costs a file descriptor, and so do the storage files (log segments and
// indexes, group journals, the store, SQLite and PostgreSQL connections of relays and
// sagas). A process out of descriptors fails at accept, and a storage write that needs a new
// segment fails too. So: raise the soft RLIMIT_NOFILE to the hard limit, then keep the
// connection limit within what is left after the descriptors open now and a reserve for
// storage files opened later. Returns the effective max_connections.
uint32_t FitConnectionsToFileLimit(uint32_t wanted) {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return wanted;
  const rlim_t before = rl.rlim_cur;
  // An unlimited hard limit still has the kernel's ceiling (fs.nr_open, 1 Mi by default).
  const rlim_t target = rl.rlim_max == RLIM_INFINITY ? rlim_t{1} << 20 : rl.rlim_max;
  if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < target) {
    rlimit raised = rl;
    raised.rlim_cur = target;
    if (setrlimit(RLIMIT_NOFILE, &raised) == 0) rl.rlim_cur = target;
  }
  const uint64_t limit = rl.rlim_cur == RLIM_INFINITY ? uint64_t{1} << 20 : rl.rlim_cur;
  const uint64_t open_now = OpenDescriptors();
  const uint64_t reserve = std::clamp<uint64_t>(limit / 8, 64, 4096);
  const uint64_t overhead = open_now + reserve + HttpServer::kEvictionSlack + 1;  // + spare
  const uint64_t fit = limit > overhead + 8 ? limit - overhead : 8;
  const uint32_t effective = static_cast<uint32_t>(std::min<uint64_t>(wanted, fit));
  if (rl.rlim_cur != before) {
    std::fprintf(stderr, "converge serve: raised the open-files limit from %llu to %llu\n",
                 static_cast<unsigned long long>(before),
                 static_cast<unsigned long long>(rl.rlim_cur));
  }
  if (effective < wanted) {
    std::fprintf(stderr,
                 "converge serve: open-files limit %llu (%llu open, %llu reserved for storage "
                 "files): limits.max_connections lowered from %u to %u\n",
                 static_cast<unsigned long long>(limit), static_cast<unsigned long long>(open_now),
                 static_cast<unsigned long long>(reserve), wanted, effective);
  }
  return effective;
}

}  // namespace

Status Server::Listen() {
  impl_->http->set_max_connections(FitConnectionsToFileLimit(impl_->config.limits.max_connections));
  CONVERGE_RETURN_IF_ERROR(impl_->http->Listen());
  if (impl_->leases != nullptr) {
    // Known once the port is (listen port 0 picks one). This process now listens there, so no
    // other live sidecar does: the leases an earlier process of this instance_id holds under
    // this URL are a dead incarnation's, taken over at once (docs/scaling.md, "A restarted
    // sidecar"). A wildcard address without advertise_url names no one sidecar: no URL, no
    // takeover.
    const std::string& host = impl_->config.listen_address;
    const bool wildcard = host.empty() || host == "0.0.0.0" || host == "::";
    std::string advertised = impl_->config.cluster.advertise_url;
    if (advertised.empty() && !wildcard) advertised = url();
    const std::vector<std::string> taken = impl_->leases->Start(advertised);
    std::fprintf(stderr, "converge serve: cluster instance %s\n", impl_->leases->holder().c_str());
    if (impl_->cluster_groups != nullptr) {
      // Shared groups need a URL (ValidateConfig: advertise_url with a wildcard address).
      impl_->cluster_groups->Start(advertised, impl_->leases->holder(), taken);
    }
  }
  return Status::Ok();
}

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
    // The caller may have blocked them until the handler was in place (converge serve does,
    // from before storage opens): a signal that arrived meanwhile is delivered now.
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    pthread_sigmask(SIG_UNBLOCK, &stop_signals, nullptr);
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
  // The appliers finish their step (each commits its rows with its position in one target
  // transaction) and close their databases.
  if (impl->replicas) impl->replicas->Stop();
  if (impl->multi_writers) impl->multi_writers->Stop();
  // Leased work stops (relays and a leased orchestrator), then the leases are released, so
  // another sidecar takes them at once.
  if (impl->leases) impl->leases->Stop();
  // The relays stop between batches (a batch being published finishes first; rows not yet
  // deleted are published again at the next start and dropped by the log's dedup), so their
  // last appends are covered by the log's final sync below. They stop before the orchestrator
  // goes: their sink asks `system_topics`, which reads the orchestrator's definitions.
  if (impl->relays) impl->relays->Stop();
  // The saga log is synced batch by batch; stopping the orchestrator here means no command is
  // appended after the log's final sync (one in flight is sent again on the next start).
  impl->sagas.reset();
  // No ack after the groups' final flush (requests in flight are sent again at the next start).
  if (impl->push) impl->push->Stop();
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
