// The pieces of the one router: path templates, the reading of a target (Boost.URL) and the
// one error mapping.
#include "server/router.h"

#include <gtest/gtest.h>

#include "server/api.h"

namespace converge::server {
namespace {

TEST(Router, PathTemplatesBindSegmentsAndTheRest) {
  RawParams p;
  EXPECT_EQ(MatchPathTemplate("/v1/topics/{topic}", "/v1/topics/a%2Eb", &p), 2);
  ASSERT_EQ(p.size(), 1u);
  EXPECT_EQ(p[0].first, "topic");
  EXPECT_EQ(p[0].second, "a%2Eb");  // raw: decoded by the caller
  EXPECT_EQ(MatchPathTemplate("/v1/topics/{topic}", "/v1/topics", nullptr), -1);
  EXPECT_EQ(MatchPathTemplate("/v1/topics", "/v1//topics/", nullptr), 2);
  EXPECT_EQ(MatchPathTemplate("/c/{c}/docs/{key...}", "/c/x/docs/a//b/", &p), 2);
  ASSERT_EQ(p.size(), 2u);
  EXPECT_EQ(p[1].second, "a//b/");
  EXPECT_EQ(MatchPathTemplate("/c/{c}/docs/{key...}", "/c/x/docs/", nullptr), -1);
}

TEST(Router, MostSpecificTemplateWinsAndAllowListsItsMethods) {
  Api::Match m = Api::MatchRoute(http::verb::post, "/v1/collections/_transaction");
  ASSERT_NE(m.route, nullptr);
  EXPECT_EQ(m.route->id, RouteId::kTransaction);
  m = Api::MatchRoute(http::verb::get, "/v1/collections/_transaction");
  EXPECT_EQ(m.route, nullptr);
  EXPECT_EQ(m.allow, "POST");
  m = Api::MatchRoute(http::verb::patch, "/v1/sagas/x/timers/retry");
  EXPECT_EQ(m.route, nullptr);
  EXPECT_EQ(m.allow, "PUT, DELETE");
  m = Api::MatchRoute(http::verb::get, "/v1/collections", /*with_store=*/false);
  EXPECT_EQ(m.route, nullptr);
  EXPECT_EQ(m.allow, "");
}

TEST(Router, PercentDecodingRefusesBadEscapesAndKeepsPlus) {
  EXPECT_EQ(*PercentDecode("a+b%20c%2Fd"), "a+b c/d");
  EXPECT_FALSE(PercentDecode("%zz").ok());
  EXPECT_FALSE(PercentDecode("%4").ok());
  EXPECT_FALSE(PercentDecode("x%").ok());
}

TEST(Router, QueryIsReadPerRfc3986) {
  Result<QueryParams> q = ParseTargetQuery("/x?a=1+2&b=%20&&c&d=");
  ASSERT_TRUE(q.ok()) << q.status().ToString();
  ASSERT_EQ(q->size(), 4u);
  EXPECT_EQ((*q)[0], (std::pair<std::string, std::string>{"a", "1+2"}));
  EXPECT_EQ((*q)[1].second, " ");
  EXPECT_EQ((*q)[2], (std::pair<std::string, std::string>{"c", ""}));
  EXPECT_EQ((*q)[3], (std::pair<std::string, std::string>{"d", ""}));
  EXPECT_EQ(ParseTargetQuery("/x?a=%zz").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseTargetQuery("/x/%zz").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseTargetQuery("/x?a=1%00").status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(ParseTargetQuery("/x").ok());
}

TEST(Router, OneErrorMapping) {
  EXPECT_EQ(ErrorCodeFor(ResourceExhaustedError("x")).status, http::status::too_many_requests);
  EXPECT_EQ(InputErrorReply(ResourceExhaustedError("x")).result(),
            http::status::payload_too_large);
  EXPECT_EQ(ErrorCodeFor(AbortedError("x")).status, http::status::precondition_failed);
  EXPECT_EQ(ErrorCodeFor(AlreadyExistsError("x")).status, http::status::conflict);
  EXPECT_EQ(ErrorCodeFor(AlreadyExistsError("x"), true).status, http::status::precondition_failed);
  EXPECT_EQ(ErrorCodeFor(CancelledError("x")).status, http::status::service_unavailable);
  EXPECT_EQ(ErrorCodeFor(CancelledError("x")).code, "UNAVAILABLE");
  EXPECT_EQ(ErrorReply(UnavailableError("x"))[http::field::retry_after], "1");
}

}  // namespace
}  // namespace converge::server
