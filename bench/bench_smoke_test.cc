// Runs `converge bench log` end to end on a tiny workload against every system and checks the
// shape of its output (not the figures: benchmarks are never timed tests). Needs the real
// nats-server and redis-server, like the integration suites.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <boost/json.hpp>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "support/run_command.h"
#include "support/server_process.h"

namespace converge::bench {
namespace {

using RunResult = testing::CommandOutput;
using testing::RunCommand;

std::string Binary() {
  const char* b = std::getenv("CONVERGE_BINARY");
  return b != nullptr ? b : "converge";
}

TEST(BenchSmokeTest, LogRunsEverySystemAndPrintsOneJsonObjectPerRow) {
  Result<testing::TempDir> base = testing::TempDir::Create("converge-bench-smoke-");
  ASSERT_TRUE(base.ok()) << base.status().ToString();
  const RunResult r =
      RunCommand(Binary() + " bench log --events 3000 --rate 2000 --latency-seconds 1" +
                 " --json --dir " + base->path() + " 2>/dev/null");
  ASSERT_EQ(r.exit_code, 0) << r.out;

  std::map<std::pair<std::string, std::string>, boost::json::object> rows;
  size_t start = 0;
  while (start < r.out.size()) {
    const size_t nl = r.out.find('\n', start);
    ASSERT_NE(nl, std::string::npos) << "unterminated line";
    const std::string line = r.out.substr(start, nl - start);
    start = nl + 1;
    boost::system::error_code ec;
    boost::json::value v = boost::json::parse(line, ec);
    ASSERT_FALSE(ec) << line;
    const boost::json::object& o = v.as_object();
    for (const char* key :
         {"workload", "system", "durability", "events_per_s", "p50_us", "p99_us", "p999_us"}) {
      EXPECT_TRUE(o.contains(key)) << key << " missing in " << line;
    }
    EXPECT_GT(o.at("events_per_s").to_number<double>(), 0) << line;
    rows[{std::string(o.at("workload").as_string()), std::string(o.at("system").as_string())}] = o;
  }

  for (const char* system : {"converge", "jetstream", "redis-always", "redis-everysec", "raw",
                             "raw-b64", "raw-b512", "raw-b4096"}) {
    EXPECT_TRUE(rows.count({"publish", system})) << "no publish row for " << system;
  }
  for (const char* system : {"converge", "jetstream", "redis-always", "redis-everysec"}) {
    EXPECT_TRUE(rows.count({"consume_ack", system})) << "no consume_ack row for " << system;
    ASSERT_TRUE(rows.count({"latency", system})) << "no latency row for " << system;
    const boost::json::object& lat = rows[{"latency", system}];
    const double p50 = lat.at("p50_us").to_number<double>();
    const double p99 = lat.at("p99_us").to_number<double>();
    const double p999 = lat.at("p999_us").to_number<double>();
    EXPECT_GT(p50, 0) << system;
    EXPECT_LE(p50, p99) << system;
    EXPECT_LE(p99, p999) << system;
    EXPECT_EQ(lat.at("events").to_number<uint64_t>(), 4000u) << system;  // 2 s at 2000/s
  }
  EXPECT_TRUE(rows.at({"publish", "jetstream"}).at("p50_us").is_null());

  // The scratch directory under --dir is gone.
  EXPECT_TRUE(std::filesystem::is_empty(base->path())) << base->path();
}

TEST(BenchSmokeTest, ViaServerRunsConvergeThroughTheSidecar) {
  Result<testing::TempDir> base = testing::TempDir::Create("converge-bench-smoke-");
  ASSERT_TRUE(base.ok()) << base.status().ToString();
  const RunResult r = RunCommand(Binary() +
                                 " bench log --via server --systems converge --events 3000"
                                 " --rate 2000 --latency-seconds 1 --json --dir " +
                                 base->path() + " 2>/dev/null");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  for (const char* workload : {"\"publish\"", "\"consume_ack\"", "\"latency\""}) {
    EXPECT_NE(r.out.find(std::string("{\"workload\":") + workload + ",\"system\":\"converge\""),
              std::string::npos)
        << workload << " missing in\n"
        << r.out;
  }
  EXPECT_TRUE(std::filesystem::is_empty(base->path())) << base->path();
}

TEST(BenchSmokeTest, UnknownViaIsRefusedClearly) {
  const RunResult r = RunCommand(Binary() + " bench log --via carrier-pigeon 2>&1");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.out.find("--via wants inproc or server"), std::string::npos) << r.out;
}

TEST(BenchSmokeTest, SagaRunsAndPrintsTheLogLineFormat) {
  Result<testing::TempDir> base = testing::TempDir::Create("converge-bench-smoke-");
  ASSERT_TRUE(base.ok()) << base.status().ToString();
  const RunResult r = RunCommand(Binary() +
                                 " bench saga --workloads saga --sagas 2000 --window 200 --json"
                                 " --dir " +
                                 base->path() + " 2>/dev/null");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  for (const char* durability : {"topics fsync", "topics none"}) {
    const size_t at = r.out.find(durability);
    ASSERT_NE(at, std::string::npos) << r.out;
    const size_t begin = r.out.rfind('\n', at) == std::string::npos ? 0 : r.out.rfind('\n', at) + 1;
    const std::string line = r.out.substr(begin, r.out.find('\n', at) - begin);
    EXPECT_EQ(line.rfind("{\"workload\":\"saga3\",\"system\":\"converge\"", 0), 0u) << line;
    EXPECT_NE(line.find("\"events_per_s\":"), std::string::npos) << line;
    EXPECT_NE(line.find("\"sagas_per_s\":"), std::string::npos) << line;
    EXPECT_NE(line.find("\"events\":2000,"), std::string::npos) << line;
  }
  EXPECT_TRUE(std::filesystem::is_empty(base->path())) << base->path();
}

TEST(BenchSmokeTest, ReconcileRunsEverySystemAndFindsTheExactDrift) {
  const RunResult r = RunCommand(
      Binary() + " bench reconcile --keys 3000 --differences 0,1,100,1000 --json 2>/dev/null");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  std::map<std::string, int> systems;
  size_t lines = 0;
  for (size_t at = 0; at < r.out.size();) {
    const size_t end = r.out.find('\n', at);
    const std::string line = r.out.substr(at, end - at);
    at = end == std::string::npos ? r.out.size() : end + 1;
    if (line.empty()) continue;
    ++lines;
    boost::json::object o = boost::json::parse(line).as_object();
    for (const char* field :
         {"workload", "system", "keys", "differences", "distribution", "bytes_sent",
          "bytes_received", "round_trips", "seconds", "cpu_seconds", "overhead_ratio"}) {
      EXPECT_TRUE(o.contains(field)) << field << " in " << line;
    }
    EXPECT_EQ(o["keys"].as_int64(), 3000) << line;
    EXPECT_TRUE(o["exact"].as_bool()) << line;
    ++systems[std::string(o["system"].as_string())];
  }
  // d = 0 and 1 once, 100 and 1,000 scattered and clustered; the protocol also runs with
  // writes continuing at the largest d.
  EXPECT_EQ(systems["converge-riblt"], 7) << r.out;
  EXPECT_EQ(systems["merkle"], 6) << r.out;
  EXPECT_EQ(systems["full-digest"], 6) << r.out;
  EXPECT_EQ(lines, 19u);
}

TEST(BenchSmokeTest, HelpListsTheOptions) {
  const RunResult r = RunCommand(Binary() + " bench log --help");
  EXPECT_EQ(r.exit_code, 0);
  for (const char* option : {"--events", "--size", "--rate", "--latency-seconds", "--systems",
                             "--json", "--dir", "--via", "--rounds"}) {
    EXPECT_NE(r.out.find(option), std::string::npos) << option;
  }
  const RunResult all = RunCommand(Binary() + " bench --help");
  EXPECT_EQ(all.exit_code, 0);
  EXPECT_NE(all.out.find("log"), std::string::npos);
}

}  // namespace
}  // namespace converge::bench

