// Helper of replica_sql_test: replicates a topic of the log in LOG_DIR into TABLE of the
// database DB (sqlite:<path> or a PostgreSQL conninfo), printing one line per committed batch
// ("<records read> <next offset of partition 0> ..."), and "done" once caught up. The test
// kills it with SIGKILL at some line, so the kill lands inside a later transaction.
#include <cstdio>
#include <cstdlib>
#include <string>

#include "converge/env.h"
#include "converge/log.h"
#include "converge/replica.h"
#include "converge/sql.h"
#include "core/command_line.h"

using namespace converge;  // NOLINT: a small test program

namespace {

[[noreturn]] void Fail(const std::string& what, const Status& s) {
  std::fprintf(stderr, "replica_crash_applier: %s: %s\n", what.c_str(), s.ToString().c_str());
  std::fflush(stderr);
  std::_Exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  std::string log_dir, topic, db_text, table;
  uint64_t max_batch = 7;
  CLI::App app("Applies a topic to a SQL table, one line per batch.", "replica_crash_applier");
  cli::Configure(app);
  app.add_option("LOG_DIR", log_dir)->required();
  app.add_option("TOPIC", topic)->required();
  app.add_option("DB", db_text)->required();
  app.add_option("TABLE", table)->required();
  app.add_option("--max-batch", max_batch)->transform(cli::Integer(1, 100000));
  if (int rc = cli::ParseOrExit(app, argc, argv); rc >= 0) return rc;
  Env& env = Env::Default();
  LogOptions lo;
  lo.dir = log_dir;
  auto log = Log::Open(env, lo);
  if (!log.ok()) Fail("open log", log.status());
  auto target_spec = sql::ParseDatabaseTarget(db_text);
  if (!target_spec.ok()) Fail("database", target_spec.status());
  auto db = sql::OpenDatabase(*target_spec);
  if (!db.ok()) Fail("open database", db.status());
  auto target = replica::NewSqlTarget(**db, {"crash", table, topic});
  if (!target.ok()) Fail("target", target.status());
  std::unique_ptr<replica::Source> source = replica::NewLogSource(**log, topic);
  replica::ApplierOptions options;
  options.name = "crash";
  options.max_batch = max_batch;
  options.tombstone_retention_ms = 0;
  auto applier = replica::Applier::Open(env, *source, **target, options);
  if (!applier.ok()) Fail("open applier", applier.status());
  while (true) {
    Result<size_t> n = (*applier)->Step();
    if (!n.ok()) Fail("step", n.status());
    if (*n == 0) break;
    std::string line = std::to_string(*n);
    for (const replica::Position& p : (*applier)->Stats().positions) {
      line.push_back(' ');
      line.append(std::to_string(p.next_offset));
    }
    std::printf("%s\n", line.c_str());
    std::fflush(stdout);
  }
  std::printf("done\n");
  std::fflush(stdout);
  return 0;
}
