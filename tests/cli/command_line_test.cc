// Black-box tests of every command line: the converge binary's commands, its benchmarks and the
// test helper programs, run as child processes. A bad number (negative, overflowing, with
// trailing text, out of range) or an unknown option is refused with exit code 2 and a message
// naming the option, before anything is done (no directory created, no server contacted);
// --help prints the usage and exits 0.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "support/run_command.h"

namespace converge {
namespace {

using Outcome = testing::CommandOutput;  // out: stdout and stderr

std::string Quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) {
    if (c == '\'') {
      q += "'\\''";
    } else {
      q += c;
    }
  }
  return q + "'";
}

Outcome RunArgs(const std::vector<std::string>& args) {
  std::string command;
  for (const std::string& a : args) command += Quote(a) + " ";
  command += "2>&1 </dev/null";
  return testing::RunCommand(command);
}

std::string Converge() {
  const char* b = std::getenv("CONVERGE_BINARY");
  return b != nullptr ? b : "converge";
}

class ScratchDir {
 public:
  ScratchDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "converge-cli-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) != nullptr) path_ = tmpl;
  }
  ~ScratchDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  // Nothing was created in it.
  bool Empty() const { return std::filesystem::is_empty(path_); }

 private:
  std::string path_;
};

// `prefix` + {flag, value} is refused with exit code 2 and a message naming `flag`.
void ExpectRefused(const std::vector<std::string>& prefix, const std::string& flag,
                   const std::string& value) {
  std::vector<std::string> args = prefix;
  args.push_back(flag);
  args.push_back(value);
  const Outcome r = RunArgs(args);
  std::string shown;
  for (const std::string& a : args) shown += a + " ";
  EXPECT_EQ(r.exit_code, 2) << shown << "\n" << r.out;
  EXPECT_NE(r.out.find(flag), std::string::npos) << shown << " should name " << flag << "\n"
                                                 << r.out;
}

// Values no integer option accepts: negative, overflowing, trailing junk, empty, hex, sign.
const char* const kBadNumbers[] = {
    "-1", "18446744073709551616", "99999999999999999999999", "12x", "", "0x10", "+5", " 7", "1e3"};

struct NumberOption {
  std::vector<std::string> command;  // program and fixed arguments (valid otherwise)
  std::string flag;
  std::string too_big;  // just past the accepted range
};

TEST(CommandLineTest, EveryIntegerOptionRefusesBadNumbers) {
  ScratchDir dir;
  ASSERT_FALSE(dir.path().empty());
  const std::string c = Converge();
  const std::string log = dir.path() + "/log";
  const std::vector<std::string> relay = {
      c, "relay", "--source", "sqlite:" + dir.path() + "/x.db", "--log-dir", log};
  const std::vector<std::string> saga = {c, "saga", "ls", "--server", "http://127.0.0.1:1"};
  const std::vector<std::string> saga_start = {c,   "saga",     "start",
                                               "d", "--server", "http://127.0.0.1:1"};
  const std::vector<std::string> bench_dir = {"--dir", dir.path() + "/bench"};
  auto bench = [&](const char* name) {
    std::vector<std::string> v = {c, "bench", name};
    v.insert(v.end(), bench_dir.begin(), bench_dir.end());
    return v;
  };
  const std::vector<NumberOption> options = {
      {relay, "--partitions", "1025"},
      {relay, "--batch", "100001"},
      {relay, "--poll-ms", "3600001"},
      {relay, "--buckets", "4097"},
      {saga, "--limit", "100001"},
      {saga, "--idle-ms", "99999999999999"},
      {saga_start, "--version", "4294967296"},
      {bench("log"), "--events", "1000000001"},
      {bench("log"), "--size", "1048577"},
      {bench("log"), "--rate", "1000001"},
      {bench("log"), "--latency-seconds", "3601"},
      {bench("log"), "--rounds", "101"},
      {bench("outbox"), "--events", "100000001"},
      {bench("outbox"), "--tx-events", "10001"},
      {bench("outbox"), "--keys", "10000001"},
      {bench("outbox"), "--writers", "65"},
      {bench("outbox"), "--workers", "65"},
      {bench("outbox"), "--rate", "1000001"},
      {bench("outbox"), "--latency-seconds", "3601"},
      {bench("saga"), "--sagas", "100000001"},
      {bench("saga"), "--window", "100000001"},
      {bench("saga"), "--txns", "100000001"},
      {bench("saga"), "--clients", "100000001"},
      {bench("store"), "--clients", "4097"},
      {bench("store"), "--keys", "10000001"},
      {bench("store"), "--seconds", "3601"},
#ifdef OUTBOX_RELAY_HELPER
      {{OUTBOX_RELAY_HELPER, "--source", "sqlite:" + dir.path() + "/x.db", "--log-dir", log},
       "--batch",
       "100001"},
      {{OUTBOX_RELAY_HELPER, "--source", "sqlite:" + dir.path() + "/x.db", "--log-dir", log},
       "--partitions",
       "1025"},
      {{OUTBOX_RELAY_HELPER, "--source", "sqlite:" + dir.path() + "/x.db", "--log-dir", log},
       "--pause-hit",
       "2147483648"},
#endif
  };
  for (const NumberOption& o : options) {
    SCOPED_TRACE(o.command[0] + " " + (o.command.size() > 1 ? o.command[1] : "") + " " + o.flag);
    for (const char* bad : kBadNumbers) ExpectRefused(o.command, o.flag, bad);
    ExpectRefused(o.command, o.flag, o.too_big);
    // "--flag=value" is checked the same way.
    std::vector<std::string> eq = o.command;
    eq.push_back(o.flag + "=-1");
    const Outcome r = RunArgs(eq);
    EXPECT_EQ(r.exit_code, 2) << r.out;
  }
  // Nothing was done: no log directory, no benchmark scratch directory, no database.
  EXPECT_TRUE(dir.Empty());
}

