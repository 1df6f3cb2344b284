// Strict reading of YAML documents (yaml-cpp) that come from users: configuration files, saga
// definitions (also sent over HTTP) and topology manifests.
#pragma once

#include <yaml-cpp/yaml.h>

#include <string_view>

#include "converge/status.h"

namespace converge {

struct YamlCheckLimits {
  int max_depth = 64;
  // Nodes visited, aliases counted every time they are reached: a document of a few hundred
  // bytes whose anchors refer to anchors ("billion laughs") expands to more nodes than any
  // reader of it could walk.
  size_t max_nodes = 1'000'000;
};

// yaml-cpp keeps every pair of a mapping, a repeated key included, and a lookup finds one of
// them: "pivot: true" then "pivot: false" reads as either, silently. Refuses (InvalidArgument,
// naming `what`, the key and its line) a key given twice in any mapping (JSON members alike,
// JSON being YAML), nesting deeper than max_depth, and a document that expands (through
// aliases) to more than max_nodes nodes.
Status CheckYamlDocument(const YAML::Node& root, std::string_view what,
                         const YamlCheckLimits& limits = {});

}  // namespace converge
