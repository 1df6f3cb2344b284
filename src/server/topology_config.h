// `converge serve --topology DIR` (config key `topology`): the declared topology of the
// services (docs/topology.md) becomes their tokens' permissions (docs/configuration.md,
// "Topology").
//
// Contract
// - ApplyTopology loads and checks the manifests of config->topology_dir; a bad manifest or a
//   topology with check errors is InvalidArgument (the server does not start), naming the
//   manifest or the first error.
// - Each auth.tokens entry whose `service` has a manifest gets: publish = the topics of its
//   send operations, subscribe = the topics of its receive operations, write_collections =
//   the collections it owns, read_collections = those and the sources of its replicas. Such a
//   token may not also list publish or subscribe in the file (InvalidArgument): one source of
//   truth. Tokens of services without a manifest keep their configured permissions.
// - Idempotent: does nothing when config->topology is already loaded or topology_dir is empty.
// Thread-safety: start-up code, single-threaded.
#pragma once

#include <string>
#include <vector>

#include "converge/status.h"
#include "server/config.h"

namespace converge::server {

// `notes` (may be null) receives lines for the operator: manifests without a token, and a
// topology loaded while auth is disabled (then nothing is enforced).
Status ApplyTopology(ServerConfig* config, std::vector<std::string>* notes = nullptr);

}  // namespace converge::server
