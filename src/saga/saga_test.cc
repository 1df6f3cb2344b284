// Unit tests of the saga module: definitions, message and record codecs, the sans-IO state
// machine, the participant logic, and the orchestrator with participants on the simulated Env.
#include "converge/saga.h"

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <map>
#include <mutex>
#include <thread>
#include <tuple>

#include "converge/choreography.h"
#include "converge/event.h"
#include "converge/log.h"
#include "converge/sim_env.h"
#include "log/testing/full_disk_env.h"
#include "saga/machine.h"
#include "saga/messages.h"
#include "saga/records.h"
#include "saga/saga_log.h"
#include "saga/testing/orchestrator_fixture.h"
#include "support/black_hole.h"

namespace converge {
namespace {

using saga_internal::MachineOutput;
using saga_internal::OutCommand;
using saga_internal::RecordType;
using saga_internal::RecordView;
using saga_internal::SagaMachine;

SagaDefinition OrderSaga(uint32_t version = 1) {
  RetryPolicy retry;
  retry.base_delay_ms = 10;
  retry.max_delay_ms = 100;
  retry.max_attempts = 3;
  retry.deadline_ms = 60'000;
  return SagaDefinitionBuilder("order", version)
      .Step("reserve-stock", "inventory", "inventory.reserve", "inventory.release")
      .Timeout(1000)
      .Retry(retry)
      .Step("reserve-credit", "payments", "payments.reserve", "payments.release")
      .Timeout(1000)
      .Retry(retry)
      .Step("confirm", "orders", "orders.confirm")
      .Pivot()
      .Timeout(1000)
      .Retry(retry)
      .Step("ship", "shipping", "shipping.schedule")
      .Timeout(1000)
      .Retry(retry)
      .Build()
      .value();
}

// ---------------------------------------------------------------------------------------
// Definitions

TEST(SagaDefinitionTest, BuilderFindsThePivot) {
  SagaDefinition d = OrderSaga();
  EXPECT_EQ(d.PivotIndex(), 2u);
  EXPECT_TRUE(d.Validate().ok());
  // Without a mark, a last step without compensation is the pivot; all compensatable = none.
  auto implicit =
      SagaDefinitionBuilder("x").Step("a", "t", "a", "undo-a").Step("b", "t", "b").Build();
  ASSERT_TRUE(implicit.ok()) << implicit.status().ToString();
  EXPECT_EQ(implicit->PivotIndex(), 1u);
  auto all = SagaDefinitionBuilder("x").Step("a", "t", "a", "ua").Step("b", "t", "b", "ub").Build();
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->PivotIndex(), 2u);
}

TEST(SagaDefinitionTest, ValidationNamesTheProblem) {
  auto missing_comp = SagaDefinitionBuilder("x").Step("a", "t", "a").Step("b", "t", "b").Build();
  ASSERT_FALSE(missing_comp.ok());
  EXPECT_EQ(missing_comp.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(missing_comp.status().message().find("'a'"), std::string_view::npos);

  auto comp_after =
      SagaDefinitionBuilder("x").Step("a", "t", "a").Pivot().Step("b", "t", "b", "undo").Build();
  ASSERT_FALSE(comp_after.ok());
  EXPECT_NE(comp_after.status().message().find("after the pivot"), std::string_view::npos);

  auto dup = SagaDefinitionBuilder("x").Step("a", "t", "a", "u").Step("a", "t", "b", "u").Build();
  EXPECT_FALSE(dup.ok());
  auto two_pivots =
      SagaDefinitionBuilder("x").Step("a", "t", "a").Pivot().Step("b", "t", "b").Pivot().Build();
  EXPECT_FALSE(two_pivots.ok());
  auto bad_timeout = SagaDefinitionBuilder("x").Step("a", "t", "a").Timeout(0).Build();
  EXPECT_FALSE(bad_timeout.ok());
  auto bad_topic = SagaDefinitionBuilder("x").Step("a", "_internal", "a").Build();
  EXPECT_FALSE(bad_topic.ok());
  EXPECT_FALSE(SagaDefinitionBuilder("bad name").Step("a", "t", "a").Build().ok());
  EXPECT_FALSE(SagaDefinitionBuilder("x", 0).Step("a", "t", "a").Build().ok());
  EXPECT_FALSE(SagaDefinitionBuilder("x").Build().ok());
}

TEST(SagaDefinitionTest, YamlAndJsonParse) {
  const char* yaml = R"(
name: order
version: 3
deadline_ms: 600000
steps:
  - name: reserve-stock
    participant: inventory
    action: inventory.reserve
    compensation: inventory.release
    timeout_ms: 5000
    retry: {max_attempts: 4, base_delay_ms: 50, multiplier: 1.5, max_delay_ms: 2000}
  - {name: charge, participant: payments, action: payments.charge, pivot: true}
  - name: ship
    participant: shipping
    action: shipping.schedule
)";
  Result<SagaDefinition> d = ParseSagaDefinition(yaml);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->name, "order");
  EXPECT_EQ(d->version, 3u);
  EXPECT_EQ(d->deadline_ms, 600000);
  ASSERT_EQ(d->steps.size(), 3u);
  EXPECT_EQ(d->steps[0].timeout_ms, 5000);
  EXPECT_EQ(d->steps[0].retry.max_attempts, 4u);
  EXPECT_EQ(d->steps[0].retry.multiplier, 1.5);
  EXPECT_EQ(d->steps[1].timeout_ms, 30'000);
  EXPECT_TRUE(d->steps[1].pivot);
  EXPECT_EQ(d->PivotIndex(), 1u);

  // The canonical JSON parses back to the same definition.
  Result<SagaDefinition> again = ParseSagaDefinition(d->ToJson());
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(*again, *d);

  const char* json = R"({"name":"o","steps":[{"name":"a","participant":"t","action":"x"}]})";
  Result<SagaDefinition> j = ParseSagaDefinition(json);
  ASSERT_TRUE(j.ok()) << j.status().ToString();
  EXPECT_EQ(j->steps[0].action, "x");
}

TEST(SagaDefinitionTest, ParseRejectsBadInput) {
  EXPECT_EQ(ParseSagaDefinition("name: [").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseSagaDefinition("- a\n- b").status().code(), StatusCode::kInvalidArgument);
  auto unknown = ParseSagaDefinition("name: a\nsteps: []\ncolor: red\n");
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.status().message().find("color"), std::string_view::npos);
  auto bad_int =
      ParseSagaDefinition("name: a\nversion: two\nsteps: [{name: s, participant: t, action: x}]\n");
  ASSERT_FALSE(bad_int.ok());
  EXPECT_NE(bad_int.status().message().find("version"), std::string_view::npos);
  EXPECT_FALSE(
      ParseSagaDefinition("name: a\nsteps: [{name: s, participant: t, action: x, pivot: 3}]\n")
          .ok());
  EXPECT_FALSE(ParseSagaDefinition("name: a\n").ok());
  EXPECT_FALSE(ParseSagaDefinition("").ok());
}

// ---------------------------------------------------------------------------------------
// Codecs

TEST(SagaMessagesTest, CommandIsTheCloudEventsBinaryRecordOfTheEquivalentEvent) {
  auto def = std::make_shared<const SagaDefinition>(OrderSaga());
  OutCommand c;
  c.saga_id = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";
  c.def = def;
  c.data = std::make_shared<const std::string>(R"({"order":42})");
  c.step = 1;
  c.kind = SagaCommandKind::kCompensate;
  c.attempt = 3;
  std::string fast;
  saga_internal::EncodeCommand(c, "/converge/saga", "saga.replies", &fast);

  Event e;
  e.set_id(c.saga_id + "/1/compensate/3");
  e.set_source("/converge/saga");
  e.set_type("payments.release");
  e.SetExtensionInteger("sagaattempt", 3);
  e.SetExtension("sagadef", "order");
  e.SetExtension("sagaid", c.saga_id);
  e.SetExtension("sagakind", "compensate");
  e.SetExtension("sagareplyto", "saga.replies");
  e.SetExtensionBoolean("sagaretriable", false);
  e.SetExtensionInteger("sagastep", 1);
  e.SetExtension("sagastepname", "reserve-credit");
  e.SetExtensionInteger("sagaversion", 1);
  ASSERT_TRUE(e.SetJsonData(R"({"order":42})").ok());
  std::string reference;
  ASSERT_TRUE(EncodeBinary(e, &reference).ok());
  EXPECT_EQ(fast, reference);
  Result<Event> decoded = DecodeBinary(fast);
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  EXPECT_EQ(*decoded, e);

  Result<saga_internal::CommandView> v = saga_internal::DecodeCommand(fast);
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_EQ(v->command.saga_id, c.saga_id);
  EXPECT_EQ(v->command.step, 1u);
  EXPECT_EQ(v->command.step_name, "reserve-credit");
  EXPECT_EQ(v->command.kind, SagaCommandKind::kCompensate);
  EXPECT_EQ(v->command.attempt, 3u);
  EXPECT_EQ(v->command.type, "payments.release");
  EXPECT_EQ(v->command.data, R"({"order":42})");
  EXPECT_EQ(v->reply_to, "saga.replies");
  EXPECT_FALSE(v->command.retriable);
}

TEST(SagaMessagesTest, ReplyRoundTripsAndIsAValidEvent) {
  SagaReply r;
  r.saga_id = "s-1";
  r.step = 2;
  r.kind = SagaCommandKind::kCancel;
  r.attempt = 7;
  r.outcome = SagaReply::Outcome::kRetry;
  r.status = UnavailableError("database down");
  std::string bytes;
  saga_internal::EncodeReply(r, &bytes);
  Result<Event> e = DecodeBinary(bytes);
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  EXPECT_EQ(e->type(), "converge.saga.reply");
  Result<SagaReply> back = saga_internal::DecodeReply(bytes);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->saga_id, "s-1");
  EXPECT_EQ(back->step, 2u);
  EXPECT_EQ(back->kind, SagaCommandKind::kCancel);
  EXPECT_EQ(back->attempt, 7u);
  EXPECT_EQ(back->outcome, SagaReply::Outcome::kRetry);
  EXPECT_EQ(back->status.code(), StatusCode::kUnavailable);
  EXPECT_EQ(back->status.message(), "database down");

  r.outcome = SagaReply::Outcome::kOk;
  r.status = Status::Ok();
  r.applied = true;
  r.result = "{\"ok\":1}";
  bytes.clear();
  saga_internal::EncodeReply(r, &bytes);
  back = saga_internal::DecodeReply(bytes);
  ASSERT_TRUE(back.ok());
  EXPECT_TRUE(back->applied);
  EXPECT_EQ(back->result, "{\"ok\":1}");
}

// Issue #12: in CloudEvents binary mode every extension is a string. The reply's integers and
// booleans are read from their string spelling too, strictly.
TEST(SagaMessagesTest, RepliesDecodeTheBinaryModeSpellingStrictly) {
  auto reply = [](const std::string& step, const std::string& attempt, const std::string& applied) {
    Event e;
    e.set_id("s-1/2/compensate/3/reply");
    e.set_source("/p");
    e.set_type("converge.saga.reply");
    e.SetExtension("sagaid", "s-1");
    e.SetExtension("sagakind", "compensate");
    e.SetExtension("sagaoutcome", "ok");
    e.SetExtension("sagastep", step);
    e.SetExtension("sagaattempt", attempt);
    if (!applied.empty()) e.SetExtension("sagaapplied", applied);
    e.SetExtension("sagatoken", "abc");
    std::string bytes;
    EXPECT_TRUE(EncodeBinary(e, &bytes).ok());
    return saga_internal::DecodeReply(bytes);
  };
  Result<SagaReply> ok = reply("2", "3", "true");
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ(ok->step, 2u);
  EXPECT_EQ(ok->attempt, 3u);
  EXPECT_TRUE(ok->applied);
  EXPECT_EQ(ok->token, "abc");
  EXPECT_FALSE(reply("0", "1", "false")->applied);
  for (auto [step, attempt, applied, named] :
       {std::tuple<const char*, const char*, const char*, const char*>{"02", "1", "", "sagastep"},
        {"-1", "1", "", "sagastep"},
        {"+1", "1", "", "sagastep"},
        {" 1", "1", "", "sagastep"},
        {"1", "1x", "", "sagaattempt"},
        {"1", "", "", "sagaattempt"},
        {"1", "99999999999999999999", "", "sagaattempt"},
        {"1", "1", "yes", "sagaapplied"},
        {"1", "1", "True", "sagaapplied"}}) {
    Result<SagaReply> bad = reply(step, attempt, applied);
    ASSERT_FALSE(bad.ok()) << step << " " << attempt << " " << applied;
    EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(bad.status().message().find(named), std::string_view::npos)
        << bad.status().ToString();
  }
}

