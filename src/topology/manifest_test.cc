#include "topology/manifest.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "converge/sim_env.h"
#include "env/parallel_for.h"

#pragma GCC diagnostic ignored "-Wrestrict"  // GCC bug 105329 on "literal" + std::string

namespace converge::topology {
namespace {

namespace json = boost::json;

TEST(Manifest, ReadsTheCleanExample) {
  Result<std::vector<Service>> all =
      LoadManifests(Env::Default().fs(), CONVERGE_TOPOLOGY_TESTDATA "/clean");
  ASSERT_TRUE(all.ok()) << all.status().ToString();
  ASSERT_EQ(all->size(), 3u);
  const Service& orders = (*all)[1];
  EXPECT_EQ(orders.name, "orders");
  EXPECT_EQ(orders.file, "orders.yaml");
  ASSERT_EQ(orders.sends.size(), 1u);
  EXPECT_EQ(orders.sends[0].topic, "orders.placed");
  EXPECT_EQ(orders.sends[0].where.ToString(), "orders.yaml#/operations/publishOrderPlaced");
  ASSERT_EQ(orders.sends[0].messages.size(), 1u);
  const Message& m = orders.sends[0].messages[0];
  EXPECT_EQ(m.name, "OrderPlaced");
  ASSERT_NE(m.payload, nullptr);
  // The $ref to components/schemas is inlined; YAML scalars become JSON types.
  EXPECT_EQ(*m.payload, json::parse(R"({"type":"object","required":["id","amount"],
      "properties":{"id":{"type":"string"},"amount":{"type":"integer"},
      "currency":{"type":"string","enum":["EUR","USD"]}}})"));
  ASSERT_EQ(orders.receives.size(), 1u);
  EXPECT_EQ(orders.receives[0].topic, "payments.done");
  ASSERT_EQ(orders.owned_collections.size(), 1u);
  EXPECT_EQ(orders.owned_collections[0].where.ToString(),
            "orders.yaml#/x-converge-owns/collections/0");
  ASSERT_EQ(orders.calls.size(), 1u);
  EXPECT_EQ(orders.calls[0].name, "customers");
  ASSERT_EQ(orders.sagas.size(), 1u);
  EXPECT_TRUE(orders.sagas[0].orchestrator);
  EXPECT_EQ(orders.sagas[0].participants[0].name, "payments");
  const Service& payments = (*all)[2];
  EXPECT_EQ(payments.name, "payments");  // from info.title
  ASSERT_EQ(payments.receives.size(), 1u);
  EXPECT_EQ(payments.receives[0].publishes, std::vector<std::string>{"payments.done"});
  ASSERT_EQ(payments.replicas.size(), 1u);
  EXPECT_EQ(payments.replicas[0].source, "customers");
  EXPECT_EQ(payments.calls[0].name, "customers");  // the short form: a plain name
}

TEST(Manifest, QuotedScalarsStayStrings) {
  Result<Service> s = ParseManifest(R"(asyncapi: "3.0.0"
info: {title: s, version: "1"}
channels:
  c:
    address: t
    messages:
      M: {payload: {type: object, properties: {v: {const: "12"}, w: {const: 12}, x: {enum: [true, "true", null]}}}}
operations:
  o: {action: send, channel: {$ref: '#/channels/c'}}
)",
                                    "s.yaml");
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(*s->sends[0].messages[0].payload,
            json::parse(R"({"type":"object","properties":{"v":{"const":"12"},"w":{"const":12},
                "x":{"enum":[true,"true",null]}}})"));
}

