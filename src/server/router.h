// The pieces of request routing that do not depend on the API: path templates, the one
// reading of a request target (Boost.URL), and the one Status -> HTTP status mapping. The
// dispatch table itself (method + path template -> handler + auth rule) is Api::RouteTable()
// in api.cc; every route of `converge serve` is in it, the store's and the sagas' included.
//
// Reading a target (RFC 3986, the same on every route):
// - The target must be origin-form (a path and an optional query) as RFC 3986 defines it;
//   anything else (a bad percent-escape such as "%zz" or "%4", a byte a URI may not hold)
//   is 400 INVALID_ARGUMENT.
// - '+' is a plus sign, in the path and in the query alike (no form-encoding: a space is
//   "%20"). A store key "a+b" and a query prefix "a+b" mean the same two characters.
// - Query names and values are percent-decoded; one that decodes to a control byte
//   (%00-%1F, %7F) is 400: no route takes control bytes in its query.
// Thread-safety: pure functions.
#pragma once

#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "converge/status.h"
#include "server/http_server.h"

namespace converge::server {

// Every route, one value each (Api::RouteTable() maps them to handlers).
enum class RouteId {
  kHealthz,
  kReadyz,
  kMetrics,
  kListTopics,
  kCreateTopic,
  kDescribeTopic,
  kPublish,
  kCreateGroup,
  kFetch,
  kAck,
  kNack,
  kExtendLeases,
  kStream,
  kLeave,
  kListDeadLetters,
  kReplayDeadLetters,
  // The shared store (/v1/collections).
  kListCollections,
  kPutCollection,
  kGetCollection,
  kDeleteCollection,
  kListDocuments,
  kGetDocument,
  kPutDocument,
  kDeleteDocument,
  kTransaction,
  // The saga orchestrator.
  kListSagaDefinitions,
  kRegisterSagaDefinition,
  kStartSaga,
  kListSagas,
  kDescribeSaga,
  kCancelSaga,
  kListSagaTimers,
  kRescheduleSagaTimer,
  kCancelSagaTimer,
  // The schema registry.
  kListSchemaTypes,
  kDescribeSchemaType,
  kSetSchemaCompatibility,
  kListSchemaVersions,
  kRegisterSchemaVersion,
  kGetSchemaVersion,
  kGetTopicSchema,
  kPutTopicSchema,
  kDeleteTopicSchema,
  // The declared and observed topology.
  kTopology,
  // Replicas.
  kListReplicas,
  kDescribeReplica,
  kReadReplicaRow,
  kReconcileReplica,
  kReplicaDrift,
  kCollectionChanges,
  kCollectionReconcile,
  // Multi-writer collections.
  kMultiWriterChanges,
  kMultiWriterReconcile,
  kMultiWriterStates,
  kGetMultiWriterDocument,
  kPutMultiWriterDocument,
  kDeleteMultiWriterDocument,
  // Operating the server (api_admin.cc): topics, groups, relays, the API document.
  kDeleteTopic,
  kReadEvents,
  kListGroups,
  kDescribeGroup,
  kDeleteGroup,
  kSeekGroup,
  kListRelays,
  kListRelayDeadLetters,
  kReplayRelayDeadLetters,
  kDiscardRelayDeadLetters,
  kDiscardDeadLetters,
  kAudit,
  kListLeases,
  kOpenApi,
  // Push subscriptions.
  kListSubscriptions,
  kCreateSubscription,
  kGetSubscription,
  kDeleteSubscription,
  // The dashboard's static files (no data: the page calls the API with a token).
  kDashboard,
  kDashboardAsset,
  // Live overview numbers for the dashboard (Server-Sent Events, read-only).
  kOverviewStream,
};

// Who may call a route.
enum class AuthRule {
  kNone,     // health and readiness probes
  kMetrics,  // a token only when `metrics_require_token` is set
  kToken,    // a valid token (authorization is the handler's, before it reads the input)
};

// The raw (still percent-encoded) values a path template bound, by name.
using RawParams = std::vector<std::pair<std::string_view, std::string_view>>;

// Matches `path` (no query) against a template: literal segments, "{name}" for one segment,
// and a last "{name...}" for the rest of the path (slashes included, never empty). Empty
// segments ("//", a trailing "/") are skipped, except inside a rest parameter. Returns the
// number of literal segments matched (the more, the more specific the route), or -1.
int MatchPathTemplate(std::string_view tmpl, std::string_view path, RawParams* params);

// A path split once into its non-empty segments (each with its offset in `text`), for
// matching it against many templates.
struct SplitPath {
  explicit SplitPath(std::string_view path);
  std::string_view text;
  std::vector<std::pair<size_t, std::string_view>> segments;
};
int MatchPathTemplate(const SplitPath& tmpl, const SplitPath& path, RawParams* params);

using QueryParams = std::vector<std::pair<std::string, std::string>>;

// The target checked as a whole (see the top of this file); the decoded query parameters in
// order (repeats kept). InvalidArgument naming the problem otherwise.
Result<QueryParams> ParseTargetQuery(std::string_view target);

// A request target read for a matched route: its path parameters and query, decoded.
struct DecodedTarget {
  std::vector<std::pair<std::string, std::string>> params;
  QueryParams query;
};
// ParseTargetQuery plus each of `params` (from MatchPathTemplate) percent-decoded.
Result<DecodedTarget> DecodeTarget(std::string_view target, const RawParams& params);

// Query parameters are read as strictly as bodies, on every /v1 route: one not in `allowed`
// (almost always a typo, or a body field sent in the wrong place) or one given twice is
// InvalidArgument naming it. Each route calls it after its authorization, so a caller without
// permission learns nothing from it. (The probes and /metrics do not: probers add their own.)
Status CheckQuery(const QueryParams& query, std::initializer_list<std::string_view> allowed);

// One percent-encoded path segment (or rest of a path), decoded; '+' stays '+'.
// InvalidArgument for a malformed escape. Also used for the percent-encoded CloudEvents
// header values (the HTTP binding encodes them the same way).
Result<std::string> PercentDecode(std::string_view text);

// The error code of a status in API replies and its HTTP status: the one mapping every
// route uses (docs/server.md, "Errors").
struct ApiError {
  http::status status;
  std::string_view code;
};
// `conditional_write`: the request is a write with If-Match / If-None-Match (or a store
// transaction, whose ops carry them): ALREADY_EXISTS (an If-None-Match: * that found a
// document) is then 412, like ABORTED (an If-Match that names another version), as RFC 9110
// says a failed precondition is.
ApiError ErrorCodeFor(const Status& status, bool conditional_write = false);

// A JSON error reply for a non-OK status (Retry-After on 429 and 503).
HttpResponse ErrorReply(const Status& status, unsigned version = 11, bool conditional_write = false);

// 413 PAYLOAD_TOO_LARGE for a ResourceExhausted that a bound on the request itself caused
// (the body, a batch, an event, a document, a transaction): the routes that read such input
// say so where they read it. Any other status: ErrorReply.
HttpResponse InputErrorReply(const Status& status, unsigned version = 11,
                             bool conditional_write = false);

}  // namespace converge::server
