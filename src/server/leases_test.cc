// Which lease holders a sidecar takes over at start as its own previous incarnation
// (leases.h, IsPreviousIncarnation): the same instance_id and the same URL, another process.
#include "server/leases.h"

#include <gtest/gtest.h>

namespace converge::server {
namespace {

TEST(PreviousIncarnationTest, SameInstanceAndUrlOnlyAndNeverItself) {
  const std::string self = "node-1/aaaaaaaaaaaa@http://10.0.0.5:8080";
  EXPECT_TRUE(IsPreviousIncarnation("node-1/bbbbbbbbbbbb@http://10.0.0.5:8080", self));
  EXPECT_FALSE(IsPreviousIncarnation(self, self));
  // Another URL: maybe a live process of a misconfigured instance id; never taken.
  EXPECT_FALSE(IsPreviousIncarnation("node-1/bbbbbbbbbbbb@http://10.0.0.5:8081", self));
  EXPECT_FALSE(IsPreviousIncarnation("node-1/bbbbbbbbbbbb@https://10.0.0.5:8080", self));
  // Another instance at the URL (another sidecar once listened there): not this one's.
  EXPECT_FALSE(IsPreviousIncarnation("node-10/bbbbbbbbbbbb@http://10.0.0.5:8080", self));
  EXPECT_FALSE(IsPreviousIncarnation("node-/bbbbbbbbbbbb@http://10.0.0.5:8080", self));
  // Holders without a URL (earlier versions, a wildcard listen address) are never taken.
  EXPECT_FALSE(IsPreviousIncarnation("node-1/bbbbbbbbbbbb", self));
  EXPECT_FALSE(IsPreviousIncarnation("node-1", self));
  EXPECT_FALSE(IsPreviousIncarnation("", self));
  // Without a URL of its own, a process takes nothing.
  EXPECT_FALSE(IsPreviousIncarnation("node-1/bbbbbbbbbbbb", "node-1/aaaaaaaaaaaa"));
  EXPECT_FALSE(IsPreviousIncarnation("node-1/bbbbbbbbbbbb@", "node-1/aaaaaaaaaaaa"));
}

TEST(PreviousIncarnationTest, HolderStringsNameInstanceRandomAndUrl) {
  ServerConfig config;
  config.cluster.instance_id = "node-1";
  const std::string a = ClusterHolder(Env::Default(), config, "http://10.0.0.5:8080");
  const std::string b = ClusterHolder(Env::Default(), config, "http://10.0.0.5:8080");
  EXPECT_EQ(a.rfind("node-1/", 0), 0u) << a;
  EXPECT_NE(a, b);  // a new random part in every process
  EXPECT_TRUE(IsPreviousIncarnation(a, b));
  EXPECT_EQ(a.substr(a.find('@')), "@http://10.0.0.5:8080");
  const std::string bare = ClusterHolder(Env::Default(), config, "");
  EXPECT_EQ(bare.find('@'), std::string::npos) << bare;
}

}  // namespace
}  // namespace converge::server