TEST(SagaMessagesTest, GarbageNeverDecodes) {
  sim::SimEnv env(11);
  std::string good;
  SagaReply r;
  r.saga_id = "x";
  r.attempt = 1;
  saga_internal::EncodeReply(r, &good);
  for (int i = 0; i < 2000; ++i) {
    std::string bytes = good;
    const size_t n = 1 + env.random().Uniform(4);
    for (size_t k = 0; k < n; ++k) {
      bytes[env.random().Uniform(bytes.size())] ^= static_cast<char>(1 + env.random().Uniform(255));
    }
    if (env.random().Bernoulli(0.3)) bytes.resize(env.random().Uniform(bytes.size()));
    // Must not crash; may decode to some reply.
    (void)saga_internal::DecodeReply(bytes);
    (void)saga_internal::DecodeCommand(bytes);
  }
}

// Issue 21: the W3C traceparent travels as the CloudEvents distributed-tracing extension, in
// both messages; the records stay exactly what EncodeBinary writes.
TEST(SagaMessagesTest, TraceparentIsTheDistributedTracingExtension) {
  auto def = std::make_shared<const SagaDefinition>(OrderSaga());
  OutCommand c;
  c.saga_id = "s-9";
  c.def = def;
  c.step = 0;
  c.kind = SagaCommandKind::kAction;
  c.attempt = 1;
  c.token = "0123456789abcdef0123456789abcdef";
  c.traceparent.Set("00-4bf92f3577b34da6a3ce929d0e0e4736-1111111111111111-01");
  std::string fast;
  saga_internal::EncodeCommand(c, "/converge/saga", "saga.replies", &fast);
  Result<Event> decoded = DecodeBinary(fast);
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  ASSERT_TRUE(decoded->traceparent().has_value());
  EXPECT_EQ(*decoded->traceparent(), c.traceparent.view());
  std::string reference;
  ASSERT_TRUE(EncodeBinary(*decoded, &reference).ok());
  EXPECT_EQ(fast, reference);
  Result<saga_internal::CommandView> v = saga_internal::DecodeCommand(fast);
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(v->command.traceparent, c.traceparent.view());

  SagaReply r;
  r.saga_id = "s-9";
  r.token = c.token;
  r.traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-2222222222222222-01";
  std::string bytes;
  saga_internal::EncodeReply(r, &bytes);
  Result<Event> re = DecodeBinary(bytes);
  ASSERT_TRUE(re.ok()) << re.status().ToString();
  EXPECT_EQ(re->traceparent().value_or(""), r.traceparent);
  Result<SagaReply> back = saga_internal::DecodeReply(bytes, /*with_trace=*/true);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->traceparent, r.traceparent);
}

TEST(SagaMessagesTest, TraceContextsFollowW3cRules) {
  sim::SimEnv env(11);
  const std::string start = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  EXPECT_EQ(saga_internal::StartTrace(start, "", "s", env.random()), start);
  // A higher version is read by its first four fields and sent on as version 00.
  EXPECT_EQ(saga_internal::StartTrace("cc" + start.substr(2) + "-more", "k", "s", env.random()),
            start);
  for (const std::string& bad : {std::string(), std::string("x"), "ff" + start.substr(2),
                                 start + "-more", start.substr(0, 54)}) {
    // Keyed (what the orchestrator does) and drawn (no key).
    const std::string keyed = saga_internal::StartTrace(bad, "key", "s", env.random());
    const std::string drawn = saga_internal::StartTrace(bad, "", "s", env.random());
    for (const std::string& fresh : {keyed, drawn}) {
      ASSERT_TRUE(TraceParent::Parse(fresh).ok()) << bad << " -> " << fresh;
      EXPECT_NE(fresh.substr(3, 32), start.substr(3, 32));
      EXPECT_EQ(fresh.substr(52), "-00");
    }
    EXPECT_NE(saga_internal::StartTrace(bad, "key", "t", env.random()), keyed);  // per saga
  }
  const std::string a = saga_internal::ChildTraceparent(start, "s/0/action/1");
  const std::string b = saga_internal::ChildTraceparent(start, "s/0/action/2");
  EXPECT_EQ(a.substr(0, 36), start.substr(0, 36));
  EXPECT_EQ(a.substr(52), "-01");
  EXPECT_NE(a.substr(36, 16), start.substr(36, 16));
  EXPECT_NE(a, b);
  EXPECT_EQ(a, saga_internal::ChildTraceparent(start, "s/0/action/1"));  // stable on resend
  EXPECT_EQ(saga_internal::ChildTraceparent("garbage", "s/0/action/1"), "");

  // The fast check accepts exactly what TraceParent::Parse does, on edge cases and on mutations.
  std::vector<std::string> cases = {start,
                                    "",
                                    start.substr(0, 54),
                                    start + "-x",
                                    "01" + start.substr(2),
                                    "01" + start.substr(2) + "-x",
                                    "01" + start.substr(2) + "x",
                                    "ff" + start.substr(2),
                                    "0g" + start.substr(2)};
  for (int i = 0; i < 20000; ++i) {
    std::string m = start;
    if (env.random().Bernoulli(0.2)) m[1] = static_cast<char>('0' + env.random().Uniform(10));
    const size_t at = env.random().Uniform(m.size());
    static constexpr char kAlphabet[] = "0123456789abcdefABCDEF-xz";
    m[at] = kAlphabet[env.random().Uniform(sizeof(kAlphabet) - 1)];
    if (env.random().Bernoulli(0.1)) m += env.random().Bernoulli(0.5) ? "-ab" : "z";
    if (env.random().Bernoulli(0.1)) m.resize(env.random().Uniform(m.size()));
    cases.push_back(m);
  }
  for (const std::string& t : cases) {
    EXPECT_EQ(saga_internal::ValidTraceparent(t), TraceParent::Parse(t).ok()) << t;
  }
}

TEST(SagaRecordsTest, RoundTripAndDamage) {
  std::string wal;
  RecordView a;
  a.type = RecordType::kStarted;
  a.time_micros = 123;
  a.saga_id = "s1";
  a.a = "order";
  a.version = 2;
  a.due_micros = 999;
  a.b = "{}";
  saga_internal::AppendRecord(a, &wal);
  RecordView b;
  b.type = RecordType::kBackoff;
  b.time_micros = 124;
  b.saga_id = "s1";
  b.step = 3;
  b.kind = SagaCommandKind::kCancel;
  b.attempt = 9;
  b.due_micros = 5000;
  b.flag = 1;
  b.a = "boom";
  saga_internal::AppendRecord(b, &wal);

  saga_internal::FrameReader reader(wal);
  std::string_view payload;
  ASSERT_TRUE(reader.Next(&payload));
  Result<RecordView> ra = saga_internal::DecodePayload(payload);
  ASSERT_TRUE(ra.ok());
  EXPECT_EQ(ra->type, RecordType::kStarted);
  EXPECT_EQ(ra->a, "order");
  EXPECT_EQ(ra->version, 2u);
  EXPECT_EQ(ra->due_micros, 999);
  EXPECT_EQ(ra->b, "{}");
  ASSERT_TRUE(reader.Next(&payload));
  Result<RecordView> rb = saga_internal::DecodePayload(payload);
  ASSERT_TRUE(rb.ok());
  EXPECT_EQ(rb->kind, SagaCommandKind::kCancel);
  EXPECT_EQ(rb->attempt, 9u);
  EXPECT_EQ(rb->flag, 1);
  EXPECT_EQ(rb->a, "boom");
  EXPECT_FALSE(reader.Next(&payload));
  EXPECT_FALSE(reader.damaged());

  // A flipped byte in the second record stops the reader after the first.
  std::string damaged = wal;
  damaged[damaged.size() - 2] ^= 0x40;
  saga_internal::FrameReader r2(damaged);
  ASSERT_TRUE(r2.Next(&payload));
  EXPECT_FALSE(r2.Next(&payload));
  EXPECT_TRUE(r2.damaged());
  // A cut tail likewise.
  saga_internal::FrameReader r3(std::string_view(wal).substr(0, wal.size() - 3));
  ASSERT_TRUE(r3.Next(&payload));
  EXPECT_FALSE(r3.Next(&payload));
  EXPECT_TRUE(r3.damaged());
}

// ---------------------------------------------------------------------------------------
// The state machine

class MachineTest : public ::testing::Test {
 protected:
  explicit MachineTest(saga_internal::MachineOptions options = {})
      : env_(5), machine_(env_.random(), options) {
    EXPECT_TRUE(machine_.AddDefinition(OrderSaga(), now_, &out_).ok());
    Flush();
  }

  // Records emitted so far go to `wal_`; commands are returned.
  std::vector<OutCommand> Flush() {
    wal_ += out_.wal;
    std::vector<OutCommand> c = std::move(out_.commands);
    out_.Clear();
    return c;
  }

  std::string Start(std::string id = "s1") {
    SagaStartRequest req;
    req.definition = "order";
    req.id = id;
    req.data = "{}";
    Result<std::string> r = machine_.Start(req, now_, &out_);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return id;
  }

  bool Reply(const OutCommand& c, SagaReply::Outcome outcome, bool applied = true,
             Status status = Status::Ok()) {
    SagaReply r;
    r.saga_id = c.saga_id;
    r.step = c.step;
    r.kind = c.kind;
    r.attempt = c.attempt;
    r.outcome = outcome;
    r.applied = applied;
    r.status = std::move(status);
    return machine_.OnReply(r, now_, &out_);
  }

  // Advances the clock to the next timer and fires it.
  void FireNext() {
    ASSERT_TRUE(machine_.next_due().has_value());
    now_ = std::max(now_, *machine_.next_due());
    machine_.Tick(now_, &out_);
  }

  SagaInfo Info(const std::string& id) { return machine_.Describe(id).value(); }

  // Replays everything written so far into a fresh machine and compares the views.
  void ExpectReplayMatches(const std::string& id) {
    SagaMachine fresh(env_.random(), saga_internal::MachineOptions{});
    const std::string all = wal_ + out_.wal;
    saga_internal::FrameReader reader(all);
    std::string_view payload;
    while (reader.Next(&payload)) {
      Result<RecordView> r = saga_internal::DecodePayload(payload);
      ASSERT_TRUE(r.ok());
      Status rs = fresh.Replay(*r);
      ASSERT_TRUE(rs.ok()) << rs.ToString();
    }
    SagaInfo a = Info(id);
    SagaInfo b = fresh.Describe(id).value();
    EXPECT_EQ(a.summary.state, b.summary.state);
    EXPECT_EQ(a.summary.step, b.summary.step);
    ASSERT_EQ(a.steps.size(), b.steps.size());
    for (size_t i = 0; i < a.steps.size(); ++i) {
      EXPECT_EQ(a.steps[i].state, b.steps[i].state) << i;
      EXPECT_EQ(a.steps[i].attempts, b.steps[i].attempts) << i;
    }
    EXPECT_EQ(a.history.size(), b.history.size());
    EXPECT_EQ(machine_.next_due(), fresh.next_due());
  }

  sim::SimEnv env_;
  SagaMachine machine_;
  MachineOutput out_;
  std::string wal_;
  int64_t now_ = 1'000'000;
};

TEST_F(MachineTest, HappyPathCompletes) {
  const std::string id = Start();
  for (uint32_t step = 0; step < 4; ++step) {
    std::vector<OutCommand> c = Flush();
    ASSERT_EQ(c.size(), 1u);
    EXPECT_EQ(c[0].step, step);
    EXPECT_EQ(c[0].kind, SagaCommandKind::kAction);
    EXPECT_EQ(c[0].retriable, step == 3);
    EXPECT_TRUE(Reply(c[0], SagaReply::Outcome::kOk));
  }
  EXPECT_TRUE(Flush().empty());
  EXPECT_EQ(Info(id).summary.state, SagaState::kCompleted);
  EXPECT_FALSE(machine_.next_due().has_value());
  EXPECT_EQ(machine_.in_flight(), 0u);
  ExpectReplayMatches(id);
}

