// Saga definitions: validation, the builder, canonical JSON, and the JSON/YAML parser
// (yaml-cpp, whose exceptions stop here).
#include <yaml-cpp/yaml.h>

#include <boost/json.hpp>
#include <limits>
#include <set>
#include <string>

#include "converge/saga.h"
#include "core/yaml_check.h"

namespace converge {
namespace {

bool IsNameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '-';
}

Status CheckName(std::string_view what, std::string_view name, bool allow_extra = false) {
  if (name.empty() || name.size() > SagaLimits::kMaxNameBytes) {
    return InvalidArgumentError(std::string(what) + " must have 1.." +
                                std::to_string(SagaLimits::kMaxNameBytes) + " characters");
  }
  for (char c : name) {
    if (IsNameChar(c)) continue;
    if (allow_extra && (c == ':' || c == '/')) continue;
    return InvalidArgumentError(std::string(what) + " '" + std::string(name) +
                                "' may contain only [A-Za-z0-9._-]" +
                                (allow_extra ? " and ':' '/'" : ""));
  }
  return Status::Ok();
}

bool SamePolicy(const RetryPolicy& a, const RetryPolicy& b) {
  return a.base_delay_ms == b.base_delay_ms && a.multiplier == b.multiplier &&
         a.max_delay_ms == b.max_delay_ms && a.max_attempts == b.max_attempts &&
         a.deadline_ms == b.deadline_ms && a.retry_deadline_exceeded == b.retry_deadline_exceeded &&
         a.retry_resource_exhausted == b.retry_resource_exhausted &&
         a.retry_aborted == b.retry_aborted;
}

}  // namespace

bool SagaStepDefinition::operator==(const SagaStepDefinition& o) const {
  return name == o.name && participant == o.participant && action == o.action &&
         compensation == o.compensation && timeout_ms == o.timeout_ms &&
         SamePolicy(retry, o.retry) && pivot == o.pivot;
}

bool SagaDefinition::operator==(const SagaDefinition& o) const {
  return name == o.name && version == o.version && deadline_ms == o.deadline_ms && steps == o.steps;
}

size_t SagaDefinition::PivotIndex() const {
  for (size_t i = 0; i < steps.size(); ++i) {
    if (steps[i].pivot) return i;
  }
  if (!steps.empty() && steps.back().compensation.empty()) return steps.size() - 1;
  return steps.size();
}

Status SagaDefinition::Validate() const {
  CONVERGE_RETURN_IF_ERROR(CheckName("saga name", name));
  if (version < 1 || version > SagaLimits::kMaxVersion) {
    return InvalidArgumentError("saga '" + name + "': version must be in [1, " +
                                std::to_string(SagaLimits::kMaxVersion) + "]");
  }
  if (deadline_ms < 0 || deadline_ms > SagaLimits::kMaxTimeoutMs) {
    return InvalidArgumentError("saga '" + name + "': deadline_ms must be in [0, " +
                                std::to_string(SagaLimits::kMaxTimeoutMs) + "]");
  }
  if (steps.empty() || steps.size() > SagaLimits::kMaxSteps) {
    return InvalidArgumentError("saga '" + name + "' must have 1.." +
                                std::to_string(SagaLimits::kMaxSteps) + " steps");
  }
  std::set<std::string_view> names;
  size_t pivots = 0;
  for (const SagaStepDefinition& s : steps) {
    const std::string where = "saga '" + name + "' step '" + s.name + "'";
    CONVERGE_RETURN_IF_ERROR(CheckName("step name", s.name).WithContext("saga '" + name + "'"));
    if (!names.insert(s.name).second) {
      return InvalidArgumentError("saga '" + name + "': duplicate step name '" + s.name + "'");
    }
    CONVERGE_RETURN_IF_ERROR(CheckName("participant", s.participant).WithContext(where));
    if (s.participant[0] == '.' || s.participant[0] == '_') {
      return InvalidArgumentError(where + ": participant topic may not start with '.' or '_'");
    }
    CONVERGE_RETURN_IF_ERROR(CheckName("action", s.action, true).WithContext(where));
    if (!s.compensation.empty()) {
      CONVERGE_RETURN_IF_ERROR(CheckName("compensation", s.compensation, true).WithContext(where));
    }
    if (s.timeout_ms < 1 || s.timeout_ms > SagaLimits::kMaxTimeoutMs) {
      return InvalidArgumentError(where + ": timeout_ms must be in [1, " +
                                  std::to_string(SagaLimits::kMaxTimeoutMs) + "]");
    }
    CONVERGE_RETURN_IF_ERROR(s.retry.Validate().WithContext(where + ": retry"));
    if (s.pivot) ++pivots;
  }
  if (pivots > 1) return InvalidArgumentError("saga '" + name + "' has more than one pivot");
  const size_t p = PivotIndex();
  for (size_t i = 0; i < steps.size(); ++i) {
    const SagaStepDefinition& s = steps[i];
    if (i < p && s.compensation.empty()) {
      return InvalidArgumentError("saga '" + name + "' step '" + s.name +
                                  "' comes before the pivot and has no compensation (mark the "
                                  "pivot step, or give it a compensation)");
    }
    if (i >= p && !s.compensation.empty()) {
      return InvalidArgumentError(
          "saga '" + name + "' step '" + s.name + "' is " +
          (i == p ? "the pivot" : "after the pivot") +
          " and cannot have a compensation (such steps are retried, never compensated)");
    }
  }
  return Status::Ok();
}

