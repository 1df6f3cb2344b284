// The declared topology of a system: the graph of its services' manifests (manifest.h), the
// checks `converge topology check` runs on it, its drawings (`topology graph`) and what lies
// downstream of a node (`topology impact`). docs/topology.md describes every check.
//
// The graph's nodes are services, topics (AsyncAPI channel addresses) and collections. Its
// edges: a service sends to a topic; a topic is received by a service; a service calls another
// (synchronous HTTP); a service writes a collection (owning implies writing); a collection is
// kept as a replica by a service; and, for loop detection, topic X leads to topic Y when a
// handler of X publishes Y.
//
// Contract
// - Check is deterministic (findings sorted: errors first, then by code and path) and linear in
//   the size of the manifests apart from the contract checks (per producer/consumer pair of a
//   topic). Cycles are found by strongly connected components: one finding per component,
//   with one shortest cycle through it as the path.
// - Every finding names the manifest files (file#pointer) of the declarations involved and
//   the path through the graph ("service:a", "topic:x", ...).
// Thread-safety: a System is immutable after Build; use from any thread.
#pragma once

#include <boost/json.hpp>
#include <map>
#include <string>
#include <vector>

#include "converge/status.h"
#include "topology/manifest.h"

namespace converge::topology {

enum class NodeKind { kService, kTopic, kCollection };
enum class EdgeKind { kSends, kReceives, kCalls, kWrites, kReplicates };

std::string_view NodeKindName(NodeKind k);  // "service", "topic", "collection"
std::string_view EdgeKindName(EdgeKind k);  // "sends", "receives", "calls", "writes", "replicates"

struct Node {
  NodeKind kind;
  std::string name;
  std::string Id() const { return std::string(NodeKindName(kind)) + ":" + name; }
};

struct Edge {
  int from;
  int to;
  EdgeKind kind;
  Where where;  // the declaration that makes it
};

enum class Severity { kError, kWarning };

struct Finding {
  Severity severity;
  std::string code;                // "sync-cycle", "two-owners", ... (docs/topology.md)
  std::string message;             // one line, names the nodes
  std::vector<std::string> path;   // node ids through the graph
  std::vector<std::string> where;  // "file#/pointer" of each declaration involved
};

// Compares a consumer's expected payload schema with a producer's: one line per way a value
// the producer may send could be refused by the consumer (empty: compatible). Pluggable so the
// module does not depend on a particular JSON-Schema implementation.
struct ContractDifference {
  std::string pointer;  // into the consumer's schema
  std::string reason;
};
using ContractChecker = std::vector<ContractDifference> (*)(const boost::json::value& producer,
                                                            const boost::json::value& consumer);

// The checker `converge topology check` uses: the schema module's structural comparison
// (schema/compat.h, CheckReaderAccepts(producer, consumer)): a required field removed, a type
// changed or widened, an enum widened by the producer; a keyword it cannot reason about is a
// difference too (conservative).
std::vector<ContractDifference> JsonSchemaContract(const boost::json::value& producer,
                                                   const boost::json::value& consumer);

class System {
 public:
  // Builds the graph (never fails: problems are findings of Check).
  static System Build(std::vector<Service> services);

  const std::vector<Service>& services() const { return services_; }
  const std::vector<Node>& nodes() const { return nodes_; }
  const std::vector<Edge>& edges() const { return edges_; }
  // The node named "kind:name", or -1.
  int Find(NodeKind kind, const std::string& name) const;

  // Every check of docs/topology.md. `contracts` null: event contracts are not compared.
  std::vector<Finding> Check(ContractChecker contracts = nullptr) const;

  // Drawings of the graph: "mermaid", "dot" or "json" (InvalidArgument otherwise).
  Result<std::string> Render(std::string_view format) const;

  // Everything downstream of `node` ("service:a", "topic:x", "collection:c", or a bare name
  // matching exactly one node), transitively: each with the path from `node`. NotFound for an
  // unknown name, InvalidArgument for an ambiguous bare name.
  struct Reached {
    int node;
    std::vector<int> path;  // from the start node to this one, both included
  };
  Result<std::vector<Reached>> Impact(const std::string& name) const;
  // The node `name` names, as Impact reads it.
  Result<int> Resolve(const std::string& name) const;

 private:
  int Intern(NodeKind kind, const std::string& name);
  void AddEdge(int from, int to, EdgeKind kind, const Where& where);

  std::vector<Service> services_;
  std::vector<Node> nodes_;
  std::vector<Edge> edges_;
  std::map<std::string, int> by_id_;
};

// Findings as a JSON document {"ok","errors","warnings","contracts_checked","findings":[...]}
// and as text, one finding a few lines.
std::string FindingsJson(const std::vector<Finding>& findings, bool contracts_checked);
std::string FindingsText(const std::vector<Finding>& findings);

}  // namespace converge::topology
