// Helper for log_crash_test: appends to a log under fsync from a few threads until killed,
// printing "<partition> <offset> <id> <duplicate>" for every record once Append has returned.
//
// Usage: log_crash_writer DIR RUN_ID [THREADS]   (THREADS 1..64, default 3)
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "converge/log.h"
#include "core/command_line.h"
#include "log/log_crash_common.h"

int main(int argc, char** argv) {
  using namespace converge;
  std::string dir, run;
  int threads = 3;
  CLI::App app("Appends under fsync from several threads until killed.", "log_crash_writer");
  cli::Configure(app);
  app.add_option("DIR", dir, "the log directory")->required();
  app.add_option("RUN_ID", run, "prefix of the event ids")->required();
  app.add_option("THREADS", threads, "writer threads")->check(cli::Integer(1, 64));
  if (int rc = cli::ParseOrExit(app, argc, argv); rc >= 0) return rc;
  LogOptions options;
  options.dir = dir;
  auto opened = Log::Open(Env::Default(), options);
  if (!opened.ok()) {
    std::fprintf(stderr, "open: %s\n", opened.status().ToString().c_str());
    return 1;
  }
  std::unique_ptr<Log> log = std::move(opened).value();
  TopicOptions topic;
  topic.partitions = test::kCrashPartitions;
  topic.segment_max_bytes = 64 << 10;  // rolls often
  Status created = log->CreateTopic(test::kCrashTopic, topic);
  if (!created.ok() && created.code() != StatusCode::kAlreadyExists) {
    std::fprintf(stderr, "create: %s\n", created.ToString().c_str());
    return 1;
  }

  std::mutex out_mu;
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      uint64_t x = 0x9E3779B97F4A7C15ull * static_cast<uint64_t>(t + 1);
      for (uint64_t b = 0; b < 1'000'000; ++b) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        const size_t n = 1 + x % 40;
        std::vector<std::string> ids, keys, values;
        for (size_t i = 0; i < n; ++i) {
          // Some ids repeat an earlier one of this thread: those must come back as duplicates.
          const uint64_t seq = (i > 0 && (x >> 20) % 10 == i) ? b * 100 : b * 100 + i;
          std::string id = run;
          id += '-';
          id += std::to_string(t);
          id += '-';
          id += std::to_string(seq);
          ids.push_back(std::move(id));
          std::string key = "k";
          key += std::to_string((x >> 8) % 17 + i);
          keys.push_back(std::move(key));
          values.push_back(test::CrashValueFor(ids.back()));
        }
        std::vector<RecordView> records;
        for (size_t i = 0; i < n; ++i) records.push_back(RecordView{ids[i], keys[i], values[i], 0});
        auto res = log->Append(test::kCrashTopic, records);
        if (!res.ok()) {
          std::fprintf(stderr, "append: %s\n", res.status().ToString().c_str());
          std::exit(1);
        }
        std::lock_guard<std::mutex> lock(out_mu);
        for (size_t i = 0; i < n; ++i) {
          const AppendResult& r = (*res)[i];
          std::printf("%u %llu %s %d\n", r.partition, static_cast<unsigned long long>(r.offset),
                      ids[i].c_str(), r.duplicate ? 1 : 0);
        }
        std::fflush(stdout);
      }
    });
  }
  for (auto& w : workers) w.join();
  return 0;
}
