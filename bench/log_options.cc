#include "bench/log_options.h"

#include <algorithm>
#include <cstdlib>
#include <sstream>

#include "core/command_line.h"

namespace converge::bench {

// ---------------------------------------------------------------------------------------
// Options

void PrintLogHelp(std::FILE* out) {
  std::fprintf(
      out,
      "Usage: converge bench log [options]\n"
      "\n"
      "The same event-log workloads against converge in-process and its peers, side by side\n"
      "in one run. Peers are started by the benchmark on 127.0.0.1 in temporary directories:\n"
      "  converge        the converge log in-process; topic durability fsync (group commit)\n"
      "  jetstream       nats-server -js, file storage, 1 replica (2.9 syncs every 2 minutes)\n"
      "  redis-always    redis-server, AOF appendfsync always (fsync before replying)\n"
      "  redis-everysec  redis-server, AOF appendfsync everysec\n"
      "  raw             append + fdatasync per batch of 64/512/4096 records (16 B header):\n"
      "                  the disk's group-commit limit; the best batch is the baseline\n"
      "\n"
      "Workloads:\n"
      "  publish      publish N events, batched or asynchronous as each system does best\n"
      "  consume_ack  consume and acknowledge those events through consumer groups\n"
      "  latency      publish-to-deliver latency at a fixed rate (p50/p99/p999)\n"
      "\n"
      "Options:\n"
      "  --events N            events to publish and consume (default 1000000)\n"
      "  --size BYTES          event payload size, >= 16 (default 128)\n"
      "  --rate N              events/s of the latency workload (default 10000)\n"
      "  --latency-seconds S   measured seconds of the latency workload, after 1 s warmup\n"
      "                        (default 10)\n"
      "  --systems LIST        comma-separated (default %s)\n"
      "  --workloads LIST      comma-separated (default %s)\n"
      "  --json                one JSON object per line on stdout:\n"
      "                        "
      "{\"workload\",\"system\",\"durability\",\"events_per_s\",\"p50_us\",\n"
      "                         \"p99_us\",\"p999_us\",\"events\",\"seconds\",\"note\"}\n"
      "                        (progress and the comparison go to stderr)\n"
      "  --dir DIR             where the scratch directory goes (default $TMPDIR or /tmp);\n"
      "                        it is removed afterwards. Use a real disk, not tmpfs.\n"
      "  --converge-durability D  converge's topic durability with --via inproc: fsync\n"
      "                        (default; the targets' setting), interval (synced every\n"
      "                        50 ms) or none, to see what the syncs cost\n"
      "  --rounds N            repeat the whole run N times (the order of systems rotates)\n"
      "                        and report each row's median (default 1)\n"
      "  --via MODE            inproc (default): converge as a library in this process;\n"
      "                        server: through the HTTP sidecar (converge serve started\n"
      "                        from the converge binary beside this program on loopback,\n"
      "                        driven by the C++ client)\n"
      "  --schema              with --via server: also publish JSON order events (about\n"
      "                        --size bytes) into a plain topic and into one validated\n"
      "                        against a registered JSON Schema (rows converge-jsondata\n"
      "                        and converge-schema, side by side)\n"
      "  --backend NAME        with --via server: embedded (default) or jetstream, the log of\n"
      "                        `converge serve` in a nats-server started for it (file\n"
      "                        storage, 1 replica, the jetstream peer's settings); its rows\n"
      "                        have durability interval-2m, like the jetstream peer's\n"
      "  --replicas N          replicas of the JetStream streams (1..3), of the jetstream\n"
      "                        peer and of converge's with --backend jetstream; above 1 on\n"
      "                        a three-node nats-server cluster\n"
      "  --sidecars N          with --backend jetstream: single_publish spreads its\n"
      "                        connections over N converge serve instances sharing the log\n"
      "  --clients LIST        comma-separated numbers of concurrent clients (e.g.\n"
      "                        64,256,1024): runs the many-small-clients workloads instead\n"
      "                        (unless --workloads names others), for each number, on\n"
      "                        converge (--via server), jetstream and redis-always:\n"
      "                          single_publish  --events requests of one event each from\n"
      "                                          N keep-alive connections, each waiting for\n"
      "                                          its durable reply before the next\n"
      "                          fetch10_ack     N consumers each fetching up to 10 events\n"
      "                                          and acking them, until all are consumed\n"
      "                        rows carry clients, mean_us and errors\n"
      "  --help                this text\n",
      kLogSystems, kLogWorkloads);
}

std::vector<std::string> SplitList(std::string_view s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= s.size()) {
    size_t comma = s.find(',', start);
    if (comma == std::string_view::npos) comma = s.size();
    std::string_view item = s.substr(start, comma - start);
    if (!item.empty()) out.emplace_back(item);
    start = comma + 1;
  }
  return out;
}

