#include "server/test_backend.h"

#include <yaml-cpp/yaml.h>

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>

#include "support/postgres_server.h"

namespace converge::testing {
namespace {

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "test backend: %s\n", what.c_str());
  std::fflush(stderr);
  std::abort();
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

// A table prefix for `data_dir`: the same directory, the same store.
std::string PrefixFor(const std::string& data_dir) {
  char hex[17];
  std::snprintf(hex, sizeof(hex), "%016zx", std::hash<std::string>{}(data_dir));
  return std::string("t") + hex;
}

YAML::Node Parse(const std::string& yaml) {
  YAML::Node root = yaml.empty() ? YAML::Node(YAML::NodeType::Map) : YAML::Load(yaml);
  if (!root.IsMap()) Die("the test's config is not a YAML map");
  return root;
}

std::string Emit(const YAML::Node& root) {
  YAML::Emitter out;
  out << root;
  return std::string(out.c_str()) + "\n";
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
  if (backend == "jetstream") {
    // The JetStream log's branch (written with the JetStream backend).
    Die("CONVERGE_TEST_BACKEND=jetstream is not wired in this build");
  }
  if (backend == "postgres") {
    YAML::Node root = Parse(config_yaml);
    YAML::Node store = root["store"];
    if (!store) {
      root["store"] = YAML::Node(YAML::NodeType::Map);
      store = root["store"];
    }
    if (!store["backend"]) store["backend"] = "postgres";
    if (store["backend"].as<std::string>() != "postgres") return config_yaml;
    if (!store["postgres_conninfo"]) store["postgres_conninfo"] = TestPostgresConnInfo();
    if (!store["postgres_table_prefix"]) store["postgres_table_prefix"] = PrefixFor(data_dir);
    return Emit(root);
  }
  Die("unknown CONVERGE_TEST_BACKEND '" + backend + "' (embedded, jetstream or postgres)");
}

}  // namespace converge::testing