TEST_F(MachineTest, RefusalCompensatesTheEarlierStepsInReverse) {
  const std::string id = Start();
  auto c = Flush();
  ASSERT_TRUE(Reply(c[0], SagaReply::Outcome::kOk));
  c = Flush();
  ASSERT_EQ(c[0].step, 1u);
  ASSERT_TRUE(
      Reply(c[0], SagaReply::Outcome::kFailed, false, FailedPreconditionError("no credit")));
  c = Flush();
  // Step 1 refused (never applied): only step 0 is compensated.
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0].step, 0u);
  EXPECT_EQ(c[0].kind, SagaCommandKind::kCompensate);
  EXPECT_EQ(Info(id).summary.state, SagaState::kCompensating);
  ASSERT_TRUE(Reply(c[0], SagaReply::Outcome::kOk));
  EXPECT_TRUE(Flush().empty());
  SagaInfo info = Info(id);
  EXPECT_EQ(info.summary.state, SagaState::kCompensated);
  EXPECT_EQ(info.steps[0].state, SagaStepState::kCompensated);
  EXPECT_EQ(info.steps[1].state, SagaStepState::kFailed);
  EXPECT_EQ(info.steps[2].state, SagaStepState::kPending);
  ExpectReplayMatches(id);
}

TEST_F(MachineTest, TimeoutsRetryThenCompensateTheUncertainStepToo) {
  const std::string id = Start();
  auto c = Flush();
  ASSERT_TRUE(Reply(c[0], SagaReply::Outcome::kOk));
  c = Flush();  // step 1 attempt 1
  ASSERT_EQ(c.size(), 1u);
  // Each attempt times out; retries follow (after a jittered backoff that may be zero) until
  // max_attempts (3) attempts were made.
  std::vector<uint32_t> attempts;
  while (c.empty() || c[0].kind == SagaCommandKind::kAction) {
    for (const OutCommand& cmd : c) attempts.push_back(cmd.attempt);
    if (!c.empty() || attempts.empty()) {
      std::vector<SagaTimerInfo> timers = machine_.Timers(10);
      ASSERT_EQ(timers.size(), 1u);
    }
    FireNext();
    c = Flush();
  }
  EXPECT_EQ(attempts, (std::vector<uint32_t>{1, 2, 3}));
  // A late success of the timed-out action is ignored now.
  OutCommand late = c[0];
  late.kind = SagaCommandKind::kAction;
  late.attempt = 2;
  EXPECT_FALSE(Reply(late, SagaReply::Outcome::kOk));
  ASSERT_TRUE(Reply(c[0], SagaReply::Outcome::kOk, false));  // fenced: it never applied
  c = Flush();
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0].step, 0u);
  ASSERT_TRUE(Reply(c[0], SagaReply::Outcome::kOk, true));
  EXPECT_EQ(Info(id).summary.state, SagaState::kCompensated);
  EXPECT_EQ(machine_.stats().timeouts, 3u);
  ExpectReplayMatches(id);
}

TEST_F(MachineTest, DuplicateAndStaleRepliesAreIgnored) {
  const std::string id = Start();
  auto c = Flush();
  EXPECT_TRUE(Reply(c[0], SagaReply::Outcome::kOk));
  EXPECT_FALSE(Reply(c[0], SagaReply::Outcome::kOk));      // duplicate
  EXPECT_FALSE(Reply(c[0], SagaReply::Outcome::kFailed));  // stale, other outcome
  auto next = Flush();
  ASSERT_EQ(next.size(), 1u);
  OutCommand future = next[0];
  future.attempt = 5;  // an attempt that was never sent
  EXPECT_FALSE(Reply(future, SagaReply::Outcome::kOk));
  OutCommand other = next[0];
  other.saga_id = "nobody";
  EXPECT_FALSE(Reply(other, SagaReply::Outcome::kOk));
  EXPECT_EQ(Info(id).steps[1].state, SagaStepState::kActive);
}

TEST_F(MachineTest, OldAttemptSuccessCountsButOldTransientFailureDoesNot) {
  Start();
  auto c = Flush();
  OutCommand first = c[0];
  FireNext();  // timeout of attempt 1
  FireNext();  // retry: attempt 2
  c = Flush();
  ASSERT_EQ(c[0].attempt, 2u);
  EXPECT_FALSE(Reply(first, SagaReply::Outcome::kRetry, false, UnavailableError("busy")));
  EXPECT_TRUE(Reply(first, SagaReply::Outcome::kOk));  // the participant's answer is per step
  c = Flush();
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0].step, 1u);
}

TEST_F(MachineTest, PivotTimeoutIsFencedAndAnAppliedPivotCompletes) {
  const std::string id = Start();
  auto c = Flush();
  ASSERT_TRUE(Reply(c[0], SagaReply::Outcome::kOk));
  c = Flush();
  ASSERT_TRUE(Reply(c[0], SagaReply::Outcome::kOk));
  c = Flush();
  ASSERT_EQ(c[0].step, 2u);  // the pivot
  for (int i = 0; i < 3; ++i) {
    FireNext();             // timeout
    if (i < 2) FireNext();  // retry
  }
  c = Flush();
  ASSERT_GE(c.size(), 1u);
  const OutCommand fence = c.back();
  EXPECT_EQ(fence.step, 2u);
  EXPECT_EQ(fence.kind, SagaCommandKind::kCancel);
  // The participant says the pivot had applied: the saga goes forward.
  ASSERT_TRUE(Reply(fence, SagaReply::Outcome::kOk, true));
  c = Flush();
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0].step, 3u);
  EXPECT_EQ(c[0].kind, SagaCommandKind::kAction);
  EXPECT_EQ(Info(id).summary.state, SagaState::kRunning);
  // Past the pivot the saga cannot be cancelled.
  EXPECT_EQ(machine_.Cancel(id, "", now_, &out_).code(), StatusCode::kFailedPrecondition);
  ASSERT_TRUE(Reply(c[0], SagaReply::Outcome::kOk));
  EXPECT_EQ(Info(id).summary.state, SagaState::kCompleted);
  ExpectReplayMatches(id);
}

TEST_F(MachineTest, FencedPivotCompensates) {
  const std::string id = Start();
  auto c = Flush();
  ASSERT_TRUE(Reply(c[0], SagaReply::Outcome::kOk));
  c = Flush();
  ASSERT_TRUE(Reply(c[0], SagaReply::Outcome::kOk));
  c = Flush();  // pivot attempt 1 outstanding
  ASSERT_TRUE(machine_.Cancel(id, "operator", now_, &out_).ok());
  c = Flush();
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0].kind, SagaCommandKind::kCancel);
  ASSERT_TRUE(Reply(c[0], SagaReply::Outcome::kOk, false));
  c = Flush();
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0].step, 1u);
  EXPECT_EQ(c[0].kind, SagaCommandKind::kCompensate);
  ASSERT_TRUE(Reply(c[0], SagaReply::Outcome::kOk));
  c = Flush();
  ASSERT_TRUE(Reply(c[0], SagaReply::Outcome::kOk));
  SagaInfo info = Info(id);
  EXPECT_EQ(info.summary.state, SagaState::kCompensated);
  EXPECT_NE(info.error.find("operator"), std::string::npos);
  // Cancelling again is OK (idempotent).
  EXPECT_TRUE(machine_.Cancel(id, "", now_, &out_).ok());
  ExpectReplayMatches(id);
}

TEST_F(MachineTest, StepsAfterThePivotAndCompensationsAreRetriedWithoutBound) {
  const std::string id = Start();
  for (int i = 0; i < 3; ++i) {
    auto c = Flush();
    ASSERT_TRUE(Reply(c[0], SagaReply::Outcome::kOk));
  }
  auto c = Flush();
  ASSERT_EQ(c[0].step, 3u);
  ASSERT_TRUE(c[0].retriable);
  // Even a "refusal" of a retriable step is retried, past max_attempts (3): stuck, not failed.
  for (uint32_t attempt = 1; attempt <= 6; ++attempt) {
    ASSERT_EQ(c.size(), 1u);
    ASSERT_EQ(c[0].attempt, attempt);
    ASSERT_TRUE(Reply(c[0], SagaReply::Outcome::kFailed, false, FailedPreconditionError("no")));
    EXPECT_EQ(Info(id).summary.stuck, attempt >= 3);
    FireNext();
    c = Flush();
  }
  ASSERT_TRUE(Reply(c[0], SagaReply::Outcome::kOk));
  SagaInfo info = Info(id);
  EXPECT_EQ(info.summary.state, SagaState::kCompleted);
  EXPECT_FALSE(info.summary.stuck);
  ExpectReplayMatches(id);
}

TEST_F(MachineTest, TimersCanBeListedRescheduledAndCancelled) {
  const std::string id = Start();
  Flush();
  std::vector<SagaTimerInfo> timers = machine_.Timers(10);
  ASSERT_EQ(timers.size(), 1u);
  EXPECT_EQ(timers[0].kind, SagaTimerKind::kStepTimeout);
  EXPECT_EQ(timers[0].due_micros, now_ + 1000 * 1000);
  // Move it far out: nothing fires at the old time.
  ASSERT_TRUE(
      machine_.RescheduleTimer(id, SagaTimerKind::kStepTimeout, now_ + 50'000'000, now_, &out_)
          .ok());
  EXPECT_EQ(machine_.Tick(now_ + 2'000'000, &out_), 0u);
  EXPECT_EQ(*machine_.next_due(), now_ + 50'000'000);
  // Cancel it: no timer left; the step waits for its reply.
  ASSERT_TRUE(machine_.CancelTimer(id, SagaTimerKind::kStepTimeout, now_, &out_).ok());
  EXPECT_TRUE(machine_.Timers(10).empty());
  EXPECT_EQ(machine_.CancelTimer(id, SagaTimerKind::kStepTimeout, now_, &out_).code(),
            StatusCode::kNotFound);
  EXPECT_EQ(machine_.RescheduleTimer(id, SagaTimerKind::kRetry, now_, now_, &out_).code(),
            StatusCode::kNotFound);
  EXPECT_EQ(machine_.RescheduleTimer("nobody", SagaTimerKind::kRetry, now_, now_, &out_).code(),
            StatusCode::kNotFound);
  ExpectReplayMatches(id);
}

TEST_F(MachineTest, DeadlineAbortsBeforeThePivotOnly) {
  SagaDefinition d = OrderSaga();
  d.name = "quick";
  d.deadline_ms = 5000;
  ASSERT_TRUE(machine_.AddDefinition(d, now_, &out_).ok());
  Flush();
  SagaStartRequest req;
  req.definition = "quick";
  req.id = "q1";
  ASSERT_TRUE(machine_.Start(req, now_, &out_).ok());
  auto c = Flush();
  // Keep the step's timeout out of the way; the deadline fires first.
  ASSERT_TRUE(machine_.CancelTimer("q1", SagaTimerKind::kStepTimeout, now_, &out_).ok());
  Flush();
  std::vector<SagaTimerInfo> timers = machine_.Timers(10);
  ASSERT_EQ(timers.size(), 1u);
  EXPECT_EQ(timers[0].kind, SagaTimerKind::kDeadline);
  FireNext();
  c = Flush();
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0].kind, SagaCommandKind::kCompensate);
  EXPECT_EQ(Info("q1").summary.state, SagaState::kCompensating);
  ExpectReplayMatches("q1");
}

TEST_F(MachineTest, InstancesKeepTheirVersion) {
  const std::string id = Start("v1-saga");
  Flush();
  SagaDefinition v2 = OrderSaga(2);
  v2.steps.erase(v2.steps.begin());  // v2 drops the stock reservation
  ASSERT_TRUE(machine_.AddDefinition(v2, now_, &out_).ok());
  Flush();
  // The same (name, version) with other content is refused.
  EXPECT_EQ(machine_.AddDefinition(OrderSaga(2), now_, &out_).code(), StatusCode::kAlreadyExists);
  EXPECT_TRUE(machine_.AddDefinition(OrderSaga(1), now_, &out_).ok());
  const std::string id2 = Start("v2-saga");
  auto c = Flush();
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0].def->version, 2u);
  EXPECT_EQ(c[0].def->steps[c[0].step].name, "reserve-credit");
  EXPECT_EQ(Info(id).summary.version, 1u);
  EXPECT_EQ(Info(id2).summary.version, 2u);
  EXPECT_EQ(Info(id).steps.size(), 4u);
  EXPECT_EQ(Info(id2).steps.size(), 3u);
  // Start with an explicit old version.
  SagaStartRequest req;
  req.definition = "order";
  req.version = 1;
  req.id = "old";
  ASSERT_TRUE(machine_.Start(req, now_, &out_).ok());
  EXPECT_EQ(Info("old").summary.version, 1u);
  req.version = 9;
  req.id = "none";
  EXPECT_EQ(machine_.Start(req, now_, &out_).status().code(), StatusCode::kNotFound);
}

