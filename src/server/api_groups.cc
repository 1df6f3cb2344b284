// API v1: consumer groups (fetch, ack, nack, stream) and dead letters.
#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/value.hpp>
#include <charconv>
#include <chrono>
#include <optional>

#include "server/api.h"
#include "server/api_internal.h"
#include "server/cloudevents_http.h"
#include "server/cluster_groups.h"
#include "server/json_util.h"
#include "wire/wire_format.h"

namespace converge::server {

namespace json = boost::json;
namespace wire = ::converge::internal::wire;

namespace {

// The checks every group route starts with: subscribe permission (403), then valid topic and
// group names (400). The error reply, or nullopt to go on.
Status CheckGroupNames(const std::string& topic, const std::string& group) {
  Status s = CheckTopicName(topic);
  if (s.ok()) s = CheckGroupName(group);
  return s;
}

std::optional<HttpReply> RefuseGroupCall(const Principal& who, const std::string& topic,
                                         const std::string& group) {
  if (!who.CanSubscribe(topic)) return Error(NotAllowed(who, "subscribe to", topic));
  if (Status s = CheckGroupNames(topic, group); !s.ok()) return Error(s);
  return std::nullopt;
}

// A body that is not a JSON object.
HttpReply InvalidJson(const Status& parse_error) {
  return Error(http::status::bad_request, "INVALID_JSON", parse_error.message());
}

// NotFound for a group that does not exist, worded as the groups' own lookup words it.
Status NoSuchGroup(const std::string& topic, const std::string& group) {
  return NotFoundError("consumer group '" + group + "' on topic '" + topic + "' not found");
}

}  // namespace

// ---------------------------------------------------------------------------------------
// Consumer groups

// The same options the start-time config check validated (config.cc).
GroupOptions Api::DefaultGroupOptions() const { return GroupDefaultsFor(*d_.config); }

Status Api::EnsureGroup(const std::string& topic, const std::string& group) {
  Status s = d_.groups->CreateGroup(topic, group, DefaultGroupOptions());
  if (s.code() == StatusCode::kAlreadyExists) return Status::Ok();
  if (s.code() == StatusCode::kNotFound) {
    return NotFoundError("topic '" + topic + "' does not exist");
  }
  return s;
}

Result<std::chrono::milliseconds> Api::WatchGroup(const std::string& topic,
                                                  const std::string& group, bool renew) {
  const std::string key = GroupKey(topic, group);
  {
    std::lock_guard lock(watches_mu_);
    if (renew) {
      watches_.erase(key);
      keep_alive_.erase(key);
      watch_epochs_.erase(key);
    } else if (auto it = keep_alive_.find(key); it != keep_alive_.end()) {
      return it->second;
    }
  }
  // First use of the group in this process: its options (set at creation, kept on disk) say
  // its session timeout. Read without the lock: it reads the log.
  CONVERGE_ASSIGN_OR_RETURN(GroupDescription described, d_.groups->DescribeGroup(topic, group));
  const std::chrono::milliseconds keep_alive(
      std::max<int64_t>(10, described.options.session_timeout_ms / 3));
  std::lock_guard lock(watches_mu_);
  if (!watches_.count(key)) {
    WakeupHub* hub = d_.hub;
    // Long polls and streams wait on their member's name: a change wakes the members it
    // concerns, not every request waiting on the group.
    auto wake = [hub, key](std::string_view member) {
      if (member.empty()) {
        hub->Notify(key);
      } else {
        hub->Notify(key, std::string(member));
      }
    };
    CONVERGE_ASSIGN_OR_RETURN(std::unique_ptr<ConsumerGroups::ReadyWatch> watch,
                              d_.groups->WatchReadyByMember(topic, group, std::move(wake)));
    watches_.emplace(key, std::move(watch));
    watch_epochs_[key] = ++next_watch_epoch_;
  }
  keep_alive_.emplace(key, keep_alive);
  return keep_alive;
}

uint64_t Api::WatchEpoch(const std::string& topic, const std::string& group) {
  std::lock_guard lock(watches_mu_);
  auto it = watch_epochs_.find(GroupKey(topic, group));
  return it == watch_epochs_.end() ? 0 : it->second;
}

Result<FetchResult> Api::FetchAsMember(const std::string& topic, const std::string& group,
                                       const std::string& member, uint32_t max_events,
                                       uint64_t max_bytes) {
  Result<FetchResult> r = d_.groups->Fetch(topic, group, member, max_events, max_bytes);
  if (r.ok() || r.status().code() != StatusCode::kFailedPrecondition) return r;
  // Not (or no longer) a member: HTTP consumers are stateless, so join on their behalf.
  CONVERGE_RETURN_IF_ERROR(d_.groups->Join(topic, group, member).status());
  return d_.groups->Fetch(topic, group, member, max_events, max_bytes);
}

std::string Api::RenderDeliveries(const FetchResult& fetched, const std::string& topic,
                                  const std::string& group, DeliveryFormat format) {
  const int64_t now_micros = d_.env->clock().NowWallMicros();
  std::string out;
  auto num = [&out](uint64_t v) {
    char digits[24];
    auto [end, ec] = std::to_chars(digits, digits + sizeof(digits), v);
    out.append(digits, end);
  };
  if (format == DeliveryFormat::kJson) out = "{\"deliveries\":[";
  out.reserve(fetched.deliveries.size() * 320);
  for (size_t i = 0; i < fetched.deliveries.size(); ++i) {
    const Delivery& d = fetched.deliveries[i];
    if (d.attempt == 1 && now_micros >= d.timestamp_micros) {
      deliver_latency_->Observe(static_cast<double>(now_micros - d.timestamp_micros) * 1e-6);
    }
    if (format == DeliveryFormat::kBinary) {
      wire::AppendDelivery(
          &out, {d.partition, d.offset, d.lease_id, d.attempt, d.lease_expires_at_micros / 1000},
          d.value);
      continue;
    }
    if (format == DeliveryFormat::kSse) {
      out += "event: delivery\nid: ";
      num(d.partition);
      out += ':';
      num(d.offset);
      out += ':';
      num(d.lease_id);
      out += "\ndata: ";
    } else if (i) {
      out += ',';
    }
    out += "{\"partition\":";
    num(d.partition);
    out += ",\"offset\":";
    num(d.offset);
    out += ",\"lease_id\":\"";
    num(d.lease_id);
    out += "\",\"attempt\":";
    num(d.attempt);
    out += ",\"lease_expires_at_ms\":";
    num(static_cast<uint64_t>(std::max<int64_t>(0, d.lease_expires_at_micros / 1000)));
    out += ",\"event\":";
    AppendStoredEvent(&out, d.value);
    out += '}';
    if (format == DeliveryFormat::kSse) out += "\n\n";
  }
  if (format == DeliveryFormat::kJson) out += "]}";
  d_.metrics
      ->GetCounter("converge_events_delivered_total", "Events delivered to consumers.",
                   {{"topic", topic}, {"group", group}})
      ->Add(fetched.deliveries.size());
  return out;
}

asio::awaitable<HttpReply> Api::CreateGroup(Call& call) {
  if (!call.principal->CanSubscribe(call.topic)) {
    co_return Error(NotAllowed(*call.principal, "subscribe to", call.topic));
  }
  if (Status s = CheckTopicName(call.topic); !s.ok()) co_return Error(s);
  if (Status s = CheckQuery(call.query, {}); !s.ok()) co_return Error(s);
  Result<json::object> body = ParseJsonObject(call.req.body());
  if (!body.ok()) co_return InvalidJson(body.status());
  const json::object& o = *body;
  GroupOptions options = DefaultGroupOptions();
  std::string name, start = "earliest";
  uint64_t max_deliveries = options.max_deliveries;
  uint64_t max_in_flight = options.max_in_flight_per_partition;
  Status s = CheckFields(
      o, {"name", "lease_ms", "max_deliveries", "max_in_flight", "start", "session_timeout_ms"});
  if (s.ok() && !o.contains("name")) s = InvalidArgumentError("field 'name' is required");
  if (s.ok()) s = ReadString(o, "name", &name);
  if (s.ok()) s = ReadInt(o, "lease_ms", 1, d_.config->groups.max_lease_ms, &options.lease_ms);
  if (s.ok()) {
    s = ReadInt(o, "session_timeout_ms", kMinSessionTimeoutMs, kMaxSessionTimeoutMs,
                &options.session_timeout_ms);
  }
  if (s.ok()) s = ReadUint(o, "max_deliveries", 1, 10'000, &max_deliveries);
  if (s.ok()) s = ReadUint(o, "max_in_flight", 1, 100'000, &max_in_flight);
  if (s.ok()) s = ReadString(o, "start", &start);
  if (s.ok()) s = CheckGroupName(name);
  if (s.ok()) {
    if (start == "earliest") {
      options.start = StartPosition::kEarliest;
    } else if (start == "latest") {
      options.start = StartPosition::kLatest;
    } else {
      s = InvalidArgumentError("field 'start' must be \"earliest\" or \"latest\"");
    }
  }
  if (!s.ok()) co_return Error(s);
  if (d_.cluster_groups != nullptr) {
    // The group is named in the body: routed once the body is read (authorized above).
    std::optional<HttpReply> routed = co_await RouteToGroupOwner(call, name);
    if (routed.has_value()) co_return std::move(*routed);
  }
  options.max_deliveries = static_cast<uint32_t>(max_deliveries);
  // One bound for both: a partition's and a member's leased events. The read-ahead window
  // must hold at least that many.
  options.max_in_flight_per_partition = static_cast<uint32_t>(max_in_flight);
  options.max_in_flight_per_member = static_cast<uint32_t>(max_in_flight);
  options.max_pending_per_partition = std::max<uint32_t>(options.max_pending_per_partition,
                                                         4 * options.max_in_flight_per_partition);
  const std::string topic = call.topic;
  auto job = [this, topic, name, options]() -> Result<std::string> {
    CONVERGE_RETURN_IF_ERROR(d_.groups->CreateGroup(topic, name, options));
    CONVERGE_ASSIGN_OR_RETURN(GroupDescription g, d_.groups->DescribeGroup(topic, name));
    return GroupJson(g);
  };
  Result<std::string> created = co_await d_.pool->Run(std::move(job));
  if (!created.ok()) co_return Error(created.status());
  co_return Reply(JsonReply(http::status::created, std::move(created).value()));
}

asio::awaitable<HttpReply> Api::Fetch(Call& call) {
  if (std::optional<HttpReply> refused = RefuseGroupCall(*call.principal, call.topic, call.group)) {
    co_return std::move(*refused);
  }
  Observe(TopologyObserver::Kind::kConsume, call.topic, *call.principal);
  Status s = CheckQuery(call.query, {});
  if (!s.ok()) co_return Error(s);
  Result<json::object> body = ParseJsonObject(call.req.body());
  if (!body.ok()) co_return InvalidJson(body.status());
  const LimitsConfig& limits = d_.config->limits;
  uint64_t max_events = 100, max_bytes = limits.max_fetch_bytes;
  int64_t wait_ms = 0;
  std::string consumer = "default";
  if (s.ok()) s = CheckFields(*body, {"max_events", "max_bytes", "wait_ms", "consumer"});
  if (s.ok()) s = ReadUint(*body, "max_events", 1, limits.max_fetch_events, &max_events);
  if (s.ok()) s = ReadUint(*body, "max_bytes", 1, limits.max_fetch_bytes, &max_bytes);
  if (s.ok()) s = ReadInt(*body, "wait_ms", 0, limits.max_wait_ms, &wait_ms);
  if (s.ok()) s = ReadString(*body, "consumer", &consumer);
  if (s.ok()) s = CheckConsumerName(consumer);
  if (!s.ok()) co_return Error(s);

  const std::string topic = call.topic, group = call.group;

  // The C++ client asks for the binary delivery batch: stored records go out as they are.
  const DeliveryFormat format =
      wire::Accepts(call.req[http::field::accept], wire::kDeliveryBatchMediaType)
          ? DeliveryFormat::kBinary
          : DeliveryFormat::kJson;
  auto reply = [format](std::string body) {
    if (format == DeliveryFormat::kJson) return Reply(JsonReply(http::status::ok, std::move(body)));
    HttpResponse res{http::status::ok, 11};
    res.set(http::field::content_type, wire::kDeliveryBatchMediaType);
    res.body() = std::move(body);
    res.prepare_payload();
    return Reply(std::move(res));
  };
  const std::string key = GroupKey(topic, group);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(wait_ms);
  // The group's session keep-alive, known once this server watches the group (WatchGroup).
  std::optional<std::chrono::milliseconds> keep_alive;
  {
    std::lock_guard lock(watches_mu_);
    if (auto it = keep_alive_.find(key); it != keep_alive_.end()) keep_alive = it->second;
  }
  for (;;) {
    // One pool hop per look. A group this server does not watch yet is made sure of and
    // watched first, in the same hop; one it watches is fetched from at once (and made again
    // if it was deleted meanwhile, as every fetch used to). The generation is read before the
    // look, and only for a watched group (no hub entry for names that may not exist).
    const bool watched = keep_alive.has_value();
    const uint64_t seen = watched ? d_.hub->Generation(key, consumer) : 0;
    struct Looked {
      std::chrono::milliseconds keep_alive{0};  // set when (re)watched in this look
      std::optional<std::string> body;  // nullopt: nothing yet, wait
    };
    auto job = [this, topic, group, consumer, max_events, max_bytes, wait_ms, deadline, format,
                watched]() -> Result<Looked> {
      Looked looked;
      auto ensure_and_watch = [&](bool renew) -> Status {
        CONVERGE_RETURN_IF_ERROR(EnsureGroup(topic, group));
        CONVERGE_ASSIGN_OR_RETURN(looked.keep_alive, WatchGroup(topic, group, renew));
        return Status::Ok();
      };
      if (!watched) CONVERGE_RETURN_IF_ERROR(ensure_and_watch(false));
      Result<FetchResult> r =
          FetchAsMember(topic, group, consumer, static_cast<uint32_t>(max_events), max_bytes);
      if (watched && r.status().code() == StatusCode::kNotFound) {
        // Deleted meanwhile (its watch went with it): made again and watched again, so the
        // waits below are woken by the new group (also when the deletion has not yet
        // forgotten the old watch: ForgetGroup then leaves this one alone).
        CONVERGE_RETURN_IF_ERROR(ensure_and_watch(true));
        r = FetchAsMember(topic, group, consumer, static_cast<uint32_t>(max_events), max_bytes);
      }
      if (!r.ok()) return r.status();
      if (r->deliveries.empty() && wait_ms > 0 && std::chrono::steady_clock::now() < deadline) {
        return looked;  // nothing yet: wait
      }
      looked.body = RenderDeliveries(*r, topic, group, format);
      return looked;
    };
    Result<Looked> out = co_await d_.pool->Run(std::move(job));
    if (!out.ok()) co_return Error(out.status());
    if (out->body.has_value()) co_return reply(std::move(*out->body));
    if (!ready_.load()) {
      co_return reply(format == DeliveryFormat::kJson ? "{\"deliveries\":[]}" : "");
    }
    if (!watched) {
      keep_alive = out->keep_alive;
      continue;  // watched now: look again, this time with a generation read before
    }
    if (out->keep_alive.count() > 0) keep_alive = out->keep_alive;  // watched again
    // Wake up in time to call the group again (the fetch above keeps the member alive). Only a
    // change that concerns this member wakes it (records for partitions it owns, partitions
    // newly given to it, or the whole group), not every change of the group.
    co_await d_.hub->Wait(key, consumer, seen,
                          std::min(deadline, std::chrono::steady_clock::now() + *keep_alive));
  }
}

namespace {

struct LeaseItem {
  LeaseRef lease;
  int64_t delay_ms = 0;
  bool permanent = false;
  std::string reason;
};

std::vector<LeaseRef> LeaseRefsOf(const std::vector<LeaseItem>& items) {
  std::vector<LeaseRef> leases;
  leases.reserve(items.size());
  for (const LeaseItem& i : items) leases.push_back(i.lease);
  return leases;
}

// "[i,j,...]": the request indexes of leases that were lost.
std::string IndexList(const std::vector<size_t>& indexes) {
  std::string out = "[";
  for (size_t i = 0; i < indexes.size(); ++i) {
    if (i) out += ',';
    out += std::to_string(indexes[i]);
  }
  out += ']';
  return out;
}

// Parses {"acks"|"nacks": [{"partition", "offset", "lease_id", ...}], "consumer": ...}.
Status ParseLeases(const json::object& body, std::string_view list_name, bool nack,
                   uint64_t max_items, int64_t max_delay_ms, std::vector<LeaseItem>* items,
                   std::string* consumer) {
  CONVERGE_RETURN_IF_ERROR(CheckFields(body, {list_name, "consumer"}));
  CONVERGE_RETURN_IF_ERROR(ReadString(body, "consumer", consumer));
  CONVERGE_RETURN_IF_ERROR(CheckConsumerName(*consumer));
  auto it = body.find(json::string_view(list_name.data(), list_name.size()));
  if (it == body.end() || !it->value().is_array()) {
    return InvalidArgumentError("field '" + std::string(list_name) + "' must be a list");
  }
  const json::array& list = it->value().as_array();
  if (list.size() > max_items) {
    return ResourceExhaustedError("'" + std::string(list_name) + "' has " +
                                  std::to_string(list.size()) + " items, more than " +
                                  "limits.max_fetch_events (" + std::to_string(max_items) + ")");
  }
  for (size_t i = 0; i < list.size(); ++i) {
    std::string where = std::string(list_name) + "[" + std::to_string(i) + "]: ";
    if (!list[i].is_object()) return InvalidArgumentError(where + "must be an object");
    const json::object& o = list[i].as_object();
    Status s = nack ? CheckFields(
                          o, {"partition", "offset", "lease_id", "delay_ms", "permanent", "reason"})
                    : CheckFields(o, {"partition", "offset", "lease_id"});
    for (std::string_view required : {"partition", "offset", "lease_id"}) {
      if (s.ok() && !o.contains(json::string_view(required.data(), required.size()))) {
        s = InvalidArgumentError("field '" + std::string(required) + "' is required");
      }
    }
    LeaseItem item;
    uint64_t partition = 0;
    if (s.ok()) s = ReadUint(o, "partition", 0, 1023, &partition);
    if (s.ok()) s = ReadUint(o, "offset", 0, UINT64_MAX, &item.lease.offset);
    // Lease ids are 64-bit: sent as decimal strings (JavaScript numbers would round them);
    // a JSON integer is accepted too.
    if (s.ok()) {
      std::string text;
      if (o.at("lease_id").is_string() && ReadString(o, "lease_id", &text).ok()) {
        Result<uint64_t> id = ParseUintParam("lease_id", text, 0, UINT64_MAX);
        if (id.ok())
          item.lease.lease_id = *id;
        else
          s = InvalidArgumentError("field 'lease_id' must be a decimal string or an integer");
      } else {
        s = ReadUint(o, "lease_id", 0, UINT64_MAX, &item.lease.lease_id);
      }
    }
    if (nack) {
      if (s.ok()) s = ReadInt(o, "delay_ms", 0, max_delay_ms, &item.delay_ms);
      if (s.ok()) s = ReadBool(o, "permanent", &item.permanent);
      if (s.ok()) s = ReadString(o, "reason", &item.reason);
      if (s.ok() && item.reason.size() > 4096)
        s = InvalidArgumentError("field 'reason' is too long");
    }
    if (!s.ok()) return s.WithContext(where.substr(0, where.size() - 2));
    item.lease.partition = static_cast<uint32_t>(partition);
    items->push_back(std::move(item));
  }
  return Status::Ok();
}

// A lease list over its bound is the request's own size: 413 (InputErrorReply).
HttpReply LeaseParseError(const Status& s) { return Reply(InputErrorReply(s)); }

}  // namespace

asio::awaitable<HttpReply> Api::Ack(Call& call) {
  if (std::optional<HttpReply> refused = RefuseGroupCall(*call.principal, call.topic, call.group)) {
    co_return std::move(*refused);
  }
  if (Status s = CheckQuery(call.query, {}); !s.ok()) co_return Error(s);
  Result<json::object> body = ParseJsonObject(call.req.body());
  if (!body.ok()) co_return InvalidJson(body.status());
  Status s;
  std::vector<LeaseItem> items;
  std::string consumer = "default";
  s = ParseLeases(*body, "acks", false, d_.config->limits.max_fetch_events, 0, &items, &consumer);
  if (!s.ok()) co_return LeaseParseError(s);
  const std::string topic = call.topic, group = call.group;
  // The ack holds no thread while its commit is synced (ConsumerGroups::AckBatchAsync): acks
  // in flight, however many, share the next sync of the group journal.
  const std::vector<LeaseRef> leases = LeaseRefsOf(items);
  Result<AckBatchResult> r = co_await AckDurably(topic, group, consumer, leases);
  if (!r.ok()) co_return Error(r.status());
  co_return Reply(JsonReply(
      http::status::ok,
      "{\"acked\":" + std::to_string(r->acked) + ",\"lost\":" + IndexList(r->lost) + "}"));
}

asio::awaitable<HttpReply> Api::Nack(Call& call) {
  if (std::optional<HttpReply> refused = RefuseGroupCall(*call.principal, call.topic, call.group)) {
    co_return std::move(*refused);
  }
  if (Status s = CheckQuery(call.query, {}); !s.ok()) co_return Error(s);
  Result<json::object> body = ParseJsonObject(call.req.body());
  if (!body.ok()) co_return InvalidJson(body.status());
  Status s;
  std::vector<LeaseItem> items;
  std::string consumer = "default";
  s = ParseLeases(*body, "nacks", true, d_.config->limits.max_fetch_events,
                  d_.config->groups.max_nack_delay_ms, &items, &consumer);
  if (!s.ok()) co_return LeaseParseError(s);
  const std::string topic = call.topic, group = call.group;
  // Each nack is its own storage operation; the reply says what happened to each, so a
  // failure in the middle is reported precisely rather than hidden.
  auto job = [&, topic, group]() -> Result<std::string> {
    // Answers as ack does, before anything is applied: 404 for a group that does not exist
    // (even with no nacks), 400 for a partition the topic does not have.
    std::vector<std::string> groups;
    if (d_.cluster_groups != nullptr) {
      // A list that cannot be read is an error (503), not "no such group".
      CONVERGE_ASSIGN_OR_RETURN(groups, d_.cluster_groups->ListGroupsChecked(topic));
    } else {
      groups = d_.groups->ListGroups(topic);
    }
    if (std::find(groups.begin(), groups.end(), group) == groups.end()) {
      return NoSuchGroup(topic, group);
    }
    if (!items.empty()) {
      CONVERGE_ASSIGN_OR_RETURN(TopicInfo info, d_.log->DescribeTopic(topic));
      for (size_t i = 0; i < items.size(); ++i) {
        if (items[i].lease.partition >= info.partitions.size()) {
          return InvalidArgumentError("nacks[" + std::to_string(i) + "]: partition " +
                                      std::to_string(items[i].lease.partition) +
                                      " does not exist in topic '" + topic + "'");
        }
      }
    }
    size_t nacked = 0;
    std::string lost, failed;
    for (size_t i = 0; i < items.size(); ++i) {
      NackOptions options;
      options.delay_ms = items[i].delay_ms;
      options.permanent = items[i].permanent;
      options.reason = items[i].reason;
      Status st = d_.groups->Nack(topic, group, consumer, items[i].lease, options);
      if (st.ok()) {
        ++nacked;
      } else if (st.code() == StatusCode::kNotFound && i == 0) {
        return st;  // the group was deleted meanwhile: nothing was applied
      } else if (st.code() == StatusCode::kFailedPrecondition) {
        if (!lost.empty()) lost += ',';
        lost += std::to_string(i);
      } else {
        if (!failed.empty()) failed += ',';
        failed += "{\"index\":" + std::to_string(i) + ",\"code\":";
        AppendJsonString(&failed, ErrorCodeFor(st).code);
        failed += ",\"message\":";
        AppendJsonString(&failed, st.message());
        failed += '}';
      }
    }
    return "{\"nacked\":" + std::to_string(nacked) + ",\"lost\":[" + lost + "],\"failed\":[" +
           failed + "]}";
  };
  Result<std::string> out = co_await d_.pool->Run(std::move(job));
  if (!out.ok()) co_return Error(out.status());
  co_return Reply(JsonReply(http::status::ok, std::move(out).value()));
}

asio::awaitable<HttpReply> Api::ExtendLeases(Call& call) {
  if (std::optional<HttpReply> refused = RefuseGroupCall(*call.principal, call.topic, call.group)) {
    co_return std::move(*refused);
  }
  if (Status s = CheckQuery(call.query, {}); !s.ok()) co_return Error(s);
  Result<json::object> body = ParseJsonObject(call.req.body());
  if (!body.ok()) co_return InvalidJson(body.status());
  // {"leases": [...], "lease_ms": n, "consumer": ...}: lease_ms is read here, the rest as
  // the lease lists of ack and nack are.
  int64_t lease_ms = 0;
  Status s = ReadInt(*body, "lease_ms", 1, d_.config->groups.max_lease_ms, &lease_ms);
  if (s.ok() && !body->contains("lease_ms")) {
    s = InvalidArgumentError("field 'lease_ms' is required");
  }
  if (!s.ok()) co_return Error(s);
  body->erase("lease_ms");
  std::vector<LeaseItem> items;
  std::string consumer = "default";
  s = ParseLeases(*body, "leases", false, d_.config->limits.max_fetch_events, 0, &items, &consumer);
  if (!s.ok()) co_return LeaseParseError(s);
  const std::string topic = call.topic, group = call.group;
  auto job = [&, topic, group]() -> Result<std::string> {
    const std::vector<LeaseRef> leases = LeaseRefsOf(items);
    CONVERGE_ASSIGN_OR_RETURN(ExtendLeasesResult r,
                              d_.groups->ExtendLeases(topic, group, consumer, leases, lease_ms));
    std::string json = "{\"extended\":" + std::to_string(r.extended) +
                       ",\"lost\":" + IndexList(r.lost) + ",\"leases\":[";
    bool first = true;
    for (size_t i = 0; i < leases.size(); ++i) {
      if (r.lease_expires_at_micros[i] == 0) continue;
      if (!first) json += ',';
      first = false;
      json += "{\"partition\":" + std::to_string(leases[i].partition) +
              ",\"offset\":" + std::to_string(leases[i].offset) + ",\"lease_id\":\"" +
              std::to_string(leases[i].lease_id) +
              "\",\"lease_expires_at_ms\":" + std::to_string(r.lease_expires_at_micros[i] / 1000) +
              "}";
    }
    json += "]}";
    return json;
  };
  Result<std::string> out = co_await d_.pool->Run(std::move(job));
  if (!out.ok()) co_return Error(out.status());
  co_return Reply(JsonReply(http::status::ok, std::move(out).value()));
}

asio::awaitable<HttpReply> Api::Stream(Call& call) {
  if (std::optional<HttpReply> refused = RefuseGroupCall(*call.principal, call.topic, call.group)) {
    co_return std::move(*refused);
  }
  Observe(TopologyObserver::Kind::kConsume, call.topic, *call.principal);
  Status s = CheckQuery(call.query, {"consumer", "max_events", "auto_ack"});
  const LimitsConfig& limits = d_.config->limits;
  uint64_t max_events = 100;
  bool auto_ack = false;
  std::string consumer = "stream-" + std::to_string(next_stream_id_.fetch_add(1)) + "-" +
                         std::to_string(d_.env->clock().NowWallMicros());
  if (auto v = call.Query("max_events"); s.ok() && v) {
    Result<uint64_t> n = ParseUintParam("max_events", *v, 1, limits.max_fetch_events);
    if (n.ok())
      max_events = *n;
    else
      s = n.status();
  }
  if (auto v = call.Query("auto_ack"); s.ok() && v) {
    if (*v == "true" || *v == "1") {
      auto_ack = true;
    } else if (*v != "false" && *v != "0") {
      s = InvalidArgumentError("query parameter 'auto_ack' must be true or false");
    }
  }
  if (auto v = call.Query("consumer"); s.ok() && v) {
    consumer = *v;
    s = CheckConsumerName(consumer);
  }
  if (!s.ok()) co_return Error(s);
  // Released however the stream ends (or if it never starts).
  std::shared_ptr<void> slot = TakeSubscriberSlot();
  if (slot == nullptr) co_return TooManySubscribers();
  const std::string topic = call.topic, group = call.group;
  auto job = [this, topic, group, consumer]() -> Result<std::chrono::milliseconds> {
    CONVERGE_RETURN_IF_ERROR(EnsureGroup(topic, group));
    CONVERGE_ASSIGN_OR_RETURN(std::chrono::milliseconds keep_alive, WatchGroup(topic, group));
    CONVERGE_RETURN_IF_ERROR(d_.groups->Join(topic, group, consumer).status());
    return keep_alive;
  };
  Result<std::chrono::milliseconds> joined = co_await d_.pool->Run(std::move(job));
  s = joined.status();
  const std::chrono::milliseconds keep_alive = joined.ok() ? *joined : std::chrono::milliseconds(0);
  if (!s.ok()) co_return Error(s);

  HttpReply reply;
  reply.response = HttpResponse{http::status::ok, 11};
  reply.response.set(http::field::content_type, "text/event-stream");
  reply.response.set(http::field::cache_control, "no-store");
  reply.stream = [this, slot, topic, group, consumer, max_events, auto_ack,
                  keep_alive](StreamSink& sink) -> asio::awaitable<void> {
    const std::string key = GroupKey(topic, group);
    const auto heartbeat = std::chrono::milliseconds(d_.config->limits.stream_heartbeat_ms);
    const auto executor = co_await asio::this_coro::executor;
    auto acks = std::make_shared<AckPipe>(executor);
    // A client that goes away wakes the stream at once (its wait below is on its member's
    // name; another stream of the same name just looks again).
    WakeupHub* hub = d_.hub;
    sink.OnPeerClosed([hub, key, consumer] { hub->Notify(key, consumer); });
    std::string hello = "retry: 1000\n: subscribed consumer=" + consumer + "\n\n";
    bool open = co_await sink.Write(std::move(hello));
    auto last_write = std::chrono::steady_clock::now();
    while (open && !sink.Closing() && !sink.PeerClosed() && ready_.load()) {
      uint64_t seen = d_.hub->Generation(key, consumer);
      struct Batch {
        std::string text;
        std::vector<LeaseRef> leases;
      };
      auto job = [&]() -> Result<Batch> {
        CONVERGE_ASSIGN_OR_RETURN(
            FetchResult r, FetchAsMember(topic, group, consumer, static_cast<uint32_t>(max_events),
                                         d_.config->limits.max_fetch_bytes));
        Batch b;
        if (r.deliveries.empty()) return b;
        b.text = RenderDeliveries(r, topic, group, DeliveryFormat::kSse);
        if (auto_ack) {
          for (const Delivery& d : r.deliveries) b.leases.push_back(d.lease());
        }
        return b;
      };
      Result<Batch> batch = co_await d_.pool->Run(std::move(job));
      if (!batch.ok()) {
        std::string err = "event: error\ndata: {\"code\":";
        AppendJsonString(&err, ErrorCodeFor(batch.status()).code);
        err += ",\"message\":";
        AppendJsonString(&err, batch.status().message());
        err += "}\n\n";
        co_await sink.Write(std::move(err));
        break;
      }
      if (!batch->text.empty()) {
        if (sink.PeerClosed()) break;  // leased for nobody: ended below like the rest
        open = co_await sink.Write(std::move(batch->text));
        last_write = std::chrono::steady_clock::now();
        if (open && auto_ack) {
          // Acks (a synced commit each) go to a worker so the next fetch does not wait for
          // them; leases sent while one is running are acked together by the next.
          if (!acks->error.ok()) break;
          acks->queued.insert(acks->queued.end(), batch->leases.begin(), batch->leases.end());
          if (!acks->running) {
            acks->running = true;
            asio::co_spawn(executor, AckWorker(acks, topic, group, consumer), asio::detached);
          }
        }
        continue;
      }
      // Wakes for the heartbeat, and in time to call the group again (the fetch above keeps
      // the member alive while it has nothing to send).
      co_await d_.hub->Wait(
          key, consumer, seen,
          std::min(last_write + heartbeat, std::chrono::steady_clock::now() + keep_alive));
      if (std::chrono::steady_clock::now() >= last_write + heartbeat) {
        open = co_await sink.Write(": keep-alive\n\n");
        last_write = std::chrono::steady_clock::now();
      }
    }
    // Let the acks of what was sent finish. Leases still outstanding were sent to a consumer
    // that did not settle them: maybe the event made it crash. Each counts as a delivery
    // attempt (like a lease expiry, at once), so a poison event ends in the dead-letter topic
    // rather than being redelivered forever; the consumer leaves the group.
    while (acks->running) {
      acks->done.expires_after(std::chrono::seconds(1));
      co_await acks->done.async_wait(asio::as_tuple(asio::use_awaitable));
    }
    auto job = [&] {
      return d_.groups->Abandon(topic, group, consumer,
                                "the consumer's stream ended without settling the lease");
    };
    Status left = co_await d_.pool->Run(std::move(job));
    left.IgnoreError();
  };
  co_return reply;
}

asio::awaitable<Result<AckBatchResult>> Api::AckDurably(const std::string& topic,
                                                        const std::string& group,
                                                        const std::string& consumer,
                                                        std::span<const LeaseRef> leases) {
  using Acked = Result<AckBatchResult>;
  ConsumerGroups* groups = d_.groups;
  auto job = [groups, &topic, &group, &consumer, leases](std::function<void(Acked)> done) {
    groups->AckBatchAsync(topic, group, consumer, leases, std::move(done));
  };
  co_return co_await BlockingPool::RunInline<Acked>(std::move(job));
}

asio::awaitable<void> Api::AckWorker(std::shared_ptr<AckPipe> pipe, std::string topic,
                                     std::string group, std::string consumer) {
  while (!pipe->queued.empty() && pipe->error.ok()) {
    std::vector<LeaseRef> leases;
    leases.swap(pipe->queued);
    pipe->error = (co_await AckDurably(topic, group, consumer, leases)).status();
  }
  pipe->running = false;
  pipe->done.cancel();
}

asio::awaitable<HttpReply> Api::Leave(Call& call) {
  if (std::optional<HttpReply> refused = RefuseGroupCall(*call.principal, call.topic, call.group)) {
    co_return std::move(*refused);
  }
  if (Status s = CheckQuery(call.query, {}); !s.ok()) co_return Error(s);
  Result<json::object> body = ParseJsonObject(call.req.body());
  if (!body.ok()) co_return InvalidJson(body.status());
  std::string consumer = "default";
  Status s = CheckFields(*body, {"consumer"});
  if (s.ok()) s = ReadString(*body, "consumer", &consumer);
  if (s.ok()) s = CheckConsumerName(consumer);
  if (!s.ok()) co_return Error(s);
  const std::string topic = call.topic, group = call.group;
  auto job = [this, topic, group, consumer]() -> Result<bool> {
    // Whether it was a member (for the reply): a heartbeat says, NotFound if no group.
    Result<Assignment> member = d_.groups->Heartbeat(topic, group, consumer);
    if (!member.ok() && member.status().code() != StatusCode::kFailedPrecondition) {
      return member.status();
    }
    // A graceful leave: its unacked leases are redelivered at once without using up an
    // attempt, and the group rebalances now rather than after the session timeout.
    CONVERGE_RETURN_IF_ERROR(d_.groups->Leave(topic, group, consumer));
    return member.ok();
  };
  Result<bool> left = co_await d_.pool->Run(std::move(job));
  if (!left.ok()) co_return Error(left.status());
  co_return Reply(JsonReply(http::status::ok, *left ? "{\"left\":true}" : "{\"left\":false}"));
}

// ---------------------------------------------------------------------------------------
// Dead letters

asio::awaitable<HttpReply> Api::ListDeadLetters(Call& call) {
  // Subscribers and admins (an operator sees every group's dead letters).
  if (!call.principal->CanAdminister(call.topic)) {
    co_return Error(NotAllowed(*call.principal, "subscribe to", call.topic));
  }
  if (Status s = CheckGroupNames(call.topic, call.group); !s.ok()) co_return Error(s);
  Status s = CheckQuery(call.query, {"from_offset", "limit"});
  uint64_t from = 0, limit = 100;
  if (auto v = call.Query("from_offset"); s.ok() && v) {
    Result<uint64_t> n = ParseUintParam("from_offset", *v, 0, UINT64_MAX);
    if (n.ok())
      from = *n;
    else
      s = n.status();
  }
  if (auto v = call.Query("limit"); s.ok() && v) {
    Result<uint64_t> n = ParseUintParam("limit", *v, 1, d_.config->limits.max_fetch_events);
    if (n.ok())
      limit = *n;
    else
      s = n.status();
  }
  if (!s.ok()) co_return Error(s);
  const std::string topic = call.topic, group = call.group;
  auto job = [&, topic, group]() -> Result<std::string> {
    CONVERGE_ASSIGN_OR_RETURN(
        DeadLetterPage page,
        d_.groups->ListDeadLetters(topic, group, from, static_cast<uint32_t>(limit)));
    std::string json = "{\"dead_letters\":[";
    for (size_t i = 0; i < page.dead_letters.size(); ++i) {
      const DeadLetter& dl = page.dead_letters[i];
      if (i) json += ',';
      json += "{\"dead_letter_offset\":" + std::to_string(dl.dead_letter_offset) +
              ",\"partition\":" + std::to_string(dl.partition) +
              ",\"offset\":" + std::to_string(dl.offset) +
              ",\"delivery_count\":" + std::to_string(dl.delivery_count) + ",\"reason\":";
      AppendJsonString(&json, dl.reason);
      json += ",\"last_error\":";
      AppendJsonString(&json, dl.last_error);
      json += ",\"dead_lettered_at_ms\":" + std::to_string(dl.dead_lettered_at_micros / 1000);
      json += dl.replayed ? ",\"replayed\":true" : ",\"replayed\":false";
      json += ",\"event\":";
      AppendStoredEvent(&json, dl.value);
      json += '}';
    }
    json += "],\"next_offset\":" + std::to_string(page.next_offset) +
            ",\"end_offset\":" + std::to_string(page.end_offset) + "}";
    return json;
  };
  Result<std::string> out = co_await d_.pool->Run(std::move(job));
  if (!out.ok()) co_return Error(out.status());
  co_return Reply(JsonReply(http::status::ok, std::move(out).value()));
}

asio::awaitable<HttpReply> Api::ReplayDeadLetters(Call& call) {
  if (!call.principal->CanAdminister(call.topic)) {
    co_return Error(NotAllowed(*call.principal, "subscribe to", call.topic));
  }
  if (Status s = CheckGroupNames(call.topic, call.group); !s.ok()) co_return Error(s);
  if (Status s = CheckQuery(call.query, {}); !s.ok()) co_return Error(s);
  Result<json::object> body = ParseJsonObject(call.req.body());
  if (!body.ok()) co_return InvalidJson(body.status());
  // A replay appends the events again (by default to the group's own topic, where every group
  // sees them): it needs publish permission there too. That is checked before the body is
  // validated, so a caller without it learns nothing from the answer; the target is the one
  // field read first (a target that is not a string is refused by the validation below,
  // after the check on the group's own topic).
  std::string append_to = call.topic;
  if (auto it = body->find("target_topic"); it != body->end() && it->value().is_string()) {
    const json::string& target = it->value().get_string();
    if (!target.empty()) append_to.assign(target.data(), target.size());
  }
  if (!call.principal->admin && !call.principal->CanPublish(append_to)) {
    co_return Error(NotAllowed(*call.principal, "publish (replay dead letters) to", append_to));
  }
  // A replay is a publish from outside: topics converge writes itself take none (a replayed
  // change event or saga command would be taken for converge's own), whoever asks, and
  // whether the target was chosen or is the group's own topic. Refused before anything is
  // appended.
  if (std::string owner = d_.system_topics->OwnerOf(append_to); !owner.empty()) {
    co_return SystemTopicError(append_to, owner,
                               append_to == call.topic
                                   ? "replaying dead letters into it (replay them to another "
                                     "topic with target_topic)"
                                   : "replaying dead letters into it");
  }
  Status s;
  ReplayOptions options;
  uint64_t max_events = options.max_records;
  s = CheckFields(*body,
                  {"from_offset", "to_offset", "max_events", "target_topic", "include_replayed"});
  if (s.ok()) s = ReadUint(*body, "from_offset", 0, UINT64_MAX, &options.from_offset);
  if (s.ok()) s = ReadUint(*body, "to_offset", 0, UINT64_MAX, &options.to_offset);
  if (s.ok()) s = ReadUint(*body, "max_events", 1, d_.config->limits.max_fetch_events, &max_events);
  if (s.ok()) s = ReadString(*body, "target_topic", &options.target_topic);
  if (s.ok()) s = ReadBool(*body, "include_replayed", &options.include_replayed);
  if (s.ok() && !options.target_topic.empty()) s = CheckTopicName(options.target_topic);
  if (!s.ok()) co_return Error(s);
  options.max_records = static_cast<uint32_t>(max_events);
  const std::string topic = call.topic, group = call.group;
  auto job = [&, topic, group] { return d_.groups->ReplayDeadLetters(topic, group, options); };
  Result<ReplayResult> r = co_await d_.pool->Run(std::move(job));
  if (!r.ok()) co_return Error(r.status());
  co_return Reply(JsonReply(http::status::ok,
                            "{\"replayed\":" + std::to_string(r->replayed) + ",\"deduplicated\":" +
                                std::to_string(r->deduplicated) + ",\"skipped_already_replayed\":" +
                                std::to_string(r->skipped_already_replayed) +
                                ",\"next_offset\":" + std::to_string(r->next_offset) + "}"));
}

}  // namespace converge::server

namespace converge::server {

// ---- the observed topology (GET /v1/topology; here for the strict query reader) ----

void Api::Observe(TopologyObserver::Kind kind, const std::string& topic, const Principal& who) {
  topology_->Record(kind, topic, who.service, d_.env->clock().NowMonotonicNanos() / 1'000'000);
}

asio::awaitable<HttpReply> Api::GetTopology(Call& call) {
  // Who talks to whom is operator information: admin tokens (or auth disabled) only.
  if (!call.principal->admin) {
    co_return Error(PermissionDeniedError("service '" + call.principal->service +
                                          "' may not read the topology: admin tokens only"));
  }
  Status s = CheckQuery(call.query, {"window_ms"});
  if (!s.ok()) co_return Error(s);
  int64_t window_ms = 600'000;
  if (auto v = call.Query("window_ms")) {
    Result<uint64_t> n = ParseUintParam("window_ms", *v, 1, 86'400'000);
    if (!n.ok()) co_return Error(n.status());
    window_ms = static_cast<int64_t>(*n);
  }
  json::object doc =
      topology_->Snapshot(d_.env->clock().NowMonotonicNanos() / 1'000'000, window_ms);
  co_return Reply(JsonReply(http::status::ok, json::serialize(doc)));
}

}  // namespace converge::server

namespace converge::server {

// ---------------------------------------------------------------------------------------
// Shared consumer groups: where a group runs (the forwarding itself: api_forward.cc)

asio::awaitable<std::optional<HttpReply>> Api::RouteToGroupOwner(Call& call,
                                                                 const std::string& group) {
  // The route's own authorization, as its handler starts (so a refusal is the same through
  // every sidecar), then valid names: before anything of the request is parsed or forwarded.
  // The owner checks the caller's credentials again.
  const Principal& who = *call.principal;
  std::optional<std::pair<bool, std::string_view>> allowed;  // (allowed, action)
  switch (call.route.id) {
    case RouteId::kDescribeGroup:
      allowed.emplace(who.CanSee(call.topic), "see");
      break;
    case RouteId::kDeleteGroup:
      allowed.emplace(who.CanAdminister(call.topic), "delete groups of");
      break;
    case RouteId::kSeekGroup:
      allowed.emplace(who.CanAdminister(call.topic), "seek groups of");
      break;
    case RouteId::kDiscardDeadLetters:
      allowed.emplace(who.CanAdminister(call.topic), "discard dead letters of");
      break;
    case RouteId::kListDeadLetters:
    case RouteId::kReplayDeadLetters:
      allowed.emplace(who.CanAdminister(call.topic), "subscribe to");
      break;
    default:  // create, fetch, ack, nack, extend, stream, leave
      allowed.emplace(who.CanSubscribe(call.topic), "subscribe to");
      break;
  }
  if (!allowed->first) co_return Error(NotAllowed(who, allowed->second, call.topic));
  if (Status s = CheckGroupNames(call.topic, group); !s.ok()) co_return Error(s);
  const bool forwarded = call.req.find(std::string(kForwardedHeader)) != call.req.end();
  ClusterGroups* cluster = d_.cluster_groups;
  const std::string topic = call.topic;
  // Named, not a temporary in the co_await (see the GCC 12 note in blocking_pool.h).
  auto locate = [cluster, topic, group, forwarded] {
    return cluster->Locate(topic, group, forwarded);
  };
  Result<ClusterGroups::Where> where = co_await ForwardPool().Run(std::move(locate));
  if (!where.ok()) co_return Error(where.status());
  if (where->here) co_return std::nullopt;
  if (call.route.id == RouteId::kStream) {
    // A stream is not relayed through this sidecar: the client reconnects to the owner.
    HttpResponse res{http::status::temporary_redirect, 11};
    res.set(http::field::location, where->url + std::string(call.req.target()));
    res.set(http::field::content_type, "application/json");
    res.body() = "{\"code\":\"MOVED\",\"message\":\"the group runs on " + where->url + "\"}";
    res.prepare_payload();
    co_return Reply(std::move(res));
  }
  co_return co_await ForwardToOwner(call, where->url, "");
}

asio::awaitable<Result<std::string>> Api::DescribeGroupAnywhere(Call& call,
                                                                const std::string& group) {
  ClusterGroups* cluster = d_.cluster_groups;
  const std::string topic = call.topic;
  auto locate = [cluster, topic, group] { return cluster->Locate(topic, group, false); };
  Result<ClusterGroups::Where> where = co_await ForwardPool().Run(std::move(locate));
  if (!where.ok()) co_return where.status();
  if (where->here) {
    auto job = [this, topic, group]() -> Result<std::string> {
      CONVERGE_ASSIGN_OR_RETURN(GroupDescription g, d_.groups->DescribeGroup(topic, group));
      return GroupDetailJson(g);
    };
    co_return co_await d_.pool->Run(std::move(job));
  }
  HttpReply reply =
      co_await ForwardToOwner(call, where->url, "/v1/topics/" + topic + "/groups/" + group);
  if (reply.response.result() == http::status::not_found) {
    co_return NoSuchGroup(topic, group);
  }
  if (reply.response.result() != http::status::ok) {
    co_return UnavailableError("describing group '" + group + "' at " + where->url + ": HTTP " +
                               std::to_string(reply.response.result_int()));
  }
  co_return std::move(reply.response.body());
}

}  // namespace converge::server