// Each bad manifest is refused with the file, the line and the JSON pointer of the problem.
TEST(Manifest, BadManifestsNameFileAndPath) {
  const std::string head = "asyncapi: 3.0.0\ninfo: {title: s, version: 1.0.0}\n";
  struct Case {
    std::string text;
    std::string expect;  // a substring of the error
  };
  const Case cases[] = {
      {"asyncapi: [\n", "bad.yaml:"},
      {"- 1\n", "bad.yaml:1: /: a manifest must be a mapping"},
      {"asyncapi: 3.0.0\ninfo: {title: s}\nx-converge-owns: {topics: [a]}\nx-converge-owns: "
       "{topics: [b]}\n",
       "bad.yaml:4: not valid YAML: key 'x-converge-owns' appears twice in one mapping"},
      {"info: {title: s}\n", "/asyncapi: must be a non-empty string"},
      {"asyncapi: 2.6.0\ninfo: {title: s}\n", "/asyncapi: AsyncAPI '2.6.0' is not supported"},
      {"asyncapi: 3.0.0\n", "/info: must be a mapping with a title"},
      {"asyncapi: 3.0.0\ninfo: {title: 'a b'}\n", "/info/title: must not contain spaces"},
      {head + "channels:\n  c: {}\n",
       "bad.yaml:4: /channels/c/address: a channel needs an address"},
      {head + "channels:\n  c: {address: 'user.{id}'}\n",
       "/channels/c/address: address parameters"},
      {head + "channels:\n  c: {address: t}\noperations:\n  o: {action: publish, channel: {$ref: "
              "'#/channels/c'}}\n",
       "/operations/o/action: must be 'send' or 'receive'"},
      {head + "operations:\n  o: {action: send, channel: {$ref: '#/channels/nope'}}\n",
       "/operations/o/channel/$ref: $ref '#/channels/nope' names nothing in the document"},
      {head + "operations:\n  o: {action: send, channel: {$ref: 'other.yaml#/channels/c'}}\n",
       "only references within the document"},
      {head + "channels:\n  c: {address: t}\noperations:\n  o: {action: send, channel: "
              "'#/channels/c'}\n",
       "/operations/o/channel: must be a reference"},
      {head + "channels:\n  c: {address: t, messages: {M: {payload: {$ref: "
              "'#/components/schemas/A'}}}}\n"
              "components:\n  schemas:\n    A: {type: object, properties: {next: {$ref: "
              "'#/components/schemas/A'}}}\n",
       "/components/schemas/A/properties/next/$ref: recursive schema reference"},
      {head + "channels:\n  c: {address: t, messages: {M: {payload: 3}}}\n",
       "/channels/c/messages/M/payload: a payload schema must be an object or a boolean"},
      {head + "channels:\n  c: {address: t, messages: {M: {payload: {schemaFormat: "
              "application/vnd.apache.avro;version=1.9.0, schema: {}}}}}\n",
       "/channels/c/messages/M/payload/schemaFormat: schema format"},
      {head + "channels:\n  c: {address: t}\n  d: {address: u}\noperations:\n  o:\n    action: "
              "receive\n"
              "    channel: {$ref: '#/channels/c'}\n    x-converge-publishes: [{$ref: "
              "'#/channels/d'}]\n",
       "/operations/o/x-converge-publishes/0: must name a send operation of this service"},
      {head + "channels:\n  c: {address: t}\noperations:\n  o:\n    action: send\n"
              "    channel: {$ref: '#/channels/c'}\n    x-converge-publishes: []\n",
       "/operations/o/x-converge-publishes: only a receive operation's handler publishes"},
      {head + "x-converge-own: {topics: [a]}\n", "/x-converge-own: unknown converge extension"},
      {head + "x-converge-owns: {topic: [a]}\n", "/x-converge-owns/topic: unknown key"},
      {head + "x-converge-owns: {topics: a}\n", "/x-converge-owns/topics: must be a list"},
      {head + "x-converge-calls: [{service: ''}]\n",
       "/x-converge-calls/0/service: must be a non-empty string"},
      {head + "x-converge-replicas: [{collection: c}]\n",
       "/x-converge-replicas/0/source: must be a non-empty string"},
      {head + "x-converge-sagas: [{name: s, role: boss}]\n",
       "/x-converge-sagas/0/role: must be 'orchestrator' or 'participant'"},
      {head + "x-converge-sagas: [{name: s, role: participant, participants: [a]}]\n",
       "/x-converge-sagas/0/participants: only the orchestrator lists the participants"},
  };
  for (const Case& c : cases) {
    Result<Service> s = ParseManifest(c.text, "bad.yaml");
    ASSERT_FALSE(s.ok()) << c.text;
    EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(std::string(s.status().message()).find(c.expect), std::string::npos)
        << "got: " << s.status().message() << "\nwant: " << c.expect;
  }
}

