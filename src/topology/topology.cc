#include "topology/topology.h"

#include <algorithm>
#include <deque>
#include <set>
#include <tuple>
#include <unordered_map>

#include "schema/compat.h"
#include "topology/scc.h"

#pragma GCC diagnostic ignored "-Wrestrict"  // GCC bug 105329 on "literal" + std::string

namespace converge::topology {
namespace {

namespace json = boost::json;

std::string Join(const std::vector<std::string>& parts, std::string_view sep) {
  std::string out;
  for (size_t i = 0; i < parts.size(); ++i) {
    if (i > 0) out += sep;
    out += parts[i];
  }
  return out;
}

std::string Svc(const std::string& name) { return "service:" + name; }
std::string Topic(const std::string& name) { return "topic:" + name; }
std::string Coll(const std::string& name) { return "collection:" + name; }

}  // namespace

std::vector<ContractDifference> JsonSchemaContract(const json::value& producer,
                                                   const json::value& consumer) {
  std::vector<ContractDifference> out;
  for (schema::Finding& f : schema::CheckReaderAccepts(producer, consumer)) {
    out.push_back(ContractDifference{std::move(f.path), std::move(f.reason)});
  }
  return out;
}

std::string_view NodeKindName(NodeKind k) {
  switch (k) {
    case NodeKind::kService:
      return "service";
    case NodeKind::kTopic:
      return "topic";
    case NodeKind::kCollection:
      return "collection";
  }
  return "?";
}

std::string_view EdgeKindName(EdgeKind k) {
  switch (k) {
    case EdgeKind::kSends:
      return "sends";
    case EdgeKind::kReceives:
      return "receives";
    case EdgeKind::kCalls:
      return "calls";
    case EdgeKind::kWrites:
      return "writes";
    case EdgeKind::kReplicates:
      return "replicates";
  }
  return "?";
}

int System::Intern(NodeKind kind, const std::string& name) {
  Node n{kind, name};
  auto [it, inserted] = by_id_.emplace(n.Id(), static_cast<int>(nodes_.size()));
  if (inserted) nodes_.push_back(std::move(n));
  return it->second;
}

void System::AddEdge(int from, int to, EdgeKind kind, const Where& where) {
  edges_.push_back(Edge{from, to, kind, where});
}

int System::Find(NodeKind kind, const std::string& name) const {
  auto it = by_id_.find(Node{kind, name}.Id());
  return it == by_id_.end() ? -1 : it->second;
}

System System::Build(std::vector<Service> services) {
  System s;
  s.services_ = std::move(services);
  for (const Service& svc : s.services_) s.Intern(NodeKind::kService, svc.name);
  for (const Service& svc : s.services_) {
    const int me = s.Find(NodeKind::kService, svc.name);
    for (const Operation& o : svc.sends) {
      s.AddEdge(me, s.Intern(NodeKind::kTopic, o.topic), EdgeKind::kSends, o.where);
    }
    for (const Operation& o : svc.receives) {
      s.AddEdge(s.Intern(NodeKind::kTopic, o.topic), me, EdgeKind::kReceives, o.where);
    }
    for (const Name& t : svc.owned_topics) s.Intern(NodeKind::kTopic, t.name);
    for (const Name& c : svc.owned_collections) {
      s.AddEdge(me, s.Intern(NodeKind::kCollection, c.name), EdgeKind::kWrites, c.where);
    }
    for (const Name& c : svc.written_collections) {
      const int coll = s.Intern(NodeKind::kCollection, c.name);
      bool owned = false;
      for (const Name& o : svc.owned_collections) owned = owned || o.name == c.name;
      if (!owned) s.AddEdge(me, coll, EdgeKind::kWrites, c.where);
    }
    for (const Replica& r : svc.replicas) {
      s.AddEdge(s.Intern(NodeKind::kCollection, r.collection), me, EdgeKind::kReplicates, r.where);
    }
    for (const Name& c : svc.calls) {
      s.AddEdge(me, s.Intern(NodeKind::kService, c.name), EdgeKind::kCalls, c.where);
    }
  }
  return s;
}

std::vector<Finding> System::Check(ContractChecker contracts) const {
  std::vector<Finding> out;
  auto add = [&](Severity sev, std::string code, std::string message, std::vector<std::string> path,
                 std::vector<std::string> where) {
    out.push_back(
        Finding{sev, std::move(code), std::move(message), std::move(path), std::move(where)});
  };
  std::unordered_map<std::string, size_t> service_index;
  for (size_t i = 0; i < services_.size(); ++i) service_index.emplace(services_[i].name, i);

  // Who owns, sends to and receives from each topic; who owns each collection.
  struct Use {
    const Service* service;
    const Operation* op;
  };
  struct Owner {
    const Service* service;
    const Name* decl;
  };
  std::unordered_map<std::string, std::vector<Use>> senders, receivers;
  std::unordered_map<std::string, std::vector<Owner>> topic_owners, coll_owners;
  std::vector<std::string> topics;  // in first-seen order, for determinism
  auto note_topic = [&](const std::string& t) {
    if (!senders.count(t) && !receivers.count(t) && !topic_owners.count(t)) topics.push_back(t);
  };
  for (const Service& svc : services_) {
    for (const Operation& o : svc.sends) {
      note_topic(o.topic);
      senders[o.topic].push_back(Use{&svc, &o});
    }
    for (const Operation& o : svc.receives) {
      note_topic(o.topic);
      receivers[o.topic].push_back(Use{&svc, &o});
    }
    for (const Name& t : svc.owned_topics) {
      note_topic(t.name);
      auto& owners = topic_owners[t.name];
      // One service listing a topic twice is one owner.
      if (owners.empty() || owners.back().service != &svc) owners.push_back(Owner{&svc, &t});
    }
    for (const Name& c : svc.owned_collections) {
      auto& owners = coll_owners[c.name];
      if (owners.empty() || owners.back().service != &svc) owners.push_back(Owner{&svc, &c});
    }
  }

  // Two owners of one topic or collection.
  auto two_owners = [&](const char* kind, const std::string& name,
                        const std::vector<Owner>& owners) {
    if (owners.size() < 2) return;
    std::vector<std::string> path, where, names;
    for (const Owner& o : owners) {
      path.push_back(Svc(o.service->name));
      where.push_back(o.decl->where.ToString());
      names.push_back("'" + o.service->name + "'");
    }
    path.insert(path.begin() + 1, std::string(kind) + ":" + name);
    add(Severity::kError, "two-owners",
        std::string(kind) + " '" + name + "' has " + std::to_string(owners.size()) +
            " owners: " + Join(names, ", "),
        std::move(path), std::move(where));
  };
  for (const std::string& t : topics) {
    if (auto it = topic_owners.find(t); it != topic_owners.end())
      two_owners("topic", t, it->second);
  }
  {
    std::vector<std::string> names;
    for (const auto& [c, owners] : coll_owners) names.push_back(c);
    std::sort(names.begin(), names.end());
    for (const std::string& c : names) two_owners("collection", c, coll_owners[c]);
  }

  // Writing what another service owns: sending to a topic someone else owns, writing a
  // collection this service does not own.
  auto owner_list = [](const std::vector<Owner>* owners, std::vector<std::string>* where) {
    std::vector<std::string> names;
    if (owners == nullptr) return std::string("no service");
    for (const Owner& o : *owners) {
      names.push_back("'" + o.service->name + "'");
      where->push_back(o.decl->where.ToString());
    }
    return Join(names, ", ");
  };
  for (const Service& svc : services_) {
    for (const Operation& o : svc.sends) {
      auto it = topic_owners.find(o.topic);
      if (it == topic_owners.end()) continue;
      bool mine = false;
      for (const Owner& w : it->second) mine = mine || w.service == &svc;
      if (mine) continue;
      std::vector<std::string> where{o.where.ToString()};
      const std::string owners = owner_list(&it->second, &where);
      add(Severity::kError, "not-owner",
          "service '" + svc.name + "' sends to topic '" + o.topic + "', owned by " + owners,
          {Svc(svc.name), Topic(o.topic)}, std::move(where));
    }
    for (const Name& c : svc.written_collections) {
      auto it = coll_owners.find(c.name);
      bool mine = false;
      if (it != coll_owners.end()) {
        for (const Owner& w : it->second) mine = mine || w.service == &svc;
      }
      if (mine) continue;
      std::vector<std::string> where{c.where.ToString()};
      const std::string owners =
          owner_list(it == coll_owners.end() ? nullptr : &it->second, &where);
      add(Severity::kError, "not-owner",
          "service '" + svc.name + "' writes collection '" + c.name + "', owned by " + owners,
          {Svc(svc.name), Coll(c.name)}, std::move(where));
    }
  }

  // Subscribers with no publisher; publishers with no subscriber.
  for (const std::string& t : topics) {
    auto s = senders.find(t);
    auto r = receivers.find(t);
    if (r != receivers.end() && s == senders.end()) {
      for (const Use& u : r->second) {
        add(Severity::kError, "no-publisher",
            "service '" + u.service->name + "' receives from topic '" + t +
                "', which no service sends to",
            {Topic(t), Svc(u.service->name)}, {u.op->where.ToString()});
      }
    }
    if (s != senders.end() && r == receivers.end()) {
      std::vector<std::string> where, names;
      for (const Use& u : s->second) {
        where.push_back(u.op->where.ToString());
        names.push_back("'" + u.service->name + "'");
      }
      add(Severity::kWarning, "no-consumer",
          "topic '" + t + "' is sent to by " + Join(names, ", ") + " but no service receives it",
          {Svc(s->second.front().service->name), Topic(t)}, std::move(where));
    }
  }

  // References to services that have no manifest; replicas of collections their source does
  // not own.
  for (const Service& svc : services_) {
    for (const Name& c : svc.calls) {
      if (!service_index.count(c.name)) {
        add(Severity::kError, "unknown-service",
            "service '" + svc.name + "' calls service '" + c.name + "', which has no manifest",
            {Svc(svc.name), Svc(c.name)}, {c.where.ToString()});
      }
    }
    for (const Replica& r : svc.replicas) {
      auto src = service_index.find(r.source);
      if (src == service_index.end()) {
        add(Severity::kError, "unknown-service",
            "service '" + svc.name + "' keeps a replica of collection '" + r.collection +
                "' from service '" + r.source + "', which has no manifest",
            {Svc(r.source), Coll(r.collection), Svc(svc.name)}, {r.where.ToString()});
        continue;
      }
      auto owners = coll_owners.find(r.collection);
      bool owned = false;
      if (owners != coll_owners.end()) {
        for (const Owner& o : owners->second) owned = owned || o.service->name == r.source;
      }
      if (!owned) {
        std::vector<std::string> where{r.where.ToString()};
        const std::string by =
            owner_list(owners == coll_owners.end() ? nullptr : &owners->second, &where);
        add(Severity::kError, "replica-source",
            "service '" + svc.name + "' keeps a replica of collection '" + r.collection +
                "' from service '" + r.source + "', but that collection is owned by " + by,
            {Svc(r.source), Coll(r.collection), Svc(svc.name)}, std::move(where));
      }
    }
  }

  // Sagas: one orchestrator each; every participant it lists is a service that declares the
  // participation; every declared participant is listed by the orchestrator.
  {
    struct SagaDecls {
      std::vector<std::pair<const Service*, const SagaRole*>> orchestrators, participants;
    };
    std::map<std::string, SagaDecls> sagas;
    for (const Service& svc : services_) {
      for (const SagaRole& r : svc.sagas) {
        (r.orchestrator ? sagas[r.saga].orchestrators : sagas[r.saga].participants)
            .emplace_back(&svc, &r);
      }
    }
    for (const auto& [name, d] : sagas) {
      if (d.orchestrators.size() > 1) {
        std::vector<std::string> path, where;
        for (const auto& [svc, r] : d.orchestrators) {
          path.push_back(Svc(svc->name));
          where.push_back(r->where.ToString());
        }
        add(Severity::kError, "saga-orchestrator",
            "saga '" + name + "' has " + std::to_string(d.orchestrators.size()) + " orchestrators",
            std::move(path), std::move(where));
      }
      if (d.orchestrators.empty()) {
        for (const auto& [svc, r] : d.participants) {
          add(Severity::kError, "saga-orchestrator",
              "service '" + svc->name + "' takes part in saga '" + name +
                  "', which no service orchestrates",
              {Svc(svc->name)}, {r->where.ToString()});
        }
        continue;
      }
      for (const auto& [orch, r] : d.orchestrators) {
        std::set<std::string> listed;
        for (const Name& p : r->participants) {
          listed.insert(p.name);
          bool declared = false;
          for (const auto& [svc, pr] : d.participants) declared = declared || svc->name == p.name;
          if (declared) continue;
          const bool exists = service_index.count(p.name) > 0;
          add(Severity::kError, "saga-participant",
              "saga '" + name + "' (orchestrated by '" + orch->name + "') lists participant '" +
                  p.name + "', " +
                  (exists ? "whose manifest does not declare taking part in it"
                          : "which has no manifest"),
              {Svc(orch->name), Svc(p.name)},
              exists ? std::vector<std::string>{p.where.ToString(),
                                                services_[service_index.at(p.name)].file}
                     : std::vector<std::string>{p.where.ToString()});
        }
        for (const auto& [svc, pr] : d.participants) {
          if (listed.count(svc->name)) continue;
          add(Severity::kError, "saga-participant",
              "service '" + svc->name + "' declares taking part in saga '" + name +
                  "', but its orchestrator '" + orch->name + "' does not list it",
              {Svc(orch->name), Svc(svc->name)}, {pr->where.ToString(), r->where.ToString()});
        }
      }
    }
  }

  // Cycles of synchronous calls (errors) and asynchronous loops through handlers (warnings).
  {
    const int n = static_cast<int>(services_.size());
    Adjacency adj(n);
    std::map<std::pair<int, int>, const Name*> call_decl;
    for (int i = 0; i < n; ++i) {
      for (const Name& c : services_[i].calls) {
        auto it = service_index.find(c.name);
        if (it == service_index.end()) continue;
        const int j = static_cast<int>(it->second);
        if (call_decl.emplace(std::make_pair(i, j), &c).second) adj[i].push_back(j);
      }
    }
    for (const std::vector<int>& comp : CyclicComponents(adj)) {
      std::vector<int> cycle = CycleThrough(adj, comp, comp.front());
      std::vector<std::string> path, where, names;
      for (size_t k = 0; k < cycle.size(); ++k) {
        path.push_back(Svc(services_[cycle[k]].name));
        names.push_back(services_[cycle[k]].name);
        if (k + 1 < cycle.size()) {
          where.push_back(call_decl.at({cycle[k], cycle[k + 1]})->where.ToString());
        }
      }
      std::string msg = "synchronous calls form a cycle: " + Join(names, " -> ");
      if (comp.size() + 1 > cycle.size()) {
        msg += " (" + std::to_string(comp.size()) + " services call each other in a cycle)";
      }
      add(Severity::kError, "sync-cycle", std::move(msg), std::move(path), std::move(where));
    }
  }
  {
    std::unordered_map<std::string, int> topic_index;
    for (const std::string& t : topics)
      topic_index.emplace(t, static_cast<int>(topic_index.size()));
    Adjacency adj(topics.size());
    // (from, to) -> the first handler linking them.
    std::map<std::pair<int, int>, std::pair<const Service*, const Operation*>> by;
    for (const Service& svc : services_) {
      for (const Operation& o : svc.receives) {
        const int from = topic_index.at(o.topic);
        for (const std::string& p : o.publishes) {
          const int to = topic_index.at(p);
          if (by.emplace(std::make_pair(from, to), std::make_pair(&svc, &o)).second) {
            adj[from].push_back(to);
          }
        }
      }
    }
    for (const std::vector<int>& comp : CyclicComponents(adj)) {
      std::vector<int> cycle = CycleThrough(adj, comp, comp.front());
      std::vector<std::string> path, where, steps;
      path.push_back(Topic(topics[cycle[0]]));
      steps.push_back(topics[cycle[0]]);
      for (size_t k = 0; k + 1 < cycle.size(); ++k) {
        const auto& [svc, op] = by.at({cycle[k], cycle[k + 1]});
        path.push_back(Svc(svc->name));
        path.push_back(Topic(topics[cycle[k + 1]]));
        steps.push_back("(" + svc->name + ") -> " + topics[cycle[k + 1]]);
        where.push_back(op->where.ToString());
      }
      add(Severity::kWarning, "async-loop", "handlers publish in a loop: " + Join(steps, " "),
          std::move(path), std::move(where));
    }
  }

  // Event contracts: what each producer of a topic sends, against what each consumer expects.
  if (contracts != nullptr) {
    for (const std::string& t : topics) {
      auto s = senders.find(t);
      auto r = receivers.find(t);
      if (s == senders.end() || r == receivers.end()) continue;
      for (const Use& p : s->second) {
        for (const Use& c : r->second) {
          if (c.op->messages.empty()) continue;  // the consumer states no expectation
          const bool single = p.op->messages.size() == 1 && c.op->messages.size() == 1;
          for (const Message& pm : p.op->messages) {
            const Message* cm = nullptr;
            for (const Message& m : c.op->messages) {
              if (single || m.name == pm.name) cm = &m;
            }
            if (cm == nullptr) {
              add(Severity::kError, "contract",
                  "service '" + p.service->name + "' sends message '" + pm.name + "' on topic '" +
                      t + "', which service '" + c.service->name + "' does not expect",
                  {Svc(p.service->name), Topic(t), Svc(c.service->name)},
                  {pm.where.ToString(), c.op->where.ToString()});
              continue;
            }
            if (cm->payload == nullptr) continue;  // any payload is expected
            const json::value open(true);          // a producer without a schema may send anything
            std::vector<ContractDifference> diffs =
                contracts(pm.payload != nullptr ? *pm.payload : open, *cm->payload);
            if (diffs.empty()) continue;
            std::vector<std::string> reasons;
            for (const ContractDifference& d : diffs) {
              reasons.push_back((d.pointer.empty() ? std::string("/") : d.pointer) + ": " +
                                d.reason);
            }
            add(Severity::kError, "contract",
                "topic '" + t + "': message '" + pm.name + "' of '" + p.service->name +
                    "' may be refused by '" + c.service->name + "' (" + cm->name +
                    "): " + Join(reasons, "; "),
                {Svc(p.service->name), Topic(t), Svc(c.service->name)},
                {pm.where.ToString(), cm->where.ToString()});
          }
        }
      }
    }
  }

  std::stable_sort(out.begin(), out.end(), [](const Finding& a, const Finding& b) {
    return std::tie(a.severity, a.code, a.path) < std::tie(b.severity, b.code, b.path);
  });
  return out;
}

// ---- drawings ----

namespace {

std::string MermaidLabel(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"') {
      out += "#quot;";
    } else if (c == '#') {
      out += "#35;";
    } else {
      out.push_back(c);
    }
  }
  return out;
}

