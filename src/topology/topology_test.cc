#include "topology/topology.h"

#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <random>
#include <set>

#include "topology/generate.h"
#include "topology/scc.h"

#pragma GCC diagnostic ignored "-Wrestrict"  // GCC bug 105329 on "literal" + std::string

namespace converge::topology {
namespace {

namespace json = boost::json;

System Load(const std::string& name) {
  Result<std::vector<Service>> all =
      LoadManifests(Env::Default().fs(), std::string(CONVERGE_TOPOLOGY_TESTDATA "/") + name);
  EXPECT_TRUE(all.ok()) << all.status().ToString();
  return System::Build(all.ok() ? std::move(*all) : std::vector<Service>{});
}

struct Expect {
  Severity severity;
  std::string code;
  std::vector<std::string> path;
  std::vector<std::string> where;
};

void ExpectFindings(const std::string& dir, const std::vector<Expect>& want) {
  System s = Load(dir);
  std::vector<Finding> got = s.Check(&JsonSchemaContract);
  ASSERT_EQ(got.size(), want.size()) << dir << ":\n" << FindingsText(got);
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(got[i].severity, want[i].severity) << dir << " #" << i << ": " << got[i].message;
    EXPECT_EQ(got[i].code, want[i].code) << dir << " #" << i;
    EXPECT_EQ(got[i].path, want[i].path) << dir << " #" << i << ": " << got[i].message;
    EXPECT_EQ(got[i].where, want[i].where) << dir << " #" << i << ": " << got[i].message;
  }
}

constexpr Severity E = Severity::kError;
constexpr Severity W = Severity::kWarning;

TEST(TopologyCheck, CleanSystemHasNoFindings) { ExpectFindings("clean", {}); }

TEST(TopologyCheck, CycleOfSynchronousCalls) {
  // a -> b -> c -> a; d calls a but is not on the cycle.
  ExpectFindings("sync-cycle", {{E,
                                 "sync-cycle",
                                 {"service:a", "service:b", "service:c", "service:a"},
                                 {"a.yaml#/x-converge-calls/0", "b.yaml#/x-converge-calls/0",
                                  "c.yaml#/x-converge-calls/0"}}});
}

TEST(TopologyCheck, TwoOwners) {
  ExpectFindings(
      "two-owners",
      {{E,
        "two-owners",
        {"service:billing", "collection:accounts", "service:ledger"},
        {"billing.yaml#/x-converge-owns/collections/0",
         "ledger.yaml#/x-converge-owns/collections/0"}},
       {E,
        "two-owners",
        {"service:billing", "topic:invoices", "service:ledger"},
        {"billing.yaml#/x-converge-owns/topics/0", "ledger.yaml#/x-converge-owns/topics/0"}}});
}

TEST(TopologyCheck, WritingWhatAnotherServiceOwns) {
  ExpectFindings(
      "not-owner",
      {{E,
        "not-owner",
        {"service:shipping", "collection:orders"},
        {"shipping.yaml#/x-converge-writes/collections/0",
         "orders.yaml#/x-converge-owns/collections/0"}},
       {E,
        "not-owner",
        {"service:shipping", "topic:orders.placed"},
        {"shipping.yaml#/operations/forgePlaced", "orders.yaml#/x-converge-owns/topics/0"}}});
}

TEST(TopologyCheck, SubscriberWithoutPublisher) {
  ExpectFindings("no-publisher", {{E,
                                   "no-publisher",
                                   {"topic:refunds.issued", "service:audit"},
                                   {"audit.yaml#/operations/onRefund"}}});
}

TEST(TopologyCheck, UndeclaredSagaParticipants) {
  ExpectFindings("saga-participant",
                 {{E,
                   "saga-participant",
                   {"service:trip", "service:cars"},
                   {"trip.yaml#/x-converge-sagas/0/participants/2"}},
                  {E,
                   "saga-participant",
                   {"service:trip", "service:flights"},
                   {"trip.yaml#/x-converge-sagas/0/participants/1", "flights.yaml"}}});
}

TEST(TopologyCheck, AsynchronousLoopIsAWarning) {
  ExpectFindings("async-loop",
                 {{W,
                   "async-loop",
                   {"topic:orders.placed", "service:stock", "topic:stock.reserved",
                    "service:orders", "topic:orders.placed"},
                   {"stock.yaml#/operations/onPlaced", "orders.yaml#/operations/onReserved"}}});
}

// The producer's event changed under a consumer: a required field became optional, a type
// widened, an enum gained a value. The consumer that needs only the id is not reported.
TEST(TopologyCheck, IncompatibleEventContract) {
  ExpectFindings("contract", {{E,
                               "contract",
                               {"service:orders", "topic:orders.placed", "service:billing"},
                               {"orders.yaml#/channels/placed/messages/OrderPlaced",
                                "billing.yaml#/channels/placed/messages/OrderPlaced"}}});
  std::vector<Finding> f = Load("contract").Check(&JsonSchemaContract);
  ASSERT_EQ(f.size(), 1u);
  for (const char* reason : {"/required: field 'amount' is required by the reader but optional",
                             "/properties/amount/type: type narrowed from number to integer",
                             "/properties/currency/enum: enum narrowed"}) {
    EXPECT_NE(f[0].message.find(reason), std::string::npos) << f[0].message;
  }
  // Without a checker, contracts are not compared.
  EXPECT_TRUE(Load("contract").Check().empty());
}

TEST(TopologyCheck, PublishedWithoutConsumerIsAWarning) {
  ExpectFindings("no-consumer", {{W,
                                  "no-consumer",
                                  {"service:metrics", "topic:metrics.raw"},
                                  {"metrics.yaml#/operations/emit"}}});
}

// Random call graphs: every cyclic set of services (by brute-force reachability) gets exactly
// one sync-cycle finding, whose path is a real cycle of declared calls inside that set.
TEST(TopologyCheck, RandomCallGraphsAgainstBruteForce) {
  std::mt19937 rng(7);
  for (int round = 0; round < 500; ++round) {
    const int n = 1 + static_cast<int>(rng() % 8);
    std::vector<Service> services(n);
    std::vector<std::vector<char>> reach(n, std::vector<char>(n, 0));
    for (int i = 0; i < n; ++i) {
      services[i].name = "s" + std::to_string(i);
      services[i].file = services[i].name + ".yaml";
      for (int j = 0; j < n; ++j) {
        if (rng() % 5 == 0) {
          services[i].calls.push_back(
              Name{"s" + std::to_string(j),
                   Where{services[i].file,
                         "/x-converge-calls/" + std::to_string(services[i].calls.size())}});
          reach[i][j] = 1;
        }
      }
    }
    auto calls = reach;
    for (int k = 0; k < n; ++k)
      for (int i = 0; i < n; ++i)
        for (int j = 0; j < n; ++j) reach[i][j] = reach[i][j] || (reach[i][k] && reach[k][j]);
    // The components with a cycle, as sets of names.
    std::set<std::set<std::string>> want;
    for (int v = 0; v < n; ++v) {
      if (!reach[v][v]) continue;
      std::set<std::string> comp;
      for (int w = 0; w < n; ++w) {
        if (reach[v][w] && reach[w][v]) comp.insert("service:s" + std::to_string(w));
      }
      want.insert(comp);
    }
    std::set<std::set<std::string>> got;
    for (const Finding& f : System::Build(services).Check()) {
      if (f.code != "sync-cycle") continue;
      ASSERT_GE(f.path.size(), 2u);
      ASSERT_EQ(f.path.front(), f.path.back());
      ASSERT_EQ(f.where.size(), f.path.size() - 1);
      for (size_t k = 0; k + 1 < f.path.size(); ++k) {
        const int a = std::stoi(f.path[k].substr(9)), b = std::stoi(f.path[k + 1].substr(9));
        ASSERT_TRUE(calls[a][b]) << f.message;
      }
      // The component of the cycle's first node.
      const int v = std::stoi(f.path[0].substr(9));
      std::set<std::string> comp;
      for (int w = 0; w < n; ++w) {
        if (reach[v][w] && reach[w][v]) comp.insert("service:s" + std::to_string(w));
      }
      for (const std::string& p : f.path) ASSERT_TRUE(comp.count(p));
      ASSERT_TRUE(got.insert(comp).second) << "two findings for one cycle";
    }
    ASSERT_EQ(got, want) << "round " << round;
  }
}

TEST(TopologyImpact, DownstreamOfACollection) {
  System s = Load("clean");
  Result<std::vector<System::Reached>> r = s.Impact("collection:customers");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  std::map<std::string, std::vector<std::string>> paths;
  for (const auto& reached : *r) {
    std::vector<std::string> p;
    for (int n : reached.path) p.push_back(s.nodes()[n].Id());
    paths[s.nodes()[reached.node].Id()] = p;
  }
  EXPECT_EQ(paths.size(), 6u);
  EXPECT_EQ(paths["service:payments"],
            (std::vector<std::string>{"collection:customers", "service:payments"}));
  EXPECT_EQ(paths["service:orders"],
            (std::vector<std::string>{"collection:customers", "service:payments",
                                      "topic:payments.done", "service:orders"}));
  EXPECT_TRUE(paths.count("collection:orders"));
  EXPECT_TRUE(paths.count("topic:orders.placed"));
  // A synchronous callee's callers are downstream of it.
  r = s.Impact("customers");  // ambiguous: service and collection
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  r = s.Impact("service:customers");
  ASSERT_TRUE(r.ok());
  std::set<std::string> names;
  for (const auto& reached : *r) names.insert(s.nodes()[reached.node].Id());
  EXPECT_TRUE(names.count("service:orders") && names.count("service:payments"));
  EXPECT_EQ(s.Impact("nothing").status().code(), StatusCode::kNotFound);
  r = s.Impact("orders.placed");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(s.nodes()[r->front().node].Id(), "service:payments");
}

TEST(TopologyGraph, Renders) {
  System s = Load("clean");
  Result<std::string> mermaid = s.Render("mermaid");
  ASSERT_TRUE(mermaid.ok());
  EXPECT_EQ(mermaid->rfind("flowchart LR\n", 0), 0u);
  EXPECT_NE(mermaid->find("([\"orders.placed\"])"), std::string::npos);
  EXPECT_NE(mermaid->find(" -. calls .-> "), std::string::npos);
  Result<std::string> dot = s.Render("dot");
  ASSERT_TRUE(dot.ok());
  EXPECT_NE(dot->find("\"service:orders\" -> \"topic:orders.placed\" [label=\"sends\"];"),
            std::string::npos);
  Result<std::string> j = s.Render("json");
  ASSERT_TRUE(j.ok());
  json::value doc = json::parse(*j);
  EXPECT_EQ(doc.at("services").as_array().size(), 3u);
  bool found = false;
  for (const json::value& e : doc.at("edges").as_array()) {
    found = found || (e.at("from") == "collection:customers" && e.at("to") == "service:payments" &&
                      e.at("kind") == "replicates" &&
                      e.at("where") == "payments.yaml#/x-converge-replicas/0");
  }
  EXPECT_TRUE(found);
  EXPECT_EQ(doc.at("handlers").as_array().size(), 1u);
  EXPECT_EQ(s.Render("svg").status().code(), StatusCode::kInvalidArgument);
}

TEST(TopologyGenerate, GeneratedSystemHasNoErrors) {
  auto files = GenerateSystem(50, 500, 1);
  std::vector<Service> services;
  for (const auto& [name, text] : files) {
    Result<Service> s = ParseManifest(text, name);
    ASSERT_TRUE(s.ok()) << s.status().ToString() << "\n" << text;
    services.push_back(std::move(*s));
  }
  size_t channels = 0;
  for (const Service& s : services) channels += s.sends.size();
  EXPECT_EQ(channels, 500u);
  for (const Finding& f : System::Build(std::move(services)).Check()) {
    EXPECT_EQ(f.severity, Severity::kWarning) << f.message;
  }
}

}  // namespace
}  // namespace converge::topology
