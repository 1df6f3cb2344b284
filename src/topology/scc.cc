#include "topology/scc.h"

#include <algorithm>
#include <deque>
#include <utility>

namespace converge::topology {

std::vector<std::vector<int>> CyclicComponents(const Adjacency& adj) {
  const int n = static_cast<int>(adj.size());
  constexpr int kUnvisited = -1;
  std::vector<int> index(n, kUnvisited), low(n, 0);
  std::vector<char> on_stack(n, 0);
  std::vector<int> stack;
  // The call stack of the recursive formulation: (node, next successor to look at).
  std::vector<std::pair<int, size_t>> frames;
  std::vector<std::vector<int>> out;
  int next_index = 0;
  for (int root = 0; root < n; ++root) {
    if (index[root] != kUnvisited) continue;
    frames.emplace_back(root, 0);
    index[root] = low[root] = next_index++;
    stack.push_back(root);
    on_stack[root] = 1;
    while (!frames.empty()) {
      auto& [v, i] = frames.back();
      if (i < adj[v].size()) {
        const int w = adj[v][i++];
        if (index[w] == kUnvisited) {
          index[w] = low[w] = next_index++;
          stack.push_back(w);
          on_stack[w] = 1;
          frames.emplace_back(w, 0);  // invalidates v and i; the loop re-reads them
        } else if (on_stack[w]) {
          low[v] = std::min(low[v], index[w]);
        }
        continue;
      }
      const int done = v;
      frames.pop_back();
      if (!frames.empty()) {
        const int parent = frames.back().first;
        low[parent] = std::min(low[parent], low[done]);
      }
      if (low[done] != index[done]) continue;
      std::vector<int> component;
      int w;
      do {
        w = stack.back();
        stack.pop_back();
        on_stack[w] = 0;
        component.push_back(w);
      } while (w != done);
      bool cyclic = component.size() > 1;
      if (!cyclic) {
        for (int s : adj[done]) cyclic = cyclic || s == done;
      }
      if (cyclic) {
        std::sort(component.begin(), component.end());
        out.push_back(std::move(component));
      }
    }
  }
  std::sort(out.begin(), out.end(),
            [](const std::vector<int>& a, const std::vector<int>& b) { return a[0] < b[0]; });
  return out;
}

std::vector<int> CycleThrough(const Adjacency& adj, const std::vector<int>& component, int start) {
  auto inside = [&](int v) { return std::binary_search(component.begin(), component.end(), v); };
  // Breadth-first from start's successors back to start, inside the component.
  std::vector<int> parent(adj.size(), -2);
  std::deque<int> queue;
  for (int w : adj[start]) {
    if (w == start) return {start, start};
    if (inside(w) && parent[w] == -2) {
      parent[w] = start;
      queue.push_back(w);
    }
  }
  while (!queue.empty()) {
    const int v = queue.front();
    queue.pop_front();
    for (int w : adj[v]) {
      if (w == start) {
        std::vector<int> path{start};
        for (int x = v; x != start; x = parent[x]) path.push_back(x);
        path.push_back(start);
        std::reverse(path.begin(), path.end());
        return path;
      }
      if (inside(w) && parent[w] == -2) {
        parent[w] = v;
        queue.push_back(w);
      }
    }
  }
  return {};
}

}  // namespace converge::topology
