#include "core/yaml_check.h"

#include <set>
#include <string>

namespace converge {
namespace {

std::string Line(const YAML::Node& node) {
  const YAML::Mark m = node.Mark();
  if (m.line < 0) return "";
  return " (line " + std::to_string(m.line + 1) + ")";
}

struct Walk {
  std::string_view what;
  const YamlCheckLimits& limits;
  size_t nodes = 0;

  Status Visit(const YAML::Node& node, int depth) {
    if (++nodes > limits.max_nodes) {
      return InvalidArgumentError(std::string(what) + ": the document expands to more than " +
                                  std::to_string(limits.max_nodes) +
                                  " nodes (aliases are counted each time they are used)");
    }
    if (depth > limits.max_depth) {
      return InvalidArgumentError(std::string(what) + ": nested deeper than " +
                                  std::to_string(limits.max_depth) + " levels" + Line(node));
    }
    if (node.IsMap()) {
      std::set<std::string, std::less<>> seen;
      for (const auto& kv : node) {
        if (kv.first.IsScalar() && !seen.insert(kv.first.Scalar()).second) {
          return InvalidArgumentError(std::string(what) + ": key '" +
                                      kv.first.Scalar().substr(0, 100) +
                                      "' appears more than once in one mapping" + Line(kv.first));
        }
        if (!kv.first.IsScalar()) CONVERGE_RETURN_IF_ERROR(Visit(kv.first, depth + 1));
        CONVERGE_RETURN_IF_ERROR(Visit(kv.second, depth + 1));
      }
    } else if (node.IsSequence()) {
      for (const auto& item : node) CONVERGE_RETURN_IF_ERROR(Visit(item, depth + 1));
    }
    return Status::Ok();
  }
};

}  // namespace

Status CheckYamlDocument(const YAML::Node& root, std::string_view what,
                         const YamlCheckLimits& limits) {
  Walk walk{what, limits};
  return walk.Visit(root, 0);
}

}  // namespace converge
