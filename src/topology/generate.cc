#include "topology/generate.h"

#include <random>

#pragma GCC diagnostic ignored "-Wrestrict"  // GCC bug 105329 on "literal" + std::string

namespace converge::topology {

std::vector<std::pair<std::string, std::string>> GenerateSystem(uint32_t services,
                                                                uint32_t channels, uint64_t seed) {
  std::mt19937_64 rng(seed);
  auto svc = [](uint32_t i) { return "svc" + std::to_string(i); };
  auto topic = [](uint32_t c) { return "events.t" + std::to_string(c); };
  // Topic c is sent by service c % services; received by two others.
  std::vector<std::vector<uint32_t>> sends(services), receives(services);
  for (uint32_t c = 0; c < channels && services > 0; ++c) {
    const uint32_t owner = c % services;
    sends[owner].push_back(c);
    if (services > 1) {
      for (int k = 0; k < 2; ++k) {
        uint32_t r = static_cast<uint32_t>(rng() % (services - 1));
        if (r >= owner) ++r;
        if (receives[r].empty() || receives[r].back() != c) receives[r].push_back(c);
      }
    }
  }
  // Each service declares its event schema once (components) and refers to it from each
  // channel, as AsyncAPI documents usually do; the payloads are inlined when read, so every
  // producer/consumer pair still has two schemas to compare.
  const std::string components =
      "components:\n"
      "  messages:\n"
      "    Event:\n"
      "      payload: {$ref: '#/components/schemas/Event'}\n"
      "  schemas:\n"
      "    Event:\n"
      "      type: object\n"
      "      required: [id, at]\n"
      "      properties:\n"
      "        id: {type: string}\n"
      "        at: {type: integer}\n"
      "        kind: {type: string, enum: [a, b]}\n";
  std::vector<std::pair<std::string, std::string>> out;
  out.reserve(services);
  for (uint32_t i = 0; i < services; ++i) {
    std::string y = "asyncapi: 3.0.0\ninfo: {title: " + svc(i) + ", version: 1.0.0}\nchannels:\n";
    auto channel = [&](uint32_t c) {
      y += "  t" + std::to_string(c) + ": {address: " + topic(c) +
           ", messages: {Event: {$ref: '#/components/messages/Event'}}}\n";
    };
    for (uint32_t c : sends[i]) channel(c);
    for (uint32_t c : receives[i]) channel(c);
    y += "operations:\n";
    for (uint32_t c : sends[i]) {
      y += "  send" + std::to_string(c) + ": {action: send, channel: {$ref: '#/channels/t" +
           std::to_string(c) + "'}}\n";
    }
    for (uint32_t c : receives[i]) {
      y += "  on" + std::to_string(c) + ": {action: receive, channel: {$ref: '#/channels/t" +
           std::to_string(c) + "'}";
      // Some handlers publish one of this service's own topics.
      if (!sends[i].empty() && rng() % 4 == 0) {
        y += ", x-converge-publishes: [{$ref: '#/operations/send" +
             std::to_string(sends[i][rng() % sends[i].size()]) + "'}]";
      }
      y += "}\n";
    }
    y += components;
    y += "x-converge-owns:\n  topics: [";
    for (size_t k = 0; k < sends[i].size(); ++k) y += (k ? ", " : "") + topic(sends[i][k]);
    y += "]\n  collections: [coll" + std::to_string(i) + "]\n";
    if (i > 0) {
      const uint32_t src = static_cast<uint32_t>(rng() % i);
      y += "x-converge-replicas:\n  - {collection: coll" + std::to_string(src) +
           ", source: " + svc(src) + "}\n";
      y += "x-converge-calls: [" + svc(static_cast<uint32_t>(rng() % i));
      if (i > 1) y += ", " + svc(static_cast<uint32_t>(rng() % i));
      y += "]\n";
    }
    std::string sagas;
    if (i % 10 == 0 && i + 2 < services) {
      sagas += "  - {name: saga" + std::to_string(i) + ", role: orchestrator, participants: [" +
               svc(i + 1) + ", " + svc(i + 2) + "]}\n";
    }
    for (uint32_t back = 1; back <= 2; ++back) {
      if (i >= back && (i - back) % 10 == 0 && i - back + 2 < services) {
        sagas += "  - {name: saga" + std::to_string(i - back) + ", role: participant}\n";
      }
    }
    if (!sagas.empty()) y += "x-converge-sagas:\n" + sagas;
    char name[32];
    std::snprintf(name, sizeof(name), "svc%06u.yaml", i);
    out.emplace_back(name, std::move(y));
  }
  return out;
}

}  // namespace converge::topology