TEST_F(MachineTest, StartIsIdempotentPerId) {
  Start("same");
  Flush();
  SagaStartRequest req;
  req.definition = "order";
  req.id = "same";
  Result<std::string> again = machine_.Start(req, now_, &out_);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(out_.records, 0u);
  req.definition = "other";
  EXPECT_EQ(machine_.Start(req, now_, &out_).status().code(), StatusCode::kAlreadyExists);
  req.id = "bad id!";
  EXPECT_EQ(machine_.Start(req, now_, &out_).status().code(), StatusCode::kInvalidArgument);
}

TEST_F(MachineTest, SnapshotRestoresEverything) {
  Start("a");
  auto c = Flush();
  ASSERT_TRUE(Reply(c[0], SagaReply::Outcome::kOk));
  Start("b");
  c = Flush();
  for (const OutCommand& cmd : c) {
    if (cmd.saga_id == "b") {
      ASSERT_TRUE(Reply(cmd, SagaReply::Outcome::kFailed, false, FailedPreconditionError("x")));
    }
  }
  Flush();
  std::string base;
  machine_.Snapshot(now_, &base);
  SagaMachine fresh(env_.random(), saga_internal::MachineOptions{});
  saga_internal::FrameReader reader(base);
  std::string_view payload;
  while (reader.Next(&payload)) {
    ASSERT_TRUE(fresh.Replay(saga_internal::DecodePayload(payload).value()).ok());
  }
  for (const char* id : {"a", "b"}) {
    SagaInfo x = Info(id);
    SagaInfo y = fresh.Describe(id).value();
    EXPECT_EQ(x.summary.state, y.summary.state);
    EXPECT_EQ(x.summary.step, y.summary.step);
    EXPECT_EQ(x.history.size(), y.history.size());
    EXPECT_EQ(x.data, y.data);
  }
  EXPECT_EQ(fresh.next_due(), machine_.next_due());
  EXPECT_EQ(fresh.Definitions().size(), 1u);
  MachineOutput resumed;
  fresh.Resume(now_, &resumed);
  EXPECT_EQ(resumed.commands.size(), 1u);  // a's outstanding step 1
  EXPECT_EQ(resumed.records, 0u);
}

// Issue 21: the saga's trace context is in the log (the kStarted record and checkpoints), so
// commands sent after a restart or a compaction stay in the start's trace; logs written
// before it (no trace in kStarted) still replay.
TEST_F(MachineTest, TheTraceContextIsLoggedAndEveryCommandCarriesIt) {
  const std::string start = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  SagaStartRequest req;
  req.definition = "order";
  req.id = "traced";
  req.traceparent = start;
  ASSERT_TRUE(machine_.Start(req, now_, &out_).ok());
  std::vector<OutCommand> c = Flush();
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0].traceparent.view().substr(0, 36), start.substr(0, 36));
  EXPECT_EQ(Info("traced").traceparent, start);
  const std::string first(c[0].traceparent.view());
  ASSERT_TRUE(Reply(c[0], SagaReply::Outcome::kOk));
  c = Flush();
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0].traceparent.view().substr(0, 36), start.substr(0, 36));
  EXPECT_NE(c[0].traceparent.view(), first);

  // Replayed from the records, and from a snapshot: the same context, the same command.
  for (bool snapshot : {false, true}) {
    std::string records = wal_;
    if (snapshot) {
      records.clear();
      machine_.Snapshot(now_, &records);
    }
    SagaMachine fresh(env_.random(), saga_internal::MachineOptions{});
    saga_internal::FrameReader reader(records);
    std::string_view payload;
    while (reader.Next(&payload)) {
      ASSERT_TRUE(fresh.Replay(saga_internal::DecodePayload(payload).value()).ok());
    }
    EXPECT_EQ(fresh.Describe("traced").value().traceparent, start) << snapshot;
    MachineOutput resumed;
    fresh.Resume(now_, &resumed);
    ASSERT_EQ(resumed.commands.size(), 1u);
    EXPECT_EQ(resumed.commands[0].traceparent.view(), c[0].traceparent.view()) << snapshot;
  }

  // A saga of an older log: its kStarted record has no trace; it has none and neither do its
  // commands.
  std::string old;
  RecordView def;
  def.type = RecordType::kDefinition;
  const std::string def_json = OrderSaga().ToJson();
  def.a = def_json;
  saga_internal::AppendRecord(def, &old);
  RecordView r;
  r.type = RecordType::kStarted;
  r.time_micros = now_;
  r.saga_id = "old";
  r.a = "order";
  r.version = 1;
  r.b = "{}";
  saga_internal::AppendRecord(r, &old);
  SagaMachine fresh(env_.random(), saga_internal::MachineOptions{});
  saga_internal::FrameReader reader(old);
  std::string_view payload;
  while (reader.Next(&payload)) {
    ASSERT_TRUE(fresh.Replay(saga_internal::DecodePayload(payload).value()).ok());
  }
  EXPECT_EQ(fresh.Describe("old").value().traceparent, "");
  MachineOutput resumed;
  fresh.Resume(now_, &resumed);
  ASSERT_EQ(resumed.commands.size(), 1u);
  EXPECT_TRUE(resumed.commands[0].traceparent.empty());
}

class ReportingMachineTest : public MachineTest {
 protected:
  ReportingMachineTest() : MachineTest(Reporting()) {}
  static saga_internal::MachineOptions Reporting() {
    saga_internal::MachineOptions options;
    options.report_steps = true;
    return options;
  }
};

TEST_F(ReportingMachineTest, StepOutcomesAndFailuresAreReported) {
  Start("ok");
  std::vector<OutCommand> c = Flush();
  now_ += 1500;
  ASSERT_TRUE(Reply(c[0], SagaReply::Outcome::kOk));
  ASSERT_EQ(out_.steps.size(), 1u);
  EXPECT_EQ(out_.steps[0].definition, "order");
  EXPECT_EQ(out_.steps[0].step, "reserve-stock");
  EXPECT_EQ(out_.steps[0].kind, SagaCommandKind::kAction);
  EXPECT_TRUE(out_.steps[0].ok);
  EXPECT_EQ(out_.steps[0].duration_micros, 1500);
  c = Flush();
  ASSERT_TRUE(Reply(c[0], SagaReply::Outcome::kFailed, false, FailedPreconditionError("no")));
  ASSERT_EQ(out_.steps.size(), 1u);
  EXPECT_EQ(out_.steps[0].step, "reserve-credit");
  EXPECT_FALSE(out_.steps[0].ok);
  EXPECT_EQ(machine_.stats().failed, 1u);
  c = Flush();
  ASSERT_EQ(c.size(), 1u);
  ASSERT_EQ(c[0].kind, SagaCommandKind::kCompensate);
  ASSERT_TRUE(Reply(c[0], SagaReply::Outcome::kOk));
  ASSERT_EQ(out_.steps.size(), 1u);
  EXPECT_EQ(out_.steps[0].kind, SagaCommandKind::kCompensate);
  EXPECT_TRUE(out_.steps[0].ok);
  Flush();
  EXPECT_EQ(Info("ok").summary.state, SagaState::kCompensated);
  // A cancel is not a failure.
  Start("cancelled");
  Flush();
  ASSERT_TRUE(machine_.Cancel("cancelled", "operator", now_, &out_).ok());
  EXPECT_EQ(machine_.stats().failed, 1u);
}

TEST_F(MachineTest, FinishedInstancesAreRetainedWithinBounds) {
  SagaMachine small(env_.random(), saga_internal::MachineOptions{64, 2, 1000, 100, 1024});
  ASSERT_TRUE(small.AddDefinition(OrderSaga(), now_, &out_).ok());
  out_.Clear();
  for (int i = 0; i < 5; ++i) {
    SagaStartRequest req;
    req.definition = "order";
    req.id = "s" + std::to_string(i);
    ASSERT_TRUE(small.Start(req, now_, &out_).ok());
    ASSERT_TRUE(small.Cancel(req.id, "", now_, &out_).ok());
    for (const OutCommand& c : out_.commands) {
      SagaReply r;
      r.saga_id = c.saga_id;
      r.step = c.step;
      r.kind = c.kind;
      r.attempt = c.attempt;
      if (c.kind == SagaCommandKind::kCompensate) small.OnReply(r, now_, &out_);
    }
    out_.commands.clear();
  }
  EXPECT_EQ(small.List(SagaListFilter{}, now_).size(), 2u);
  EXPECT_FALSE(small.Describe("s0").ok());
  EXPECT_TRUE(small.Describe("s4").ok());
}

// ---------------------------------------------------------------------------------------
// Participant logic

class ParticipantCoreTest : public ::testing::Test {
 protected:
  ParticipantCoreTest() : env_(3), ledger_(NewMemorySagaLedger(env_.clock())), core_(*ledger_) {
    core_.Handle("reserve", [this](const SagaCommand& c, std::string* result) {
      if (refuse_) return FailedPreconditionError("sold out");
      if (transient_) return UnavailableError("busy");
      ++applied_[std::string(c.saga_id)];
      *result = "r-" + std::string(c.saga_id);
      return Status::Ok();
    });
    core_.Handle("release", [this](const SagaCommand& c, std::string*) {
      --applied_[std::string(c.saga_id)];
      return Status::Ok();
    });
  }

  SagaCommand Cmd(SagaCommandKind kind, std::string_view type, uint32_t attempt = 1) {
    SagaCommand c;
    c.saga_id = "s";
    c.step = 0;
    c.kind = kind;
    c.type = type;
    c.attempt = attempt;
    return c;
  }

  sim::SimEnv env_;
  std::unique_ptr<SagaLedger> ledger_;
  SagaParticipantCore core_;
  std::map<std::string, int> applied_;
  bool refuse_ = false;
  bool transient_ = false;
};

TEST_F(ParticipantCoreTest, DuplicateActionsApplyOnce) {
  SagaReply a = core_.Process(Cmd(SagaCommandKind::kAction, "reserve"));
  EXPECT_EQ(a.outcome, SagaReply::Outcome::kOk);
  EXPECT_EQ(a.result, "r-s");
  SagaReply b = core_.Process(Cmd(SagaCommandKind::kAction, "reserve", 2));
  EXPECT_EQ(b.outcome, SagaReply::Outcome::kOk);
  EXPECT_EQ(b.result, "r-s");
  EXPECT_EQ(b.attempt, 2u);
  EXPECT_EQ(applied_["s"], 1);
  SagaReply c = core_.Process(Cmd(SagaCommandKind::kCompensate, "release"));
  EXPECT_TRUE(c.applied);
  SagaReply d = core_.Process(Cmd(SagaCommandKind::kCompensate, "release", 2));
  EXPECT_TRUE(d.applied);
  EXPECT_EQ(applied_["s"], 0);
  // A late action after the compensation is refused and applies nothing.
  SagaReply late = core_.Process(Cmd(SagaCommandKind::kAction, "reserve", 1));
  EXPECT_EQ(late.outcome, SagaReply::Outcome::kFailed);
  EXPECT_EQ(applied_["s"], 0);
}

// Issue 21: a participant's reply stays in the command's trace (same trace id and flags, a span
// of its own); no or a malformed traceparent on the command gives none on the reply.
TEST_F(ParticipantCoreTest, RepliesKeepTheCommandsTraceId) {
  SagaCommand c = Cmd(SagaCommandKind::kAction, "reserve");
  const std::string tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-1111111111111111-01";
  c.traceparent = tp;
  SagaReply r = core_.Process(c);
  ASSERT_TRUE(TraceParent::Parse(r.traceparent).ok()) << r.traceparent;
  EXPECT_EQ(r.traceparent.substr(0, 36), tp.substr(0, 36));
  EXPECT_EQ(r.traceparent.substr(52), "-01");
  EXPECT_NE(r.traceparent.substr(36, 16), tp.substr(36, 16));
  c.traceparent = "";
  EXPECT_EQ(core_.Process(c).traceparent, "");
  c.traceparent = "00-zz";
  EXPECT_EQ(core_.Process(c).traceparent, "");
}

TEST_F(ParticipantCoreTest, CompensationBeforeActionFencesIt) {
  SagaReply c = core_.Process(Cmd(SagaCommandKind::kCompensate, "release"));
  EXPECT_EQ(c.outcome, SagaReply::Outcome::kOk);
  EXPECT_FALSE(c.applied);
  SagaReply late = core_.Process(Cmd(SagaCommandKind::kAction, "reserve"));
  EXPECT_EQ(late.outcome, SagaReply::Outcome::kFailed);
  EXPECT_EQ(applied_["s"], 0);
}

