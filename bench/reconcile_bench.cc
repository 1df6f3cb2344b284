// `converge bench reconcile`: reconciliation of two copies of a (key, version) set, in one
// process (no network; bytes and round trips are counted at the message boundary), three ways:
//   converge-riblt  the reconcile module's protocol (docs/formats/reconcile.md): digest, then
//                   rateless IBLT symbols sized by an estimate, then the missing entries;
//   full-digest     every key with its 8-byte entry hash, in one reply;
//   merkle          a fixed-fanout (16) hash tree over key-hash ranges (65,536 leaves for 1M
//                   keys, as Riak's and Cassandra's anti-entropy), descending only subtrees that
//                   differ, then the entries of the differing leaves.
// Sketches and trees are warm (kept up to date on writes, built before the clock starts).
#include <xxhash.h>

#include <algorithm>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <map>
#include <random>
#include <unordered_set>

#include "bench/bench.h"
#include "bench/log_options.h"
#include "bench/report.h"
#include "converge/env.h"
#include "core/coding.h"
#include "core/command_line.h"
#include "reconcile/session.h"

namespace converge::bench {
namespace {

using reconcile::EntryHash;
using reconcile::KeyHash;
using reconcile::ReconcileSet;

struct Options {
  uint64_t keys = 1'000'000;
  std::vector<uint64_t> differences{0, 1, 100, 10'000};
  std::vector<std::string> distributions{"scattered", "clustered"};
  std::vector<std::string> systems{"converge-riblt", "full-digest", "merkle"};
  uint64_t writes = 1000;  // writes between messages in the reconcile_with_writes workload
  uint64_t seed = 1;
  bool json = false;
  bool help = false;
};

struct Row {
  std::string workload = "reconcile", system, distribution;
  uint64_t keys = 0, differences = 0, bytes_sent = 0, bytes_received = 0, round_trips = 0;
  uint64_t differing_bytes = 0;
  double seconds = 0, cpu_seconds = 0;
  bool exact = true;
  std::string note;
};

double CpuSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}
double WallSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

std::string KeyOf(uint64_t i) {
  char b[32];
  std::snprintf(b, sizeof(b), "user:%010" PRIu64, i);
  return b;
}

// The drift of one run: what it changed, to count the differing entries and to undo it.
struct Drift {
  uint64_t missing_local = 0, missing_remote = 0, divergent = 0, bytes = 0;
  std::unordered_set<std::string> keys;  // every key that differs
  std::vector<std::pair<std::string, std::optional<uint64_t>>> local_undo, remote_undo;
};

// Difference i of d: the local copy lost a key, gained one, or the remote copy moved on.
Drift Inject(ReconcileSet& local, ReconcileSet& remote, uint64_t n, uint64_t d, bool clustered,
             std::mt19937_64& rng) {
  Drift drift;
  std::vector<uint64_t> idx;
  if (clustered) {
    const uint64_t start = n > d ? rng() % (n - d) : 0;
    for (uint64_t i = 0; i < d; ++i) idx.push_back(start + i);
  } else {
    std::unordered_set<uint64_t> seen;
    while (idx.size() < d) {
      const uint64_t i = rng() % n;
      if (seen.insert(i).second) idx.push_back(i);
    }
  }
  for (uint64_t j = 0; j < idx.size(); ++j) {
    const std::string key = KeyOf(idx[j]);
    drift.keys.insert(j % 3 == 1 ? KeyOf(n + idx[j]) : key);
    switch (j % 3) {
      case 0:
        drift.local_undo.emplace_back(key, local.Get(key));
        local.Erase(key);
        ++drift.missing_local;
        drift.bytes += key.size() + 8;
        break;
      case 1: {
        const std::string extra = KeyOf(n + idx[j]);
        drift.local_undo.emplace_back(extra, std::nullopt);
        local.Put(extra, 1);
        ++drift.missing_remote;
        drift.bytes += extra.size() + 8;
        break;
      }
      default:
        drift.remote_undo.emplace_back(key, remote.Get(key));
        remote.Put(key, *remote.Get(key) + 1000);
        ++drift.divergent;
        drift.bytes += 2 * (key.size() + 8);
        break;
    }
  }
  return drift;
}

void Undo(ReconcileSet& set,
          const std::vector<std::pair<std::string, std::optional<uint64_t>>>& u) {
  for (auto it = u.rbegin(); it != u.rend(); ++it) {
    if (it->second) {
      set.Put(it->first, *it->second);
    } else {
      set.Erase(it->first);
    }
  }
}

Row RunRiblt(ReconcileSet& local, ReconcileSet& remote, const Drift& drift, uint64_t writes,
             std::mt19937_64& rng, uint64_t n) {
  Row row;
  row.system = "converge-riblt";
  std::vector<std::pair<std::string, std::optional<uint64_t>>> local_undo, remote_undo;
  const double w0 = WallSeconds(), c0 = CpuSeconds();
  reconcile::Responder responder(remote, Env::Default());
  reconcile::Initiator initiator(local, rng());
  std::string request = initiator.Start();
  uint64_t written = 0;
  std::unordered_set<std::string> written_keys;
  while (true) {
    // Writes continuing: the same update reaches both copies (replication working).
    for (uint64_t w = 0; w < writes; ++w) {
      const std::string key = KeyOf(rng() % n);
      std::optional<uint64_t> v = remote.Get(key);
      if (!v) continue;
      remote_undo.emplace_back(key, v);
      local_undo.emplace_back(key, local.Get(key));
      remote.Put(key, *v + 1);
      local.Put(key, *v + 1);
      written_keys.insert(key);
      ++written;
    }
    auto reply = responder.Handle(request);
    if (!reply.ok() || !reply->has_value()) {
      row.exact = false;
      row.note = "responder: " + reply.status().ToString();
      break;
    }
    auto step = initiator.OnReply(**reply);
    if (!step.ok()) {
      row.exact = false;
      row.note = "initiator: " + step.status().ToString();
      break;
    }
    if (step->kind == reconcile::Initiator::Step::kDone) break;
    request = step->message;
  }
  row.seconds = WallSeconds() - w0;
  row.cpu_seconds = CpuSeconds() - c0;
  const auto& s = initiator.stats();
  row.bytes_sent = s.bytes_sent;
  row.bytes_received = s.bytes_received;
  row.round_trips = s.round_trips;
  const auto& r = initiator.result();
  const uint64_t changed = r.changed_during_run.size();
  if (writes == 0) {
    row.exact = row.exact && r.missing_local.size() == drift.missing_local &&
                r.missing_remote.size() == drift.missing_remote &&
                r.divergent.size() == drift.divergent && changed == 0;
  } else {
    // Exactly the drifted keys nobody wrote during the run are differences; everything
    // reported as changed was written during the run.
    std::unordered_set<std::string> expect;
    for (const std::string& k : drift.keys) {
      if (!written_keys.count(k)) expect.insert(k);
    }
    std::unordered_set<std::string> got;
    for (auto* v : {&r.missing_local, &r.missing_remote, &r.divergent}) {
      for (const auto& x : *v) got.insert(x.key);
    }
    row.exact = row.exact && got == expect;
    for (const auto& x : r.changed_during_run) {
      row.exact = row.exact && written_keys.count(x.key) > 0;
    }
  }
  char note[256];
  std::snprintf(note, sizeof(note),
                "estimate %" PRIu64 " entries, %" PRIu64 " symbols%s; %" PRIu64
                " writes during the run, %" PRIu64 " keys reported changed during run",
                s.estimate, s.symbols, s.full_exchange ? ", full exchange" : "", written, changed);
  if (row.note.empty()) row.note = note;
  Undo(local, local_undo);
  Undo(remote, remote_undo);
  return row;
}

Row RunFullDigest(ReconcileSet& local, ReconcileSet& remote, const Drift& drift) {
  Row row;
  row.system = "full-digest";
  const double w0 = WallSeconds(), c0 = CpuSeconds();
  const std::string request(10, '\0');  // "send me everything"
  std::string reply;
  reply.reserve(remote.size() * 24);
  internal::PutVarint64(&reply, remote.size());
  for (const auto& [key, version] : remote.entries()) {
    internal::PutLengthPrefixed(&reply, key);
    internal::PutFixed64(&reply, EntryHash(key, version));
  }
  // The initiator compares.
  std::string_view in = reply;
  uint64_t n = 0, missing_local = 0, divergent = 0, seen_local = 0;
  internal::GetVarint64(&in, &n);
  for (uint64_t i = 0; i < n; ++i) {
    std::string_view key;
    uint64_t h = 0;
    internal::GetLengthPrefixed(&in, &key);
    internal::GetFixed64(&in, &h);
    auto it = local.entries().find(key);
    if (it == local.entries().end()) {
      ++missing_local;
    } else {
      ++seen_local;
      if (EntryHash(key, it->second) != h) ++divergent;
    }
  }
  const uint64_t missing_remote = local.size() - seen_local;
  row.seconds = WallSeconds() - w0;
  row.cpu_seconds = CpuSeconds() - c0;
  row.bytes_sent = request.size();
  row.bytes_received = reply.size();
  row.round_trips = 1;
  row.exact = missing_local == drift.missing_local && missing_remote == drift.missing_remote &&
              divergent == drift.divergent;
  row.note = "every key and its entry hash in one reply";
  return row;
}

// A Merkle tree over key-hash ranges: leaf = top `depth*4` bits of the key hash; a leaf's hash
// is the sum of its entries' hashes, an inner node's the hash of its 16 children.
struct Merkle {
  static constexpr int kFanout = 16;
  int depth = 4;
  std::vector<std::vector<uint64_t>> levels;  // levels[0] = root ... levels[depth] = leaves
  std::vector<std::vector<std::pair<std::string, uint64_t>>> leaf_entries;

