// A generated system of services, for the benchmark (`converge bench topology`) and tests:
// `services` manifests with `channels` topics in all. Each topic has one sending, owning
// service and two receiving ones, with the same payload schema on both sides; synchronous
// calls go only to services declared earlier (no cycle), each service owns a collection and
// keeps a replica of an earlier one's, and every tenth service orchestrates a saga with the
// next two as participants. So a check reports no error (handler links may make loops:
// warnings). Deterministic in `seed`.
// Thread-safety: pure function.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace converge::topology {

// (file name, YAML text) per service.
std::vector<std::pair<std::string, std::string>> GenerateSystem(uint32_t services,
                                                                uint32_t channels, uint64_t seed);

}  // namespace converge::topology