TEST_F(ParticipantCoreTest, RefusalIsRememberedTransientFailureIsNot) {
  transient_ = true;
  EXPECT_EQ(core_.Process(Cmd(SagaCommandKind::kAction, "reserve")).outcome,
            SagaReply::Outcome::kRetry);
  transient_ = false;
  refuse_ = true;
  SagaReply r = core_.Process(Cmd(SagaCommandKind::kAction, "reserve", 2));
  EXPECT_EQ(r.outcome, SagaReply::Outcome::kFailed);
  EXPECT_EQ(r.status.code(), StatusCode::kFailedPrecondition);
  refuse_ = false;
  EXPECT_EQ(core_.Process(Cmd(SagaCommandKind::kAction, "reserve", 3)).outcome,
            SagaReply::Outcome::kFailed);
  EXPECT_EQ(applied_["s"], 0);
}

TEST_F(ParticipantCoreTest, CancelReportsWhetherThePivotApplied) {
  SagaReply a = core_.Process(Cmd(SagaCommandKind::kAction, "reserve"));
  ASSERT_EQ(a.outcome, SagaReply::Outcome::kOk);
  SagaReply c = core_.Process(Cmd(SagaCommandKind::kCancel, "converge.saga.cancel"));
  EXPECT_EQ(c.outcome, SagaReply::Outcome::kOk);
  EXPECT_TRUE(c.applied);
  SagaCommand other = Cmd(SagaCommandKind::kCancel, "converge.saga.cancel");
  other.saga_id = "t";
  SagaReply f = core_.Process(other);
  EXPECT_FALSE(f.applied);
  other.kind = SagaCommandKind::kAction;
  other.type = "reserve";
  EXPECT_EQ(core_.Process(other).outcome, SagaReply::Outcome::kFailed);
}

// ---------------------------------------------------------------------------------------
// The SQL ledger (SQLite): the effect and the ledger entry commit together