  static int DepthFor(uint64_t n) {
    int d = 1;
    while (d < 6 && (uint64_t{1} << (4 * d)) * 16 < n) ++d;  // about 16 entries per leaf
    return d;
  }
  uint64_t Leaf(std::string_view key) const { return KeyHash(key) >> (64 - 4 * depth); }
  void Build(const ReconcileSet& set, int d) {
    depth = d;
    levels.assign(depth + 1, {});
    const uint64_t leaves = uint64_t{1} << (4 * depth);
    levels[depth].assign(leaves, 0);
    leaf_entries.assign(leaves, {});
    for (const auto& [key, version] : set.entries()) {
      const uint64_t l = Leaf(key);
      levels[depth][l] += EntryHash(key, version);
      leaf_entries[l].emplace_back(key, version);
    }
    for (int lv = depth - 1; lv >= 0; --lv) {
      levels[lv].assign(uint64_t{1} << (4 * lv), 0);
      for (uint64_t i = 0; i < levels[lv].size(); ++i) {
        levels[lv][i] = XXH3_64bits(&levels[lv + 1][i * kFanout], kFanout * sizeof(uint64_t));
      }
    }
  }
};

Row RunMerkle(const Merkle& local, const Merkle& remote, const ReconcileSet& local_set,
              const Drift& drift) {
  Row row;
  row.system = "merkle";
  const double w0 = WallSeconds(), c0 = CpuSeconds();
  // Round 1: the root. Then per level: the initiator names the nodes that differ, the responder
  // sends their children's hashes; last, the entries of the differing leaves.
  std::vector<uint64_t> differ;
  {
    std::string req, rep;
    internal::PutFixed64(&req, local.levels[0][0]);
    internal::PutFixed64(&rep, remote.levels[0][0]);
    row.bytes_sent += req.size() + 10;
    row.bytes_received += rep.size() + 10;
    ++row.round_trips;
    if (local.levels[0][0] != remote.levels[0][0]) differ.push_back(0);
  }
  for (int lv = 0; lv < local.depth && !differ.empty(); ++lv) {
    std::string req, rep;
    for (uint64_t node : differ) internal::PutVarint64(&req, node);
    std::vector<uint64_t> next;
    for (uint64_t node : differ) {
      for (uint64_t c = node * Merkle::kFanout; c < (node + 1) * Merkle::kFanout; ++c) {
        internal::PutFixed64(&rep, remote.levels[lv + 1][c]);
        if (remote.levels[lv + 1][c] != local.levels[lv + 1][c]) next.push_back(c);
      }
    }
    row.bytes_sent += req.size() + 10;
    row.bytes_received += rep.size() + 10;
    ++row.round_trips;
    differ = std::move(next);
  }
  uint64_t missing_local = 0, missing_remote = 0, divergent = 0;
  if (!differ.empty()) {
    std::string req, rep;
    for (uint64_t leaf : differ) {
      internal::PutVarint64(&req, leaf);
      for (const auto& [key, version] : remote.leaf_entries[leaf]) {
        internal::PutLengthPrefixed(&rep, key);
        internal::PutVarint64(&rep, version);
      }
    }
    row.bytes_sent += req.size() + 10;
    row.bytes_received += rep.size() + 10;
    ++row.round_trips;
    for (uint64_t leaf : differ) {
      std::map<std::string_view, uint64_t> mine;
      for (const auto& [key, version] : local.leaf_entries[leaf]) mine[key] = version;
      for (const auto& [key, version] : remote.leaf_entries[leaf]) {
        auto it = mine.find(key);
        if (it == mine.end()) {
          ++missing_local;
        } else {
          if (it->second != version) ++divergent;
          mine.erase(it);
        }
      }
      missing_remote += mine.size();
    }
  }
  (void)local_set;
  row.seconds = WallSeconds() - w0;
  row.cpu_seconds = CpuSeconds() - c0;
  row.exact = missing_local == drift.missing_local && missing_remote == drift.missing_remote &&
              divergent == drift.divergent;
  row.note = "fanout 16, depth " + std::to_string(local.depth) + ", " +
             std::to_string(differ.size()) + " leaves fetched";
  return row;
}

std::string JsonLine(const Row& r) {
  char b[512];
  std::string ratio = "null";
  if (r.differing_bytes > 0) {
    char x[64];
    std::snprintf(x, sizeof(x), "%.3f",
                  static_cast<double>(r.bytes_sent + r.bytes_received) /
                      static_cast<double>(r.differing_bytes));
    ratio = x;
  }
  std::snprintf(b, sizeof(b),
                "{\"workload\":%s,\"system\":%s,\"keys\":%" PRIu64 ",\"differences\":%" PRIu64
                ",\"distribution\":%s,\"bytes_sent\":%" PRIu64 ",\"bytes_received\":%" PRIu64
                ",\"round_trips\":%" PRIu64
                ",\"seconds\":%.4f,\"cpu_seconds\":%.4f,\"overhead_ratio\":%s,"
                "\"differing_entry_bytes\":%" PRIu64 ",\"exact\":%s,",
                JsonString(r.workload).c_str(), JsonString(r.system).c_str(), r.keys, r.differences,
                JsonString(r.distribution).c_str(), r.bytes_sent, r.bytes_received, r.round_trips,
                r.seconds, r.cpu_seconds, ratio.c_str(), r.differing_bytes,
                r.exact ? "true" : "false");
  return std::string(b) + "\"note\":" + JsonString(r.note) + "}";
}

void PrintHelp() {
  std::fputs(
      "Usage: converge bench reconcile [options]\n"
      "Reconciles two in-process copies of a (key, version) set after injected drift, with the\n"
      "reconcile module's protocol, a full digest exchange and a Merkle-tree exchange.\n"
      "  --keys N            keys per copy (default 1000000)\n"
      "  --differences LIST  differences to inject (default 0,1,100,10000); a third each:\n"
      "                      missing locally, extra locally, newer remotely\n"
      "  --distributions L   scattered,clustered (default both)\n"
      "  --systems LIST      converge-riblt,full-digest,merkle (default all)\n"
      "  --writes N          writes to both copies between messages in the\n"
      "                      reconcile_with_writes workload (default 1000; 0 skips it)\n"
      "  --seed N            (default 1)\n"
      "  --json              one JSON object per line: workload, system, keys, differences,\n"
      "                      distribution, bytes_sent, bytes_received, round_trips, seconds,\n"
      "                      cpu_seconds, overhead_ratio (bytes exchanged / (key bytes + 8)\n"
      "                      per differing entry), differing_entry_bytes, exact, note\n",
      stdout);
}

int RunReconcileBench(int argc, char** argv) {
  Options o;
  std::string differences, distributions, systems;
  CLI::App app("Reconciliation", "converge bench reconcile");
  cli::Configure(app);
  app.add_flag("--json", o.json);
  app.add_option("--keys", o.keys)->check(cli::Integer(10, 100'000'000));
  app.add_option("--writes", o.writes)->check(cli::Integer(0, 1'000'000));
  app.add_option("--seed", o.seed)->check(cli::Integer(0, UINT64_MAX));
  CLI::Option* dopt = app.add_option("--differences", differences);
  CLI::Option* distopt = app.add_option("--distributions", distributions);
  CLI::Option* sopt = app.add_option("--systems", systems);
  Status parsed = cli::Parse(app, argc, argv, &o.help);
  if (parsed.ok() && dopt->count() > 0) {
    o.differences.clear();
    for (const std::string& x : SplitList(differences)) {
      char* end = nullptr;
      const uint64_t v = std::strtoull(x.c_str(), &end, 10);
      if (x.empty() || *end != '\0' || x[0] == '-') {
        parsed = InvalidArgumentError("--differences: not a number: '" + x + "'");
        break;
      }
      o.differences.push_back(v);
    }
  }
  if (parsed.ok() && distopt->count() > 0) o.distributions = SplitList(distributions);
  if (parsed.ok() && sopt->count() > 0) o.systems = SplitList(systems);
  for (const std::string& d : o.distributions) {
    if (parsed.ok() && d != "scattered" && d != "clustered") {
      parsed = InvalidArgumentError("--distributions: scattered or clustered, not '" + d + "'");
    }
  }
  for (const std::string& s : o.systems) {
    if (parsed.ok() && s != "converge-riblt" && s != "full-digest" && s != "merkle") {
      parsed =
          InvalidArgumentError("--systems: converge-riblt, full-digest or merkle, not '" + s + "'");
    }
  }
  for (uint64_t d : o.differences) {
    if (parsed.ok() && d > o.keys / 2) {
      parsed = InvalidArgumentError("--differences: at most half of --keys");
    }
  }
  if (!parsed.ok()) {
    std::fprintf(stderr, "converge bench reconcile: %s\n(see converge bench reconcile --help)\n",
                 std::string(parsed.message()).c_str());
    return 2;
  }
  if (o.help) {
    PrintHelp();
    return 0;
  }
  auto wants = [&](const char* s) {
    return std::find(o.systems.begin(), o.systems.end(), s) != o.systems.end();
  };
  std::mt19937_64 rng(o.seed);
  ReconcileSet local, remote;
  std::fprintf(stderr, "  building two copies of %" PRIu64 " keys...\n", o.keys);
  const double b0 = WallSeconds();
  for (uint64_t i = 0; i < o.keys; ++i) {
    const std::string key = KeyOf(i);
    const uint64_t v = 1 + rng() % 1000;
    local.Put(key, v);
    remote.Put(key, v);
  }
  const double build_seconds = (WallSeconds() - b0) / 2;
  std::fprintf(stderr, "  %.2f s per copy (digest and %" PRIu64 " symbols kept on every write)\n",
               build_seconds, local.maintained_symbols());
  std::vector<Row> rows;
  bool ok = true;
  auto emit = [&](Row r) {
    ok = ok && r.exact;
    if (o.json) {
      std::printf("%s\n", JsonLine(r).c_str());
      std::fflush(stdout);
    }
    rows.push_back(std::move(r));
  };
  for (uint64_t d : o.differences) {
    for (const std::string& dist : o.distributions) {
      if (d <= 1 && dist == "clustered") continue;  // the same run as scattered
      Drift drift = Inject(local, remote, o.keys, d, dist == "clustered", rng);
      auto finish = [&](Row r, const char* workload) {
        r.workload = workload;
        r.keys = o.keys;
        r.differences = d;
        r.distribution = dist;
        r.differing_bytes = drift.bytes;
        emit(std::move(r));
      };
      if (wants("converge-riblt")) {
        finish(RunRiblt(local, remote, drift, 0, rng, o.keys), "reconcile");
        if (o.writes > 0 && d == o.differences.back() && dist == "scattered") {
          finish(RunRiblt(local, remote, drift, o.writes, rng, o.keys), "reconcile_with_writes");
        }
      }
      if (wants("full-digest")) finish(RunFullDigest(local, remote, drift), "reconcile");
      if (wants("merkle")) {
        Merkle ml, mr;
        const int depth = Merkle::DepthFor(o.keys);
        ml.Build(local, depth);
        mr.Build(remote, depth);
        finish(RunMerkle(ml, mr, local, drift), "reconcile");
      }
      Undo(local, drift.local_undo);
      Undo(remote, drift.remote_undo);
    }
  }
  if (!o.json) {
    std::printf("%-22s %-15s %8s %-9s %12s %12s %4s %9s %9s %8s %s\n", "workload", "system", "d",
                "dist", "sent", "received", "rt", "seconds", "cpu_s", "ratio", "exact");
    for (const Row& r : rows) {
      std::printf("%-22s %-15s %8" PRIu64 " %-9s %12" PRIu64 " %12" PRIu64 " %4" PRIu64
                  " %9.4f %9.4f %8.2f %s\n",
                  r.workload.c_str(), r.system.c_str(), r.differences, r.distribution.c_str(),
                  r.bytes_sent, r.bytes_received, r.round_trips, r.seconds, r.cpu_seconds,
                  r.differing_bytes ? static_cast<double>(r.bytes_sent + r.bytes_received) /
                                          static_cast<double>(r.differing_bytes)
                                    : 0.0,
                  r.exact ? "yes" : "NO");
    }
  }
  if (!ok) std::fprintf(stderr, "converge bench reconcile: a run did not find the exact drift\n");
  return ok ? 0 : 1;
}

BenchmarkRegistration registration(
    {"reconcile",
     "bytes, round trips and time to reconcile two copies: rateless IBLT vs full digest vs Merkle",
     RunReconcileBench});

}  // namespace
}  // namespace converge::bench
