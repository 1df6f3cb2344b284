// Strongly connected components of a directed graph (Tarjan's algorithm with an explicit
// stack: no recursion, so a chain of a million nodes needs no deep call stack), and one cycle
// through a component for reporting.
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <vector>

namespace converge::topology {

using Adjacency = std::vector<std::vector<int>>;  // adj[v] = successors of v (0..n-1)

// The components with a cycle: more than one node, or one node with an edge to itself. Each
// component lists its nodes in ascending order; components are ordered by their first node.
std::vector<std::vector<int>> CyclicComponents(const Adjacency& adj);

// A shortest cycle through `start` inside `component` (nodes of one cyclic component, sorted):
// start, ..., start (first and last equal). Empty if there is none.
std::vector<int> CycleThrough(const Adjacency& adj, const std::vector<int>& component, int start);

}  // namespace converge::topology