namespace converge::bench {
namespace {

// `converge bench push` on a tiny backlog: one push and one pull row per key count, every event
// delivered (the bench fails otherwise).
TEST(BenchSmokeTest, PushPrintsPushAndPullRowsPerKeyCount) {
  Result<testing::TempDir> base = testing::TempDir::Create("converge-bench-smoke-");
  ASSERT_TRUE(base.ok()) << base.status().ToString();
  const testing::CommandOutput r = testing::RunCommand(
      (std::getenv("CONVERGE_BINARY") != nullptr ? std::string(std::getenv("CONVERGE_BINARY"))
                                                 : std::string("converge")) +
      " bench push --events 300 --keys 1,8 --json --dir " + base->path() + " 2>/dev/null");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  std::map<std::string, int> rows;
  size_t start = 0;
  while (start < r.out.size()) {
    size_t nl = r.out.find('\n', start);
    if (nl == std::string::npos) nl = r.out.size();
    boost::system::error_code ec;
    boost::json::value v = boost::json::parse(r.out.substr(start, nl - start), ec);
    start = nl + 1;
    ASSERT_FALSE(ec) << r.out;
    const boost::json::object& o = v.as_object();
    EXPECT_EQ(o.at("events").as_int64(), 300) << r.out;
    ++rows[std::string(o.at("workload").as_string())];
  }
  EXPECT_EQ(rows["push"], 2) << r.out;
  EXPECT_EQ(rows["pull"], 2) << r.out;
}

}  // namespace
}  // namespace converge::bench
