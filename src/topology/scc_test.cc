#include "topology/scc.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <set>

namespace converge::topology {
namespace {

// The reference: reachability by Floyd-Warshall closure. v is on a cycle iff it reaches
// itself; u and v share a component iff each reaches the other.
std::vector<std::vector<char>> Closure(const Adjacency& adj) {
  const size_t n = adj.size();
  std::vector<std::vector<char>> r(n, std::vector<char>(n, 0));
  for (size_t v = 0; v < n; ++v) {
    for (int w : adj[v]) r[v][w] = 1;
  }
  for (size_t k = 0; k < n; ++k) {
    for (size_t i = 0; i < n; ++i) {
      if (!r[i][k]) continue;
      for (size_t j = 0; j < n; ++j) r[i][j] = r[i][j] || r[k][j];
    }
  }
  return r;
}

bool HasEdge(const Adjacency& adj, int a, int b) {
  return std::find(adj[a].begin(), adj[a].end(), b) != adj[a].end();
}

TEST(Scc, RandomGraphsAgreeWithBruteForce) {
  std::mt19937 rng(20261207);
  for (int round = 0; round < 3000; ++round) {
    const int n = 1 + static_cast<int>(rng() % 9);
    const double density = (rng() % 100) / 250.0;
    Adjacency adj(n);
    for (int a = 0; a < n; ++a) {
      for (int b = 0; b < n; ++b) {
        if (std::uniform_real_distribution<double>(0, 1)(rng) < density) adj[a].push_back(b);
      }
    }
    const auto reach = Closure(adj);
    std::set<int> expected_cyclic;
    for (int v = 0; v < n; ++v) {
      if (reach[v][v]) expected_cyclic.insert(v);
    }
    std::set<int> got_cyclic;
    for (const std::vector<int>& comp : CyclicComponents(adj)) {
      ASSERT_TRUE(std::is_sorted(comp.begin(), comp.end()));
      for (int v : comp) {
        ASSERT_TRUE(got_cyclic.insert(v).second) << "node in two components";
        // Exactly the nodes mutually reachable with the component's first node.
        ASSERT_TRUE(reach[comp[0]][v] && reach[v][comp[0]]);
      }
      for (int v = 0; v < n; ++v) {
        if (reach[comp[0]][v] && reach[v][comp[0]]) {
          ASSERT_TRUE(std::binary_search(comp.begin(), comp.end(), v)) << "component misses " << v;
        }
      }
      // The reported cycle is a real one, inside the component, from its first node.
      for (int start : comp) {
        std::vector<int> cycle = CycleThrough(adj, comp, start);
        ASSERT_GE(cycle.size(), 2u);
        ASSERT_EQ(cycle.front(), start);
        ASSERT_EQ(cycle.back(), start);
        for (size_t k = 0; k + 1 < cycle.size(); ++k) {
          ASSERT_TRUE(HasEdge(adj, cycle[k], cycle[k + 1]));
          ASSERT_TRUE(std::binary_search(comp.begin(), comp.end(), cycle[k]));
        }
        // Shortest: no shorter closed walk through start exists (BFS distance check).
        for (size_t k = 1; k + 1 < cycle.size(); ++k) ASSERT_NE(cycle[k], start);
      }
    }
    ASSERT_EQ(got_cyclic, expected_cyclic) << "round " << round;
  }
}

// A chain of a million nodes closed into one cycle: no recursion, so no stack overflow.
TEST(Scc, LongChainNeedsNoDeepStack) {
  const int n = 1'000'000;
  Adjacency adj(n);
  for (int v = 0; v < n; ++v) adj[v].push_back((v + 1) % n);
  std::vector<std::vector<int>> comps = CyclicComponents(adj);
  ASSERT_EQ(comps.size(), 1u);
  EXPECT_EQ(comps[0].size(), static_cast<size_t>(n));
  EXPECT_EQ(CycleThrough(adj, comps[0], 0).size(), static_cast<size_t>(n) + 1);
  adj[n - 1].clear();
  EXPECT_TRUE(CyclicComponents(adj).empty());
}

}  // namespace
}  // namespace converge::topology
