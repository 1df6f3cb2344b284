// Keeps docs/api/openapi.yaml true to the code: the same routes with the same methods, and
// every error code the server can send listed in the Error schema.
#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include "server/api.h"

namespace converge::server {
namespace {

std::string SourceDir() {
  const char* dir = std::getenv("CONVERGE_SOURCE_DIR");
  return dir ? dir : CONVERGE_SOURCE_DIR_FALLBACK;
}

YAML::Node LoadSpec() { return YAML::LoadFile(SourceDir() + "/docs/api/openapi.yaml"); }

TEST(OpenApi, DocumentsExactlyTheRoutesTheServerServes) {
  YAML::Node spec = LoadSpec();
  EXPECT_EQ(spec["openapi"].as<std::string>(), "3.1.0");
  std::set<std::string> documented;
  for (const auto& path : spec["paths"]) {
    for (const auto& op : path.second) {
      std::string method = op.first.as<std::string>();
      if (method == "parameters") continue;
      for (char& c : method) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
      documented.insert(method + " " + path.first.as<std::string>());
    }
  }
  std::set<std::string> served;
  for (const RouteInfo& r : Api::Routes()) served.insert(r.method + " " + r.path);
  EXPECT_EQ(documented, served);
}

TEST(OpenApi, ListsEveryErrorCodeTheServerSends) {
  YAML::Node spec = LoadSpec();
  std::set<std::string> documented;
  for (const auto& code : spec["components"]["schemas"]["Error"]["properties"]["code"]["enum"]) {
    documented.insert(code.as<std::string>());
  }
  std::set<std::string> sent;
  for (int c = 0; c <= 16; ++c) {
    Status s(static_cast<StatusCode>(c), "x");
    if (!s.ok()) sent.insert(std::string(ErrorCodeFor(s).code));
  }
  // Codes written literally where replies are built: JsonError(status, "CODE", ...) and
  // Error(status, "CODE", ...).
  const std::regex literal(R"re((?:JsonError|Error)\(\s*http::status::\w+,\s*"([A-Z_]+)")re");
  for (const auto& entry : std::filesystem::directory_iterator(SourceDir() + "/src/server")) {
    if (entry.path().extension() != ".cc") continue;
    std::ifstream in(entry.path());
    std::stringstream text;
    text << in.rdbuf();
    std::string source = text.str();
    for (std::sregex_iterator it(source.begin(), source.end(), literal), end; it != end; ++it) {
      sent.insert((*it)[1]);
    }
  }
  EXPECT_GT(sent.size(), 15u);
  for (const std::string& code : sent) {
    EXPECT_TRUE(documented.count(code)) << code << " is sent but not in the Error schema";
  }
}

}  // namespace
}  // namespace converge::server
