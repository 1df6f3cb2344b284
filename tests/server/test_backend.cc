#include "server/test_backend.h"

#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>

#include "support/nats_server.h"
#include "support/postgres_server.h"

namespace converge::testing {
namespace {

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "test backend: %s\n", what.c_str());
  std::fflush(stderr);
  std::abort();
}

// FNV-1a of the data directory: the same directory, the same streams or tables; different
// directories share nothing. [a-z0-9] only, so it is a valid stream prefix and table prefix.
std::string PrefixFor(const std::string& data_dir) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : data_dir) {
    h ^= c;
    h *= 1099511628211ull;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "t%016llx", static_cast<unsigned long long>(h));
  return buf;
}

// One nats-server per test process, stopped by the static destructor at exit.
const NatsCluster& Nats() {
  static std::once_flag once;
  static std::unique_ptr<NatsCluster> cluster;
  std::call_once(once, [] {
    NatsClusterOptions o;
    o.nodes = 1;
    Result<std::unique_ptr<NatsCluster>> c = NatsCluster::Start(o);
    if (!c.ok()) Die("cannot start nats-server: " + c.status().ToString());
    cluster = std::move(c).value();
    std::fprintf(stderr, "test backend: jetstream, nats-server at %s\n", cluster->Url(0).c_str());
  });
  return *cluster;
}

// The PostgreSQL of this test process, started on first use and stopped at exit.
PostgresServer& SharedPostgres() {
  static std::unique_ptr<PostgresServer> server = [] {
    Result<std::unique_ptr<PostgresServer>> s = PostgresServer::Start();
    if (!s.ok()) Die("cannot start PostgreSQL: " + s.status().ToString());
    return std::move(*s);
  }();
  return *server;
}

std::string Emit(const YAML::Node& root) {
  YAML::Emitter out;
  out << root;
  return std::string(out.c_str()) + "\n";
}

// The test's config as a map, or nothing when it is not one (a test of a bad config: the
// server refuses it either way, so it is passed on unchanged).
bool ParseMap(const std::string& yaml, YAML::Node* root) {
  try {
    *root = yaml.empty() ? YAML::Node(YAML::NodeType::Map) : YAML::Load(yaml);
  } catch (const YAML::Exception&) {
    return false;
  }
  if (root->IsNull()) *root = YAML::Node(YAML::NodeType::Map);
  return root->IsMap();
}

std::string WithJetStream(const std::string& config_yaml, const std::string& data_dir) {
  YAML::Node root;
  if (!ParseMap(config_yaml, &root) || root["log"]) return config_yaml;
  YAML::Node js;
  for (const std::string& url : Nats().Urls()) js["servers"].push_back(url);
  js["stream_prefix"] = PrefixFor(data_dir);
  root["log"]["backend"] = "jetstream";
  root["log"]["jetstream"] = js;
  return Emit(root);
}

std::string WithPostgresStore(const std::string& config_yaml, const std::string& data_dir) {
  YAML::Node root;
  if (!ParseMap(config_yaml, &root)) return config_yaml;
  YAML::Node store = root["store"];
  if (!store) {
    root["store"] = YAML::Node(YAML::NodeType::Map);
    store = root["store"];
  }
  if (!store.IsMap()) return config_yaml;
  if (!store["backend"]) store["backend"] = "postgres";
  if (store["backend"].as<std::string>() != "postgres") return config_yaml;
  if (!store["postgres_conninfo"]) store["postgres_conninfo"] = TestPostgresConnInfo();
  if (!store["postgres_table_prefix"]) store["postgres_table_prefix"] = PrefixFor(data_dir);
  return Emit(root);
}

// The JetStream log plus a cluster: section of its own (tables named after the data dir), so
// that every consumer group runs through the shared-groups path (cluster_groups.h): one sidecar
// owning each group, its state in PostgreSQL.
std::string WithCluster(const std::string& config_yaml, const std::string& data_dir) {
  const std::string with_log = WithJetStream(config_yaml, data_dir);
  YAML::Node root;
  if (!ParseMap(with_log, &root) || root["cluster"]) return with_log;
  const std::string prefix = PrefixFor(data_dir);
  YAML::Node cluster;
  cluster["instance_id"] = prefix;
  cluster["postgres_conninfo"] = TestPostgresConnInfo();
  cluster["lease_table"] = prefix + "_leases";
  cluster["group_state_table"] = prefix + "_groups";
  // Short, so that a server restarted on its data dir after a SIGKILL gets its groups back
  // quickly (its old holder's leases must expire first).
  cluster["lease_ttl_ms"] = 1000;
  root["cluster"] = cluster;
  return Emit(root);
}

}  // namespace

std::string TestBackend() {
  const char* env = std::getenv("CONVERGE_TEST_BACKEND");
  if (env == nullptr || *env == '\0') return "embedded";
  return env;
}

std::string TestPostgresConnInfo() { return SharedPostgres().ConnInfo(); }

std::string WithTestBackend(std::string config_yaml, const std::string& data_dir) {
  const std::string backend = TestBackend();
  if (backend == "embedded") return config_yaml;
  if (backend == "jetstream") return WithJetStream(config_yaml, data_dir);
  if (backend == "postgres") return WithPostgresStore(config_yaml, data_dir);
  if (backend == "cluster") return WithCluster(config_yaml, data_dir);
  Die("unknown CONVERGE_TEST_BACKEND '" + backend + "' (embedded, jetstream, postgres or cluster)");
}

}  // namespace converge::testing