class SqlLedgerTest : public ::testing::Test {
 protected:
  SqlLedgerTest() {
    path_ = (std::filesystem::temp_directory_path() /
             ("converge-ledger-" + std::to_string(::getpid()) + ".db"))
                .string();
    Cleanup();
    ledger_ = SqlSagaLedger::OpenSqlite(Env::Default(), path_, {}).value();
    core_ = std::make_unique<SagaParticipantCore>(*ledger_);
    SqlSagaLedger* l = ledger_.get();
    core_->Handle("hold", [this, l](const SagaCommand& c, std::string* result) {
      if (first_) {
        first_ = false;
        std::vector<SqlStatement> ddl = {
            {"CREATE TABLE IF NOT EXISTS holds(saga TEXT PRIMARY KEY)", {}}};
        CONVERGE_RETURN_IF_ERROR(l->Execute(ddl));
      }
      std::vector<SqlStatement> w = {
          {"INSERT INTO holds(saga) VALUES($1)", {std::string(c.saga_id)}}};
      CONVERGE_RETURN_IF_ERROR(l->Execute(w));
      if (refuse_after_effect_) return FailedPreconditionError("sold out");
      if (transient_after_effect_) return UnavailableError("busy");
      *result = "held";
      return Status::Ok();
    });
    core_->Handle("unhold", [l](const SagaCommand& c, std::string*) {
      std::vector<SqlStatement> w = {
          {"DELETE FROM holds WHERE saga = $1", {std::string(c.saga_id)}}};
      return l->Execute(w);
    });
  }
  ~SqlLedgerTest() override {
    core_.reset();
    ledger_.reset();
    Cleanup();
  }
  void Cleanup() {
    for (const char* suffix : {"", "-wal", "-shm"}) std::filesystem::remove(path_ + suffix);
  }
  int Holds(const std::string& saga) {
    sqlite3* db = nullptr;
    sqlite3_open(path_.c_str(), &db);
    sqlite3_stmt* st = nullptr;
    int n = -1;
    if (sqlite3_prepare_v2(db, "SELECT count(*) FROM holds WHERE saga = ?1", -1, &st, nullptr) ==
        SQLITE_OK) {
      sqlite3_bind_text(st, 1, saga.c_str(), -1, SQLITE_TRANSIENT);
      if (sqlite3_step(st) == SQLITE_ROW) n = sqlite3_column_int(st, 0);
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
  }
  SagaCommand Cmd(const char* saga, SagaCommandKind kind, const char* type) {
    SagaCommand c;
    c.saga_id = saga;
    c.kind = kind;
    c.type = type;
    c.attempt = 1;
    return c;
  }

  std::string path_;
  std::unique_ptr<SqlSagaLedger> ledger_;
  std::unique_ptr<SagaParticipantCore> core_;
  bool first_ = true;
  bool refuse_after_effect_ = false;
  bool transient_after_effect_ = false;
};

TEST_F(SqlLedgerTest, EffectAndEntryCommitTogether) {
  EXPECT_EQ(core_->Process(Cmd("s1", SagaCommandKind::kAction, "hold")).outcome,
            SagaReply::Outcome::kOk);
  SagaReply again = core_->Process(Cmd("s1", SagaCommandKind::kAction, "hold"));
  EXPECT_EQ(again.outcome, SagaReply::Outcome::kOk);
  EXPECT_EQ(again.result, "held");
  EXPECT_EQ(Holds("s1"), 1);  // a duplicate did not run the handler again
  SagaReply undo = core_->Process(Cmd("s1", SagaCommandKind::kCompensate, "unhold"));
  EXPECT_TRUE(undo.applied);
  EXPECT_EQ(Holds("s1"), 0);
  // A late action after the compensation is refused and applies nothing.
  EXPECT_EQ(core_->Process(Cmd("s1", SagaCommandKind::kAction, "hold")).outcome,
            SagaReply::Outcome::kFailed);
  EXPECT_EQ(Holds("s1"), 0);
}

TEST_F(SqlLedgerTest, ARefusalRollsBackTheHandlersStatements) {
  ASSERT_EQ(core_->Process(Cmd("s0", SagaCommandKind::kAction, "hold")).outcome,
            SagaReply::Outcome::kOk);  // creates the table
  refuse_after_effect_ = true;
  SagaReply r = core_->Process(Cmd("s2", SagaCommandKind::kAction, "hold"));
  EXPECT_EQ(r.outcome, SagaReply::Outcome::kFailed);
  EXPECT_EQ(Holds("s2"), 0);
  refuse_after_effect_ = false;
  // The refusal is remembered.
  EXPECT_EQ(core_->Process(Cmd("s2", SagaCommandKind::kAction, "hold")).outcome,
            SagaReply::Outcome::kFailed);
  EXPECT_EQ(Holds("s2"), 0);
  // A transient failure stores nothing at all: the next attempt applies.
  transient_after_effect_ = true;
  EXPECT_EQ(core_->Process(Cmd("s3", SagaCommandKind::kAction, "hold")).outcome,
            SagaReply::Outcome::kRetry);
  EXPECT_EQ(Holds("s3"), 0);
  transient_after_effect_ = false;
  EXPECT_EQ(core_->Process(Cmd("s3", SagaCommandKind::kAction, "hold")).outcome,
            SagaReply::Outcome::kOk);
  EXPECT_EQ(Holds("s3"), 1);
  // Fenced before the action: nothing is ever applied.
  EXPECT_FALSE(core_->Process(Cmd("s4", SagaCommandKind::kCompensate, "unhold")).applied);
  EXPECT_EQ(core_->Process(Cmd("s4", SagaCommandKind::kAction, "hold")).outcome,
            SagaReply::Outcome::kFailed);
  EXPECT_EQ(Holds("s4"), 0);
  // Execute outside a transaction is refused.
  std::vector<SqlStatement> w = {{"SELECT 1", {}}};
  EXPECT_EQ(ledger_->Execute(w).code(), StatusCode::kFailedPrecondition);
}

TEST_F(SqlLedgerTest, EntriesSurviveReopening) {
  ASSERT_EQ(core_->Process(Cmd("s5", SagaCommandKind::kAction, "hold")).outcome,
            SagaReply::Outcome::kOk);
  core_.reset();
  ledger_.reset();
  ledger_ = SqlSagaLedger::OpenSqlite(Env::Default(), path_, {}).value();
  SagaParticipantCore core(*ledger_);
  core.Handle("hold", [](const SagaCommand&, std::string*) {
    ADD_FAILURE() << "the handler ran again after a restart";
    return Status::Ok();
  });
  EXPECT_EQ(core.Process(Cmd("s5", SagaCommandKind::kAction, "hold")).outcome,
            SagaReply::Outcome::kOk);
  EXPECT_EQ(Holds("s5"), 1);
}

// ---------------------------------------------------------------------------------------
// The saga log file

TEST(RecordLogTest, RollsSegmentsAndRebases) {
  sim::SimEnv env(9);
  saga_internal::RecordLogOptions o;
  o.dir = "/saga";
  o.segment_max_bytes = 200;
  std::vector<std::string> seen;
  auto replay = [&](std::string_view payload) {
    seen.emplace_back(saga_internal::DecodePayload(payload)->a);
    return Status::Ok();
  };
  {
    auto log = saga_internal::RecordLog::Open(env, o, replay, nullptr).value();
    for (int i = 0; i < 20; ++i) {
      std::string rec;
      RecordView r;
      r.type = RecordType::kAbort;
      r.saga_id = "s";
      const std::string reason = "reason-" + std::to_string(i) + std::string(40, 'x');
      r.a = reason;  // a view: the string must outlive AppendRecord
      saga_internal::AppendRecord(r, &rec);
      ASSERT_TRUE(log->Append(rec).ok());
      ASSERT_TRUE(log->Sync().ok());
    }
  }
  EXPECT_GT(env.fs().ListDir("/saga").value().size(), 3u);
  {
    seen.clear();
    saga_internal::RecordLogRecovery rec;
    auto log = saga_internal::RecordLog::Open(env, o, replay, &rec).value();
    EXPECT_EQ(seen.size(), 20u);
    EXPECT_EQ(rec.records, 20u);
    std::string base;
    RecordView b;
    b.type = RecordType::kBaseBegin;
    saga_internal::AppendRecord(b, &base);
    RecordView d;
    d.type = RecordType::kAbort;
    d.saga_id = "s";
    d.a = "snapshot";
    saga_internal::AppendRecord(d, &base);
    RecordView e;
    e.type = RecordType::kBaseEnd;
    saga_internal::AppendRecord(e, &base);
    ASSERT_TRUE(log->Rebase(base).ok());
    std::string after;
    d.a = "after";
    saga_internal::AppendRecord(d, &after);
    ASSERT_TRUE(log->Append(after).ok());
    ASSERT_TRUE(log->Sync().ok());
  }
  seen.clear();
  auto log = saga_internal::RecordLog::Open(env, o, replay, nullptr).value();
  EXPECT_EQ(seen, (std::vector<std::string>{"", "snapshot", "", "after"}));
  // LOCK plus one segment.
  EXPECT_EQ(env.fs().ListDir("/saga").value().size(), 2u);
}

// A batch that fails to write or sync (a full disk), also one that rolled a segment, and a
// rebase that fails are undone by UndoUnsynced: the files are as the last sync left them,
// the next batch goes on from there, and a reopen replays exactly the synced batches.
TEST(RecordLogTest, UndoUnsyncedCutsBackToTheLastSync) {
  sim::SimEnv sim(10);
  log_testing::FullDiskEnv env(sim);
  saga_internal::RecordLogOptions o;
  o.dir = "/saga";
  o.segment_max_bytes = 200;
  std::vector<std::string> seen;
  auto replay = [&](std::string_view payload) {
    seen.emplace_back(saga_internal::DecodePayload(payload)->a);
    return Status::Ok();
  };
  auto record = [](const std::string& text) {
    std::string rec;
    RecordView r;
    r.type = RecordType::kAbort;
    r.saga_id = "s";
    r.a = text;
    saga_internal::AppendRecord(r, &rec);
    return rec;
  };
  auto log = saga_internal::RecordLog::Open(env, o, replay, nullptr).value();
  std::vector<std::string> synced;
  for (int i = 0; i < 3; ++i) {
    synced.push_back("ok-" + std::to_string(i) + std::string(60, 'x'));
    ASSERT_TRUE(log->Append(record(synced.back())).ok());
    ASSERT_TRUE(log->Sync().ok());
  }
  const auto files = env.fs().ListDir("/saga").value();
  const uint64_t bytes = log->total_bytes();
  // A failed sync, then a failed append into a new segment (the active one is past 200 bytes).
  env.FailSyncs(true);
  EXPECT_FALSE(log->Append(record("lost-1")).ok() && log->Sync().ok());
  ASSERT_TRUE(log->UndoUnsynced().ok());
  env.SetUnlimited();
  env.SetFreeBytes(0);
  EXPECT_FALSE(log->Append(record("lost-2" + std::string(300, 'y'))).ok());
  ASSERT_TRUE(log->UndoUnsynced().ok());
  EXPECT_EQ(env.fs().ListDir("/saga").value(), files);
  EXPECT_EQ(log->total_bytes(), bytes);
  // A rebase that cannot write its snapshot.
  std::string base;
  RecordView b;
  b.type = RecordType::kBaseBegin;
  saga_internal::AppendRecord(b, &base);
  base += record("snapshot");
  b.type = RecordType::kBaseEnd;
  saga_internal::AppendRecord(b, &base);
  EXPECT_FALSE(log->Rebase(base).ok());
  ASSERT_TRUE(log->UndoUnsynced().ok());
  EXPECT_EQ(env.fs().ListDir("/saga").value(), files);

  env.SetUnlimited();
  synced.push_back("after");
  ASSERT_TRUE(log->Append(record("after")).ok());
  ASSERT_TRUE(log->Sync().ok());
  seen.clear();
  ASSERT_TRUE(log->ReplayDurable(replay).ok());
  EXPECT_EQ(seen, synced);
  log.reset();
  seen.clear();
  log = saga_internal::RecordLog::Open(env, o, replay, nullptr).value();
  EXPECT_EQ(seen, synced);
}

TEST(RecordLogTest, TornTailIsCutAndAnIncompleteBaseIsIgnored) {
  sim::SimEnv env(10);
  saga_internal::RecordLogOptions o;
  o.dir = "/saga";
  std::vector<std::string> seen;
  auto replay = [&](std::string_view payload) {
    seen.emplace_back(saga_internal::DecodePayload(payload)->a);
    return Status::Ok();
  };
  RecordView d;
  d.type = RecordType::kAbort;
  d.saga_id = "s";
  {
    auto log = saga_internal::RecordLog::Open(env, o, replay, nullptr).value();
    std::string rec;
    d.a = "kept";
    saga_internal::AppendRecord(d, &rec);
    ASSERT_TRUE(log->Append(rec).ok());
    ASSERT_TRUE(log->Sync().ok());
    rec.clear();
    d.a = "torn";
    saga_internal::AppendRecord(d, &rec);
    ASSERT_TRUE(log->Append(rec.substr(0, rec.size() - 2)).ok());
    ASSERT_TRUE(log->Sync().ok());
    // A compaction that crashed before kBaseEnd.
    auto f = env.fs()
                 .NewWritableFile("/saga/saga-00000000000000000009.log", OpenMode::kCreateNew)
                 .value();
    std::string base;
    RecordView b;
    b.type = RecordType::kBaseBegin;
    saga_internal::AppendRecord(b, &base);
    ASSERT_TRUE(f->Append(base).ok());
    ASSERT_TRUE(f->Sync().ok());
  }
  saga_internal::RecordLogRecovery rec;
  auto log = saga_internal::RecordLog::Open(env, o, replay, &rec).value();
  EXPECT_EQ(seen, (std::vector<std::string>{"kept"}));
  EXPECT_GT(rec.truncated_bytes, 0u);
  EXPECT_FALSE(env.fs().FileExists("/saga/saga-00000000000000000009.log"));
  // The cut is reported with the file and the byte range.
  ASSERT_EQ(rec.reports.size(), 1u);
  EXPECT_NE(rec.reports[0].find("/saga/saga-00000000000000000001.log: bytes ["), std::string::npos)
      << rec.reports[0];
  EXPECT_NE(rec.reports[0].find("cut off"), std::string::npos) << rec.reports[0];
}

// Writes `n` synced abort records of equal size through a fresh RecordLog in `o.dir`.
void WriteAborts(sim::SimEnv& env, const saga_internal::RecordLogOptions& o, int n) {
  auto replay = [](std::string_view) { return Status::Ok(); };
  auto log = saga_internal::RecordLog::Open(env, o, replay, nullptr);
  ASSERT_TRUE(log.ok()) << log.status().ToString();
  for (int i = 0; i < n; ++i) {
    std::string rec;
    RecordView r;
    r.type = RecordType::kAbort;
    r.saga_id = "s";
    const std::string reason = "reason-" + std::to_string(i) + std::string(40, 'x');
    r.a = reason;
    saga_internal::AppendRecord(r, &rec);
    ASSERT_TRUE((*log)->Append(rec).ok());
    ASSERT_TRUE((*log)->Sync().ok());
  }
}

// The read-only view (the saga CLI's snapshot of a live log) reported nothing at such damage
// and showed the sagas without the lost records; it fails naming the range instead, while a
// torn tail of the newest segment (a writer mid-record) still reads as the end.
TEST(RecordLogTest, ReadOnlyViewRefusesDamageInAnOlderSegment) {
  sim::SimEnv env(12);
  saga_internal::RecordLogOptions o;
  o.dir = "/saga";
  o.segment_max_bytes = 200;
  auto replay = [&](std::string_view) { return Status::Ok(); };
  ASSERT_NO_FATAL_FAILURE(WriteAborts(env, o, 20));
  Result<std::vector<std::string>> listed = env.fs().ListDir("/saga");
  ASSERT_TRUE(listed.ok());
  std::vector<std::string> segments;
  for (const std::string& n : *listed) {
    if (n.rfind("saga-", 0) == 0) segments.push_back(n);
  }
  std::sort(segments.begin(), segments.end());
  ASSERT_GE(segments.size(), 3u);
  // A torn tail on the newest segment: still fine.
  const std::string newest = "/saga/" + segments.back();
  {
    auto f = env.fs().NewWritableFile(newest, OpenMode::kAppend).value();
    ASSERT_TRUE(f->Append("\x07\x00").ok());
    ASSERT_TRUE(f->Sync().ok());
  }
  EXPECT_TRUE(saga_internal::RecordLog::ReadOnly(env, o, replay).ok());
  // A damaged byte in the first (older) segment: DataLoss naming the file.
  const std::string first = "/saga/" + segments.front();
  const uint64_t size = env.fs().ReadFileToString(first).value().size();
  Status corrupted = env.sim_fs().CorruptByte(first, size / 4 + 12, 0x20);
  ASSERT_TRUE(corrupted.ok()) << corrupted.ToString() << " size " << size;
  Status s = saga_internal::RecordLog::ReadOnly(env, o, replay);
  EXPECT_EQ(s.code(), StatusCode::kDataLoss) << s.ToString();
  EXPECT_NE(s.ToString().find(first + ": bytes ["), std::string::npos) << s.ToString();
}

// Damage inside an older segment: acknowledged records followed by newer segments. It used to
// skip the rest of that segment without a word; now Open refuses with DataLoss naming the file
// and the byte range, and leaves the files as they are.
TEST(RecordLogTest, DamageInAnOlderSegmentStopsOpenNamingTheRange) {
  sim::SimEnv env(11);
  saga_internal::RecordLogOptions o;
  o.dir = "/saga";
  o.segment_max_bytes = 200;
  auto replay = [&](std::string_view) { return Status::Ok(); };
  ASSERT_NO_FATAL_FAILURE(WriteAborts(env, o, 20));
  const std::string first = "/saga/saga-00000000000000000001.log";
  const uint64_t size = env.fs().ReadFileToString(first).value().size();
  ASSERT_GT(size, 150u);
  // A byte inside the second record's payload. The segment holds the record-log file header
  // and 4 records of equal size.
  const uint64_t header = internal::record_log::kFileHeaderBytes;
  const uint64_t record = header + (size - header) / 4;
  ASSERT_TRUE(env.sim_fs().CorruptByte(first, record + 12, 0x20).ok());
  saga_internal::RecordLogRecovery rec;
  auto log = saga_internal::RecordLog::Open(env, o, replay, &rec);
  ASSERT_FALSE(log.ok());
  EXPECT_EQ(log.status().code(), StatusCode::kDataLoss) << log.status().ToString();
  const std::string range =
      first + ": bytes [" + std::to_string(record) + ", " + std::to_string(size) + ")";
  EXPECT_NE(log.status().ToString().find(range), std::string::npos) << log.status().ToString();
  EXPECT_NE(log.status().ToString().find("truncate -s " + std::to_string(record)),
            std::string::npos)
      << log.status().ToString();
  ASSERT_EQ(rec.reports.size(), 1u);
  EXPECT_EQ(rec.damaged_segments, 1u);
  EXPECT_EQ(env.fs().ReadFileToString(first).value().size(), size);  // nothing cut or deleted

  // Cutting the file where the report says accepts the loss: Open goes on.
  ASSERT_TRUE(env.fs().Truncate(first, record).ok());
  uint64_t replayed = 0;
  auto count = [&](std::string_view) {
    ++replayed;
    return Status::Ok();
  };
  auto reopened = saga_internal::RecordLog::Open(env, o, count, &rec);
  ASSERT_TRUE(reopened.ok()) << reopened.status().ToString();
  EXPECT_EQ(replayed, 17u);  // the three records from the damaged one on are lost
}

// ---------------------------------------------------------------------------------------
// Orchestrator and participants on the simulated Env

using OrchestratorTest = saga_testing::OrchestratorFixture;

TEST_F(OrchestratorTest, SagasRunToCompletionThroughTheLog) {
  ASSERT_TRUE(orch_->RegisterDefinition(OrderSaga()).ok());
  std::vector<std::string> ids;
  for (int i = 0; i < 10; ++i) {
    SagaStartRequest req;
    req.definition = "order";
    req.data = "{\"n\":" + std::to_string(i) + "}";
    Result<std::string> id = orch_->Start(req);
    ASSERT_TRUE(id.ok()) << id.status().ToString();
    ids.push_back(*id);
  }
  env_.RunUntilIdle();
  for (const std::string& id : ids) {
    EXPECT_EQ(finished_[id], SagaState::kCompleted) << id;
    EXPECT_EQ(holdings_[id]["shipping.schedule"], 1);
    SagaInfo info = orch_->Describe(id).value();
    EXPECT_EQ(info.summary.state, SagaState::kCompleted);
    EXPECT_FALSE(info.history.empty());
  }
  SagaOrchestratorStats s = orch_->stats();
  EXPECT_EQ(s.completed, 10u);
  EXPECT_EQ(s.in_flight, 0u);
  EXPECT_EQ(orch_->List(SagaListFilter{}).size(), 10u);
  SagaListFilter running;
  running.state = SagaState::kRunning;
  EXPECT_TRUE(orch_->List(running).empty());
}

// Regression: a log read may return fewer records than are there (at a segment boundary);
// replies and commands behind it were left unread until a step timed out.
class SmallSegmentsTest : public OrchestratorTest {
 protected:
  SmallSegmentsTest() : OrchestratorTest(2048) {}
};

TEST_F(SmallSegmentsTest, EveryMessageIsReadWithoutWaitingForATimeout) {
  ASSERT_TRUE(orch_->RegisterDefinition(OrderSaga()).ok());
  for (int i = 0; i < 200; ++i) {
    SagaStartRequest req;
    req.definition = "order";
    orch_->StartAsync(req, [](Result<std::string> r) { ASSERT_TRUE(r.ok()); });
  }
  env_.RunFor(500'000'000);  // well below the 1 s step timeout
  SagaOrchestratorStats s = orch_->stats();
  EXPECT_EQ(s.completed, 200u);
  EXPECT_EQ(s.timeouts, 0u);
}

TEST_F(OrchestratorTest, RefusalCompensatesThroughTheLog) {
  ASSERT_TRUE(orch_->RegisterDefinition(OrderSaga()).ok());
  refuse_type_ = "orders.confirm";
  SagaStartRequest req;
  req.definition = "order";
  req.id = "o-1";
  ASSERT_TRUE(orch_->Start(req).ok());
  env_.RunUntilIdle();
  EXPECT_EQ(finished_["o-1"], SagaState::kCompensated);
  EXPECT_EQ(holdings_["o-1"]["inventory.reserve"], 0);
  EXPECT_EQ(holdings_["o-1"]["payments.reserve"], 0);
  EXPECT_EQ(holdings_["o-1"]["orders.confirm"], 0);
}

TEST_F(OrchestratorTest, RestartResumesInFlightSagas) {
  ASSERT_TRUE(orch_->RegisterDefinition(OrderSaga()).ok());
  // Participants are down: commands pile up unanswered.
  for (auto& p : participants_) p->Close();
  SagaStartRequest req;
  req.definition = "order";
  req.id = "r-1";
  ASSERT_TRUE(orch_->Start(req).ok());
  env_.RunFor(100'000'000);
  orch_.reset();
  // Participants come back, reading from the end (they missed the first command).
  participants_.clear();
  for (const char* topic : {"inventory", "payments", "orders", "shipping"}) {
    SagaParticipantOptions po;
    po.topic = topic;
    participants_.push_back(SagaParticipant::Start(env_, *log_, *core_, po).value());
  }
  OpenOrchestrator();  // resends step 0
  env_.RunUntilIdle();
  SagaInfo info = orch_->Describe("r-1").value();
  EXPECT_EQ(info.summary.state, SagaState::kCompleted);
  EXPECT_EQ(holdings_["r-1"]["inventory.reserve"], 1);
}

TEST_F(OrchestratorTest, ErrorsAreReported) {
  SagaStartRequest req;
  req.definition = "missing";
  EXPECT_EQ(orch_->Start(req).status().code(), StatusCode::kNotFound);
  ASSERT_TRUE(orch_->RegisterDefinition(OrderSaga()).ok());
  req.definition = "order";
  req.data = "not json";
  EXPECT_EQ(orch_->Start(req).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(orch_->Cancel("nobody", "").code(), StatusCode::kNotFound);
  EXPECT_EQ(orch_->RescheduleTimer("nobody", SagaTimerKind::kRetry, 0).code(),
            StatusCode::kNotFound);
  // A second orchestrator on the same directory is refused.
  SagaOrchestratorOptions o;
  o.dir = "/saga";
  EXPECT_EQ(SagaOrchestrator::Open(env_, *log_, o).status().code(),
            StatusCode::kFailedPrecondition);
}

// A full disk under the saga log (only there: the event log keeps working, so participants
// get commands and reply). Batches that cannot be written are undone: a start is refused with
// Unavailable and leaves no saga, replies read meanwhile are read again, and once there is
// space everything goes on without reopening the orchestrator; after a reopen exactly the
// acknowledged state is there and every step ran once.
TEST_F(OrchestratorTest, ABatchTheSagaLogCannotWriteIsUndoneAndRetried) {
  orch_.reset();
  log_testing::FullDiskEnv disk(env_);
  auto open = [&] {
    SagaOrchestratorOptions o;
    o.dir = "/saga";
    o.topic_options = topic_options_;
    o.on_finished = [this](const SagaSummary& s) { finished_[s.id] = s.state; };
    orch_ = SagaOrchestrator::Open(disk, *log_, o).value();
  };
  open();
  ASSERT_TRUE(orch_->RegisterDefinition(OrderSaga()).ok());
  SagaStartRequest req;
  req.definition = "order";
  req.id = "a";
  ASSERT_TRUE(orch_->Start(req).ok());
  // The first command is sent; its reply arrives while the saga log cannot write.
  disk.SetFreeBytes(0);
  disk.FailSyncs(true);
  env_.RunFor(5'000'000'000);
  EXPECT_FALSE(orch_->Health().ok());
  EXPECT_GT(orch_->stats().write_errors, 0u);
  EXPECT_EQ(orch_->Describe("a").value().summary.state, SagaState::kRunning);
  req.id = "b";
  Result<std::string> refused = orch_->Start(req);
  EXPECT_EQ(refused.status().code(), StatusCode::kUnavailable) << refused.status().ToString();
  EXPECT_EQ(orch_->Describe("b").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(orch_->Cancel("a", "test").code(), StatusCode::kUnavailable);
  EXPECT_EQ(orch_->Describe("a").value().summary.state, SagaState::kRunning);
  EXPECT_TRUE(orch_->Stopped().ok());

  disk.SetUnlimited();
  EXPECT_TRUE(orch_->Health().ok());
  ASSERT_TRUE(orch_->Start(req).ok());
  env_.RunUntilIdle();
  EXPECT_EQ(finished_["a"], SagaState::kCompleted);
  EXPECT_EQ(finished_["b"], SagaState::kCompleted);
  orch_.reset();
  open();
  env_.RunUntilIdle();
  for (const char* id : {"a", "b"}) {
    EXPECT_EQ(orch_->Describe(id).value().summary.state, SagaState::kCompleted) << id;
    EXPECT_EQ(holdings_[id]["shipping.schedule"], 1) << id;
  }
}

TEST_F(OrchestratorTest, DefinitionsSurviveRestartsAndCompaction) {
  ASSERT_TRUE(orch_->RegisterDefinition(OrderSaga(1)).ok());
  ASSERT_TRUE(orch_->RegisterDefinition(OrderSaga(2)).ok());
  orch_.reset();
  SagaOrchestratorOptions o;
  o.dir = "/saga";
  o.compact_after_bytes = 2000;
  orch_ = SagaOrchestrator::Open(env_, *log_, o).value();
  EXPECT_EQ(orch_->ListDefinitions().size(), 2u);
  for (int i = 0; i < 40; ++i) {
    SagaStartRequest req;
    req.definition = "order";
    ASSERT_TRUE(orch_->Start(req).ok());
    env_.RunUntilIdle();
  }
  EXPECT_GT(orch_->stats().compactions, 0u);
  orch_.reset();
  orch_ = SagaOrchestrator::Open(env_, *log_, o).value();
  EXPECT_EQ(orch_->ListDefinitions().size(), 2u);
  EXPECT_EQ(orch_->List(SagaListFilter{}).size(), 40u);
}

// Many threads start sagas with the blocking Start (whoever finds no batch running leads one
// for everybody queued) on the production Env; participants run on the Env's executor.
// Issue #12: every participant may publish to the reply topic, so the orchestrator takes a
// reply only with the token of the command it answers (HMAC of the command id under a key in
// the saga log). Rejected replies change nothing, are counted and show in the history.
TEST_F(OrchestratorTest, RepliesWithoutTheCommandsTokenAreRejectedAndRecorded) {
  ASSERT_TRUE(orch_->RegisterDefinition(OrderSaga()).ok());
  participants_[0]->Close();  // inventory: the command waits in its topic
  SagaStartRequest req;
  req.definition = "order";
  req.id = "t-1";
  ASSERT_TRUE(orch_->Start(req).ok());
  env_.RunFor(1'000'000);
  Result<ReadBatch> cmds = log_->Read("inventory", 0, 0, 10, 1 << 20);
  ASSERT_TRUE(cmds.ok());
  ASSERT_EQ(cmds->records.size(), 1u);
  const std::string command(cmds->records[0].value);
  Result<saga_internal::CommandView> cmd = saga_internal::DecodeCommand(command);
  ASSERT_TRUE(cmd.ok());
  ASSERT_EQ(cmd->command.token.size(), 32u);

  auto append = [&](const SagaReply& r) {
    std::string bytes;
    saga_internal::EncodeReply(r, &bytes);
    converge::RecordView v;
    v.key = r.saga_id;
    v.value = bytes;
    ASSERT_TRUE(log_->Append("saga.replies", std::span<const converge::RecordView>(&v, 1)).ok());
    env_.RunFor(1'000'000);
  };
  SagaReply forged;
  forged.saga_id = "t-1";
  forged.step = 0;
  forged.kind = SagaCommandKind::kAction;
  forged.attempt = 1;
  forged.outcome = SagaReply::Outcome::kFailed;
  forged.status = FailedPreconditionError("forged");
  append(forged);  // no token
  forged.token = std::string(32, '0');
  append(forged);  // a wrong one
  forged.token = saga_internal::ReplyToken("guess", "t-1/0/action/1");
  append(forged);
  SagaInfo info = orch_->Describe("t-1").value();
  EXPECT_EQ(info.summary.state, SagaState::kRunning);
  EXPECT_EQ(info.steps[0].state, SagaStepState::kActive);
  EXPECT_EQ(orch_->stats().replies_bad_token, 3u);
  int rejected = 0;
  for (const SagaHistoryEntry& h : info.history) {
    if (h.event == "reply-rejected") {
      ++rejected;
      EXPECT_EQ(h.step, 0);
      EXPECT_EQ(h.attempt, 1u);
      EXPECT_NE(h.detail.find("bad_token"), std::string::npos) << h.detail;
    }
  }
  // The two wrong tokens make one entry: identical rejections in a row are not repeated.
  EXPECT_EQ(rejected, 2);

  // The participant's reply carries the token (SagaParticipantCore copies it) and is used,
  // also after a restart and a compaction of the saga log (the key is in every snapshot).
  orch_.reset();
  {
    SagaOrchestratorOptions o;
    o.dir = "/saga";
    o.compact_after_bytes = 1;
    orch_ = SagaOrchestrator::Open(env_, *log_, o).value();
    ASSERT_TRUE(orch_->RunOnce().ok());
    ASSERT_GE(orch_->stats().compactions, 1u);
    orch_.reset();
  }
  OpenOrchestrator();
  SagaReply genuine = core_->Process(cmd->command);
  EXPECT_EQ(genuine.token, cmd->command.token);
  append(genuine);
  info = orch_->Describe("t-1").value();
  EXPECT_EQ(info.steps[0].state, SagaStepState::kDone);
  EXPECT_EQ(orch_->stats().replies_bad_token, 0u);  // a new process counts anew
}

// Issue #12: a reply the orchestrator cannot decode is not dropped silently.
TEST_F(OrchestratorTest, UndecodableRepliesAreCountedAndRecorded) {
  ASSERT_TRUE(orch_->RegisterDefinition(OrderSaga()).ok());
  participants_[0]->Close();
  SagaStartRequest req;
  req.definition = "order";
  req.id = "m-1";
  ASSERT_TRUE(orch_->Start(req).ok());
  env_.RunFor(1'000'000);
  Event e;
  e.set_id("m-1/0/action/1/reply");
  e.set_source("/p");
  e.set_type("converge.saga.reply");
  e.SetExtension("sagaid", "m-1");
  e.SetExtension("sagakind", "action");
  e.SetExtension("sagaoutcome", "ok");
  e.SetExtension("sagastep", "zero");
  e.SetExtensionInteger("sagaattempt", 1);
  Event other;
  other.set_id("x");
  other.set_source("/p");
  other.set_type("something.else");
  for (const Event* ev : {&e, &other}) {
    std::string bytes;
    ASSERT_TRUE(EncodeBinary(*ev, &bytes).ok());
    converge::RecordView v;
    v.value = bytes;
    ASSERT_TRUE(log_->Append("saga.replies", std::span<const converge::RecordView>(&v, 1)).ok());
  }
  env_.RunFor(1'000'000);
  SagaOrchestratorStats st = orch_->stats();
  EXPECT_EQ(st.replies_malformed, 1u);
  EXPECT_EQ(st.bad_replies, 2u);
  SagaInfo info = orch_->Describe("m-1").value();
  ASSERT_FALSE(info.history.empty());
  EXPECT_EQ(info.history.back().event, "reply-rejected");
  EXPECT_NE(info.history.back().detail.find("sagastep"), std::string::npos)
      << info.history.back().detail;
  EXPECT_EQ(info.summary.state, SagaState::kRunning);
}

// Issue #12: the participant topics exist once the definition is registered (a participant
// may subscribe before the first command).
TEST_F(OrchestratorTest, RegisteringADefinitionCreatesItsParticipantTopics) {
  SagaDefinition d = SagaDefinitionBuilder("fresh", 1)
                         .Step("a", "fresh-a", "a.do", "a.undo")
                         .Step("b", "fresh-b", "b.do")
                         .Build()
                         .value();
  EXPECT_EQ(log_->DescribeTopic("fresh-a").status().code(), StatusCode::kNotFound);
  ASSERT_TRUE(orch_->RegisterDefinition(d).ok());
  EXPECT_TRUE(log_->DescribeTopic("fresh-a").ok());
  EXPECT_TRUE(log_->DescribeTopic("fresh-b").ok());
}

// Issue #12: a participant that is down for an hour. Compensations (retried without a bound)
// used to get a new command at every step timeout (about 3,400 here); their reply timeout now
// doubles per attempt up to max_attempt_timeout_ms (default 5 minutes).
TEST_F(OrchestratorTest, AParticipantThatIsDownGetsCommandsAtAFallingRate) {
  ASSERT_TRUE(orch_->RegisterDefinition(OrderSaga()).ok());
  for (auto& p : participants_) p->Close();
  SagaStartRequest req;
  req.definition = "order";
  req.id = "down-1";
  ASSERT_TRUE(orch_->Start(req).ok());
  const int64_t hour_ns = 3600LL * 1'000'000'000;
  env_.RunFor(hour_ns);
  Result<TopicInfo> topic = log_->DescribeTopic("inventory");
  ASSERT_TRUE(topic.ok());
  uint64_t commands = 0;
  for (const PartitionInfo& p : topic->partitions) commands += p.end_offset;
  // 3 attempts of the action (max_attempts), then compensations waiting 1, 2, 4, ... 256 s,
  // then 300 s each: about 3 + 9 + 11.
  EXPECT_LE(commands, 30u);
  EXPECT_GE(commands, 10u);
  SagaInfo info = orch_->Describe("down-1").value();
  EXPECT_EQ(info.summary.state, SagaState::kCompensating);
}

// The orchestrator side of sim seed 2505: the last step (after the pivot, retried without a
// bound) gets no usable reply for longer than the sim's old fixed ten-minute limit. Nothing
// is lost meanwhile: the saga keeps a step-timeout timer, due at most max_attempt_timeout_ms
// (5 minutes) ahead, and completes within that once the participant is back (one that starts
// reading at the end of its topic answers the next attempt).
TEST_F(OrchestratorTest, ALastStepWithoutRepliesForMinutesCompletesOnceItsParticipantIsBack) {
  ASSERT_TRUE(orch_->RegisterDefinition(OrderSaga()).ok());
  participants_[3]->Close();  // "shipping", the step after the pivot
  SagaStartRequest req;
  req.definition = "order";
  req.id = "ship-later";
  ASSERT_TRUE(orch_->Start(req).ok());
  const int64_t minute_ns = 60LL * 1'000'000'000;
  env_.RunFor(12 * minute_ns);
  SagaInfo info = orch_->Describe("ship-later").value();
  EXPECT_EQ(info.summary.state, SagaState::kRunning);
  EXPECT_EQ(info.summary.step, 3u);
  EXPECT_GE(info.steps[3].attempts, 8u);
  const int64_t now_micros = env_.clock().NowWallMicros();
  bool timeout_armed = false;
  for (const SagaTimerInfo& t : info.timers) {
    if (t.kind != SagaTimerKind::kStepTimeout && t.kind != SagaTimerKind::kRetry) continue;
    timeout_armed = true;
    EXPECT_LE(t.due_micros, now_micros + 300'000'000LL);
  }
  EXPECT_TRUE(timeout_armed);
  SagaParticipantOptions po;
  po.topic = "shipping";
  po.topic_options = topic_options_;
  participants_[3] = SagaParticipant::Start(env_, *log_, *core_, po).value();
  env_.RunFor(5 * minute_ns + 1'000'000'000);
  EXPECT_EQ(finished_["ship-later"], SagaState::kCompleted);
  EXPECT_EQ(holdings_["ship-later"]["shipping.schedule"], 1);
}

TEST(OrchestratorThreadsTest, ConcurrentBlockingStartsShareBatches) {
  Env& env = Env::Default();
  const std::string dir = std::filesystem::temp_directory_path() /
                          ("converge-saga-threads-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  LogOptions lo;
  lo.dir = dir + "/log";
  auto log = Log::Open(env, lo).value();
  auto ledger = NewMemorySagaLedger(env.clock());
  SagaParticipantCore core(*ledger);
  for (const char* t : {"x.do", "x.undo", "y.do"}) {
    core.Handle(t, [](const SagaCommand&, std::string*) { return Status::Ok(); });
  }
  std::vector<std::unique_ptr<SagaParticipant>> parts;
  for (const char* topic : {"tx", "ty"}) {
    SagaParticipantOptions po;
    po.topic = topic;
    parts.push_back(SagaParticipant::Start(env, *log, core, po).value());
  }
  std::mutex mu;
  std::condition_variable cv;
  int finished = 0;
  SagaOrchestratorOptions o;
  o.dir = dir + "/saga";
  o.on_finished = [&](const SagaSummary& s) {
    std::lock_guard<std::mutex> g(mu);
    if (s.state == SagaState::kCompleted) ++finished;
    cv.notify_all();
  };
  auto orch = SagaOrchestrator::Open(env, *log, o).value();
  ASSERT_TRUE(orch->RegisterDefinition(SagaDefinitionBuilder("t", 1)
                                           .Step("x", "tx", "x.do", "x.undo")
                                           .Step("y", "ty", "y.do")
                                           .Build()
                                           .value())
                  .ok());
  constexpr int kThreads = 4, kEach = 50;
  std::vector<std::thread> threads;
  std::atomic<int> errors{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kEach; ++i) {
        SagaStartRequest req;
        req.definition = "t";
        if (!orch->Start(req).ok()) errors.fetch_add(1);
        if (i % 10 == 0) (void)orch->List(SagaListFilter{});
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(errors.load(), 0);
  {
    std::unique_lock<std::mutex> lock(mu);
    EXPECT_TRUE(
        cv.wait_for(lock, std::chrono::seconds(60), [&] { return finished == kThreads * kEach; }));
  }
  EXPECT_LT(orch->stats().syncs, static_cast<uint64_t>(kThreads * kEach * 3));
  orch.reset();
  parts.clear();
  log.reset();
  std::filesystem::remove_all(dir);
}

// ---------------------------------------------------------------------------------------
// Choreography

ChoreographyDefinition OrderChoreography() {
  ChoreographyDefinition d;
  d.name = "order-flow";
  d.start = "order.placed";
  d.stuck_after_ms = 60'000;
  d.steps = {{"stock", "stock.reserved", "stock.failed", "stock.released"},
             {"payment", "payment.charged", "payment.failed", "payment.refunded"},
             {"shipping", "shipment.scheduled", "", ""}};
  return d;
}

Event MakeEvent(std::string id, std::string type) {
  Event e;
  e.set_id(std::move(id));
  e.set_source("/test");
  e.set_type(std::move(type));
  return e;
}

TEST(ChoreographyTest, FollowCarriesTheCorrelation) {
  Event start = MakeEvent("o-1", "order.placed");
  Event next = Follow(start, "e-2", "/stock", "stock.reserved");
  EXPECT_EQ(CorrelationId(next).value(), "o-1");
  EXPECT_EQ(next.FindExtension("causationid")->value, "o-1");
  Event third = Follow(next, "e-3", "/pay", "payment.charged");
  EXPECT_EQ(CorrelationId(third).value(), "o-1");
  EXPECT_EQ(third.FindExtension("causationid")->value, "e-2");
  EXPECT_TRUE(third.Validate().ok());
}

TEST(ChoreographyTest, ViewFollowsTheSagaInAnyOrder) {
  sim::SimEnv env(4);
  ChoreographyTracker t(env.clock());
  ASSERT_TRUE(t.AddDefinition(OrderChoreography()).ok());
  EXPECT_EQ(t.AddDefinition(OrderChoreography()).code(), StatusCode::kAlreadyExists);
  Event start = MakeEvent("o-1", "order.placed");
  ASSERT_TRUE(t.Observe(start));
  EXPECT_FALSE(t.Observe(MakeEvent("x", "unrelated.type")));
  ASSERT_TRUE(t.Observe(Follow(start, "e1", "/s", "stock.reserved")));
  ASSERT_TRUE(t.Observe(Follow(start, "e1", "/s", "stock.reserved")));  // duplicate
  ChoreographyView v = t.Describe("o-1").value();
  EXPECT_EQ(v.state, ChoreographyState::kRunning);
  EXPECT_TRUE(v.steps[0].done);
  EXPECT_EQ(v.history.size(), 2u);
  // The refund arrives before the failure that caused it; the state settles either way.
  ASSERT_TRUE(t.Observe(Follow(start, "e2", "/p", "payment.charged")));
  ASSERT_TRUE(t.Observe(Follow(start, "e4", "/s", "stock.released")));
  ASSERT_TRUE(t.Observe(Follow(start, "e5", "/p", "payment.refunded")));
  EXPECT_EQ(t.Describe("o-1")->state, ChoreographyState::kRunning);
  ASSERT_TRUE(t.Observe(Follow(start, "e3", "/sh", "stock.failed")));
  EXPECT_EQ(t.Describe("o-1")->state, ChoreographyState::kCompensated);

  Event s2 = MakeEvent("o-2", "order.placed");
  t.Observe(s2);
  t.Observe(Follow(s2, "f1", "/s", "stock.reserved"));
  t.Observe(Follow(s2, "f2", "/p", "payment.failed"));
  EXPECT_EQ(t.Describe("o-2")->state, ChoreographyState::kCompensating);
  EXPECT_FALSE(t.Describe("o-2")->stuck);
  env.AdvanceTime(61'000'000'000);
  EXPECT_TRUE(t.Describe("o-2")->stuck);
  EXPECT_EQ(t.List(std::nullopt, true, 10).size(), 1u);

  Event s3 = MakeEvent("o-3", "order.placed");
  t.Observe(s3);
  for (const char* type : {"stock.reserved", "payment.charged", "shipment.scheduled"}) {
    t.Observe(Follow(s3, std::string("g-") + type, "/x", type));
  }
  EXPECT_EQ(t.Describe("o-3")->state, ChoreographyState::kCompleted);
  EXPECT_EQ(t.List(ChoreographyState::kCompleted, false, 10).size(), 1u);
  EXPECT_EQ(t.in_flight(), 1u);
}

TEST(ChoreographyTest, MonitorBuildsTheViewFromLogTopics) {
  sim::SimEnv env(5);
  LogOptions lo;
  lo.dir = "/log";
  auto log = Log::Open(env, lo).value();
  for (const char* topic : {"orders", "stock"}) ASSERT_TRUE(log->CreateTopic(topic, {}).ok());
  auto append = [&](const std::string& topic, const Event& e) {
    std::string bytes;
    ASSERT_TRUE(EncodeBinary(e, &bytes).ok());
    converge::RecordView r;
    r.value = bytes;
    ASSERT_TRUE(log->Append(topic, std::span<const converge::RecordView>(&r, 1)).ok());
  };
  Event start = MakeEvent("o-9", "order.placed");
  append("orders", start);
  ChoreographyMonitorOptions mo;
  mo.topics = {"orders", "stock"};
  auto monitor = ChoreographyMonitor::Start(env, *log, {OrderChoreography()}, mo).value();
  env.RunUntilIdle();
  EXPECT_EQ(monitor->Describe("o-9")->state, ChoreographyState::kRunning);
  append("stock", Follow(start, "s1", "/stock", "stock.reserved"));
  append("stock", Follow(start, "s2", "/stock", "payment.charged"));
  append("orders", Follow(start, "s3", "/ship", "shipment.scheduled"));
  env.RunUntilIdle();
  EXPECT_EQ(monitor->Describe("o-9")->state, ChoreographyState::kCompleted);
  EXPECT_EQ(monitor->List(std::nullopt, false, 10).size(), 1u);
}

// The saga log in PostgreSQL connects with a bound, in either conninfo form: a server that
// never answers is Unavailable after connect_timeout_ms, not a hang of the orchestrator.
TEST(SagaPostgresLogTest, AServerThatNeverAnswersFailsWithinTheConnectTimeout) {
  for (const bool uri : {false, true}) {
    testing::BlackHoleListener hole;
    ASSERT_TRUE(hole.ok());
    saga_internal::PostgresRecordStoreOptions o;
    o.conninfo = uri ? hole.Uri() : hole.ConnInfo();
    o.connect_timeout_ms = 2'000;
    Status status;
    const int64_t ms = testing::MillisUntilGivenUp(hole, 20'000, [&] {
      status = saga_internal::NewPostgresRecordStore(o, [](std::string_view) {
                 return Status::Ok();
               }).status();
    });
    EXPECT_LT(ms, 8'000) << (uri ? "URI" : "key=value") << ": the connect was not bounded";
    EXPECT_EQ(status.code(), StatusCode::kUnavailable) << status.ToString();
  }
}

TEST(SagaPostgresLogTest, OrchestratorRefusesBadPostgresTimeouts) {
  LogOptions lo;
  SagaOrchestratorOptions o;
  o.postgres_conninfo = "host=127.0.0.1 port=1 dbname=x";
  o.postgres_connect_timeout_ms = 0;
  sim::SimEnv env(1);
  lo.dir = "/log";
  std::unique_ptr<Log> log = Log::Open(env, lo).value();
  EXPECT_EQ(SagaOrchestrator::Open(env, *log, o).status().code(), StatusCode::kInvalidArgument);
  o.postgres_connect_timeout_ms = 1'000;
  o.postgres_statement_timeout_ms = -1;
  EXPECT_EQ(SagaOrchestrator::Open(env, *log, o).status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace converge