std::string DotString(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  return out + "\"";
}

}  // namespace

Result<std::string> System::Render(std::string_view format) const {
  std::string out;
  if (format == "mermaid") {
    out = "flowchart LR\n";
    for (size_t i = 0; i < nodes_.size(); ++i) {
      const Node& n = nodes_[i];
      const std::string label = MermaidLabel(n.name);
      out += "  n" + std::to_string(i);
      switch (n.kind) {
        case NodeKind::kService:
          out += "[\"" + label + "\"]\n";
          break;
        case NodeKind::kTopic:
          out += "([\"" + label + "\"])\n";
          break;
        case NodeKind::kCollection:
          out += "[(\"" + label + "\")]\n";
          break;
      }
    }
    for (const Edge& e : edges_) {
      const std::string from = "n" + std::to_string(e.from), to = "n" + std::to_string(e.to);
      if (e.kind == EdgeKind::kCalls) {
        out += "  " + from + " -. calls .-> " + to + "\n";
      } else {
        out += "  " + from + " -->|" + std::string(EdgeKindName(e.kind)) + "| " + to + "\n";
      }
    }
    return out;
  }
  if (format == "dot") {
    out = "digraph topology {\n  rankdir=LR;\n";
    for (const Node& n : nodes_) {
      const char* shape = n.kind == NodeKind::kService ? "box"
                          : n.kind == NodeKind::kTopic ? "ellipse"
                                                       : "cylinder";
      out +=
          "  " + DotString(n.Id()) + " [label=" + DotString(n.name) + ", shape=" + shape + "];\n";
    }
    for (const Edge& e : edges_) {
      out += "  " + DotString(nodes_[e.from].Id()) + " -> " + DotString(nodes_[e.to].Id()) +
             " [label=" + DotString(std::string(EdgeKindName(e.kind))) +
             (e.kind == EdgeKind::kCalls ? ", style=dashed" : "") + "];\n";
    }
    out += "}\n";
    return out;
  }
  if (format == "json") {
    json::object doc;
    json::array services, nodes, edges, handlers;
    for (const Service& s : services_) {
      services.push_back(json::object{{"name", s.name}, {"file", s.file}});
      for (const Operation& o : s.receives) {
        for (const std::string& p : o.publishes) {
          handlers.push_back(
              json::object{{"service", s.name}, {"receives", o.topic}, {"publishes", p}});
        }
      }
    }
    for (const Node& n : nodes_) {
      nodes.push_back(
          json::object{{"id", n.Id()}, {"kind", NodeKindName(n.kind)}, {"name", n.name}});
    }
    for (const Edge& e : edges_) {
      edges.push_back(json::object{{"from", nodes_[e.from].Id()},
                                   {"to", nodes_[e.to].Id()},
                                   {"kind", EdgeKindName(e.kind)},
                                   {"where", e.where.ToString()}});
    }
    doc["services"] = std::move(services);
    doc["nodes"] = std::move(nodes);
    doc["edges"] = std::move(edges);
    doc["handlers"] = std::move(handlers);
    return json::serialize(doc) + "\n";
  }
  return InvalidArgumentError("unknown graph format '" + std::string(format) +
                              "' (mermaid, dot or json)");
}

