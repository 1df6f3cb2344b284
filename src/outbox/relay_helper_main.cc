// outbox_relay_helper: a relay in its own process, for the tests that kill it with SIGKILL.
//
//   outbox_relay_helper --source <sqlite path | postgres conninfo> --log-dir <dir>
//       [--batch N] [--chunk N] [--partitions N]
//       [--pause-at <fault point> --pause-hit N --marker <file>]
//       [--mode wal --slot <slot>]
//
// Without --pause-at it drains the outbox and exits 0. With it, the N-th time the relay reaches
// the fault point it creates the marker file and blocks there forever, so the test can kill the
// process at exactly that step (e.g. in the middle of a batch). In WAL mode, where "drained"
// cannot be told from "not streamed yet", it runs cycles until killed (use with --pause-at).
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "converge/log.h"
#include "converge/relay.h"
#include "core/command_line.h"

namespace {

int Fail(const std::string& what) {
  std::fprintf(stderr, "outbox_relay_helper: %s\n", what.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace converge;
  std::string source, log_dir, pause_at, marker, mode = "table", slot;
  uint32_t batch = 100, chunk = 100'000, partitions = 4;
  int pause_hit = 1;
  CLI::App app("A relay in its own process, for the tests that kill it.", "outbox_relay_helper");
  cli::Configure(app);
  app.add_option("--source", source, "sqlite path or PostgreSQL conninfo")->required();
  app.add_option("--log-dir", log_dir, "the log directory")->required();
  // The ranges RelayOptions and TopicOptions accept.
  app.add_option("--batch", batch, "rows per batch")->check(cli::Integer(1, 100'000));
  app.add_option("--chunk", chunk, "events per publish")->check(cli::Integer(1, UINT32_MAX));
  app.add_option("--partitions", partitions, "of the created topics")->check(cli::Integer(1, 1024));
  app.add_option("--pause-at", pause_at, "fault point to block at");
  app.add_option("--pause-hit", pause_hit, "block at its N-th hit")
      ->check(cli::Integer(1, INT32_MAX));
  app.add_option("--marker", marker, "file created when blocked");
  app.add_option("--mode", mode, "table | wal");
  app.add_option("--slot", slot, "WAL mode: the replication slot");
  if (int rc = cli::ParseOrExit(app, argc, argv); rc >= 0) return rc;
  if (!pause_at.empty() && marker.empty()) {
    std::fprintf(stderr, "outbox_relay_helper: --pause-at needs --marker\n");
    return 2;
  }
  auto target = sql::ParseDatabaseTarget(source);
  if (!target.ok()) return Fail(target.status().ToString());
  LogOptions lo;
  lo.dir = log_dir;
  auto log = Log::Open(Env::Default(), lo);
  if (!log.ok()) return Fail(log.status().ToString());
  LogSinkOptions so;
  so.topic_options.partitions = partitions;
  so.topic_options.durability = Durability::kNone;
  auto sink = NewLogSink(**log, so);
  if (!sink.ok()) return Fail(sink.status().ToString());
  RelayOptions ro;
  ro.name = "helper";
  ro.batch_max_events = batch;
  ro.publish_chunk_max_events = chunk;
  ro.sqlite_synchronous = "normal";
  ro.mode = mode;
  ro.wal_slot = slot;
  int hits = 0;
  if (!pause_at.empty()) {
    ro.fault_point = [&](std::string_view point) -> Status {
      if (point != pause_at || ++hits != pause_hit) return Status::Ok();
      int fd = ::open(marker.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (fd >= 0) ::close(fd);
      for (;;) ::pause();  // wait here for SIGKILL
    };
  }
  auto relay = Relay::Create(Env::Default(), *target, **sink, ro);
  if (!relay.ok()) return Fail(relay.status().ToString());
  if (mode == "wal") {
    for (;;) {
      auto n = (*relay)->RunOnce();
      if (!n.ok()) std::fprintf(stderr, "retrying after: %s\n", n.status().ToString().c_str());
      if (!n.ok() || *n == 0) ::usleep(2'000);
    }
  }
  for (int attempt = 0; attempt < 1000; ++attempt) {
    auto n = (*relay)->Drain(1'000'000);
    if (n.ok()) {
      std::printf("relayed %zu\n", *n);
      return 0;
    }
    std::fprintf(stderr, "retrying after: %s\n", n.status().ToString().c_str());
    ::usleep(10'000);
  }
  return Fail("gave up");
}
