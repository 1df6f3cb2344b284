#include "server/topology_config.h"

#include <algorithm>
#include <set>
#include <thread>

#include "env/parallel_for.h"
#include "topology/manifest.h"

namespace converge::server {

Status ApplyTopology(ServerConfig* config, std::vector<std::string>* notes) {
  if (config->topology_dir.empty() || config->topology != nullptr) return Status::Ok();
  const std::string& dir = config->topology_dir;
  Result<std::vector<topology::Service>> services =
      topology::LoadManifests(Env::Default().fs(), dir, HardwareParallelFor());
  if (!services.ok()) {
    return InvalidArgumentError("topology: " + std::string(services.status().message()));
  }
  auto system =
      std::make_shared<const topology::System>(topology::System::Build(std::move(*services)));
  size_t errors = 0;
  const topology::Finding* first = nullptr;
  const std::vector<topology::Finding> findings = system->Check(&topology::JsonSchemaContract);
  for (const topology::Finding& f : findings) {
    if (f.severity != topology::Severity::kError) continue;
    if (first == nullptr) first = &f;
    ++errors;
  }
  if (errors > 0) {
    return InvalidArgumentError("topology " + dir + ": " + std::to_string(errors) +
                                " error(s), the first: [" + first->code + "] " + first->message +
                                " (converge topology check " + dir + " lists them)");
  }
  std::set<std::string> with_token;
  for (size_t i = 0; i < config->tokens.size(); ++i) {
    TokenConfig& t = config->tokens[i];
    const topology::Service* manifest = nullptr;
    for (const topology::Service& s : system->services()) {
      if (s.name == t.service) manifest = &s;
    }
    if (manifest == nullptr) continue;
    with_token.insert(t.service);
    if (!t.publish.empty() || !t.subscribe.empty()) {
      return InvalidArgumentError("config key 'auth.tokens[" + std::to_string(i) + "]': service '" +
                                  t.service + "' has a manifest (" + manifest->file +
                                  "), which gives its publish and subscribe permissions: remove "
                                  "them from the token");
    }
    std::set<std::string> publish, subscribe, write, read;
    for (const topology::Operation& o : manifest->sends) publish.insert(o.topic);
    for (const topology::Operation& o : manifest->receives) subscribe.insert(o.topic);
    for (const topology::Name& c : manifest->owned_collections) write.insert(c.name);
    read = write;
    for (const topology::Replica& r : manifest->replicas) read.insert(r.collection);
    // Topic names cannot contain '*' (log.h), so each name is a pattern matching only itself.
    t.publish.assign(publish.begin(), publish.end());
    t.subscribe.assign(subscribe.begin(), subscribe.end());
    t.write_collections.assign(write.begin(), write.end());
    t.read_collections.assign(read.begin(), read.end());
    t.restrict_collections = true;
  }
  if (notes != nullptr) {
    if (config->tokens.empty()) {
      notes->push_back("topology " + dir + " loaded, but auth is disabled: nothing is enforced");
    }
    for (const topology::Service& s : system->services()) {
      if (!config->tokens.empty() && !with_token.count(s.name)) {
        notes->push_back("service '" + s.name + "' (" + s.file + ") has no token in auth.tokens");
      }
    }
  }
  config->topology = std::move(system);
  return Status::Ok();
}

}  // namespace converge::server