// ---- impact ----

Result<int> System::Resolve(const std::string& name) const {
  int start = -1;
  if (auto it = by_id_.find(name); it != by_id_.end()) {
    start = it->second;
  } else {
    std::vector<std::string> matches;
    for (size_t i = 0; i < nodes_.size(); ++i) {
      if (nodes_[i].name == name) {
        matches.push_back(nodes_[i].Id());
        start = static_cast<int>(i);
      }
    }
    if (matches.empty()) return NotFoundError("no service, topic or collection '" + name + "'");
    if (matches.size() > 1) {
      return InvalidArgumentError("'" + name + "' is ambiguous: " + Join(matches, ", "));
    }
  }
  return start;
}

Result<std::vector<System::Reached>> System::Impact(const std::string& name) const {
  CONVERGE_ASSIGN_OR_RETURN(const int start, Resolve(name));
  // Downstream: data flows along sends, receives, writes and replicas; a synchronous call
  // makes the caller depend on the callee, so the caller is downstream of the callee.
  Adjacency down(nodes_.size());
  for (const Edge& e : edges_) {
    if (e.kind == EdgeKind::kCalls) {
      down[e.to].push_back(e.from);
    } else {
      down[e.from].push_back(e.to);
    }
  }
  std::vector<int> parent(nodes_.size(), -2);
  parent[start] = -1;
  std::deque<int> queue{start};
  std::vector<Reached> out;
  while (!queue.empty()) {
    const int v = queue.front();
    queue.pop_front();
    if (v != start) {
      Reached r{v, {}};
      for (int x = v; x != -1; x = parent[x]) r.path.push_back(x);
      std::reverse(r.path.begin(), r.path.end());
      out.push_back(std::move(r));
    }
    for (int w : down[v]) {
      if (parent[w] == -2) {
        parent[w] = v;
        queue.push_back(w);
      }
    }
  }
  return out;
}