namespace {

bool Contains(const std::vector<std::string>& list, std::string_view item) {
  for (const std::string& s : list) {
    if (s == item) return true;
  }
  return false;
}

}  // namespace

Result<LogOptions> ParseLogOptions(int argc, char** argv) {
  LogOptions o;
  o.systems = SplitList(kLogSystems);
  o.workloads = SplitList(kLogWorkloads);
  std::string systems, workloads;
  std::string durability;
  CLI::App app("Event-log workloads against converge and its peers.", "converge bench log");
  cli::Configure(app);
  app.add_flag("--json", o.json);
  app.add_option("--events", o.workload.events)->check(cli::Integer(1, 1'000'000'000));
  app.add_option("--size", o.workload.event_bytes)
      ->check(cli::Integer(kPayloadHeaderBytes, 1 << 20));
  app.add_option("--rate", o.workload.rate_per_s)->check(cli::Integer(1, 1'000'000));
  app.add_option("--latency-seconds", o.workload.latency_seconds)->check(cli::Integer(1, 3600));
  CLI::Option* systems_option = app.add_option("--systems", systems);
  CLI::Option* workloads_option = app.add_option("--workloads", workloads);
  app.add_option("--dir", o.dir);
  CLI::Option* durability_option = app.add_option("--converge-durability", durability);
  app.add_option("--rounds", o.rounds)->check(cli::Integer(1, 100));
  app.add_option("--via", o.via);
  app.add_option("--backend", o.workload.converge_backend);
  app.add_option("--replicas", o.workload.jetstream_replicas)->check(cli::Integer(1, 3));
  app.add_option("--sidecars", o.workload.sidecars)->check(cli::Integer(1, 8));
  app.add_flag("--schema", o.workload.schema);
  std::string clients;
  CLI::Option* clients_option = app.add_option("--clients", clients);
  CONVERGE_RETURN_IF_ERROR(cli::Parse(app, argc, argv, &o.help));
  if (o.help) return o;
  if (systems_option->count() > 0) {
    o.systems = SplitList(systems);
    o.systems_explicit = true;
  }
  if (clients_option->count() > 0) {
    for (const std::string& n : SplitList(clients)) {
      char* end = nullptr;
      const unsigned long v = std::strtoul(n.c_str(), &end, 10);
      if (end == n.c_str() || *end != '\0' || v < 1 || v > 10'000) {
        return InvalidArgumentError("--clients wants numbers 1..10000, got '" + n + "'");
      }
      o.workload.clients.push_back(static_cast<uint32_t>(v));
    }
    if (o.workload.clients.empty()) return InvalidArgumentError("--clients is empty");
    o.workloads = SplitList(kManyClientWorkloads);
  }
  if (workloads_option->count() > 0) o.workloads = SplitList(workloads);
  if (durability_option->count() > 0) {
    if (durability != "fsync" && durability != "interval" && durability != "none") {
      return InvalidArgumentError("--converge-durability wants fsync, interval or none, got '" +
                                  durability + "'");
    }
    o.workload.converge_durability = durability;
  }
  const std::vector<std::string> known_systems = SplitList(kLogSystems);
  for (const std::string& s : o.systems) {
    if (!Contains(known_systems, s)) {
      return InvalidArgumentError("unknown system '" + s + "' (known: " + kLogSystems + ")");
    }
  }
  if (o.systems.empty()) return InvalidArgumentError("--systems is empty");
  std::vector<std::string> known_workloads = SplitList(kLogWorkloads);
  for (const std::string& s : SplitList(kManyClientWorkloads)) known_workloads.push_back(s);
  for (const std::string& s : o.workloads) {
    if (!Contains(known_workloads, s)) {
      return InvalidArgumentError("unknown workload '" + s + "' (known: " + kLogWorkloads + "," +
                                  kManyClientWorkloads + ")");
    }
    if ((s == "single_publish" || s == "fetch10_ack") && o.workload.clients.empty()) {
      return InvalidArgumentError("workload '" + s + "' needs --clients");
    }
  }
  if (o.workloads.empty()) return InvalidArgumentError("--workloads is empty");
  if (o.via != "inproc" && o.via != "server") {
    return InvalidArgumentError("--via wants inproc or server, got '" + o.via + "'");
  }
  if (o.workload.converge_backend != "embedded" && o.workload.converge_backend != "jetstream") {
    return InvalidArgumentError("--backend wants embedded or jetstream, got '" +
                                o.workload.converge_backend + "'");
  }
  if (o.workload.converge_backend != "embedded" && o.via != "server") {
    return InvalidArgumentError("--backend jetstream needs --via server (the sidecar's config)");
  }
  if (o.workload.sidecars > 1 && o.workload.converge_backend != "jetstream") {
    return InvalidArgumentError("--sidecars needs --backend jetstream (a shared log)");
  }
  if (o.workload.schema && o.via != "server") {
    return InvalidArgumentError("--schema needs --via server (validation is the server's)");
  }
  return o;
}

// ---------------------------------------------------------------------------------------
// The comparison against the targets

namespace {

const Measurement* Find(const std::vector<Measurement>& rows, std::string_view workload,
                        std::string_view system) {
  for (const Measurement& m : rows) {
    if (m.workload == workload && m.system == system) return &m;
  }
  return nullptr;
}

}  // namespace

std::vector<Measurement> MedianOfRounds(const std::vector<Measurement>& rows) {
  std::vector<std::vector<const Measurement*>> groups;
  for (const Measurement& m : rows) {
    auto it = std::find_if(groups.begin(), groups.end(), [&](const auto& g) {
      return g[0]->workload == m.workload && g[0]->system == m.system &&
             g[0]->durability == m.durability && g[0]->clients == m.clients;
    });
    if (it == groups.end()) {
      groups.push_back({&m});
    } else {
      it->push_back(&m);
    }
  }
  std::vector<Measurement> out;
  for (auto& g : groups) {
    const bool latency = g[0]->p99_us.has_value();
    std::sort(g.begin(), g.end(), [&](const Measurement* a, const Measurement* b) {
      return latency ? a->p99_us.value_or(0) < b->p99_us.value_or(0)
                     : a->events_per_s < b->events_per_s;
    });
    Measurement m = *g[g.size() / 2];
    if (g.size() > 1) m.note += "; median of " + std::to_string(g.size());
    out.push_back(std::move(m));
  }
  return out;
}

std::string LogComparison(const std::vector<Measurement>& rows, bool via_server) {
  std::ostringstream out;
  char line[256];
  const Measurement* raw = Find(rows, "publish", "raw");
  const Measurement* js_pub = Find(rows, "publish", "jetstream");
  const Measurement* js_con = Find(rows, "consume_ack", "jetstream");
  std::ostringstream relative;
  for (const Measurement& m : rows) {
    if (m.workload != "publish" || m.system.starts_with("raw")) continue;
    std::string rel;
    if (js_pub != nullptr && &m != js_pub) {
      std::snprintf(line, sizeof(line), "  %.2fx jetstream async publish",
                    m.events_per_s / js_pub->events_per_s);
      rel += line;
    }
    if (raw != nullptr) {
      std::snprintf(line, sizeof(line), "  %.0f%% of the raw-disk baseline",
                    100.0 * m.events_per_s / raw->events_per_s);
      rel += line;
    }
    if (!rel.empty())
      relative << "  publish     " << m.system << " (" << m.durability << "):" << rel << "\n";
  }
  for (const Measurement& m : rows) {
    if (m.workload != "consume_ack" || js_con == nullptr || &m == js_con) continue;
    std::snprintf(line, sizeof(line), "  consume_ack %s (%s): %.2fx jetstream pull + ack\n",
                  m.system.c_str(), m.durability.c_str(), m.events_per_s / js_con->events_per_s);
    relative << line;
  }
  // Many small clients: converge against direct JetStream with the same number of clients;
  // with the log on JetStream (the same acks: durability interval-2m) the target is 0.7x.
  for (const Measurement& m : rows) {
    if (m.workload != "single_publish" || m.system != "converge") continue;
    for (const Measurement& js : rows) {
      if (js.workload != "single_publish" || js.system != "jetstream" || js.clients != m.clients ||
          js.events_per_s <= 0) {
        continue;
      }
      const double r = m.events_per_s / js.events_per_s;
      const bool same_acks = m.durability == js.durability;
      std::snprintf(
          line, sizeof(line),
          "  single_publish converge (%s), %llu clients: %.2fx jetstream sync publish%s\n",
          m.durability.c_str(), static_cast<unsigned long long>(m.clients.value_or(0)), r,
          same_acks ? (r >= 0.7 ? "  (log on JetStream: >= 0.7x PASS)"
                                : "  (log on JetStream: >= 0.7x MISS)")
                    : "");
      relative << line;
    }
  }
  if (!relative.str().empty()) out << "\nRelative to the peers in this run:\n" << relative.str();

  const Measurement* cv_pub = Find(rows, "publish", "converge");
  const Measurement* cv_con = Find(rows, "consume_ack", "converge");
  const Measurement* cv_lat = Find(rows, "latency", "converge");
  if (cv_pub == nullptr && cv_con == nullptr && cv_lat == nullptr) {
    out << "\nTargets: not checked (converge was not measured in this run).\n";
    return out.str();
  }
  if (cv_pub != nullptr && cv_pub->durability != "fsync") {
    out << "\nTargets: not checked (converge ran with durability " << cv_pub->durability
        << "; the targets are for fsync).\n";
    return out.str();
  }
  out << "\nTargets (converge, measured side by side in this run):\n";
  auto target = [&](const std::string& what, const std::string& value, bool pass) {
    std::snprintf(line, sizeof(line), "  %-60s %10s  %s\n", what.c_str(), value.c_str(),
                  pass ? "PASS" : "MISS");
    out << line;
  };
  char value[32];
  if (via_server) {
    // The sidecar's own targets: through HTTP over loopback.
    if (cv_pub != nullptr && js_pub != nullptr) {
      const double r = cv_pub->events_per_s / js_pub->events_per_s;
      std::snprintf(value, sizeof(value), "%.2fx", r);
      target("publish via server (fsync) >= 3x jetstream async publish", value, r >= 3);
    }
    const Measurement* plain = Find(rows, "publish", "converge-jsondata");
    const Measurement* checked = Find(rows, "publish", "converge-schema");
    if (plain != nullptr && checked != nullptr) {
      const double r = checked->events_per_s / plain->events_per_s;
      std::snprintf(value, sizeof(value), "%.0f%%", 100 * r);
      target("publish with schema validation >= 75% of without", value, r >= 0.75);
    }
    if (cv_lat != nullptr && cv_lat->p99_us) {
      std::snprintf(value, sizeof(value), "%.0f us", *cv_lat->p99_us);
      target("publish-to-deliver via server p99 <= 2000 us", value, *cv_lat->p99_us <= 2000);
    }
    return out.str();
  }
  if (cv_pub != nullptr && js_pub != nullptr) {
    const double r = cv_pub->events_per_s / js_pub->events_per_s;
    std::snprintf(value, sizeof(value), "%.2fx", r);
    target("publish (fsync) >= 8x jetstream async publish", value, r >= 8);
  }
  if (cv_pub != nullptr && raw != nullptr) {
    const double r = cv_pub->events_per_s / raw->events_per_s;
    std::snprintf(value, sizeof(value), "%.0f%%", 100 * r);
    target("publish (fsync) >= 70% of the raw-disk group-commit baseline", value, r >= 0.7);
  }
  // One line per converge consume_ack row (acks committed by fsync, and periodically).
  for (const Measurement& m : rows) {
    if (m.workload != "consume_ack" || m.system != "converge" || js_con == nullptr) continue;
    const double r = m.events_per_s / js_con->events_per_s;
    std::snprintf(value, sizeof(value), "%.2fx", r);
    target("consume + ack (" + m.durability + " acks) >= 5x jetstream pull + ack", value, r >= 5);
  }
  if (cv_lat != nullptr && cv_lat->p99_us) {
    std::snprintf(value, sizeof(value), "%.0f us", *cv_lat->p99_us);
    target("publish-to-deliver p99 <= 1000 us at the fixed rate", value, *cv_lat->p99_us <= 1000);
  }
  return out.str();
}

}  // namespace converge::bench