std::string SagaDefinition::ToJson() const {
  namespace json = boost::json;
  json::object root;
  root["name"] = name;
  root["version"] = version;
  root["deadline_ms"] = deadline_ms;
  json::array arr;
  for (const SagaStepDefinition& s : steps) {
    json::object o;
    o["name"] = s.name;
    o["participant"] = s.participant;
    o["action"] = s.action;
    o["compensation"] = s.compensation;
    o["timeout_ms"] = s.timeout_ms;
    o["pivot"] = s.pivot;
    json::object r;
    r["base_delay_ms"] = s.retry.base_delay_ms;
    r["multiplier"] = s.retry.multiplier;
    r["max_delay_ms"] = s.retry.max_delay_ms;
    r["max_attempts"] = s.retry.max_attempts;
    r["deadline_ms"] = s.retry.deadline_ms;
    r["retry_deadline_exceeded"] = s.retry.retry_deadline_exceeded;
    r["retry_resource_exhausted"] = s.retry.retry_resource_exhausted;
    r["retry_aborted"] = s.retry.retry_aborted;
    o["retry"] = std::move(r);
    arr.push_back(std::move(o));
  }
  root["steps"] = std::move(arr);
  return json::serialize(root);
}

// ---------------------------------------------------------------------------------------
// Builder

SagaDefinitionBuilder::SagaDefinitionBuilder(std::string name, uint32_t version) {
  def_.name = std::move(name);
  def_.version = version;
}

SagaDefinitionBuilder& SagaDefinitionBuilder::Deadline(int64_t deadline_ms) {
  def_.deadline_ms = deadline_ms;
  return *this;
}

SagaDefinitionBuilder& SagaDefinitionBuilder::Step(std::string name, std::string participant,
                                                   std::string action, std::string compensation) {
  SagaStepDefinition s;
  s.name = std::move(name);
  s.participant = std::move(participant);
  s.action = std::move(action);
  s.compensation = std::move(compensation);
  def_.steps.push_back(std::move(s));
  return *this;
}

SagaDefinitionBuilder& SagaDefinitionBuilder::Timeout(int64_t timeout_ms) {
  if (!def_.steps.empty()) def_.steps.back().timeout_ms = timeout_ms;
  return *this;
}

SagaDefinitionBuilder& SagaDefinitionBuilder::Retry(const RetryPolicy& policy) {
  if (!def_.steps.empty()) def_.steps.back().retry = policy;
  return *this;
}

SagaDefinitionBuilder& SagaDefinitionBuilder::Pivot() {
  if (!def_.steps.empty()) def_.steps.back().pivot = true;
  return *this;
}

Result<SagaDefinition> SagaDefinitionBuilder::Build() const {
  CONVERGE_RETURN_IF_ERROR(def_.Validate());
  return def_;
}

// ---------------------------------------------------------------------------------------
// Parser