TEST(CommandLineTest, PositionalNumbersOfTheHelpersAreChecked) {
#ifdef LOG_CRASH_WRITER
  ScratchDir dir;
  ASSERT_FALSE(dir.path().empty());
  for (const char* bad : kBadNumbers) {
    const Outcome r = RunArgs({LOG_CRASH_WRITER, dir.path() + "/log", "run", bad});
    EXPECT_EQ(r.exit_code, 2) << bad << "\n" << r.out;
    EXPECT_NE(r.out.find("THREADS"), std::string::npos) << r.out;
  }
  EXPECT_EQ(RunArgs({LOG_CRASH_WRITER, dir.path() + "/log", "run", "65"}).exit_code, 2);
  EXPECT_EQ(RunArgs({LOG_CRASH_WRITER, dir.path() + "/log"}).exit_code, 2);
  EXPECT_TRUE(dir.Empty());
#else
  GTEST_SKIP() << "built without the crash-test helpers";
#endif
}

TEST(CommandLineTest, UnknownOptionsAndArgumentsAreRefused) {
  ScratchDir dir;
  ASSERT_FALSE(dir.path().empty());
  const std::string c = Converge();
  std::vector<std::vector<std::string>> commands = {
      {c, "serve", "--data-dir", dir.path() + "/data", "--listen", "127.0.0.1:0"},
      {c, "relay", "--source", "sqlite:" + dir.path() + "/x.db", "--log-dir", dir.path() + "/l"},
      {c, "saga", "ls", "--server", "http://127.0.0.1:1"},
      {c, "bench", "log", "--dir", dir.path() + "/b"},
      {c, "bench", "outbox", "--dir", dir.path() + "/b"},
      {c, "bench", "saga", "--dir", dir.path() + "/b"},
      {c, "bench", "store", "--dir", dir.path() + "/b"},
      {c, "bench", "replica", "--dir", dir.path() + "/b"},
#ifdef OUTBOX_RELAY_HELPER
      {OUTBOX_RELAY_HELPER, "--source", "sqlite:" + dir.path() + "/x.db", "--log-dir",
       dir.path() + "/l"},
#endif
#ifdef LOG_CRASH_WRITER
      {LOG_CRASH_WRITER, dir.path() + "/l", "run"},
#endif
#ifdef STORE_CRASH_WRITER
      {STORE_CRASH_WRITER, dir.path() + "/s"},
#endif
#ifdef REPLICA_CRASH_APPLIER
      {REPLICA_CRASH_APPLIER, dir.path() + "/l", "t", "sqlite:" + dir.path() + "/x.db", "copy"},
#endif
  };
  for (const auto& command : commands) {
    SCOPED_TRACE(command[0] + " " + command[1]);
    std::vector<std::string> unknown = command;
    unknown.push_back("--frobnicate");
    Outcome r = RunArgs(unknown);
    EXPECT_EQ(r.exit_code, 2) << r.out;
    EXPECT_NE(r.out.find("--frobnicate"), std::string::npos) << r.out;
    // A flag's value missing at the end.
    std::vector<std::string> stray = command;
    stray.push_back("stray-argument");
    stray.push_back("another");
    r = RunArgs(stray);
    EXPECT_EQ(r.exit_code, 2) << r.out;
  }
  EXPECT_TRUE(dir.Empty());
  EXPECT_EQ(RunArgs({c, "no-such-command"}).exit_code, 2);
  EXPECT_EQ(RunArgs({c, "bench", "no-such-benchmark"}).exit_code, 2);
  EXPECT_EQ(RunArgs({c, "saga", "explode"}).exit_code, 2);
  EXPECT_EQ(RunArgs({c, "saga", "show"}).exit_code, 2);  // ID missing
}

