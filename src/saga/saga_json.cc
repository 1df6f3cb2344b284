// The JSON form of saga summaries, instances and timers (converge/saga.h): what the
// server's saga routes answer and what `converge saga --dir` prints.
#include <boost/json.hpp>

#include "converge/saga.h"

namespace converge {
namespace {

namespace json = boost::json;

json::object SummaryJson(const SagaSummary& s) {
  json::object o;
  o["id"] = s.id;
  o["definition"] = s.definition;
  o["version"] = s.version;
  o["state"] = std::string(SagaStateName(s.state));
  o["step"] = s.step;
  o["stuck"] = s.stuck;
  o["started_micros"] = s.started_micros;
  o["updated_micros"] = s.updated_micros;
  return o;
}

json::object TimerJson(const SagaTimerInfo& t) {
  json::object o;
  o["saga_id"] = t.saga_id;
  o["kind"] = std::string(SagaTimerKindName(t.kind));
  o["step"] = t.step;
  o["due_micros"] = t.due_micros;
  return o;
}

json::value DataJson(const std::string& data) {
  if (data.empty()) return nullptr;
  boost::system::error_code ec;
  json::value v = json::parse(data, ec);
  if (ec) return json::string(data);
  return v;
}

json::object InfoJson(const SagaInfo& info) {
  json::object o = SummaryJson(info.summary);
  o["data"] = DataJson(info.data);
  o["error"] = info.error;
  json::array steps;
  for (const SagaStepInfo& s : info.steps) {
    json::object so;
    so["name"] = s.name;
    so["state"] = std::string(SagaStepStateName(s.state));
    so["attempts"] = s.attempts;
    steps.push_back(std::move(so));
  }
  o["steps"] = std::move(steps);
  json::array timers;
  for (const SagaTimerInfo& t : info.timers) timers.push_back(TimerJson(t));
  o["timers"] = std::move(timers);
  json::array history;
  for (const SagaHistoryEntry& h : info.history) {
    json::object ho;
    ho["time_micros"] = h.time_micros;
    ho["event"] = h.event;
    if (h.step >= 0) ho["step"] = h.step;
    if (h.attempt > 0) ho["attempt"] = h.attempt;
    if (!h.detail.empty()) ho["detail"] = h.detail;
    history.push_back(std::move(ho));
  }
  o["history"] = std::move(history);
  o["history_dropped"] = info.history_dropped;
  if (!info.traceparent.empty()) o["traceparent"] = info.traceparent;
  return o;
}

}  // namespace

std::string SagaSummaryToJson(const SagaSummary& summary) {
  return json::serialize(SummaryJson(summary));
}
std::string SagaInfoToJson(const SagaInfo& info) { return json::serialize(InfoJson(info)); }
std::string SagaTimerToJson(const SagaTimerInfo& timer) {
  return json::serialize(TimerJson(timer));
}

}  // namespace converge
