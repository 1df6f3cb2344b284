// API v1: operating the server. Deleting topics and groups, moving a group's position,
// reading a topic by offset without a group, describing groups, the outbox relays and their
// dead letters, and this API's OpenAPI document.
#include <boost/beast/core/detail/base64.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <cstdio>
#include <map>
#include <set>

#include "core/crc32c.h"
#include "server/api.h"
#include "server/api_internal.h"
#include "server/cluster_groups.h"
#include "server/cloudevents_http.h"
#include "server/json_util.h"
#include "server/leases.h"
#include "server/openapi_document.h"

namespace converge::server {

namespace json = boost::json;

namespace api_internal {

std::string GroupDetailJson(const GroupDescription& g) {
  std::string out = GroupJson(g);
  out.pop_back();  // the closing '}'
  out += ",\"topic\":";
  AppendJsonString(&out, g.topic);
  out += ",\"generation\":" + std::to_string(g.generation);
  out += ",\"dead_letter_topic\":";
  AppendJsonString(&out, g.dead_letter_topic);
  out += ",\"max_in_flight\":" + std::to_string(g.options.max_in_flight_per_partition);
  out += ",\"consumers\":[";
  for (size_t i = 0; i < g.members.size(); ++i) {
    const MemberDescription& m = g.members[i];
    if (i) out += ',';
    out += "{\"consumer\":";
    AppendJsonString(&out, m.member);
    out += ",\"partitions\":[";
    for (size_t j = 0; j < m.partitions.size(); ++j) {
      if (j) out += ',';
      out += std::to_string(m.partitions[j]);
    }
    out += "],\"in_flight\":" + std::to_string(m.in_flight) +
           ",\"idle_ms\":" + std::to_string(m.idle_ms) + '}';
  }
  // Who owns each partition and what it holds leased or waiting there.
  out += "],\"assignments\":[";
  for (size_t i = 0; i < g.partitions.size(); ++i) {
    const PartitionDescription& p = g.partitions[i];
    if (i) out += ',';
    out += "{\"partition\":" + std::to_string(p.partition) + ",\"consumer\":";
    if (p.member.empty()) {
      out += "null";
    } else {
      AppendJsonString(&out, p.member);
    }
    out += ",\"leased\":" + std::to_string(p.in_flight) +
           ",\"pending\":" + std::to_string(p.pending) +
           ",\"acked_above_committed\":" + std::to_string(p.acked_above_committed) +
           ",\"dead_letter_pending\":" + std::to_string(p.dead_letter_pending) + '}';
  }
  out += "]}";
  return out;
}

}  // namespace api_internal

namespace {

HttpReply InvalidJsonReply(const Status& parse_error) {
  return Error(http::status::bad_request, "INVALID_JSON", parse_error.message());
}

// The checks of the group routes of this file: permission on the topic (403), then names.
std::optional<HttpReply> RefuseGroupAdmin(const Principal& who, const std::string& topic,
                                          const std::string& group, std::string_view action) {
  if (!who.CanAdminister(topic)) return Error(NotAllowed(who, action, topic));
  Status s = CheckTopicName(topic);
  if (s.ok()) s = CheckGroupName(group);
  if (!s.ok()) return Error(s);
  return std::nullopt;
}

// Where a group's discarded dead letters go: an internal topic of one partition beside its
// dead-letter topic. Discarding is a replay into it (the groups mark them replayed, durably,
// and never replay them again), so the group's topic never sees them and they stay readable.
std::string DiscardedTopicFor(const std::string& dead_letter_topic) {
  std::string name = "_discarded";
  if (dead_letter_topic.empty() || dead_letter_topic.front() != '_') name += '.';
  name += dead_letter_topic;
  if (name.size() <= 200) return name;
  char hex[9];
  std::snprintf(hex, sizeof(hex), "%08x", ::converge::internal::Crc32c(dead_letter_topic));
  return "_discarded-" + dead_letter_topic.substr(dead_letter_topic.size() - 180) + "-" + hex;
}

Status OnlyAdmins(const Principal& who, std::string_view what) {
  if (who.admin) return Status::Ok();
  return PermissionDeniedError("service '" + who.service + "' may not " + std::string(what) +
                               ": admin tokens only");
}

// Reads an unsigned query parameter into *out when present; `s` keeps the first error.
void QueryUint(const Api::Call& call, std::string_view name, uint64_t min, uint64_t max,
               uint64_t* out, Status* s) {
  if (!s->ok()) return;
  std::optional<std::string> v = call.Query(name);
  if (!v) return;
  Result<uint64_t> n = ParseUintParam(name, *v, min, max);
  if (n.ok()) {
    *out = *n;
  } else {
    *s = n.status();
  }
}

// ---- the relays' dead letters ----

// Each dead letter of the relays is pending until it is replayed or discarded. Those marks
// go to an internal topic of their own beside the dead letters ("_marks.<dead-letter
// topic>", fsync, one partition): the log's framing, sync and recovery, nothing new on disk.
// The dead-letter topic itself stays as the relays wrote it.
std::string MarksTopicFor(const std::string& dead_letter_topic) {
  return "_marks." + dead_letter_topic;
}

enum class Mark { kPending, kReplayed, kDiscarded };

std::string_view MarkName(Mark m) {
  switch (m) {
    case Mark::kReplayed:
      return "replayed";
    case Mark::kDiscarded:
      return "discarded";
    default:
      return "pending";
  }
}

// The marks so far, by dead-letter offset (the last mark of an offset counts).
Result<std::map<uint64_t, Mark>> ReadMarks(Log& log, const std::string& marks_topic) {
  std::map<uint64_t, Mark> marks;
  uint64_t at = 0;
  while (true) {
    Result<ReadBatch> batch = log.Read(marks_topic, 0, at, 10'000, 4 << 20);
    if (!batch.ok()) {
      if (batch.status().code() == StatusCode::kNotFound) return marks;
      return batch.status();
    }
    if (batch->records.empty()) return marks;
    for (const StoredRecord& r : batch->records) {
      // "<replayed|discarded> <offset>"
      const std::string_view v = r.value;
      const size_t space = v.find(' ');
      if (space == std::string_view::npos) continue;
      Result<uint64_t> off = ParseUintParam("mark", v.substr(space + 1), 0, UINT64_MAX);
      if (!off.ok()) continue;
      marks[*off] = v.substr(0, space) == "discarded" ? Mark::kDiscarded : Mark::kReplayed;
    }
    at = batch->next_offset;
  }
}

Status WriteMarks(Log& log, const std::string& marks_topic, Mark mark,
                  const std::vector<uint64_t>& offsets) {
  if (offsets.empty()) return Status::Ok();
  std::vector<std::string> values;
  values.reserve(offsets.size());
  for (uint64_t o : offsets)
    values.push_back(std::string(MarkName(mark)) + " " + std::to_string(o));
  std::vector<RecordView> records;
  for (const std::string& v : values) records.push_back(RecordView{{}, {}, v, 0});
  Result<std::vector<AppendResult>> r = log.Append(marks_topic, records);
  if (r.ok() || r.status().code() != StatusCode::kNotFound) return r.status();
  TopicOptions o;
  o.partitions = 1;
  o.durability = Durability::kFsync;
  o.internal = true;
  Status created = log.CreateTopic(marks_topic, o);
  if (!created.ok() && created.code() != StatusCode::kAlreadyExists) return created;
  return log.Append(marks_topic, records).status();
}

// One stored dead letter of a relay (docs/formats/outbox.md, "Dead letters").
struct RelayDeadLetter {
  uint64_t offset = 0;
  std::string id;
  json::object fields;    // as the relay wrote it
  std::string event;      // the encoded event (binary CloudEvent), when it had one
  bool readable = false;  // the value was a JSON object
};

RelayDeadLetter ParseRelayDeadLetter(const StoredRecord& r) {
  RelayDeadLetter dl;
  dl.offset = r.offset;
  dl.id = std::string(r.id);
  boost::system::error_code ec;
  json::value v = json::parse(r.value, ec);
  if (ec || !v.is_object()) return dl;
  dl.readable = true;
  dl.fields = std::move(v.get_object());
  if (const json::value* b64 = dl.fields.if_contains("event_base64"); b64 && b64->is_string()) {
    namespace base64 = boost::beast::detail::base64;
    const json::string& text = b64->get_string();
    std::string bytes(base64::decoded_size(text.size()), '\0');
    const auto [written, read] = base64::decode(bytes.data(), text.data(), text.size());
    bytes.resize(written);
    // Beast stops at the padding: all of the text but its '=' must have been read.
    size_t unpadded = text.size();
    while (unpadded > 0 && text[unpadded - 1] == '=') --unpadded;
    if (read >= unpadded) dl.event = std::move(bytes);
  }
  return dl;
}

std::string StringField(const json::object& o, std::string_view name) {
  const json::value* v = o.if_contains(name);
  if (v == nullptr || !v->is_string()) return {};
  return std::string(v->get_string());
}

void AppendRelayDeadLetter(std::string* out, const RelayDeadLetter& dl, Mark mark) {
  *out += "{\"offset\":" + std::to_string(dl.offset) + ",\"id\":";
  AppendJsonString(out, dl.id);
  *out += ",\"state\":";
  AppendJsonString(out, MarkName(mark));
  if (!dl.readable) {
    *out += ",\"error\":\"not a relay dead letter (not a JSON object)\"}";
    return;
  }
  for (const char* name : {"reason", "relay"}) {
    *out += ",\"";
    *out += name;
    *out += "\":";
    AppendJsonString(out, StringField(dl.fields, name));
  }
  if (const json::value* seq = dl.fields.if_contains("seq"); seq && seq->is_int64()) {
    *out += ",\"seq\":" + std::to_string(seq->get_int64());
  }
  if (const json::value* at = dl.fields.if_contains("dead_lettered_at_micros");
      at && at->is_int64()) {
    *out += ",\"dead_lettered_at_ms\":" + std::to_string(at->get_int64() / 1000);
  }
  if (const json::value* row = dl.fields.if_contains("row")) {
    // A malformed row, as the service wrote it.
    *out += ",\"row\":" + json::serialize(*row);
  } else {
    *out += ",\"topic\":";
    AppendJsonString(out, StringField(dl.fields, "topic"));
    *out += ",\"event\":";
    AppendStoredEvent(out, dl.event);
  }
  *out += '}';
}

}  // namespace

// ---------------------------------------------------------------------------------------
// Topics

asio::awaitable<HttpReply> Api::DeleteTopic(Call& call) {
  if (Status s = OnlyAdmins(*call.principal, "delete topics"); !s.ok()) co_return Error(s);
  if (Status s = CheckQuery(call.query, {}); !s.ok()) co_return Error(s);
  // What converge writes itself it also deletes itself (a store's feed, a saga's commands,
  // dead letters go with their group).
  if (std::string owner = d_.system_topics->OwnerOf(call.topic); !owner.empty()) {
    co_return SystemTopicError(call.topic, owner, "deleting it over HTTP");
  }
  if (Status s = CheckTopicName(call.topic); !s.ok()) co_return Error(s);
  const std::string topic = call.topic;
  auto exists = [this, topic] { return d_.log->DescribeTopic(topic).status(); };
  if (Status s = co_await d_.pool->Run(std::move(exists)); !s.ok()) co_return Error(s);
  // The groups first, each durably (journal-first; shared groups through the sidecar running
  // each, fenced by its lease) and with its dead letters: a failure or crash after this leaves
  // the whole topic without groups, never groups whose positions would apply to a new topic of
  // the same name. Then the topic (the log marks its directory deleted before it removes
  // anything, so a crash midway finishes the deletion at the next start). Then any group
  // created meanwhile.
  std::string deleted = "[";
  if (std::optional<HttpReply> failed = co_await DeleteGroupsOfTopic(call, &deleted)) {
    co_return std::move(*failed);
  }
  auto drop = [this, topic] { return d_.log->DeleteTopic(topic); };
  if (Status s = co_await d_.pool->Run(std::move(drop)); !s.ok()) co_return Error(s);
  if (std::optional<HttpReply> failed = co_await DeleteGroupsOfTopic(call, &deleted)) {
    co_return std::move(*failed);
  }
  deleted += ']';
  std::string out = "{\"deleted\":";
  AppendJsonString(&out, topic);
  out += ",\"groups_deleted\":" + deleted + "}";
  co_return Reply(JsonReply(http::status::ok, std::move(out)));
}

asio::awaitable<std::optional<HttpReply>> Api::DeleteGroupsOfTopic(Call& call,
                                                                   std::string* deleted) {
  const std::string topic = call.topic;
  ClusterGroups* cluster = d_.cluster_groups;
  // Shared groups: a list that cannot be read fails the deletion (it would leave groups).
  auto list = [this, topic, cluster]() -> Result<std::vector<std::string>> {
    if (cluster != nullptr) return cluster->ListGroupsChecked(topic);
    return d_.groups->ListGroups(topic);
  };
  Result<std::vector<std::string>> groups = co_await d_.pool->Run(std::move(list));
  if (!groups.ok()) co_return Error(groups.status());
  for (const std::string& group : *groups) {
    ClusterGroups::Where where{true, ""};
    if (cluster != nullptr) {
      // Where it runs; a group no live sidecar runs is acquired (here, or by the sidecar its
      // hash prefers), so that its deletion is written under its lease.
      auto locate = [cluster, topic, group] { return cluster->Locate(topic, group, false); };
      Result<ClusterGroups::Where> located = co_await ForwardPool().Run(std::move(locate));
      if (!located.ok()) co_return Error(located.status());
      where = std::move(located).value();
    }
    if (where.here) {
      auto job = [this, topic, group] {
        return DeleteGroupAndDiscarded(topic, group, /*force=*/true);
      };
      Status s = co_await d_.pool->Run(std::move(job));
      if (!s.ok() && s.code() != StatusCode::kNotFound) co_return Error(s);
    } else {
      // Deleted by its owner, with the caller's credentials (authorized there again).
      HttpReply reply = co_await ForwardToOwner(
          call, where.url, "/v1/topics/" + topic + "/groups/" + group + "?force=true", "DELETE");
      const http::status st = reply.response.result();
      if (st != http::status::ok && st != http::status::not_found) co_return reply;
      ForgetGroup(topic, group);  // the watches of this sidecar's waiting fetches
    }
    if (deleted->size() > 1) *deleted += ',';
    AppendJsonString(deleted, group);
  }
  co_return std::nullopt;
}

Status Api::DeleteGroupAndDiscarded(const std::string& topic, const std::string& group,
                                    bool force) {
  std::string discarded;
  if (Result<GroupDescription> g = d_.groups->DescribeGroup(topic, group); g.ok()) {
    discarded = DiscardedTopicFor(g->dead_letter_topic);
  }
  const uint64_t epoch = WatchEpoch(topic, group);
  CONVERGE_RETURN_IF_ERROR(d_.groups->DeleteGroup(topic, group, force));
  ForgetGroup(topic, group, epoch);
  // After the group is gone (durably). A crash before this leaves the discarded events in a
  // topic no group uses: only an archive (a group created again under the name adds to it,
  // and what it discards under an id found there is counted as discarded, not stored twice).
  if (!discarded.empty()) {
    Status s = d_.log->DeleteTopic(discarded);
    if (!s.ok() && s.code() != StatusCode::kNotFound) return s;
  }
  return Status::Ok();
}

void Api::ForgetGroup(const std::string& topic, const std::string& group,
                      std::optional<uint64_t> epoch) {
  const std::string key = GroupKey(topic, group);
  {
    std::lock_guard lock(watches_mu_);
    auto it = watch_epochs_.find(key);
    const uint64_t current = it == watch_epochs_.end() ? 0 : it->second;
    if (!epoch.has_value() || *epoch == current) {
      watches_.erase(key);
      keep_alive_.erase(key);
      watch_epochs_.erase(key);
    }
  }
  d_.hub->Notify(key);  // waiting fetches and streams look again (and find no group)
}

asio::awaitable<HttpReply> Api::ReadEvents(Call& call) {
  if (!call.principal->CanAdminister(call.topic)) {
    co_return Error(NotAllowed(*call.principal, "read", call.topic));
  }
  Status s = CheckQuery(call.query, {"partition", "from_offset", "to_offset", "limit"});
  if (s.ok()) s = CheckReadableTopicName(*call.principal, call.topic);
  const LimitsConfig& limits = d_.config->limits;
  uint64_t partition = 0, from = 0, to = UINT64_MAX, limit = 100;
  QueryUint(call, "partition", 0, 1023, &partition, &s);
  QueryUint(call, "from_offset", 0, UINT64_MAX, &from, &s);
  QueryUint(call, "to_offset", 0, UINT64_MAX, &to, &s);
  QueryUint(call, "limit", 1, limits.max_fetch_events, &limit, &s);
  if (!s.ok()) co_return Error(s);
  const std::string topic = call.topic;
  const uint64_t max_bytes = limits.max_fetch_bytes;
  auto job = [=, this]() -> Result<std::string> {
    CONVERGE_ASSIGN_OR_RETURN(TopicInfo info, d_.log->DescribeTopic(topic));
    if (partition >= info.partitions.size()) {
      return InvalidArgumentError("topic '" + topic + "' has " +
                                  std::to_string(info.partitions.size()) +
                                  " partition(s): no partition " + std::to_string(partition));
    }
    const PartitionInfo& p = info.partitions[partition];
    std::string out = "{\"topic\":";
    AppendJsonString(&out, topic);
    out += ",\"partition\":" + std::to_string(partition) + ",\"events\":[";
    uint64_t next = std::max(from, p.start_offset);
    if (from < to) {
      CONVERGE_ASSIGN_OR_RETURN(
          ReadBatch batch,
          d_.log->Read(topic, static_cast<uint32_t>(partition), from, static_cast<size_t>(limit),
                       static_cast<size_t>(max_bytes)));
      bool first = true;
      next = batch.next_offset;
      for (const StoredRecord& r : batch.records) {
        if (r.offset >= to) {
          next = r.offset;
          break;
        }
        if (!first) out += ',';
        first = false;
        out += "{\"offset\":" + std::to_string(r.offset) +
               ",\"timestamp_ms\":" + std::to_string(r.timestamp_micros / 1000) + ",\"event\":";
        AppendStoredEvent(&out, r.value);
        out += '}';
      }
    }
    out += "],\"next_offset\":" + std::to_string(next) +
           ",\"start_offset\":" + std::to_string(p.start_offset) +
           ",\"end_offset\":" + std::to_string(p.end_offset) + "}";
    return out;
  };
  Result<std::string> body = co_await d_.pool->Run(std::move(job));
  if (!body.ok()) co_return Error(body.status());
  co_return Reply(JsonReply(http::status::ok, std::move(body).value()));
}

// ---------------------------------------------------------------------------------------
// Groups

asio::awaitable<HttpReply> Api::ListGroups(Call& call) {
  if (!call.principal->CanSee(call.topic)) {
    co_return Error(NotAllowed(*call.principal, "see", call.topic));
  }
  if (Status s = CheckQuery(call.query, {}); !s.ok()) co_return Error(s);
  if (Status s = CheckTopicName(call.topic); !s.ok()) co_return Error(s);
  const std::string topic = call.topic;
  auto exists = [this, topic] { return d_.log->DescribeTopic(topic).status(); };
  if (Status s = co_await d_.pool->Run(std::move(exists)); !s.ok()) co_return Error(s);
  Result<std::vector<std::string>> described = co_await DescribeGroupsOfTopic(call, true);
  if (!described.ok()) co_return Error(described.status());
  std::string out = "{\"groups\":[";
  for (size_t i = 0; i < described->size(); ++i) {
    if (i > 0) out += ',';
    out += (*described)[i];
  }
  out += "]}";
  co_return Reply(JsonReply(http::status::ok, std::move(out)));
}

namespace {

// The topic description's fields of a group (GroupJson) out of its GroupDetailJson (from the
// sidecar running it), in the same order.
Result<std::string> SummaryOfGroupDetail(const std::string& detail) {
  boost::system::error_code ec;
  json::value v = json::parse(detail, ec);
  if (ec || !v.is_object()) return UnavailableError("a group's description is not a JSON object");
  static constexpr std::string_view kFields[] = {"name",           "lag",
                                                 "members",        "lease_ms",
                                                 "max_deliveries", "session_timeout_ms",
                                                 "dead_letters",   "dead_letters_replayed",
                                                 "partitions"};
  json::object out;
  for (std::string_view f : kFields) {
    if (const json::value* field = v.as_object().if_contains(f)) out[f] = *field;
  }
  return json::serialize(out);
}

}  // namespace

asio::awaitable<Result<std::vector<std::string>>> Api::DescribeGroupsOfTopic(Call& call,
                                                                             bool detail) {
  const std::string topic = call.topic;
  ClusterGroups* cluster = d_.cluster_groups;
  // Each group described, in list order; empty for one described below (shared groups: it
  // runs in another sidecar).
  using Described = std::vector<std::pair<std::string, std::string>>;
  auto job = [this, topic, cluster, detail]() -> Result<Described> {
    std::vector<std::string> names;
    if (cluster != nullptr) {
      // A list that cannot be read is an error (503), not a shorter list.
      CONVERGE_ASSIGN_OR_RETURN(names, cluster->ListGroupsChecked(topic));
    } else {
      names = d_.groups->ListGroups(topic);
    }
    Described out;
    for (const std::string& g : names) {
      Result<GroupDescription> desc = d_.groups->DescribeGroup(topic, g);
      if (desc.ok()) {
        out.emplace_back(g, detail ? GroupDetailJson(*desc) : GroupJson(*desc));
      } else if (cluster != nullptr && desc.status().code() == StatusCode::kUnavailable) {
        out.emplace_back(g, "");
      }  // otherwise deleted meanwhile
    }
    return out;
  };
  Result<Described> described = co_await d_.pool->Run(std::move(job));
  if (!described.ok()) co_return described.status();
  std::vector<std::string> out;
  for (auto& [name, json] : *described) {
    if (json.empty()) {
      Result<std::string> remote = co_await DescribeGroupAnywhere(call, name);
      if (remote.status().code() == StatusCode::kNotFound) continue;  // deleted meanwhile
      if (!remote.ok()) co_return remote.status();
      if (detail) {
        json = std::move(remote).value();
      } else {
        Result<std::string> summary = SummaryOfGroupDetail(*remote);
        if (!summary.ok()) co_return summary.status();
        json = std::move(summary).value();
      }
    }
    out.push_back(std::move(json));
  }
  co_return out;
}

asio::awaitable<HttpReply> Api::DescribeGroup(Call& call) {
  if (!call.principal->CanSee(call.topic)) {
    co_return Error(NotAllowed(*call.principal, "see", call.topic));
  }
  if (Status s = CheckQuery(call.query, {}); !s.ok()) co_return Error(s);
  Status s = CheckTopicName(call.topic);
  if (s.ok()) s = CheckGroupName(call.group);
  if (!s.ok()) co_return Error(s);
  const std::string topic = call.topic, group = call.group;
  auto job = [this, topic, group]() -> Result<std::string> {
    CONVERGE_ASSIGN_OR_RETURN(GroupDescription g, d_.groups->DescribeGroup(topic, group));
    return GroupDetailJson(g);
  };
  Result<std::string> body = co_await d_.pool->Run(std::move(job));
  if (!body.ok()) co_return Error(body.status());
  co_return Reply(JsonReply(http::status::ok, std::move(body).value()));
}

asio::awaitable<HttpReply> Api::DeleteGroup(Call& call) {
  if (auto refused =
          RefuseGroupAdmin(*call.principal, call.topic, call.group, "delete groups of")) {
    co_return std::move(*refused);
  }
  Status s = CheckQuery(call.query, {"force"});
  bool force = false;
  if (std::optional<std::string> v = call.Query("force"); s.ok() && v) {
    if (*v == "true") {
      force = true;
    } else if (*v != "false") {
      s = InvalidArgumentError("query parameter 'force' must be true or false");
    }
  }
  if (!s.ok()) co_return Error(s);
  const std::string topic = call.topic, group = call.group;
  auto job = [this, topic, group, force]() -> Status {
    return DeleteGroupAndDiscarded(topic, group, force);
  };
  Status deleted = co_await d_.pool->Run(std::move(job));
  if (!deleted.ok()) co_return Error(deleted);
  std::string out = "{\"deleted\":";
  AppendJsonString(&out, group);
  out += ",\"topic\":";
  AppendJsonString(&out, topic);
  out += '}';
  co_return Reply(JsonReply(http::status::ok, std::move(out)));
}

asio::awaitable<HttpReply> Api::SeekGroup(Call& call) {
  if (auto refused = RefuseGroupAdmin(*call.principal, call.topic, call.group, "seek groups of")) {
    co_return std::move(*refused);
  }
  if (Status s = CheckQuery(call.query, {}); !s.ok()) co_return Error(s);
  Result<json::object> body = ParseJsonObject(call.req.body());
  if (!body.ok()) co_return InvalidJsonReply(body.status());
  const json::object& o = *body;
  std::string to;
  uint64_t offset = 0, partition = 0;
  int64_t time_ms = 0;
  Status s = CheckFields(o, {"to", "offset", "time_ms", "partition"});
  if (s.ok()) s = ReadString(o, "to", &to);
  if (s.ok()) s = ReadUint(o, "offset", 0, UINT64_MAX, &offset);
  if (s.ok()) s = ReadInt(o, "time_ms", 0, INT64_MAX / 1000, &time_ms);
  if (s.ok()) s = ReadUint(o, "partition", 0, 1023, &partition);
  SeekTarget target;
  if (s.ok()) {
    if (to == "earliest") {
      target.kind = SeekTarget::Kind::kEarliest;
    } else if (to == "latest") {
      target.kind = SeekTarget::Kind::kLatest;
    } else if (to == "offset") {
      target.kind = SeekTarget::Kind::kOffset;
      if (!o.contains("offset"))
        s = InvalidArgumentError("\"to\": \"offset\" needs field 'offset'");
    } else if (to == "time") {
      target.kind = SeekTarget::Kind::kTime;
      if (!o.contains("time_ms"))
        s = InvalidArgumentError("\"to\": \"time\" needs field 'time_ms'");
    } else {
      s = InvalidArgumentError(
          "field 'to' is required: \"earliest\", \"latest\", \"offset\" or \"time\"");
    }
  }
  if (s.ok() && o.contains("offset") && to != "offset") {
    s = InvalidArgumentError("field 'offset' goes only with \"to\": \"offset\"");
  }
  if (s.ok() && o.contains("time_ms") && to != "time") {
    s = InvalidArgumentError("field 'time_ms' goes only with \"to\": \"time\"");
  }
  if (!s.ok()) co_return Error(s);
  target.offset = offset;
  target.time_micros = time_ms * 1000;
  if (o.contains("partition") && !o.at("partition").is_null()) {
    target.partition = static_cast<uint32_t>(partition);
  }
  const std::string topic = call.topic, group = call.group;
  auto job = [this, topic, group, target]() -> Result<std::string> {
    CONVERGE_RETURN_IF_ERROR(d_.groups->Seek(topic, group, target));
    CONVERGE_ASSIGN_OR_RETURN(GroupDescription g, d_.groups->DescribeGroup(topic, group));
    return GroupDetailJson(g);
  };
  Result<std::string> out = co_await d_.pool->Run(std::move(job));
  if (!out.ok()) co_return Error(out.status());
  d_.hub->Notify(GroupKey(topic, group));  // waiting fetches read from the new position
  co_return Reply(JsonReply(http::status::ok, std::move(out).value()));
}

asio::awaitable<HttpReply> Api::DiscardDeadLetters(Call& call) {
  if (auto refused = RefuseGroupAdmin(*call.principal, call.topic, call.group,
                                      "discard dead letters of")) {
    co_return std::move(*refused);
  }
  if (Status s = CheckQuery(call.query, {}); !s.ok()) co_return Error(s);
  Result<json::object> body = ParseJsonObject(call.req.body());
  if (!body.ok()) co_return InvalidJsonReply(body.status());
  ReplayOptions options;
  uint64_t max_events = options.max_records;
  Status s = CheckFields(*body, {"from_offset", "to_offset", "max_events"});
  if (s.ok()) s = ReadUint(*body, "from_offset", 0, UINT64_MAX, &options.from_offset);
  if (s.ok()) s = ReadUint(*body, "to_offset", 0, UINT64_MAX, &options.to_offset);
  if (s.ok()) s = ReadUint(*body, "max_events", 1, d_.config->limits.max_fetch_events, &max_events);
  // Discarding is for good: the range is named, never implied.
  if (s.ok() && (!body->contains("from_offset") || !body->contains("to_offset"))) {
    s = InvalidArgumentError("fields 'from_offset' and 'to_offset' are required");
  }
  if (!s.ok()) co_return Error(s);
  options.max_records = static_cast<uint32_t>(max_events);
  const std::string topic = call.topic, group = call.group;
  auto job = [this, topic, group, options]() mutable -> Result<std::string> {
    CONVERGE_ASSIGN_OR_RETURN(GroupDescription g, d_.groups->DescribeGroup(topic, group));
    options.target_topic = DiscardedTopicFor(g.dead_letter_topic);
    TopicOptions o;
    o.partitions = 1;
    o.durability = Durability::kFsync;
    o.internal = true;
    Status created = d_.log->CreateTopic(options.target_topic, o);
    if (!created.ok() && created.code() != StatusCode::kAlreadyExists) return created;
    CONVERGE_ASSIGN_OR_RETURN(ReplayResult r, d_.groups->ReplayDeadLetters(topic, group, options));
    std::string out = "{\"discarded\":" + std::to_string(r.replayed + r.deduplicated) +
                      ",\"skipped_already_replayed\":" +
                      std::to_string(r.skipped_already_replayed) +
                      ",\"next_offset\":" + std::to_string(r.next_offset) + ",\"kept_in\":";
    AppendJsonString(&out, options.target_topic);
    out += '}';
    return out;
  };
  Result<std::string> out = co_await d_.pool->Run(std::move(job));
  if (!out.ok()) co_return Error(out.status());
  co_return Reply(JsonReply(http::status::ok, std::move(out).value()));
}

// ---------------------------------------------------------------------------------------
// Relays

asio::awaitable<HttpReply> Api::GetAudit(Call& call) {
  if (Status s = OnlyAdmins(*call.principal, "see the audit"); !s.ok()) co_return Error(s);
  if (Status s = CheckQuery(call.query, {}); !s.ok()) co_return Error(s);
  std::string out = "{\"enabled\":";
  if (d_.audit == nullptr) {
    out += "false}";
    co_return Reply(JsonReply(http::status::ok, std::move(out)));
  }
  const audit::AuditReport r = d_.audit->last();
  out += "true,\"producer\":";
  AppendJsonString(&out, d_.audit_stamper->producer());
  out += ",\"runs\":" + std::to_string(r.runs);
  out += ",\"last_run_micros\":" + std::to_string(r.run_wall_micros);
  out += ",\"checked\":" + std::to_string(r.checked);
  out += ",\"records_read\":" + std::to_string(r.records_read);
  out += ",\"expired\":" + std::to_string(r.expired);
  out += ",\"tracked\":" + std::to_string(d_.audit_journal->tracked());
  out += ",\"untracked\":" + std::to_string(r.untracked);
  uint64_t missing = 0, duplicates = 0, out_of_order = 0;
  for (const auto& [where, c] : r.counts) {
    missing += c.missing;
    duplicates += c.duplicates;
    out_of_order += c.out_of_order;
  }
  out += ",\"missing\":" + std::to_string(missing);
  out += ",\"duplicates\":" + std::to_string(duplicates);
  out += ",\"out_of_order\":" + std::to_string(out_of_order);
  out += ",\"findings_total\":" + std::to_string(r.findings_total);
  out += ",\"findings\":[";
  for (size_t i = 0; i < r.findings.size(); ++i) {
    const audit::Finding& f = r.findings[i];
    if (i > 0) out += ',';
    out += "{\"kind\":";
    AppendJsonString(&out, audit::FindingKindName(f.kind));
    out += ",\"topic\":";
    AppendJsonString(&out, f.topic);
    out += ",\"partition\":" + std::to_string(f.partition);
    out += ",\"seq\":" + std::to_string(f.seq);
    out += ",\"acked_offset\":" + std::to_string(f.acked_offset);
    out += ",\"found_offset\":" + std::to_string(f.found_offset) + "}";
  }
  out += "],\"errors\":[";
  for (size_t i = 0; i < r.errors.size(); ++i) {
    if (i > 0) out += ',';
    AppendJsonString(&out, r.errors[i]);
  }
  out += "]}";
  co_return Reply(JsonReply(http::status::ok, std::move(out)));
}

asio::awaitable<HttpReply> Api::ListLeases(Call& call) {
  if (Status s = OnlyAdmins(*call.principal, "see the leases"); !s.ok()) co_return Error(s);
  if (Status s = CheckQuery(call.query, {}); !s.ok()) co_return Error(s);
  std::string out = "{\"enabled\":";
  if (leases_ == nullptr) {
    out += "false,\"leases\":[]}";
    co_return Reply(JsonReply(http::status::ok, std::move(out)));
  }
  out += "true,\"holder\":";
  AppendJsonString(&out, leases_->holder());
  out += ",\"leases\":[";
  bool first = true;
  for (const LeaseView& v : leases_->View()) {
    if (!first) out += ',';
    first = false;
    out += "{\"name\":";
    AppendJsonString(&out, v.name);
    out += v.held ? ",\"held\":true" : ",\"held\":false";
    out += v.running ? ",\"running\":true" : ",\"running\":false";
    out += ",\"token\":" + std::to_string(v.token) +
           ",\"remaining_ms\":" + std::to_string(v.remaining_ms) +
           ",\"acquisitions\":" + std::to_string(v.stats.acquisitions) +
           ",\"takeovers\":" + std::to_string(v.stats.takeovers) +
           ",\"renew_failures\":" + std::to_string(v.stats.renew_failures) +
           ",\"losses\":" + std::to_string(v.stats.losses) + ",\"last_error\":";
    AppendJsonString(&out, v.stats.last_error);
    out += '}';
  }
  out += "]}";
  co_return Reply(JsonReply(http::status::ok, std::move(out)));
}

asio::awaitable<HttpReply> Api::ListRelays(Call& call) {
  if (Status s = OnlyAdmins(*call.principal, "see the relays"); !s.ok()) co_return Error(s);
  if (Status s = CheckQuery(call.query, {}); !s.ok()) co_return Error(s);
  std::shared_ptr<RelayService> relays;
  {
    std::lock_guard lock(relays_mu_);
    relays = relays_.lock();
  }
  const std::string dlq = d_.config->relays.service.sink.dead_letter_topic;
  auto job = [this, relays, dlq]() -> Result<std::string> {
    std::string out = "{\"enabled\":";
    out += d_.config->relays.enabled ? "true" : "false";
    out += ",\"dead_letter_topic\":";
    AppendJsonString(&out, dlq);
    uint64_t total = 0;
    if (Result<TopicInfo> info = d_.log->DescribeTopic(dlq); info.ok()) {
      for (const PartitionInfo& p : info->partitions) total += p.end_offset - p.start_offset;
    }
    CONVERGE_ASSIGN_OR_RETURN(auto marks, ReadMarks(*d_.log, MarksTopicFor(dlq)));
    uint64_t replayed = 0, discarded = 0;
    for (const auto& [offset, mark] : marks) (mark == Mark::kReplayed ? replayed : discarded)++;
    out += ",\"dead_letters\":{\"total\":" + std::to_string(total) +
           ",\"pending\":" + std::to_string(total - std::min(total, replayed + discarded)) +
           ",\"replayed\":" + std::to_string(replayed) +
           ",\"discarded\":" + std::to_string(discarded) + "},\"relays\":[";
    if (relays != nullptr) {
      bool first = true;
      for (const auto& [name, st] : relays->stats()) {
        if (!first) out += ',';
        first = false;
        out += "{\"name\":";
        AppendJsonString(&out, name);
        out += st.active ? ",\"active\":true" : ",\"active\":false";
        out += ",\"buckets\":" + std::to_string(st.buckets) +
               ",\"batches\":" + std::to_string(st.batches) +
               ",\"published\":" + std::to_string(st.published) +
               ",\"dead_lettered\":" + std::to_string(st.dead_lettered) +
               ",\"failures\":" + std::to_string(st.failures) + ",\"last_error\":";
        AppendJsonString(&out, st.last_error);
        out += '}';
      }
    }
    out += "]}";
    return out;
  };
  Result<std::string> body = co_await d_.pool->Run(std::move(job));
  if (!body.ok()) co_return Error(body.status());
  co_return Reply(JsonReply(http::status::ok, std::move(body).value()));
}

asio::awaitable<HttpReply> Api::ListRelayDeadLetters(Call& call) {
  if (Status s = OnlyAdmins(*call.principal, "see the relays' dead letters"); !s.ok()) {
    co_return Error(s);
  }
  Status s = CheckQuery(call.query, {"from_offset", "limit", "state"});
  uint64_t from = 0, limit = 100;
  QueryUint(call, "from_offset", 0, UINT64_MAX, &from, &s);
  QueryUint(call, "limit", 1, d_.config->limits.max_fetch_events, &limit, &s);
  std::optional<std::string> state = call.Query("state");
  if (s.ok() && state && *state != "pending" && *state != "replayed" && *state != "discarded") {
    s = InvalidArgumentError("query parameter 'state' must be pending, replayed or discarded");
  }
  if (!s.ok()) co_return Error(s);
  const std::string dlq = d_.config->relays.service.sink.dead_letter_topic;
  auto job = [=, this]() -> Result<std::string> {
    CONVERGE_ASSIGN_OR_RETURN(auto marks, ReadMarks(*d_.log, MarksTopicFor(dlq)));
    std::string out = "{\"dead_letter_topic\":";
    AppendJsonString(&out, dlq);
    out += ",\"dead_letters\":[";
    uint64_t at = from, end = 0, listed = 0;
    bool first = true;
    Result<TopicInfo> info = d_.log->DescribeTopic(dlq);
    if (info.ok()) {
      end = info->partitions[0].end_offset;
      // Pages of the topic until `limit` dead letters in the asked state are listed.
      while (listed < limit && at < end) {
        CONVERGE_ASSIGN_OR_RETURN(ReadBatch batch, d_.log->Read(dlq, 0, at, 1000, 4 << 20));
        if (batch.records.empty()) {
          at = batch.next_offset > at ? batch.next_offset : end;
          continue;
        }
        for (const StoredRecord& r : batch.records) {
          at = r.offset + 1;
          auto it = marks.find(r.offset);
          const Mark mark = it == marks.end() ? Mark::kPending : it->second;
          if (state && MarkName(mark) != *state) continue;
          if (!first) out += ',';
          first = false;
          AppendRelayDeadLetter(&out, ParseRelayDeadLetter(r), mark);
          if (++listed == limit) break;
        }
      }
    } else if (info.status().code() != StatusCode::kNotFound) {
      return info.status();
    }
    out +=
        "],\"next_offset\":" + std::to_string(at) + ",\"end_offset\":" + std::to_string(end) + "}";
    return out;
  };
  Result<std::string> body = co_await d_.pool->Run(std::move(job));
  if (!body.ok()) co_return Error(body.status());
  co_return Reply(JsonReply(http::status::ok, std::move(body).value()));
}

namespace {

// The range a replay or discard of the relays' dead letters names.
struct MarkRange {
  uint64_t from = 0;
  uint64_t to = UINT64_MAX;
  uint64_t max = 1000;
};

Status ReadMarkRange(const json::object& o, uint64_t max_events, MarkRange* r) {
  Status s = CheckFields(o, {"from_offset", "to_offset", "max_events"});
  if (s.ok()) s = ReadUint(o, "from_offset", 0, UINT64_MAX, &r->from);
  if (s.ok()) s = ReadUint(o, "to_offset", 0, UINT64_MAX, &r->to);
  if (s.ok()) s = ReadUint(o, "max_events", 1, max_events, &r->max);
  return s;
}

}  // namespace

asio::awaitable<HttpReply> Api::ReplayRelayDeadLetters(Call& call) {
  if (Status s = OnlyAdmins(*call.principal, "replay the relays' dead letters"); !s.ok()) {
    co_return Error(s);
  }
  if (Status s = CheckQuery(call.query, {}); !s.ok()) co_return Error(s);
  Result<json::object> body = ParseJsonObject(call.req.body());
  if (!body.ok()) co_return InvalidJsonReply(body.status());
  MarkRange range;
  if (Status s = ReadMarkRange(*body, d_.config->limits.max_fetch_events, &range); !s.ok()) {
    co_return Error(s);
  }
  const LogSinkOptions& sink = d_.config->relays.service.sink;
  auto job = [this, range, &sink]() -> Result<std::string> {
    std::lock_guard marks_lock(relay_marks_mu_);
    const std::string& dlq = sink.dead_letter_topic;
    const std::string marks_topic = MarksTopicFor(dlq);
    CONVERGE_ASSIGN_OR_RETURN(auto marks, ReadMarks(*d_.log, marks_topic));
    uint64_t end = 0;
    Result<TopicInfo> info = d_.log->DescribeTopic(dlq);
    if (info.ok()) {
      end = info->partitions[0].end_offset;
    } else if (info.status().code() != StatusCode::kNotFound) {
      return info.status();
    }
    std::vector<uint64_t> replayed;
    uint64_t skipped = 0;
    std::string failed = "[";
    auto fail = [&failed](uint64_t offset, std::string_view why) {
      if (failed.size() > 1) failed += ',';
      failed += "{\"offset\":" + std::to_string(offset) + ",\"message\":";
      AppendJsonString(&failed, why);
      failed += '}';
    };
    uint64_t at = range.from, examined = 0;
    const uint64_t to = std::min(range.to, end);
    while (at < to && examined < range.max) {
      CONVERGE_ASSIGN_OR_RETURN(ReadBatch batch, d_.log->Read(dlq, 0, at, 1000, 4 << 20));
      if (batch.records.empty()) {
        at = batch.next_offset > at ? batch.next_offset : to;
        continue;
      }
      for (const StoredRecord& r : batch.records) {
        if (r.offset >= to || examined == range.max) break;
        at = r.offset + 1;
        ++examined;
        if (marks.count(r.offset)) {
          ++skipped;
          continue;
        }
        RelayDeadLetter dl = ParseRelayDeadLetter(r);
        if (!dl.readable) {
          fail(r.offset, "not a relay dead letter (not a JSON object)");
          continue;
        }
        if (dl.event.empty()) {
          fail(r.offset, "a malformed outbox row (" + StringField(dl.fields, "reason") +
                             "): write a corrected event again from the service, then discard "
                             "this dead letter");
          continue;
        }
        Result<Event> event = DecodeBinary(dl.event);
        if (!event.ok()) {
          fail(r.offset,
               "the stored event cannot be decoded: " + std::string(event.status().message()));
          continue;
        }
        // Where the relay would publish it now (its topic map), and only where it may.
        std::string topic = StringField(dl.fields, "topic");
        if (auto m = sink.topic_map.find(topic); m != sink.topic_map.end()) topic = m->second;
        if (std::string owner = d_.system_topics->OwnerOf(topic); !owner.empty()) {
          fail(r.offset, "topic '" + topic + "' is written only by " + owner);
          continue;
        }
        if (Status s = CheckTopicName(topic); !s.ok()) {
          fail(r.offset, s.message());
          continue;
        }
        std::string id;
        AppendRecordId(*event, &id);
        const RecordView record{id, PartitionKeyFor(*event), dl.event, 0};
        Result<std::vector<AppendResult>> appended = d_.log->Append(topic, {&record, 1});
        if (!appended.ok() && appended.status().code() == StatusCode::kNotFound &&
            d_.config->relays.enabled && sink.create_topics) {
          Status created = d_.log->CreateTopic(topic, sink.topic_options);
          if (!created.ok() && created.code() != StatusCode::kAlreadyExists) return created;
          appended = d_.log->Append(topic, {&record, 1});
        }
        if (!appended.ok()) {
          const Status& e = appended.status();
          // Refusals of this one event are reported; a failing log stops the call (what was
          // replayed so far is marked below first).
          if (e.code() == StatusCode::kNotFound || e.code() == StatusCode::kInvalidArgument) {
            fail(r.offset, e.message());
            continue;
          }
          CONVERGE_RETURN_IF_ERROR(WriteMarks(*d_.log, marks_topic, Mark::kReplayed, replayed));
          return e;
        }
        replayed.push_back(r.offset);
      }
    }
    // The events are in the log before they are marked: a crash in between replays them again
    // on a retry, and the log's idempotent publish (the event's id) drops the copy.
    CONVERGE_RETURN_IF_ERROR(WriteMarks(*d_.log, marks_topic, Mark::kReplayed, replayed));
    return "{\"replayed\":" + std::to_string(replayed.size()) +
           ",\"skipped\":" + std::to_string(skipped) + ",\"failed\":" + failed +
           "],\"next_offset\":" + std::to_string(std::max(at, range.from)) + "}";
  };
  Result<std::string> out = co_await d_.pool->Run(std::move(job));
  if (!out.ok()) co_return Error(out.status());
  co_return Reply(JsonReply(http::status::ok, std::move(out).value()));
}

asio::awaitable<HttpReply> Api::DiscardRelayDeadLetters(Call& call) {
  if (Status s = OnlyAdmins(*call.principal, "discard the relays' dead letters"); !s.ok()) {
    co_return Error(s);
  }
  if (Status s = CheckQuery(call.query, {}); !s.ok()) co_return Error(s);
  Result<json::object> body = ParseJsonObject(call.req.body());
  if (!body.ok()) co_return InvalidJsonReply(body.status());
  MarkRange range;
  Status s = ReadMarkRange(*body, d_.config->limits.max_fetch_events, &range);
  // Discarding is for good: the range is named, never implied.
  if (s.ok() && (!body->contains("from_offset") || !body->contains("to_offset"))) {
    s = InvalidArgumentError("fields 'from_offset' and 'to_offset' are required");
  }
  if (!s.ok()) co_return Error(s);
  const std::string dlq = d_.config->relays.service.sink.dead_letter_topic;
  auto job = [this, range, dlq]() -> Result<std::string> {
    std::lock_guard marks_lock(relay_marks_mu_);
    const std::string marks_topic = MarksTopicFor(dlq);
    CONVERGE_ASSIGN_OR_RETURN(auto marks, ReadMarks(*d_.log, marks_topic));
    uint64_t end = 0;
    if (Result<TopicInfo> info = d_.log->DescribeTopic(dlq); info.ok()) {
      end = info->partitions[0].end_offset;
    } else if (info.status().code() != StatusCode::kNotFound) {
      return info.status();
    }
    std::vector<uint64_t> discarded;
    uint64_t skipped = 0, at = range.from;
    const uint64_t to = std::min(range.to, end);
    for (; at < to && discarded.size() + skipped < range.max; ++at) {
      if (marks.count(at)) {
        ++skipped;
      } else {
        discarded.push_back(at);
      }
    }
    CONVERGE_RETURN_IF_ERROR(WriteMarks(*d_.log, marks_topic, Mark::kDiscarded, discarded));
    return "{\"discarded\":" + std::to_string(discarded.size()) +
           ",\"skipped\":" + std::to_string(skipped) +
           ",\"next_offset\":" + std::to_string(std::max(at, range.from)) + "}";
  };
  Result<std::string> out = co_await d_.pool->Run(std::move(job));
  if (!out.ok()) co_return Error(out.status());
  co_return Reply(JsonReply(http::status::ok, std::move(out).value()));
}

// ---------------------------------------------------------------------------------------
// The API document

asio::awaitable<HttpReply> Api::OpenApi(Call& call) {
  if (Status s = CheckQuery(call.query, {}); !s.ok()) co_return Error(s);
  HttpResponse res{http::status::ok, 11};
  res.set(http::field::content_type, "application/yaml");
  res.body() = std::string(OpenApiDocument());
  res.prepare_payload();
  co_return Reply(std::move(res));
}

}  // namespace converge::server
