// `converge topology check|graph|impact DIR`: the declared topology of a system, from one
// AsyncAPI manifest per service in DIR (docs/topology.md).
#include "topology/topology.h"

#include <cstdio>
#include <string>
#include <thread>

#include "command.h"
#include "core/command_line.h"
#include "env/parallel_for.h"
#include "topology/manifest.h"

namespace converge::cli {
namespace {

constexpr const char* kUsage =
    "Usage: converge topology <command> DIR [options]\n"
    "\n"
    "DIR holds one AsyncAPI 3.0 manifest per service (*.yaml, *.yml, *.json; docs/topology.md).\n"
    "\n"
    "Commands:\n"
    "  check DIR            check the declared topology; exit 0 clean, 1 errors (or warnings\n"
    "                       with --strict), 2 bad input\n"
    "      --json           print the findings as JSON\n"
    "      --strict         warnings fail the check too\n"
    "  graph DIR            draw the graph\n"
    "      --format F       mermaid (default), dot or json\n"
    "  impact DIR NAME      everything downstream of NAME, transitively, with the path to each:\n"
    "                       service:NAME, topic:NAME, collection:NAME, or a bare name that\n"
    "                       names one node\n"
    "      --json           print as JSON\n";

int BadInput(const Status& s, bool json) {
  if (json) {
    boost::json::object o{{"code", StatusCodeName(s.code())}, {"message", s.message()}};
    std::printf("%s\n", boost::json::serialize(o).c_str());
  }
  std::fprintf(stderr, "converge topology: %s\n", std::string(s.message()).c_str());
  return 2;
}

int Run(int argc, char** argv) {
  CLI::App app("The declared topology of a system of services.", "converge topology");
  Configure(app);
  std::string dir, name, format = "mermaid";
  bool json = false, strict = false;
  CLI::App* check = app.add_subcommand("check");
  check->add_option("DIR", dir)->required();
  check->add_flag("--json", json);
  check->add_flag("--strict", strict);
  CLI::App* graph = app.add_subcommand("graph");
  graph->add_option("DIR", dir)->required();
  graph->add_option("--format", format)->check(CLI::IsMember({"mermaid", "dot", "json"}));
  CLI::App* impact = app.add_subcommand("impact");
  impact->add_option("DIR", dir)->required();
  impact->add_option("NAME", name)->required();
  impact->add_flag("--json", json);
  app.require_subcommand(1, 1);
  if (int rc = ParseOrExit(app, argc, argv, kUsage); rc >= 0) return rc;

  Result<std::vector<topology::Service>> services =
      topology::LoadManifests(Env::Default().fs(), dir, HardwareParallelFor());
  if (!services.ok()) return BadInput(services.status(), json);
  const topology::System system = topology::System::Build(std::move(*services));

  if (check->parsed()) {
    const std::vector<topology::Finding> findings = system.Check(&topology::JsonSchemaContract);
    size_t errors = 0, warnings = 0;
    for (const auto& f : findings) (f.severity == topology::Severity::kError ? errors : warnings)++;
    if (json) {
      std::fputs(topology::FindingsJson(findings, /*contracts_checked=*/true).c_str(), stdout);
    } else {
      std::fputs(topology::FindingsText(findings).c_str(), stdout);
      std::printf("%zu services: %zu errors, %zu warnings\n", system.services().size(), errors,
                  warnings);
    }
    return errors > 0 || (strict && warnings > 0) ? 1 : 0;
  }
  if (graph->parsed()) {
    Result<std::string> out = system.Render(format);
    if (!out.ok()) return BadInput(out.status(), false);
    std::fputs(out->c_str(), stdout);
    return 0;
  }
  Result<std::vector<topology::System::Reached>> reached = system.Impact(name);
  if (!reached.ok()) return BadInput(reached.status(), json);
  const auto& nodes = system.nodes();
  if (json) {
    boost::json::array list;
    for (const auto& r : *reached) {
      boost::json::array path;
      for (int n : r.path) path.emplace_back(nodes[n].Id());
      list.push_back(boost::json::object{{"node", nodes[r.node].Id()}, {"path", std::move(path)}});
    }
    const std::string start = nodes[system.Resolve(name).value()].Id();
    boost::json::object o{{"start", start}, {"downstream", std::move(list)}};
    std::printf("%s\n", boost::json::serialize(o).c_str());
    return 0;
  }
  for (const auto& r : *reached) {
    std::string path;
    for (size_t i = 0; i < r.path.size(); ++i) {
      if (i > 0) path += " -> ";
      path += nodes[r.path[i]].Id();
    }
    std::printf("%-40s via %s\n", nodes[r.node].Id().c_str(), path.c_str());
  }
  std::printf("%zu downstream\n", reached->size());
  return 0;
}

const CommandRegistration kTopology{Command{
    "topology", "check, draw and query the declared service topology (AsyncAPI manifests)", Run}};

}  // namespace
}  // namespace converge::cli
