#include <gtest/gtest.h>

#include <algorithm>
#include <boost/json.hpp>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "bench/log_bench.h"
#include "bench/log_options.h"
#include "bench/report.h"
#include "bench/timing.h"

namespace converge::bench {
namespace {

TEST(ReportTest, JsonStringEscapesQuotesBackslashesAndControls) {
  EXPECT_EQ(JsonString("plain"), "\"plain\"");
  EXPECT_EQ(JsonString("a\"b\\c"), "\"a\\\"b\\\\c\"");
  EXPECT_EQ(JsonString("l1\nl2\t\r"), "\"l1\\nl2\\t\\r\"");
  EXPECT_EQ(JsonString(std::string("\x01\x1f", 2)), "\"\\u0001\\u001f\"");
  EXPECT_EQ(JsonString("µs"), "\"µs\"");  // UTF-8 passes through
}

TEST(ReportTest, JsonLineHasTheRequiredKeysAndParses) {
  Measurement m;
  m.workload = "latency";
  m.system = "redis-\"always\"";
  m.durability = "fsync";
  m.events_per_s = 10000.5;
  m.p50_us = 120.25;
  m.p99_us = 800;
  m.events = 100000;
  m.seconds = 10.0;
  m.note = "a note\nwith a newline";
  const std::string line = ToJsonLine(m);
  EXPECT_EQ(line.find('\n'), std::string::npos);
  boost::json::value v = boost::json::parse(line);
  const boost::json::object& o = v.as_object();
  EXPECT_EQ(o.at("workload").as_string(), "latency");
  EXPECT_EQ(o.at("system").as_string(), "redis-\"always\"");
  EXPECT_EQ(o.at("durability").as_string(), "fsync");
  EXPECT_DOUBLE_EQ(o.at("events_per_s").to_number<double>(), 10000.5);
  EXPECT_DOUBLE_EQ(o.at("p50_us").to_number<double>(), 120.25);
  EXPECT_DOUBLE_EQ(o.at("p99_us").to_number<double>(), 800);
  EXPECT_TRUE(o.at("p999_us").is_null());
  EXPECT_EQ(o.at("events").to_number<uint64_t>(), 100000u);
  EXPECT_EQ(o.at("note").as_string(), "a note\nwith a newline");
  // The required keys come first, in the documented order.
  EXPECT_EQ(line.rfind("{\"workload\":", 0), 0u);
  EXPECT_LT(line.find("\"system\""), line.find("\"durability\""));
  EXPECT_LT(line.find("\"events_per_s\""), line.find("\"p50_us\""));
  EXPECT_LT(line.find("\"p99_us\""), line.find("\"p999_us\""));
}

TEST(ReportTest, OtherUnitsKeepTheLogFormatAndNameTheirRateToo) {
  Measurement m;
  m.workload = "saga3";
  m.system = "converge";
  m.rate_name = "sagas_per_s";
  m.events_per_s = 71872;
  const boost::json::object o = boost::json::parse(ToJsonLine(m)).as_object();
  EXPECT_DOUBLE_EQ(o.at("events_per_s").to_number<double>(), 71872);
  EXPECT_DOUBLE_EQ(o.at("sagas_per_s").to_number<double>(), 71872);
  const boost::json::object log = boost::json::parse(ToJsonLine(Measurement{})).as_object();
  EXPECT_EQ(log.size(), o.size() - 1);  // a log row names its rate once
}

TEST(ReportTest, ThousandsSeparators) {
  EXPECT_EQ(FormatThousands(0), "0");
  EXPECT_EQ(FormatThousands(999), "999");
  EXPECT_EQ(FormatThousands(1000), "1,000");
  EXPECT_EQ(FormatThousands(1234567.6), "1,234,568");
  EXPECT_EQ(FormatThousands(-12345), "-12,345");
}

TEST(ReportTest, TableHasAHeaderAndOneLinePerRowWithAlignedColumns) {
  Measurement a;
  a.workload = "publish";
  a.system = "jetstream";
  a.durability = "interval-2m";
  a.events_per_s = 95000;
  Measurement b = a;
  b.system = "raw";
  b.durability = "fsync";
  b.events_per_s = 1234567;
  b.p99_us = 12.5;
  const std::string table = FormatTable({a, b});
  std::vector<std::string> lines;
  size_t start = 0;
  while (start < table.size()) {
    size_t nl = table.find('\n', start);
    lines.push_back(table.substr(start, nl - start));
    start = nl + 1;
  }
  ASSERT_EQ(lines.size(), 4u);  // header, rule, two rows
  EXPECT_NE(lines[0].find("events/s"), std::string::npos);
  EXPECT_NE(lines[2].find("95,000"), std::string::npos);
  EXPECT_NE(lines[3].find("1,234,567"), std::string::npos);
  EXPECT_NE(lines[3].find("12.5"), std::string::npos);
  // Right-aligned numbers end in the same column.
  EXPECT_EQ(lines[2].find("95,000") + 6, lines[3].find("1,234,567") + 9);
}

TEST(TimingTest, PercentilesAreNearestRank) {
  LatencyRecorder r(1000);
  std::vector<int64_t> v(1000);
  std::iota(v.begin(), v.end(), 1);  // 1..1000 ns
  std::mt19937 rng(42);
  std::shuffle(v.begin(), v.end(), rng);
  for (int64_t x : v) r.Record(x * 1000);  // 1..1000 us
  r.Record(5);                             // over capacity: not kept
  EXPECT_EQ(r.count(), 1000u);
  EXPECT_EQ(r.overflow(), 1u);
  LatencyRecorder::Percentiles p = r.Compute();
  EXPECT_DOUBLE_EQ(p.p50_us, 500);
  EXPECT_DOUBLE_EQ(p.p99_us, 990);
  EXPECT_DOUBLE_EQ(p.p999_us, 999);
  EXPECT_DOUBLE_EQ(p.max_us, 1000);
}

TEST(TimingTest, EmptyRecorderGivesZeros) {
  LatencyRecorder r(10);
  LatencyRecorder::Percentiles p = r.Compute();
  EXPECT_EQ(p.p50_us, 0);
  EXPECT_EQ(p.max_us, 0);
}

TEST(TimingTest, PacerSchedulesEventsEvenly) {
  Pacer pacer(10'000, 1'000'000);
  EXPECT_EQ(pacer.DueNanos(0), 1'000'000);
  EXPECT_EQ(pacer.DueNanos(1), 1'100'000);
  EXPECT_EQ(pacer.DueNanos(10'000), 1'001'000'000);
  EXPECT_EQ(pacer.DueCount(999'999, 100), 0u);
  EXPECT_EQ(pacer.DueCount(1'000'000, 100), 1u);
  EXPECT_EQ(pacer.DueCount(1'099'999, 100), 1u);
  EXPECT_EQ(pacer.DueCount(1'100'000, 100), 2u);
  EXPECT_EQ(pacer.DueCount(1'000'000'000'000, 100), 100u);  // capped at total
  Pacer odd(3, 0);                                          // 333333333.33 ns apart
  for (uint64_t i = 0; i < 10; ++i) {
    EXPECT_EQ(odd.DueCount(odd.DueNanos(i), 100), i + 1);
    EXPECT_EQ(odd.DueCount(odd.DueNanos(i) - 1, 100), i);
  }
}

TEST(TimingTest, PayloadHeaderRoundTrips) {
  std::vector<char> p(128);
  FillPayload(p.data(), p.size());
  StampPayload(p.data(), 123456789, -42);
  EXPECT_EQ(PayloadSeq(p.data()), 123456789u);
  EXPECT_EQ(PayloadStamp(p.data()), -42);
  EXPECT_EQ(p[16], 'a' + 16 % 26);
}

TEST(DeliveryTrackerTest, SkipsWarmupCountsDuplicatesAndMalformed) {
  DeliveryTracker t(/*total_events=*/4, /*warmup_events=*/1);
  std::vector<char> p(32);
  auto deliver = [&](uint64_t seq, int64_t stamp, int64_t now) {
    StampPayload(p.data(), seq, stamp);
    t.Deliver(p.data(), p.size(), now);
  };
  deliver(0, 0, 999'000);  // warmup: counted, not recorded
  deliver(1, 1'000, 3'000);
  deliver(1, 1'000, 9'000);   // duplicate
  t.Deliver(p.data(), 8, 0);  // too short
  deliver(99, 0, 0);          // out of range
  EXPECT_EQ(t.delivered(), 2u);
  EXPECT_FALSE(t.WaitAll(0));
  deliver(2, 1'000, 5'000);
  deliver(3, 1'000, 7'000);
  EXPECT_TRUE(t.WaitAll(0));
  EXPECT_EQ(t.duplicates(), 1u);
  EXPECT_EQ(t.malformed(), 2u);
  LatencyRecorder::Percentiles pct = t.recorder().Compute();
  EXPECT_EQ(t.recorder().count(), 3u);
  EXPECT_DOUBLE_EQ(pct.p50_us, 4.0);
  EXPECT_DOUBLE_EQ(pct.max_us, 6.0);
}

TEST(DeliveryTrackerTest, WaitAllWakesWhenAnotherThreadDelivers) {
  DeliveryTracker t(1000, 0);
  std::thread producer([&] {
    std::vector<char> p(16);
    for (uint64_t i = 0; i < 1000; ++i) {
      StampPayload(p.data(), i, 0);
      t.Deliver(p.data(), p.size(), 1);
    }
  });
  EXPECT_TRUE(t.WaitAll(60'000));
  producer.join();
}

Result<LogOptions> Parse(std::vector<std::string> args) {
  args.insert(args.begin(), "log");
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  return ParseLogOptions(static_cast<int>(argv.size()), argv.data());
}

TEST(LogOptionsTest, DefaultsMatchTheIssue) {
  Result<LogOptions> o = Parse({});
  ASSERT_TRUE(o.ok()) << o.status().ToString();
  EXPECT_EQ(o->workload.events, 1'000'000u);
  EXPECT_EQ(o->workload.event_bytes, 128u);
  EXPECT_EQ(o->workload.rate_per_s, 10'000u);
  EXPECT_EQ(o->systems, SplitList(kLogSystems));
  EXPECT_EQ(o->workloads, SplitList(kLogWorkloads));
  EXPECT_FALSE(o->json);
  EXPECT_FALSE(o->systems_explicit);
  EXPECT_EQ(o->via, "inproc");
}

TEST(LogOptionsTest, ParsesBothFlagForms) {
  Result<LogOptions> o =
      Parse({"--events=5000", "--size", "256", "--rate=2000", "--latency-seconds", "3", "--systems",
             "raw,jetstream", "--json", "--dir=/var/tmp", "--workloads=publish"});
  ASSERT_TRUE(o.ok()) << o.status().ToString();
  EXPECT_EQ(o->workload.events, 5000u);
  EXPECT_EQ(o->workload.event_bytes, 256u);
  EXPECT_EQ(o->workload.rate_per_s, 2000u);
  EXPECT_EQ(o->workload.latency_seconds, 3u);
  EXPECT_EQ(o->systems, (std::vector<std::string>{"raw", "jetstream"}));
  EXPECT_TRUE(o->systems_explicit);
  EXPECT_TRUE(o->json);
  EXPECT_EQ(o->dir, "/var/tmp");
  EXPECT_EQ(o->workloads, (std::vector<std::string>{"publish"}));
}

TEST(LogOptionsTest, RejectsBadInput) {
  EXPECT_EQ(Parse({"--events", "0"}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(Parse({"--events", "-5"}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(Parse({"--events", "12x"}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(Parse({"--size", "8"}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(Parse({"--rate"}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(Parse({"--systems", "kafka"}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(Parse({"--systems", ","}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(Parse({"--workloads", "bogus"}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(Parse({"--frobnicate"}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(Parse({"--via", "carrier-pigeon"}).status().code(), StatusCode::kInvalidArgument);
}

TEST(LogOptionsTest, ViaServerOrInproc) {
  Result<LogOptions> o = Parse({"--via", "server"});
  ASSERT_TRUE(o.ok()) << o.status().ToString();
  EXPECT_EQ(o->via, "server");
  EXPECT_TRUE(Parse({"--via=inproc"}).ok());
}

TEST(LogOptionsTest, ClientsSelectTheManyClientWorkloads) {
  Result<LogOptions> o = Parse({"--via", "server", "--clients", "64,256,1024"});
  ASSERT_TRUE(o.ok()) << o.status().ToString();
  EXPECT_EQ(o->workload.clients, (std::vector<uint32_t>{64, 256, 1024}));
  EXPECT_EQ(o->workloads, SplitList(kManyClientWorkloads));
  o = Parse({"--clients=8", "--workloads", "single_publish"});
  ASSERT_TRUE(o.ok()) << o.status().ToString();
  EXPECT_EQ(o->workloads, (std::vector<std::string>{"single_publish"}));
  EXPECT_EQ(Parse({"--clients", "0"}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(Parse({"--clients", "12x"}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(Parse({"--clients", ","}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(Parse({"--workloads", "fetch10_ack"}).status().code(),
            StatusCode::kInvalidArgument);  // needs --clients
}

TEST(ReportTest, ManyClientRowsCarryClientsMeanAndErrors) {
  Measurement m;
  m.workload = "single_publish";
  m.system = "converge";
  m.clients = 256;
  m.mean_us = 1500.5;
  m.errors = 0;
  const std::string line = ToJsonLine(m);
  EXPECT_NE(line.find("\"clients\":256"), std::string::npos) << line;
  EXPECT_NE(line.find("\"mean_us\":1500.5"), std::string::npos) << line;
  EXPECT_NE(line.find("\"errors\":0"), std::string::npos) << line;
  EXPECT_EQ(ToJsonLine(Measurement{}).find("clients"), std::string::npos);
}

TEST(LogOptionsTest, HelpIsReported) {
  Result<LogOptions> o = Parse({"--help"});
  ASSERT_TRUE(o.ok());
  EXPECT_TRUE(o->help);
}

Measurement Row(const std::string& workload, const std::string& system, double eps,
                std::optional<double> p99 = std::nullopt) {
  Measurement m;
  m.workload = workload;
  m.system = system;
  m.durability = "fsync";
  m.events_per_s = eps;
  m.p99_us = p99;
  return m;
}

TEST(LogOptionsTest, ConvergeDurability) {
  EXPECT_EQ(Parse({}).value().workload.converge_durability, "fsync");
  EXPECT_EQ(Parse({"--converge-durability", "none"}).value().workload.converge_durability, "none");
  EXPECT_EQ(Parse({"--converge-durability=interval"}).value().workload.converge_durability,
            "interval");
  EXPECT_EQ(Parse({"--converge-durability", "maybe"}).status().code(),
            StatusCode::kInvalidArgument);
}

TEST(LogOptionsTest, RoundsAreBounded) {
  Result<LogOptions> o = Parse({"--rounds", "3"});
  ASSERT_TRUE(o.ok());
  EXPECT_EQ(o->rounds, 3u);
  EXPECT_EQ(Parse({}).value().rounds, 1u);
  EXPECT_EQ(Parse({"--rounds", "0"}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(Parse({"--rounds", "101"}).status().code(), StatusCode::kInvalidArgument);
}

TEST(MedianOfRoundsTest, PicksTheMedianPerWorkloadSystemAndDurability) {
  std::vector<Measurement> rows = {
      Row("publish", "jetstream", 100), Row("latency", "redis-always", 10'000, 900.0),
      Row("publish", "jetstream", 300), Row("latency", "redis-always", 10'000, 100.0),
      Row("publish", "jetstream", 200), Row("latency", "redis-always", 10'000, 500.0),
      Row("publish", "raw", 7)};
  Measurement other_durability = Row("publish", "jetstream", 1'000'000);
  other_durability.durability = "interval-1s";
  rows.push_back(other_durability);
  std::vector<Measurement> median = MedianOfRounds(rows);
  ASSERT_EQ(median.size(), 4u);
  EXPECT_EQ(median[3].durability, "interval-1s");
  EXPECT_EQ(median[3].events_per_s, 1'000'000);
  EXPECT_EQ(median[0].system, "jetstream");
  EXPECT_EQ(median[0].events_per_s, 200);
  EXPECT_NE(median[0].note.find("median of 3"), std::string::npos);
  EXPECT_EQ(median[1].workload, "latency");
  EXPECT_EQ(median[1].p99_us, 500.0);
  EXPECT_EQ(median[2].system, "raw");
  EXPECT_EQ(median[2].events_per_s, 7);
  EXPECT_EQ(median[2].note.find("median"), std::string::npos);
}

// The line of `text` that contains `needle` ("" if none).
std::string LineWith(const std::string& text, const std::string& needle) {
  const size_t at = text.find(needle);
  if (at == std::string::npos) return "";
  const size_t start = text.rfind('\n', at) + 1;  // npos + 1 == 0
  return text.substr(start, text.find('\n', at) - start);
}

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

TEST(LogComparisonTest, ChecksTheTargetsWhenConvergeWasMeasured) {
  Measurement periodic = Row("consume_ack", "converge", 600'000);
  periodic.durability = "interval-100ms";
  std::vector<Measurement> rows = {
      Row("publish", "jetstream", 100'000),      Row("publish", "raw", 1'000'000),
      Row("publish", "converge", 900'000),       Row("consume_ack", "jetstream", 100'000),
      Row("consume_ack", "converge", 400'000),   periodic,
      Row("latency", "converge", 10'000, 1500.0)};
  const std::string text = LogComparison(rows);
  const std::string vs_jetstream = LineWith(text, ">= 8x jetstream async publish");
  EXPECT_NE(vs_jetstream.find("9.00x"), std::string::npos) << text;
  EXPECT_TRUE(EndsWith(vs_jetstream, "PASS")) << text;
  const std::string vs_raw = LineWith(text, ">= 70% of the raw-disk");
  EXPECT_NE(vs_raw.find("90%"), std::string::npos) << text;
  EXPECT_TRUE(EndsWith(vs_raw, "PASS")) << text;
  const std::string consume_sync = LineWith(text, "consume + ack (fsync acks) >= 5x");
  EXPECT_NE(consume_sync.find("4.00x"), std::string::npos) << text;
  EXPECT_TRUE(EndsWith(consume_sync, "MISS")) << text;
  const std::string consume_periodic = LineWith(text, "consume + ack (interval-100ms acks)");
  EXPECT_NE(consume_periodic.find("6.00x"), std::string::npos) << text;
  EXPECT_TRUE(EndsWith(consume_periodic, "PASS")) << text;
  const std::string latency = LineWith(text, "p99 <= 1000 us");
  EXPECT_NE(latency.find("1500 us"), std::string::npos) << text;
  EXPECT_TRUE(EndsWith(latency, "MISS")) << text;
}

TEST(LogComparisonTest, ChecksTheSidecarTargetsViaServer) {
  std::vector<Measurement> rows = {Row("publish", "jetstream", 100'000),
                                   Row("publish", "converge", 350'000),
                                   Row("latency", "converge", 10'000, 1500.0)};
  const std::string text = LogComparison(rows, /*via_server=*/true);
  const std::string publish = LineWith(text, ">= 3x jetstream async publish");
  EXPECT_NE(publish.find("3.50x"), std::string::npos) << text;
  EXPECT_TRUE(EndsWith(publish, "PASS")) << text;
  const std::string latency = LineWith(text, "p99 <= 2000 us");
  EXPECT_NE(latency.find("1500 us"), std::string::npos) << text;
  EXPECT_TRUE(EndsWith(latency, "PASS")) << text;
  rows[1].events_per_s = 250'000;
  rows[2].p99_us = 2500.0;
  const std::string miss = LogComparison(rows, /*via_server=*/true);
  EXPECT_TRUE(EndsWith(LineWith(miss, ">= 3x jetstream async publish"), "2.50x  MISS")) << miss;
  EXPECT_TRUE(EndsWith(LineWith(miss, "p99 <= 2000 us"), "2500 us  MISS")) << miss;
}

TEST(LogComparisonTest, ChecksNoTargetsWhenConvergeRanWithoutFsync) {
  Measurement publish = Row("publish", "converge", 5'000'000);
  publish.durability = "none";
  const std::string text = LogComparison({Row("publish", "jetstream", 100'000), publish});
  EXPECT_NE(text.find("not checked (converge ran with durability none"), std::string::npos) << text;
  EXPECT_EQ(text.find("PASS"), std::string::npos) << text;
}

TEST(LogComparisonTest, SaysTargetsWereNotCheckedWithoutConverge) {
  std::vector<Measurement> rows = {Row("publish", "jetstream", 100'000),
                                   Row("publish", "redis-always", 200'000),
                                   Row("publish", "raw", 1'000'000)};
  const std::string text = LogComparison(rows);
  EXPECT_NE(text.find("not checked"), std::string::npos);
  EXPECT_NE(text.find("redis-always (fsync):  2.00x jetstream async publish  20% of the raw"),
            std::string::npos)
      << text;
}

}  // namespace
}  // namespace converge::bench
