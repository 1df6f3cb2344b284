// Black-box tests of `converge topology check|graph|impact` and `converge bench topology`: exit
// codes (0 clean, 1 errors or --strict warnings, 2 bad input), text and --json output, on the
// manifests of src/topology/testdata (one directory per defect class).
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>

#include "support/run_command.h"

namespace converge {
namespace {

namespace json = boost::json;

std::string Converge() {
  const char* b = std::getenv("CONVERGE_BINARY");
  return b != nullptr ? b : "converge";
}

std::string Testdata(const std::string& name) {
  const char* src = std::getenv("CONVERGE_SOURCE_DIR");
  return std::string(src != nullptr ? src : ".") + "/src/topology/testdata/" + name;
}

// stdout only (stderr to /dev/null) or both.
testing::CommandOutput RunTopo(const std::string& args, bool with_stderr = false) {
  return testing::RunCommand(Converge() + " " + args + (with_stderr ? " 2>&1" : " 2>/dev/null") +
                             " </dev/null");
}

TEST(TopologyCli, CheckExitCodesPerDefectClass) {
  struct Case {
    const char* dir;
    int exit_code;
    const char* code;  // of the first finding; "" = none
  };
  const Case cases[] = {
      {"clean", 0, ""},
      {"sync-cycle", 1, "sync-cycle"},
      {"two-owners", 1, "two-owners"},
      {"not-owner", 1, "not-owner"},
      {"no-publisher", 1, "no-publisher"},
      {"saga-participant", 1, "saga-participant"},
      {"async-loop", 0, "async-loop"},
      {"no-consumer", 0, "no-consumer"},
      {"contract", 1, "contract"},
  };
  for (const Case& c : cases) {
    testing::CommandOutput r = RunTopo("topology check --json " + Testdata(c.dir));
    EXPECT_EQ(r.exit_code, c.exit_code) << c.dir << "\n" << r.out;
    json::value doc = json::parse(r.out);
    const json::array& findings = doc.at("findings").as_array();
    EXPECT_EQ(doc.at("ok").as_bool(), c.exit_code == 0) << c.dir;
    EXPECT_TRUE(doc.at("contracts_checked").as_bool());
    if (c.code[0] == '\0') {
      EXPECT_TRUE(findings.empty()) << c.dir << "\n" << r.out;
    } else {
      ASSERT_FALSE(findings.empty()) << c.dir;
      EXPECT_EQ(findings[0].at("code").as_string(), c.code) << c.dir;
      EXPECT_FALSE(findings[0].at("path").as_array().empty());
      EXPECT_FALSE(findings[0].at("where").as_array().empty());
    }
  }
}

TEST(TopologyCli, CheckTextNamesPathAndFiles) {
  testing::CommandOutput r = RunTopo("topology check " + Testdata("sync-cycle"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("error [sync-cycle] synchronous calls form a cycle: a -> b -> c -> a"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("path: service:a -> service:b -> service:c -> service:a"),
            std::string::npos);
  EXPECT_NE(r.out.find("at: a.yaml#/x-converge-calls/0, b.yaml#/x-converge-calls/0"),
            std::string::npos);
}

TEST(TopologyCli, WarningsFailOnlyWithStrict) {
  EXPECT_EQ(RunTopo("topology check " + Testdata("no-consumer")).exit_code, 0);
  EXPECT_EQ(RunTopo("topology check --strict " + Testdata("no-consumer")).exit_code, 1);
  EXPECT_EQ(RunTopo("topology check --strict " + Testdata("clean")).exit_code, 0);
}

TEST(TopologyCli, BadInputExitsTwo) {
  // No such directory.
  testing::CommandOutput r = RunTopo("topology check --json " + Testdata("does-not-exist"));
  EXPECT_EQ(r.exit_code, 2);
  json::value err = json::parse(r.out);
  EXPECT_EQ(err.at("code").as_string(), "INVALID_ARGUMENT");
  // A bad manifest: named with its line and JSON pointer.
  const std::string dir =
      (std::filesystem::temp_directory_path() / "converge-topology-bad").string();
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/broken.yaml") << "asyncapi: 3.0.0\ninfo: {title: s}\noperations:\n"
                                         "  o: {action: send, channel: {$ref: '#/channels/c'}}\n";
  r = RunTopo("topology check " + dir, /*with_stderr=*/true);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.out.find("broken.yaml:4: /operations/o/channel/$ref: $ref '#/channels/c' names "
                       "nothing in the document"),
            std::string::npos)
      << r.out;
  for (const char* cmd : {"graph", "impact"}) {
    EXPECT_EQ(
        RunTopo(std::string("topology ") + cmd + " " + dir + (cmd[0] == 'i' ? " x" : "")).exit_code,
        2);
  }
  std::filesystem::remove_all(dir);
  // Usage errors.
  EXPECT_EQ(RunTopo("topology").exit_code, 2);
  EXPECT_EQ(RunTopo("topology check").exit_code, 2);
  EXPECT_EQ(RunTopo("topology check --bogus " + Testdata("clean")).exit_code, 2);
  EXPECT_EQ(RunTopo("topology graph --format svg " + Testdata("clean")).exit_code, 2);
  EXPECT_EQ(RunTopo("topology --help").exit_code, 0);
}

TEST(TopologyCli, GraphFormats) {
  testing::CommandOutput r = RunTopo("topology graph " + Testdata("clean"));
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.out.rfind("flowchart LR\n", 0), 0u) << r.out;
  r = RunTopo("topology graph --format dot " + Testdata("clean"));
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(
      r.out.find("\"service:payments\" -> \"service:customers\" [label=\"calls\", style=dashed];"),
      std::string::npos)
      << r.out;
  r = RunTopo("topology graph --format json " + Testdata("clean"));
  EXPECT_EQ(r.exit_code, 0);
  json::value doc = json::parse(r.out);
  EXPECT_EQ(doc.at("nodes").as_array().size(), 8u);
}

TEST(TopologyCli, Impact) {
  testing::CommandOutput r =
      RunTopo("topology impact --json " + Testdata("clean") + " topic:orders.placed");
  EXPECT_EQ(r.exit_code, 0) << r.out;
  json::value doc = json::parse(r.out);
  EXPECT_EQ(doc.at("start").as_string(), "topic:orders.placed");
  std::set<std::string> nodes;
  for (const json::value& d : doc.at("downstream").as_array())
    nodes.insert(std::string(d.at("node").as_string()));
  EXPECT_EQ(nodes,
            (std::set<std::string>{"service:payments", "topic:payments.done", "collection:payments",
                                   "service:orders", "collection:orders"}));
  r = RunTopo("topology impact " + Testdata("clean") + " service:orders");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find("via service:orders -> topic:orders.placed -> service:payments"),
            std::string::npos)
      << r.out;
  EXPECT_EQ(RunTopo("topology impact " + Testdata("clean") + " nothing").exit_code, 2);
  EXPECT_EQ(RunTopo("topology impact " + Testdata("clean") + " customers").exit_code,
            2);  // ambiguous
}

TEST(TopologyCli, BenchPrintsJsonLines) {
  testing::CommandOutput r = RunTopo("bench topology --json --services 30 --channels 200 --runs 2");
  EXPECT_EQ(r.exit_code, 0) << r.out;
  std::istringstream lines(r.out);
  std::string line;
  int n = 0;
  while (std::getline(lines, line)) {
    json::value row = json::parse(line);
    EXPECT_EQ(row.at("workload").as_string(), "topology_check");
    EXPECT_EQ(row.at("services").to_number<int>(), 30);
    EXPECT_EQ(row.at("channels").to_number<int>(), 200);
    EXPECT_GE(row.at("seconds").to_number<double>(), 0.0);
    ++n;
  }
  EXPECT_EQ(n, 2);
}

}  // namespace
}  // namespace converge
