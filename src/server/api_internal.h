// Helpers shared by the files of the API (api.cc, api_topics.cc, api_groups.cc,
// api_store.cc, api_sagas.cc).
// Internal to src/server.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "converge/consumer_group.h"
#include "converge/log.h"
#include "server/api.h"

namespace converge::server {

struct Api::Call {
  HttpRequest& req;
  const Route& route;
  QueryParams query;  // decoded (router.h)
  // The path parameters, decoded; {topic} and {group} also below.
  std::vector<std::pair<std::string, std::string>> params;
  std::string topic;
  std::string group;
  const Principal* principal = nullptr;

  const std::string& Param(std::string_view name) const {
    static const std::string kNone;
    for (const auto& [k, v] : params) {
      if (k == name) return v;
    }
    return kNone;
  }

  std::optional<std::string> Query(std::string_view name) const {
    for (const auto& [k, v] : query) {
      if (k == name) return v;
    }
    return std::nullopt;
  }
};

namespace api_internal {

// Marks a request one sidecar forwarded to another (api_forward.cc): it is served there or
// refused, never forwarded again. Claiming it grants nothing: every sidecar authorizes alone.
inline constexpr std::string_view kForwardedHeader = "X-Converge-Forwarded";

HttpResponse JsonReply(http::status status, std::string body, unsigned version = 11);
HttpReply Reply(HttpResponse res);
HttpReply Error(const Status& status);
HttpReply Error(http::status s, std::string_view code, std::string_view message);
// 403 SYSTEM_TOPIC: `topic` is written only by `owner` (SystemTopics::OwnerOf), so `what`
// ("publishing to it over HTTP") is refused, whoever asks.
HttpReply SystemTopicError(std::string_view topic, std::string_view owner, std::string_view what);
// Names as clients may use them; InvalidArgument naming the rule otherwise.
Status CheckTopicName(std::string_view name);
Status CheckGroupName(std::string_view name);
// A topic a read-only route may name: an admin may name internal ('_') topics too (a group's
// dead letters "_dlq.<topic>.<group>", the relays' "_dlq.outbox"); everyone else only the
// names clients use.
Status CheckReadableTopicName(const Principal& who, std::string_view name);
Status CheckConsumerName(std::string_view name);
// The WakeupHub key of a group.
std::string GroupKey(const std::string& topic, const std::string& group);
void AppendUint(std::string* out, uint64_t v);
// A topic as JSON; with offsets and groups when groups_json is given, with offsets alone when
// `offsets`.
std::string TopicJson(const TopicInfo& info, const std::string* groups_json, bool offsets = false);
// A whole group: options, members, partitions (committed, end, lag, leases), dead letters.
std::string GroupDetailJson(const GroupDescription& g);
std::string GroupJson(const GroupDescription& g);
// Appends the stored record as structured-mode JSON after "event":, or "event":null and an
// "error" member if it is not a converge event.
void AppendStoredEvent(std::string* out, std::string_view value);

}  // namespace api_internal

// The route handlers of api*.cc use these unqualified.
using api_internal::AppendStoredEvent;
using api_internal::AppendUint;
using api_internal::CheckConsumerName;
using api_internal::CheckGroupName;
using api_internal::CheckReadableTopicName;
using api_internal::CheckTopicName;
using api_internal::Error;
using api_internal::GroupDetailJson;
using api_internal::GroupJson;
using api_internal::GroupKey;
using api_internal::JsonReply;
using api_internal::kForwardedHeader;
using api_internal::Reply;
using api_internal::SystemTopicError;
using api_internal::TopicJson;

}  // namespace converge::server
