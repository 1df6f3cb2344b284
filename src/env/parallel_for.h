// Runs independent tasks on a few threads of their own: for the edges (the CLI, the server's
// start-up, benchmarks), which hand it to strategy code that takes a "run all" callback and
// so never starts threads itself.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <functional>
#include <thread>
#include <vector>

namespace converge {

// Runs task(i) for every i in [0, n), each once, on up to `threads` threads (the calling one
// among them), and returns when all have run. Tasks take indices in increasing order.
inline void ParallelFor(size_t n, unsigned threads, const std::function<void(size_t)>& task) {
  const size_t workers = std::max<size_t>(1, std::min<size_t>(threads, n));
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t i = next++; i < n; i = next++) task(i);
  };
  std::vector<std::thread> pool;
  pool.reserve(workers - 1);
  for (size_t t = 1; t < workers; ++t) pool.emplace_back(work);
  work();
  for (std::thread& t : pool) t.join();
}

// ParallelFor on every hardware thread, as a callback for code that takes one.
inline std::function<void(size_t, const std::function<void(size_t)>&)> HardwareParallelFor() {
  return [](size_t n, const std::function<void(size_t)>& task) {
    ParallelFor(n, std::max(1u, std::thread::hardware_concurrency()), task);
  };
}

}  // namespace converge