// Aliases that expand exponentially, or refer to their own ancestor, are refused, not
// expanded.
TEST(Manifest, AliasBombsAreBounded) {
  std::string text =
      "asyncapi: 3.0.0\ninfo: {title: s, version: 1.0.0}\nx-defs:\n  a0: &a0 {type: string}\n";
  // Ten copies per level, nine levels: 10^9 nodes if expanded.
  for (int i = 1; i <= 9; ++i) {
    const std::string prev = "*a" + std::to_string(i - 1);
    text += "  a" + std::to_string(i) + ": &a" + std::to_string(i) + " {allOf: [";
    for (int k = 0; k < 10; ++k) text += (k ? ", " : "") + prev;
    text += "]}\n";
  }
  text += "channels:\n  c: {address: t, messages: {M: {payload: *a9}}}\n";
  Result<Service> s = ParseManifest(text, "bomb.yaml");
  ASSERT_FALSE(s.ok());
  EXPECT_NE(std::string(s.status().message()).find("expand past"), std::string::npos)
      << s.status().message();
  s = ParseManifest(
      "asyncapi: 3.0.0\ninfo: {title: s}\nchannels:\n  c: {address: t, messages: "
      "{M: {payload: &p {type: object, properties: {x: *p}}}}}\n",
      "loop.yaml");
  ASSERT_FALSE(s.ok());
}

TEST(Manifest, LoadRefusesTwoManifestsOfOneService) {
  // sync-cycle has distinct names; a directory with a duplicate is made here.
  const std::string dir = ::testing::TempDir() + "/dup_manifests";
  std::filesystem::create_directories(dir);
  for (const char* f : {"/x.yaml", "/y.yaml"}) {
    std::ofstream(dir + f) << "asyncapi: 3.0.0\ninfo: {title: same, version: 1.0.0}\n";
  }
  Result<std::vector<Service>> all = LoadManifests(Env::Default().fs(), dir);
  ASSERT_FALSE(all.ok());
  EXPECT_EQ(all.status().message(), "y.yaml: service 'same' is already declared by x.yaml");
  EXPECT_FALSE(LoadManifests(Env::Default().fs(), dir + "/missing").ok());
}

// Manifests are read through the Env's file system (a simulated one, and the real one), and
// reading them on several threads gives what reading them one after another gives.
TEST(Manifest, LoadsThroughTheEnvFileSystemTheSameOnAnyNumberOfThreads) {
  sim::SimEnv sim(7);
  FileSystem& sim_fs = sim.fs();
  FileSystem& real_fs = Env::Default().fs();
  const std::string real_dir = ::testing::TempDir() + "/parallel_manifests";
  std::filesystem::remove_all(real_dir);
  auto write_both = [&](const std::string& name, const std::string& text) {
    ASSERT_TRUE(sim_fs.WriteFileAtomically("/m/" + name, text).ok());
    ASSERT_TRUE(real_fs.WriteFileAtomically(real_dir + "/" + name, text).ok());
  };
  ASSERT_TRUE(sim_fs.CreateDirs("/m").ok());
  ASSERT_TRUE(real_fs.CreateDirs(real_dir).ok());
  for (int i = 0; i < 40; ++i) {
    const std::string name = "s" + std::to_string(100 + i);
    write_both(name + ".yaml", "asyncapi: 3.0.0\ninfo: {title: " + name + ", version: 1.0.0}\n");
  }
  write_both("notes.txt", "not a manifest");
  const RunAll four_threads = [](size_t n, const std::function<void(size_t)>& task) {
    ParallelFor(n, 4, task);
  };
  Result<std::vector<Service>> serial = LoadManifests(sim_fs, "/m");
  ASSERT_TRUE(serial.ok()) << serial.status().ToString();
  ASSERT_EQ(serial->size(), 40u);
  EXPECT_EQ((*serial)[0].name, "s100");
  Result<std::vector<Service>> parallel = LoadManifests(real_fs, real_dir, four_threads);
  ASSERT_TRUE(parallel.ok()) << parallel.status().ToString();
  ASSERT_EQ(parallel->size(), serial->size());
  for (size_t i = 0; i < serial->size(); ++i) {
    EXPECT_EQ((*parallel)[i].name, (*serial)[i].name);
    EXPECT_EQ((*parallel)[i].file, (*serial)[i].file);
  }
  // A bad manifest is the first error in name order, however the tasks ran.
  write_both("s105.yaml", "asyncapi: [");
  write_both("s120.yaml", "info: 3");
  Result<std::vector<Service>> bad_serial = LoadManifests(sim_fs, "/m");
  Result<std::vector<Service>> bad_parallel = LoadManifests(real_fs, real_dir, four_threads);
  ASSERT_FALSE(bad_serial.ok());
  ASSERT_FALSE(bad_parallel.ok());
  EXPECT_NE(bad_serial.status().message().find("s105.yaml"), std::string_view::npos)
      << bad_serial.status().message();
  EXPECT_EQ(bad_parallel.status().message(), bad_serial.status().message());
}

}  // namespace
}  // namespace converge::topology
