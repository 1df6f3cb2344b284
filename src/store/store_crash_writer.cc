// Helper of store_crash_test: opens the store (with its change feed on the event log) in the
// directory given as argv[1] and runs kThreads writers that commit multi-key transactions
// until killed, printing each acknowledged transaction (see store_crash_common.h).
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "converge/env.h"
#include "converge/log.h"
#include "converge/store.h"
#include "core/command_line.h"
#include "store/store_crash_common.h"

using namespace converge;               // NOLINT: a small test program
using namespace converge::store_crash;  // NOLINT

namespace {

std::mutex out_mu;

void Fail(const std::string& what, const Status& s) {
  std::lock_guard<std::mutex> g(out_mu);
  std::fprintf(stderr, "store_crash_writer: %s: %s\n", what.c_str(), s.ToString().c_str());
  std::fflush(stderr);
  std::_Exit(2);
}

// Continues thread t from what the store holds.
void Writer(Store* store, int t) {
  const Caller caller = Caller::Service("writer");
  long n = -1;
  std::vector<std::string> etags(kKeysPerThread);
  for (int k = 0; k < kKeysPerThread; ++k) {
    auto doc = store->Get(kCollection, KeyFor(t, k));
    if (!doc.ok()) {
      if (doc.status().code() != StatusCode::kNotFound) Fail("get", doc.status());
      continue;
    }
    etags[k] = doc->etag;
    n = std::strtol(doc->value.c_str() + 5, nullptr, 10);  // {"n":<n>,...
  }
  while (true) {
    ++n;
    std::vector<WriteOp> ops;
    for (int k = 0; k < kKeysPerThread; ++k) {
      ops.push_back(WriteOp::Put(
          kCollection, KeyFor(t, k), ValueFor(n, k),
          etags[k].empty() ? Precondition::CreateOnly() : Precondition::IfMatch(etags[k])));
    }
    auto r = store->Commit(caller, ops);
    if (!r.ok()) Fail("commit", r.status());
    for (int k = 0; k < kKeysPerThread; ++k) etags[k] = r->results[k].etag;
    std::lock_guard<std::mutex> g(out_mu);
    std::printf("%d %ld %llu\n", t, n, static_cast<unsigned long long>(r->commit_seq));
    std::fflush(stdout);
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir;
  CLI::App app("Commits multi-key transactions from several threads until killed.",
               "store_crash_writer");
  cli::Configure(app);
  app.add_option("DIR", dir, "holds log/ and store/")->required();
  if (int rc = cli::ParseOrExit(app, argc, argv); rc >= 0) return rc;
  Env& env = Env::Default();
  LogOptions lo;
  lo.dir = dir + "/log";
  auto log = Log::Open(env, lo);
  if (!log.ok()) Fail("open log", log.status());
  StoreOptions so;
  so.dir = dir + "/store";
  so.feed_log = log->get();
  so.checkpoint_wal_bytes = 64 << 10;  // checkpoints happen while being killed too
  auto store = Store::Open(env, so);
  if (!store.ok()) Fail("open store", store.status());
  if (!(*store)->DescribeCollection(kCollection).ok()) {
    CollectionConfig config;
    config.owner = "writer";
    Status s = (*store)->CreateCollection(Caller::Service("writer"), kCollection, config);
    if (!s.ok() && s.code() != StatusCode::kAlreadyExists) Fail("create collection", s);
  }
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) threads.emplace_back(Writer, store->get(), t);
  for (auto& th : threads) th.join();
  return 0;
}
