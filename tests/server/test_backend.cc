#include "server/test_backend.h"

#include <yaml-cpp/yaml.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>

#include "support/nats_server.h"

namespace converge::testing {
namespace {

[[noreturn]] void Die(const std::string& why) {
  std::fprintf(stderr, "test backend: %s\n", why.c_str());
  std::abort();
}

// FNV-1a: a stream prefix per data directory ([A-Za-z0-9-] only).
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

std::string WithJetStream(const std::string& config_yaml, const std::string& data_dir) {
  YAML::Node root;
  try {
    root = config_yaml.empty() ? YAML::Node(YAML::NodeType::Map) : YAML::Load(config_yaml);
  } catch (const YAML::Exception&) {
    return config_yaml;  // a test of a bad config: the server refuses it either way
  }
  if (root.IsNull()) root = YAML::Node(YAML::NodeType::Map);
  if (!root.IsMap() || root["log"]) return config_yaml;
  YAML::Node js;
  for (const std::string& url : Nats().Urls()) js["servers"].push_back(url);
  js["stream_prefix"] = PrefixFor(data_dir);
  root["log"]["backend"] = "jetstream";
  root["log"]["jetstream"] = js;
  YAML::Emitter out;
  out << root;
  return out.c_str();
}

}  // namespace

std::string TestBackend() {
  const char* b = std::getenv("CONVERGE_TEST_BACKEND");
  return b == nullptr || *b == '\0' ? std::string("embedded") : std::string(b);
}

std::string WithTestBackend(std::string config_yaml, const std::string& data_dir) {
  const std::string backend = TestBackend();
  if (backend == "embedded") return config_yaml;
  if (backend == "jetstream") return WithJetStream(config_yaml, data_dir);
  // postgres: the store on PostgreSQL (its branch goes here).
  Die("unknown CONVERGE_TEST_BACKEND '" + backend + "'");
}

}  // namespace converge::testing