TEST(CommandLineTest, HelpWorksForEveryCommand) {
  const std::string c = Converge();
  const std::vector<std::pair<std::vector<std::string>, std::string>> helps = {
      {{c, "--help"}, "Commands:"},
      {{c, "serve", "--help"}, "--data-dir"},
      {{c, "relay", "--help"}, "--topic-map"},
      {{c, "saga", "--help"}, "--idle-ms"},
      {{c, "saga", "ls", "--help"}, "--idle-ms"},
      {{c, "bench", "--help"}, "Benchmarks:"},
      {{c, "bench", "log", "--help"}, "--latency-seconds"},
      {{c, "bench", "outbox", "--help"}, "--tx-events"},
      {{c, "bench", "saga", "--help"}, "--window"},
      {{c, "bench", "store", "--help"}, "--clients"},
      {{c, "bench", "replica", "--help"}, "--hand-written-changes"},
      {{c, "serve", "-h"}, "--listen"},
#ifdef OUTBOX_RELAY_HELPER
      {{OUTBOX_RELAY_HELPER, "--help"}, "--pause-at"},
#endif
#ifdef LOG_CRASH_WRITER
      {{LOG_CRASH_WRITER, "--help"}, "THREADS"},
#endif
#ifdef STORE_CRASH_WRITER
      {{STORE_CRASH_WRITER, "--help"}, "DIR"},
#endif
#ifdef REPLICA_CRASH_APPLIER
      {{REPLICA_CRASH_APPLIER, "--help"}, "LOG_DIR"},
#endif
  };
  for (const auto& [args, expected] : helps) {
    SCOPED_TRACE(args[0] + " " + args[1]);
    const Outcome r = RunArgs(args);
    EXPECT_EQ(r.exit_code, 0) << r.out;
    EXPECT_NE(r.out.find(expected), std::string::npos) << r.out;
  }
}

// serve refuses, at start and before creating anything, a config the modules would refuse later.
TEST(CommandLineTest, ServeRefusesAConfigTheLogWouldRefuse) {
  ScratchDir dir;
  ASSERT_FALSE(dir.path().empty());
  const std::string config = dir.path() + "/converge.yaml";
  std::FILE* f = std::fopen(config.c_str(), "w");
  ASSERT_NE(f, nullptr);
  std::fputs("auto_create_topics: true\ntopic_defaults:\n  sync_interval_ms: 86400000\n", f);
  std::fclose(f);
  const std::string data = dir.path() + "/data";
  const Outcome r = RunArgs(
      {Converge(), "serve", "--config", config, "--data-dir", data, "--listen", "127.0.0.1:0"});
  EXPECT_EQ(r.exit_code, 2) << r.out;
  EXPECT_NE(r.out.find("topic_defaults"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("sync_interval_ms must be 1..3600000"), std::string::npos) << r.out;
  EXPECT_FALSE(std::filesystem::exists(data));
}

}  // namespace
}  // namespace converge
