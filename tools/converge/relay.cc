// `converge relay`: moves committed outbox rows of service databases to the event log.
#include "converge/relay.h"

#include <signal.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <string_view>

#include "command.h"
#include "converge/log.h"
#include "core/command_line.h"

namespace converge::cli {
namespace {

constexpr char kRelayUsage[] =
    "Usage: converge relay --log-dir DIR (--source DATABASE | --config FILE) [options]\n"
    "\n"
    "Publishes the rows services commit to their outbox table (docs/formats/outbox.md) to\n"
    "the event log in DIR, in commit order per partition key, then deletes them. Runs until\n"
    "SIGINT/SIGTERM; several relays on one outbox are safe (they share the work).\n"
    "\n"
    "  --source DATABASE     sqlite:<path>, a *.db path, or a PostgreSQL conninfo/URI\n"
    "  --name NAME           relay name (default: relay)\n"
    "  --config FILE         YAML with a `relays:` section (several sources; see\n"
    "                        include/converge/relay.h, ParseRelayServiceConfig)\n"
    "  --log-dir DIR         the log directory (locked: not shared with a running serve)\n"
    "  --topic-map OUT=LOG   publish outbox topic OUT to log topic LOG (repeatable)\n"
    "  --partitions N        partitions of created topics, 1..1024 (default 1)\n"
    "  --durability D        fsync | interval | none for created topics (default fsync)\n"
    "  --batch N             rows per batch, 1..100000 (default 1000)\n"
    "  --poll-ms N           fallback poll interval, 1..3600000 (default 500)\n"
    "  --buckets N           PostgreSQL buckets shared by relays, 1..4096 (default 64)\n"
    "  --drain               publish what is there and exit (no waiting); prints per\n"
    "                        source the rows handled, published and dead-lettered\n"
    "\n"
    "WAL outbox (PostgreSQL; docs/formats/wal-outbox.md):\n"
    "  --mode M              table (default) | wal: read logical messages from a slot\n"
    "  --slot NAME           wal: the replication slot\n"
    "  --publication NAME    wal: the publication (default converge_outbox)\n"
    "  --create-slots        create the slot (and publication) of every wal source, exit;\n"
    "                        for table capture sources also the initial snapshot, into\n"
    "                        the log of --log-dir\n"
    "  --drop-slots          drop the slot of every wal source (relays stopped first), exit;\n"
    "                        the events not yet relayed are lost\n";

Result<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFoundError("cannot read " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

int Fail(const Status& s) {
  std::fprintf(stderr, "converge relay: %s\n", s.ToString().c_str());
  return 1;
}

int RunRelay(int argc, char** argv) {
  std::string log_dir, config_path, name = "relay";
  std::vector<std::string> sources;
  RelayServiceConfig config;
  RelayOptions options;
  bool drain = false, create_slots = false, drop_slots = false;
  std::vector<std::string> topic_maps;
  std::string durability;
  CLI::App app("Publishes committed outbox rows to the event log.", "converge relay");
  Configure(app);
  app.add_option("--source", sources, "database (repeatable)")->allow_extra_args(false);
  app.add_option("--name", name, "relay name");
  app.add_option("--config", config_path, "YAML with a relays: section");
  app.add_option("--log-dir", log_dir, "the log directory");
  app.add_option("--topic-map", topic_maps, "OUT=LOG (repeatable)")->allow_extra_args(false);
  // The ranges the log and the relay accept (TopicOptions, RelayOptions).
  app.add_option("--partitions", config.sink.topic_options.partitions, "partitions")
      ->check(Integer(1, 1024));
  app.add_option("--durability", durability, "fsync | interval | none");
  app.add_option("--batch", options.batch_max_events, "rows per batch")->check(Integer(1, 100'000));
  app.add_option("--poll-ms", options.poll_interval_ms, "fallback poll interval")
      ->check(Integer(1, 3'600'000));
  app.add_option("--buckets", options.postgres_buckets, "PostgreSQL buckets")
      ->check(Integer(1, 4096));
  app.add_flag("--drain", drain, "publish what is there and exit");
  app.add_option("--mode", options.mode, "table | wal")->check(CLI::IsMember({"table", "wal"}));
  app.add_option("--slot", options.wal_slot, "wal: replication slot");
  app.add_option("--publication", options.wal_publication, "wal: publication");
  app.add_flag("--create-slots", create_slots, "create the wal sources' slots and exit");
  app.add_flag("--drop-slots", drop_slots, "drop the wal sources' slots and exit");
  if (int rc = ParseOrExit(app, argc, argv, kRelayUsage); rc >= 0) return rc;
  for (const std::string& m : topic_maps) {
    const size_t eq = m.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == m.size()) {
      std::fprintf(stderr, "converge relay: --topic-map wants OUT=LOG, got '%s'\n", m.c_str());
      return 2;
    }
    config.sink.topic_map[m.substr(0, eq)] = m.substr(eq + 1);
  }
  if (!durability.empty()) {
    auto d = ParseDurability(durability);
    if (!d.ok()) {
      std::fprintf(stderr, "converge relay: --durability: %s\n",
                   std::string(d.status().message()).c_str());
      return 2;
    }
    config.sink.topic_options.durability = *d;
  }
  const bool slot_op = create_slots || drop_slots;
  if (create_slots && drop_slots) {
    std::fprintf(stderr, "converge relay: --create-slots and --drop-slots exclude each other\n");
    return 2;
  }
  if ((log_dir.empty() && !slot_op) || (sources.empty() == config_path.empty())) {
    std::fprintf(stderr,
                 "converge relay: --log-dir and one of --source or --config are needed\n\n%s",
                 kRelayUsage);
    return 2;
  }
  if (!config_path.empty()) {
    auto text = ReadFile(config_path);
    if (!text.ok()) return Fail(text.status());
    auto parsed = ParseRelayServiceConfig(*text);
    if (!parsed.ok()) return Fail(parsed.status());
    config = std::move(parsed).value();
  } else {
    for (size_t i = 0; i < sources.size(); ++i) {
      RelaySourceConfig source;
      source.name = sources.size() == 1 ? name : name + "-" + std::to_string(i);
      source.database = sources[i];
      source.options = options;
      config.sources.push_back(std::move(source));
    }
  }

  if (slot_op) {
    int rc = 0;
    size_t wal_sources = 0;
    // Table capture sources publish their initial snapshot into the log while the slot is
    // created: they need the log.
    std::unique_ptr<Log> snapshot_log;
    std::unique_ptr<RelaySink> snapshot_sink;
    for (const RelaySourceConfig& source : config.sources) {
      if (source.options.mode != "wal") continue;
      ++wal_sources;
      auto target = sql::ParseDatabaseTarget(source.database);
      if (!target.ok()) return Fail(target.status());
      const RelayOptions& o = source.options;
      Status s;
      if (create_slots && o.wal_capture_tables) {
        if (snapshot_sink == nullptr) {
          if (log_dir.empty()) {
            std::fprintf(stderr,
                         "converge relay: --create-slots for a table capture source (%s) needs "
                         "--log-dir: its initial snapshot goes into the log\n",
                         source.name.c_str());
            return 2;
          }
          LogOptions lo;
          lo.dir = log_dir;
          auto log = Log::Open(Env::Default(), lo);
          if (!log.ok()) return Fail(log.status());
          snapshot_log = std::move(log).value();
          auto sink = NewLogSink(*snapshot_log, config.sink);
          if (!sink.ok()) return Fail(sink.status());
          snapshot_sink = std::move(sink).value();
        }
        s = CreateCaptureSlot(target->location, o.wal_slot, o.wal_publication,
                              o.wal_capture_topic_prefix, *snapshot_sink);
      } else {
        s = create_slots ? CreateWalSlot(target->location, o.wal_slot, o.wal_publication)
                         : DropWalSlot(target->location, o.wal_slot);
      }
      if (create_slots && s.code() == StatusCode::kAlreadyExists) {
        std::printf("%s: slot %s exists\n", source.name.c_str(), o.wal_slot.c_str());
      } else if (!s.ok()) {
        std::fprintf(stderr, "converge relay: %s: %s\n", source.name.c_str(), s.ToString().c_str());
        rc = 1;
      } else {
        std::printf("%s: slot %s %s\n", source.name.c_str(), o.wal_slot.c_str(),
                    create_slots ? "created" : "dropped");
      }
    }
    if (wal_sources == 0) {
      std::fprintf(stderr, "converge relay: no source has mode wal\n");
      return 2;
    }
    return rc;
  }

  LogOptions lo;
  lo.dir = log_dir;
  auto log = Log::Open(Env::Default(), lo);
  if (!log.ok()) return Fail(log.status());

  if (drain) {
    auto sink = NewLogSink(**log, config.sink);
    if (!sink.ok()) return Fail(sink.status());
    for (const RelaySourceConfig& source : config.sources) {
      auto target = sql::ParseDatabaseTarget(source.database);
      if (!target.ok()) return Fail(target.status());
      RelayOptions o = source.options;
      o.name = source.name;
      auto relay = Relay::Create(Env::Default(), *target, **sink, o);
      if (!relay.ok()) return Fail(relay.status());
      auto n = (*relay)->Drain(SIZE_MAX);
      if (!n.ok()) return Fail(n.status().WithContext(source.name));
      // Rows handled are published rows and dead-lettered rows: say which (a dead-lettered
      // row is not in its topic). From the relay's counters, which count each separately.
      const RelayStats st = (*relay)->stats();
      std::printf("%s: %zu rows: %llu published, %llu dead-lettered\n", source.name.c_str(), *n,
                  static_cast<unsigned long long>(st.published),
                  static_cast<unsigned long long>(st.dead_lettered));
    }
    return 0;
  }

  // Block the stop signals before any thread starts, then wait for one.
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);
  auto service = RelayService::Start(Env::Default(), **log, config);
  if (!service.ok()) return Fail(service.status());
  std::fprintf(stderr, "converge relay: %zu source(s) -> %s\n", config.sources.size(),
               log_dir.c_str());
  int sig = 0;
  sigwait(&stop, &sig);
  (*service)->Stop();
  for (const auto& [source, s] : (*service)->stats()) {
    std::fprintf(stderr, "%s: %llu published, %llu dead-lettered, %llu failures%s%s\n",
                 source.c_str(), static_cast<unsigned long long>(s.published),
                 static_cast<unsigned long long>(s.dead_lettered),
                 static_cast<unsigned long long>(s.failures),
                 s.last_error.empty() ? "" : "; last: ", s.last_error.c_str());
  }
  return 0;
}

CommandRegistration registration(
    {"relay", "move committed outbox rows of service databases to the log (relay --help)",
     RunRelay});

}  // namespace
}  // namespace converge::cli