// ---- reports ----

std::string FindingsJson(const std::vector<Finding>& findings, bool contracts_checked) {
  json::array list;
  size_t errors = 0, warnings = 0;
  for (const Finding& f : findings) {
    (f.severity == Severity::kError ? errors : warnings)++;
    json::array path, where;
    for (const std::string& p : f.path) path.emplace_back(p);
    for (const std::string& w : f.where) where.emplace_back(w);
    list.push_back(json::object{{"severity", f.severity == Severity::kError ? "error" : "warning"},
                                {"code", f.code},
                                {"message", f.message},
                                {"path", std::move(path)},
                                {"where", std::move(where)}});
  }
  json::object doc{{"ok", errors == 0},
                   {"errors", errors},
                   {"warnings", warnings},
                   {"contracts_checked", contracts_checked},
                   {"findings", std::move(list)}};
  return json::serialize(doc) + "\n";
}

std::string FindingsText(const std::vector<Finding>& findings) {
  std::string out;
  for (const Finding& f : findings) {
    out += f.severity == Severity::kError ? "error" : "warning";
    out += " [" + f.code + "] " + f.message + "\n";
    out += "  path: " + Join(f.path, " -> ") + "\n";
    if (!f.where.empty()) out += "  at: " + Join(f.where, ", ") + "\n";
  }
  return out;
}

}  // namespace converge::topology
