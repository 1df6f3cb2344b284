#include "server/push_service.h"

#include <boost/json.hpp>
#include <cstdio>
#include <future>

#include "env/asio_executor.h"
#include "server/json_util.h"
#include "server/push_delivery.h"
#include "server/push_http_client.h"

namespace converge::server {

namespace json = boost::json;

namespace {

constexpr int64_t kRetryNs = 1'000'000'000;

void LogLine(const std::string& name, const std::string& what) {
  std::fprintf(stderr, "converge serve: push subscription %s: %s\n", name.c_str(), what.c_str());
}

void AppendFields(const SubscriptionConfig& s, std::string* out) {
  *out += "\"name\":";
  AppendJsonString(out, s.name);
  *out += ",\"topic\":";
  AppendJsonString(out, s.topic);
  *out += ",\"group\":";
  AppendJsonString(out, s.group);
  *out += ",\"endpoint\":";
  AppendJsonString(out, s.endpoint);
  *out += ",\"mode\":";
  *out += s.binary ? "\"binary\"" : "\"structured\"";
  *out += ",\"max_concurrency\":" + std::to_string(s.max_concurrency);
  *out += ",\"timeout_ms\":" + std::to_string(s.timeout_ms);
  *out += ",\"initial_backoff_ms\":" + std::to_string(s.initial_backoff_ms);
  *out += ",\"max_backoff_ms\":" + std::to_string(s.max_backoff_ms);
  *out += ",\"max_deliveries\":" + std::to_string(s.max_deliveries);
  if (!s.ca_file.empty()) {
    *out += ",\"ca_file\":";
    AppendJsonString(out, s.ca_file);
  }
}

}  // namespace

struct PushService::Entry {
  SubscriptionConfig config;
  PushStats stats;
  std::unique_ptr<PushHttpClient> client;
  std::unique_ptr<PushRunner> runner;
  bool waiting_logged = false;
};

struct PushService::Impl {
  Impl(Env& e, ConsumerGroups& g, const ServerConfig& c, MetricsRegistry& m)
      : env(e), groups(g), config(c), metrics(m) {}
  Env& env;
  ConsumerGroups& groups;
  const ServerConfig& config;
  MetricsRegistry& metrics;
  std::string file;
  internal::AsioExecutor executor;
  mutable std::mutex mu;  // entries and stored (changed on the calling thread, under mu)
  std::map<std::string, std::unique_ptr<Entry>> entries;
  std::map<std::string, SubscriptionConfig> stored;  // the API's, as in the file
  std::mutex write_mu;                               // one Create/Delete at a time
  TimerId retry_timer = 0;                           // on the executor
  bool stopped = false;                              // on the executor
};

PushService::PushService(Env& env, ConsumerGroups& groups, const ServerConfig& config,
                         MetricsRegistry& metrics)
    : impl_(std::make_unique<Impl>(env, groups, config, metrics)) {
  impl_->file = config.data_dir + "/push/subscriptions.json";
}

PushService::~PushService() { Stop(); }

std::string PushService::Json(const SubscriptionConfig& s) {
  std::string out = "{";
  AppendFields(s, &out);
  out += ",\"source\":";
  out += s.from_config ? "\"config\"" : "\"api\"";
  out += '}';
  return out;
}

void PushService::RunOnThread(std::function<void()> fn) {
  if (impl_->executor.InExecutorThread()) return fn();
  std::promise<void> done;
  impl_->executor.Post([&] {
    fn();
    done.set_value();
  });
  done.get_future().wait();
}

Result<std::unique_ptr<PushService>> PushService::Start(Env& env, ConsumerGroups& groups,
                                                        const ServerConfig& config,
                                                        MetricsRegistry& metrics) {
  std::unique_ptr<PushService> service(new PushService(env, groups, config, metrics));
  Impl& d = *service->impl_;
  CONVERGE_RETURN_IF_ERROR(env.fs().CreateDirs(config.data_dir + "/push"));
  std::vector<SubscriptionConfig> all = config.subscriptions;
  if (env.fs().FileExists(d.file)) {
    CONVERGE_ASSIGN_OR_RETURN(std::string text, env.fs().ReadFileToString(d.file));
    boost::system::error_code ec;
    json::value v = json::parse(text, ec);
    if (ec || !v.is_object() || !v.as_object().contains("subscriptions") ||
        !v.as_object().at("subscriptions").is_array()) {
      return DataLossError(d.file + " is not a subscriptions file");
    }
    for (const json::value& item : v.as_object().at("subscriptions").as_array()) {
      if (!item.is_object()) return DataLossError(d.file + ": a subscription is not an object");
      const json::object& o = item.as_object();
      SubscriptionConfig s;
      int64_t n = 0;
      std::string mode;
      Status st = ReadString(o, "name", &s.name);
      if (st.ok()) st = ReadString(o, "topic", &s.topic);
      if (st.ok()) st = ReadString(o, "group", &s.group);
      if (st.ok()) st = ReadString(o, "endpoint", &s.endpoint);
      if (st.ok()) st = ReadString(o, "mode", &mode);
      if (st.ok()) st = ReadString(o, "secret", &s.secret);
      if (st.ok() && (st = ReadInt(o, "max_concurrency", 1, 1024, &n)).ok()) {
        s.max_concurrency = static_cast<uint32_t>(n);
      }
      if (st.ok()) st = ReadInt(o, "timeout_ms", 1, 600'000, &s.timeout_ms);
      if (st.ok()) st = ReadInt(o, "initial_backoff_ms", 1, 3'600'000, &s.initial_backoff_ms);
      if (st.ok()) st = ReadInt(o, "max_backoff_ms", 1, 86'400'000, &s.max_backoff_ms);
      n = 0;
      if (st.ok() && (st = ReadInt(o, "max_deliveries", 0, 10'000, &n)).ok()) {
        s.max_deliveries = static_cast<uint32_t>(n);
      }
      s.binary = mode == "binary";
      if (st.ok()) st = CheckSubscription(s, "subscriptions." + s.name);
      if (!st.ok()) return DataLossError(d.file + ": " + std::string(st.message()));
      for (const SubscriptionConfig& c : config.subscriptions) {
        if (c.name == s.name) {
          return FailedPreconditionError(
              "push subscription '" + s.name +
              "' is in the serve config and was also created through the API; delete one");
        }
      }
      d.stored[s.name] = s;
      all.push_back(std::move(s));
    }
  }
  for (SubscriptionConfig& s : all) {
    auto e = std::make_unique<Entry>();
    e->config = std::move(s);
    d.entries[e->config.name] = std::move(e);
  }
  metrics.AddCollector(
      [self = service.get()](std::vector<MetricsRegistry::Sample>* out) { self->Collect(out); });
  service->RunOnThread([&] {
    std::lock_guard lock(d.mu);
    for (auto& [name, e] : d.entries) service->StartEntry(*e);
  });
  return service;
}

Status PushService::EnsureGroup(const SubscriptionConfig& s) {
  GroupOptions o = GroupDefaultsFor(impl_->config);
  o.lease_ms = std::max<int64_t>(o.lease_ms, 2 * s.timeout_ms + 1000);
  if (s.max_deliveries != 0) o.max_deliveries = s.max_deliveries;
  Status created = impl_->groups.CreateGroup(s.topic, s.group, o);
  if (created.code() == StatusCode::kNotFound) {
    return NotFoundError("topic '" + s.topic + "' does not exist");
  }
  if (created.code() != StatusCode::kAlreadyExists) return created;
  CONVERGE_ASSIGN_OR_RETURN(GroupDescription g, impl_->groups.DescribeGroup(s.topic, s.group));
  if (g.options.lease_ms <= s.timeout_ms) {
    return FailedPreconditionError(
        "group '" + s.group + "' has a lease of " + std::to_string(g.options.lease_ms) +
        " ms, not longer than the timeout " + std::to_string(s.timeout_ms) + " ms");
  }
  return Status::Ok();
}

// On the executor, with mu held.
void PushService::StartEntry(Entry& e) {
  Impl& d = *impl_;
  if (d.stopped || e.runner != nullptr) return;
  Status s = EnsureGroup(e.config);
  if (s.ok()) {
    Result<PushUrl> url = ParsePushUrl(e.config.endpoint);
    PushTarget target;
    target.subscription = e.config.name;
    target.url = *url;  // checked by CheckSubscription
    target.mode = e.config.binary ? PushMode::kBinary : PushMode::kStructured;
    target.secret = e.config.secret;
    target.timeout_ms = e.config.timeout_ms;
    target.ca_file = e.config.ca_file;
    e.client = std::make_unique<PushHttpClient>(d.executor.io_context(), d.env, target);
    PushRunnerOptions ro;
    ro.name = e.config.name;
    ro.topic = e.config.topic;
    ro.group = e.config.group;
    ro.policy.max_concurrency = e.config.max_concurrency;
    ro.policy.timeout_ms = e.config.timeout_ms;
    ro.policy.initial_backoff_ms = e.config.initial_backoff_ms;
    ro.policy.max_backoff_ms = e.config.max_backoff_ms;
    ro.max_fetch_bytes = d.config.limits.max_fetch_bytes;
    ro.log = [name = e.config.name](const std::string& what) { LogLine(name, what); };
    e.stats.latency = d.metrics.GetHistogram(
        "converge_push_request_duration_seconds",
        "Time from sending a push request to its answer (or failure), per subscription.",
        {{"subscription", e.config.name}}, LatencyBucketsSeconds());
    e.runner = std::make_unique<PushRunner>(d.env, d.executor, d.groups, *e.client, ro, &e.stats);
    s = e.runner->Start();
    if (s.ok()) {
      if (e.waiting_logged) LogLine(e.config.name, "delivering");
      return;
    }
    e.runner.reset();
    e.client.reset();
  }
  if (!e.waiting_logged) {
    LogLine(e.config.name, "cannot start yet (retrying every second): " + s.ToString());
    e.waiting_logged = true;
  }
  if (d.retry_timer == 0) {
    d.retry_timer = d.executor.Schedule(kRetryNs, [this] { RetryPending(); });
  }
}

void PushService::RetryPending() {
  Impl& d = *impl_;
  d.retry_timer = 0;
  std::lock_guard lock(d.mu);
  for (auto& [name, e] : d.entries) StartEntry(*e);
}

void PushService::Stop() {
  Impl& d = *impl_;
  RunOnThread([&] {
    if (d.stopped) return;
    d.stopped = true;
    if (d.retry_timer != 0) d.executor.Cancel(d.retry_timer);
    d.retry_timer = 0;
    std::lock_guard lock(d.mu);
    for (auto& [name, e] : d.entries) {
      if (e->runner) e->runner->Stop(/*leave=*/true);
      e->runner.reset();
      e->client.reset();
    }
  });
}

Status PushService::Persist(const std::map<std::string, SubscriptionConfig>& stored) {
  std::string out = "{\"version\":1,\"subscriptions\":[";
  bool first = true;
  for (const auto& [name, s] : stored) {
    if (!first) out += ',';
    first = false;
    out += '{';
    AppendFields(s, &out);
    out += ",\"secret\":";
    AppendJsonString(&out, s.secret);
    out += '}';
  }
  out += "]}\n";
  return impl_->env.fs().WriteFileAtomically(impl_->file, out);
}

Status PushService::Create(SubscriptionConfig s) {
  Impl& d = *impl_;
  std::lock_guard write(d.write_mu);
  {
    std::lock_guard lock(d.mu);
    for (const auto& [name, e] : d.entries) {
      if (name == s.name) {
        return AlreadyExistsError("subscription '" + s.name + "' exists");
      }
      if (e->config.topic == s.topic && e->config.group == s.group) {
        return AlreadyExistsError("subscription '" + name + "' already delivers for group '" +
                                  s.group + "' of topic '" + s.topic + "'");
      }
    }
  }
  CONVERGE_RETURN_IF_ERROR(EnsureGroup(s));
  std::map<std::string, SubscriptionConfig> stored;
  {
    std::lock_guard lock(d.mu);
    stored = d.stored;
  }
  s.from_config = false;
  stored[s.name] = s;
  if (Status w = Persist(stored); !w.ok()) {
    return InternalError("cannot write the subscriptions file: " + std::string(w.message()));
  }
  RunOnThread([&] {
    std::lock_guard lock(d.mu);
    d.stored = std::move(stored);
    auto e = std::make_unique<Entry>();
    e->config = s;
    Entry& ref = *e;
    d.entries[s.name] = std::move(e);
    StartEntry(ref);
  });
  return Status::Ok();
}

Status PushService::Delete(const std::string& name) {
  Impl& d = *impl_;
  std::lock_guard write(d.write_mu);
  std::map<std::string, SubscriptionConfig> stored;
  {
    std::lock_guard lock(d.mu);
    auto it = d.entries.find(name);
    if (it == d.entries.end()) return NotFoundError("subscription '" + name + "' does not exist");
    if (it->second->config.from_config) {
      return FailedPreconditionError("subscription '" + name +
                                     "' is defined in the serve config; remove it there");
    }
    stored = d.stored;
  }
  stored.erase(name);
  if (Status w = Persist(stored); !w.ok()) {
    return InternalError("cannot write the subscriptions file: " + std::string(w.message()));
  }
  RunOnThread([&] {
    std::lock_guard lock(d.mu);
    d.stored = std::move(stored);
    auto it = d.entries.find(name);
    if (it == d.entries.end()) return;
    if (it->second->runner) it->second->runner->Stop(/*leave=*/true);
    d.entries.erase(it);
  });
  return Status::Ok();
}

std::vector<SubscriptionConfig> PushService::List() const {
  std::lock_guard lock(impl_->mu);
  std::vector<SubscriptionConfig> out;
  for (const auto& [name, e] : impl_->entries) out.push_back(e->config);
  return out;
}

Result<SubscriptionConfig> PushService::Get(const std::string& name) const {
  std::lock_guard lock(impl_->mu);
  auto it = impl_->entries.find(name);
  if (it == impl_->entries.end())
    return NotFoundError("subscription '" + name + "' does not exist");
  return it->second->config;
}

void PushService::Collect(std::vector<MetricsRegistry::Sample>* out) const {
  std::lock_guard lock(impl_->mu);
  for (const auto& [name, e] : impl_->entries) {
    const Labels labels{{"subscription", name}, {"topic", e->config.topic}};
    auto add = [&](const char* metric, const char* help, const char* type, double v) {
      out->push_back({metric, help, type, labels, v});
    };
    add("converge_push_delivered_total", "Events a push endpoint acknowledged (2xx).", "counter",
        static_cast<double>(e->stats.delivered.load()));
    add("converge_push_retried_total",
        "Push requests that failed retryably (5xx, 408, 429, timeouts, connection errors); the "
        "event is delivered again after a backoff, or dead-lettered by its group at its last "
        "delivery.",
        "counter", static_cast<double>(e->stats.retried.load()));
    add("converge_push_dead_lettered_total",
        "Events a push endpoint rejected permanently (4xx other than 408 and 429), "
        "dead-lettered.",
        "counter", static_cast<double>(e->stats.dead_lettered.load()));
    add("converge_push_errors_total",
        "Group calls of push delivery that failed (retried; the event is delivered again).",
        "counter", static_cast<double>(e->stats.errors.load()));
    add("converge_push_in_flight", "Push requests in flight.", "gauge",
        static_cast<double>(e->stats.in_flight.load()));
    add("converge_push_running", "1 while the subscription delivers, 0 while it waits to start.",
        "gauge", e->runner != nullptr ? 1.0 : 0.0);
  }
}

}  // namespace converge::server