namespace {

std::string Where(const YAML::Node& node) {
  const YAML::Mark m = node.Mark();
  if (m.line < 0) return "";
  return " (line " + std::to_string(m.line + 1) + ")";
}

Status BadType(const std::string& key, const YAML::Node& node, const char* want) {
  return InvalidArgumentError("'" + key + "' must be " + want + Where(node));
}

Status ReadString(const YAML::Node& node, const std::string& key, std::string* out) {
  if (!node.IsScalar()) return BadType(key, node, "a string");
  *out = node.Scalar();
  return Status::Ok();
}

template <typename T>
Status ReadInt(const YAML::Node& node, const std::string& key, T* out) {
  if (!node.IsScalar()) return BadType(key, node, "an integer");
  const std::string& s = node.Scalar();
  if (s.empty() || s.size() > 19) return BadType(key, node, "an integer");
  bool neg = s[0] == '-';
  size_t i = neg ? 1 : 0;
  if (i >= s.size()) return BadType(key, node, "an integer");
  int64_t v = 0;
  for (; i < s.size(); ++i) {
    if (s[i] < '0' || s[i] > '9') return BadType(key, node, "an integer");
    v = v * 10 + (s[i] - '0');
  }
  if (neg) v = -v;
  if (v < static_cast<int64_t>(std::numeric_limits<T>::min()) ||
      v > static_cast<int64_t>(std::numeric_limits<T>::max())) {
    return InvalidArgumentError("'" + key + "' is out of range" + Where(node));
  }
  *out = static_cast<T>(v);
  return Status::Ok();
}

Status ReadBool(const YAML::Node& node, const std::string& key, bool* out) {
  if (!node.IsScalar()) return BadType(key, node, "true or false");
  const std::string& s = node.Scalar();
  if (s == "true") {
    *out = true;
  } else if (s == "false") {
    *out = false;
  } else {
    return BadType(key, node, "true or false");
  }
  return Status::Ok();
}

Status ReadDouble(const YAML::Node& node, const std::string& key, double* out) {
  if (!node.IsScalar()) return BadType(key, node, "a number");
  const std::string& s = node.Scalar();
  size_t used = 0;
  try {
    *out = std::stod(s, &used);
  } catch (const std::exception&) {
    return BadType(key, node, "a number");
  }
  if (used != s.size()) return BadType(key, node, "a number");
  return Status::Ok();
}

Status ParseRetry(const YAML::Node& node, RetryPolicy* r) {
  if (!node.IsMap()) return BadType("retry", node, "a mapping");
  for (const auto& kv : node) {
    const std::string key = kv.first.as<std::string>();
    const YAML::Node& v = kv.second;
    Status s;
    if (key == "base_delay_ms") {
      s = ReadInt(v, key, &r->base_delay_ms);
    } else if (key == "multiplier") {
      s = ReadDouble(v, key, &r->multiplier);
    } else if (key == "max_delay_ms") {
      s = ReadInt(v, key, &r->max_delay_ms);
    } else if (key == "max_attempts") {
      s = ReadInt(v, key, &r->max_attempts);
    } else if (key == "deadline_ms") {
      s = ReadInt(v, key, &r->deadline_ms);
    } else if (key == "retry_deadline_exceeded") {
      s = ReadBool(v, key, &r->retry_deadline_exceeded);
    } else if (key == "retry_resource_exhausted") {
      s = ReadBool(v, key, &r->retry_resource_exhausted);
    } else if (key == "retry_aborted") {
      s = ReadBool(v, key, &r->retry_aborted);
    } else {
      return InvalidArgumentError("unknown key 'retry." + key + "'" + Where(kv.first));
    }
    CONVERGE_RETURN_IF_ERROR(s);
  }
  return Status::Ok();
}

Status ParseStep(const YAML::Node& node, SagaStepDefinition* step) {
  if (!node.IsMap()) return BadType("steps[]", node, "a mapping");
  for (const auto& kv : node) {
    const std::string key = kv.first.as<std::string>();
    const YAML::Node& v = kv.second;
    Status s;
    if (key == "name") {
      s = ReadString(v, key, &step->name);
    } else if (key == "participant") {
      s = ReadString(v, key, &step->participant);
    } else if (key == "action") {
      s = ReadString(v, key, &step->action);
    } else if (key == "compensation") {
      s = v.IsNull() ? Status::Ok() : ReadString(v, key, &step->compensation);
    } else if (key == "timeout_ms") {
      s = ReadInt(v, key, &step->timeout_ms);
    } else if (key == "pivot") {
      s = ReadBool(v, key, &step->pivot);
    } else if (key == "retry") {
      s = ParseRetry(v, &step->retry);
    } else {
      return InvalidArgumentError("unknown key '" + key + "' in a step" + Where(kv.first));
    }
    CONVERGE_RETURN_IF_ERROR(s);
  }
  return Status::Ok();
}

Status ParseRoot(const YAML::Node& root, SagaDefinition* def) {
  if (!root.IsMap()) return InvalidArgumentError("a saga definition must be a mapping");
  bool have_steps = false;
  for (const auto& kv : root) {
    const std::string key = kv.first.as<std::string>();
    const YAML::Node& v = kv.second;
    Status s;
    if (key == "name") {
      s = ReadString(v, key, &def->name);
    } else if (key == "version") {
      s = ReadInt(v, key, &def->version);
    } else if (key == "deadline_ms") {
      s = ReadInt(v, key, &def->deadline_ms);
    } else if (key == "steps") {
      if (!v.IsSequence()) return BadType(key, v, "a list");
      have_steps = true;
      if (v.size() > SagaLimits::kMaxSteps) {
        return InvalidArgumentError("a saga may have at most " +
                                    std::to_string(SagaLimits::kMaxSteps) + " steps");
      }
      for (const auto& item : v) {
        SagaStepDefinition step;
        CONVERGE_RETURN_IF_ERROR(ParseStep(item, &step));
        def->steps.push_back(std::move(step));
      }
    } else {
      return InvalidArgumentError("unknown key '" + key + "'" + Where(kv.first));
    }
    CONVERGE_RETURN_IF_ERROR(s);
  }
  if (!have_steps) return InvalidArgumentError("'steps' is required");
  return Status::Ok();
}

}  // namespace

