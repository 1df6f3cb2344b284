#include "bench/log_options.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <sstream>

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
      "                        from this binary on loopback, driven by the C++ client)\n"
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

Result<uint64_t> ParseCount(std::string_view flag, std::string_view value, uint64_t lo,
                            uint64_t hi) {
  std::string v(value);
  char* end = nullptr;
  errno = 0;
  const unsigned long long n = std::strtoull(v.c_str(), &end, 10);
  if (v.empty() || v[0] == '-' || end == nullptr || *end != '\0' || errno != 0 || n < lo ||
      n > hi) {
    return InvalidArgumentError(std::string(flag) + " wants an integer in [" + std::to_string(lo) +
                                ", " + std::to_string(hi) + "], got '" + v + "'");
  }
  return static_cast<uint64_t>(n);
}

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
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    std::string_view value;
    bool has_value = false;
    if (size_t eq = arg.find('='); arg.starts_with("--") && eq != std::string_view::npos) {
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
      has_value = true;
    }
    auto take = [&]() -> Result<std::string_view> {
      if (has_value) return value;
      if (i + 1 >= argc) return InvalidArgumentError(std::string(arg) + " needs a value");
      return std::string_view(argv[++i]);
    };
    if (arg == "--help" || arg == "-h") {
      o.help = true;
      return o;
    } else if (arg == "--json") {
      o.json = true;
    } else if (arg == "--events") {
      CONVERGE_ASSIGN_OR_RETURN(std::string_view v, take());
      CONVERGE_ASSIGN_OR_RETURN(o.workload.events, ParseCount(arg, v, 1, 1'000'000'000));
    } else if (arg == "--size") {
      CONVERGE_ASSIGN_OR_RETURN(std::string_view v, take());
      CONVERGE_ASSIGN_OR_RETURN(uint64_t n, ParseCount(arg, v, kPayloadHeaderBytes, 1 << 20));
      o.workload.event_bytes = static_cast<uint32_t>(n);
    } else if (arg == "--rate") {
      CONVERGE_ASSIGN_OR_RETURN(std::string_view v, take());
      CONVERGE_ASSIGN_OR_RETURN(uint64_t n, ParseCount(arg, v, 1, 1'000'000));
      o.workload.rate_per_s = static_cast<uint32_t>(n);
    } else if (arg == "--latency-seconds") {
      CONVERGE_ASSIGN_OR_RETURN(std::string_view v, take());
      CONVERGE_ASSIGN_OR_RETURN(uint64_t n, ParseCount(arg, v, 1, 3600));
      o.workload.latency_seconds = static_cast<uint32_t>(n);
    } else if (arg == "--systems") {
      CONVERGE_ASSIGN_OR_RETURN(std::string_view v, take());
      o.systems = SplitList(v);
      o.systems_explicit = true;
    } else if (arg == "--workloads") {
      CONVERGE_ASSIGN_OR_RETURN(std::string_view v, take());
      o.workloads = SplitList(v);
    } else if (arg == "--dir") {
      CONVERGE_ASSIGN_OR_RETURN(std::string_view v, take());
      o.dir = std::string(v);
    } else if (arg == "--converge-durability") {
      CONVERGE_ASSIGN_OR_RETURN(std::string_view v, take());
      if (v != "fsync" && v != "interval" && v != "none") {
        return InvalidArgumentError("--converge-durability wants fsync, interval or none, got '" +
                                    std::string(v) + "'");
      }
      o.workload.converge_durability = std::string(v);
    } else if (arg == "--rounds") {
      CONVERGE_ASSIGN_OR_RETURN(std::string_view v, take());
      CONVERGE_ASSIGN_OR_RETURN(uint64_t n, ParseCount(arg, v, 1, 100));
      o.rounds = static_cast<uint32_t>(n);
    } else if (arg == "--via") {
      CONVERGE_ASSIGN_OR_RETURN(std::string_view v, take());
      o.via = std::string(v);
    } else {
      return InvalidArgumentError("unknown option '" + std::string(argv[i]) + "'");
    }
  }
  const std::vector<std::string> known_systems = SplitList(kLogSystems);
  for (const std::string& s : o.systems) {
    if (!Contains(known_systems, s)) {
      return InvalidArgumentError("unknown system '" + s + "' (known: " + kLogSystems + ")");
    }
  }
  if (o.systems.empty()) return InvalidArgumentError("--systems is empty");
  const std::vector<std::string> known_workloads = SplitList(kLogWorkloads);
  for (const std::string& s : o.workloads) {
    if (!Contains(known_workloads, s)) {
      return InvalidArgumentError("unknown workload '" + s + "' (known: " + kLogWorkloads + ")");
    }
  }
  if (o.workloads.empty()) return InvalidArgumentError("--workloads is empty");
  if (o.via != "inproc" && o.via != "server") {
    return InvalidArgumentError("--via wants inproc or server, got '" + o.via + "'");
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
             g[0]->durability == m.durability;
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
