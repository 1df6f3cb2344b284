#include "server/auth.h"

#include <gtest/gtest.h>

namespace converge::server {
namespace {

TEST(TopicMatches, Globs) {
  EXPECT_TRUE(TopicMatches("orders", "orders"));
  EXPECT_FALSE(TopicMatches("orders", "orders2"));
  EXPECT_FALSE(TopicMatches("orders", "order"));
  EXPECT_TRUE(TopicMatches("*", "anything.at-all"));
  EXPECT_TRUE(TopicMatches("orders.*", "orders.created"));
  EXPECT_TRUE(TopicMatches("orders.*", "orders."));
  EXPECT_FALSE(TopicMatches("orders.*", "orders"));
  EXPECT_TRUE(TopicMatches("*.created", "payments.created"));
  EXPECT_FALSE(TopicMatches("*.created", "payments.created.v2"));
  EXPECT_TRUE(TopicMatches("a*b*c", "axxbyyc"));
  EXPECT_FALSE(TopicMatches("a*b*c", "axxbyy"));
  EXPECT_TRUE(TopicMatches("**", ""));
  EXPECT_FALSE(TopicMatches("", "x"));
}

std::vector<TokenConfig> Tokens() {
  TokenConfig orders;
  orders.service = "orders";
  orders.token = "orders-token-0123456789";
  orders.publish = {"orders.*"};
  orders.subscribe = {"payments"};
  TokenConfig admin;
  admin.service = "ops";
  admin.token = "ops-token-0123456789abc";
  admin.admin = true;
  return {orders, admin};
}

TEST(Authorizer, DisabledIsAnonymousAndAllowsEverything) {
  Authorizer auth({});
  EXPECT_FALSE(auth.enabled());
  Result<const Principal*> p = auth.Authenticate("");
  ASSERT_TRUE(p.ok());
  EXPECT_TRUE((*p)->anonymous);
  EXPECT_TRUE((*p)->CanPublish("x"));
  EXPECT_TRUE((*p)->CanSubscribe("x"));
  EXPECT_TRUE((*p)->admin);
}

TEST(Authorizer, RejectsMissingMalformedAndUnknownTokens) {
  Authorizer auth(Tokens());
  EXPECT_EQ(auth.Authenticate("").status().code(), StatusCode::kUnauthenticated);
  EXPECT_EQ(auth.Authenticate("Basic abc").status().code(), StatusCode::kUnauthenticated);
  EXPECT_EQ(auth.Authenticate("Bearer ").status().code(), StatusCode::kUnauthenticated);
  EXPECT_EQ(auth.Authenticate("Bearer nope-nope-nope-nope").status().code(),
            StatusCode::kUnauthenticated);
  // A prefix of a valid token is not valid.
  EXPECT_EQ(auth.Authenticate("Bearer orders-token-012345678").status().code(),
            StatusCode::kUnauthenticated);
}

TEST(Authorizer, GrantsPerTopic) {
  Authorizer auth(Tokens());
  Result<const Principal*> p = auth.Authenticate("Bearer orders-token-0123456789");
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ((*p)->service, "orders");
  EXPECT_TRUE((*p)->CanPublish("orders.created"));
  EXPECT_FALSE((*p)->CanPublish("payments"));
  EXPECT_TRUE((*p)->CanSubscribe("payments"));
  EXPECT_FALSE((*p)->CanSubscribe("orders.created"));
  EXPECT_TRUE((*p)->CanSee("orders.created"));
  EXPECT_FALSE((*p)->CanSee("inventory"));
  EXPECT_FALSE((*p)->admin);
  Result<const Principal*> ops = auth.Authenticate("Bearer ops-token-0123456789abc");
  ASSERT_TRUE(ops.ok());
  EXPECT_TRUE((*ops)->admin);
  // The scheme is case-insensitive (RFC 9110); the token is not.
  for (const char* header : {"bearer ops-token-0123456789abc", "BEARER ops-token-0123456789abc",
                             "bEaReR   ops-token-0123456789abc"}) {
    Result<const Principal*> again = auth.Authenticate(header);
    ASSERT_TRUE(again.ok()) << header << ": " << again.status().ToString();
    EXPECT_EQ((*again)->service, "ops");
  }
  EXPECT_FALSE(auth.Authenticate("Bearer OPS-TOKEN-0123456789ABC").ok());
  EXPECT_FALSE(auth.Authenticate("Bearerops-token-0123456789abc").ok());
  EXPECT_FALSE((*ops)->CanPublish("orders.created"));
}

}  // namespace
}  // namespace converge::server