Result<SagaDefinition> ParseSagaDefinition(std::string_view text) {
  constexpr size_t kMaxDefinitionBytes = 1 << 20;
  if (text.size() > kMaxDefinitionBytes) {
    return InvalidArgumentError("a saga definition may have at most 1 MiB");
  }
  SagaDefinition def;
  try {
    YAML::Node root = YAML::Load(std::string(text));
    CONVERGE_RETURN_IF_ERROR(CheckYamlDocument(root, "saga definition"));
    CONVERGE_RETURN_IF_ERROR(ParseRoot(root, &def));
  } catch (const YAML::Exception& e) {
    return InvalidArgumentError(std::string("saga definition: ") + e.what());
  } catch (const std::exception& e) {
    return InvalidArgumentError(std::string("saga definition: ") + e.what());
  }
  CONVERGE_RETURN_IF_ERROR(def.Validate());
  return def;
}

// ---------------------------------------------------------------------------------------
// Names

std::string_view SagaStateName(SagaState state) {
  switch (state) {
    case SagaState::kRunning:
      return "running";
    case SagaState::kCompensating:
      return "compensating";
    case SagaState::kCompleted:
      return "completed";
    case SagaState::kCompensated:
      return "compensated";
  }
  return "unknown";
}

std::string_view SagaStepStateName(SagaStepState state) {
  switch (state) {
    case SagaStepState::kPending:
      return "pending";
    case SagaStepState::kActive:
      return "active";
    case SagaStepState::kDone:
      return "done";
    case SagaStepState::kFailed:
      return "failed";
    case SagaStepState::kCompensating:
      return "compensating";
    case SagaStepState::kCompensated:
      return "compensated";
  }
  return "unknown";
}

std::string_view SagaTimerKindName(SagaTimerKind kind) {
  switch (kind) {
    case SagaTimerKind::kStepTimeout:
      return "step-timeout";
    case SagaTimerKind::kRetry:
      return "retry";
    case SagaTimerKind::kDeadline:
      return "deadline";
  }
  return "unknown";
}

Result<SagaTimerKind> ParseSagaTimerKind(std::string_view name) {
  if (name == "step-timeout") return SagaTimerKind::kStepTimeout;
  if (name == "retry") return SagaTimerKind::kRetry;
  if (name == "deadline") return SagaTimerKind::kDeadline;
  return InvalidArgumentError("timer kind must be step-timeout, retry or deadline, not '" +
                              std::string(name) + "'");
}

std::string_view SagaCommandKindName(SagaCommandKind kind) {
  switch (kind) {
    case SagaCommandKind::kAction:
      return "action";
    case SagaCommandKind::kCompensate:
      return "compensate";
    case SagaCommandKind::kCancel:
      return "cancel";
  }
  return "unknown";
}

}  // namespace converge
