// Keeps docs/api/openapi.yaml true to the code: the same routes with the same methods, and
// every error code the server can send listed in the Error schema.
#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <vector>

#include "server/api.h"

namespace converge::server {
namespace {

std::string SourceDir() {
  const char* dir = std::getenv("CONVERGE_SOURCE_DIR");
  return dir ? dir : CONVERGE_SOURCE_DIR_FALLBACK;
}

// The CODE of every `Error(http::status::<name>, "CODE"` in `source` (JsonError included).
std::vector<std::string> LiteralErrorCodes(const std::string& source) {
  std::vector<std::string> codes;
  const std::string marker = "Error(";
  for (size_t at = source.find(marker); at != std::string::npos; at = source.find(marker, at + 1)) {
    size_t p = at + marker.size();
    while (p < source.size() && std::isspace(static_cast<unsigned char>(source[p]))) ++p;
    if (source.compare(p, 14, "http::status::") != 0) continue;
    p = source.find(',', p);
    if (p == std::string::npos) break;
    ++p;
    while (p < source.size() && std::isspace(static_cast<unsigned char>(source[p]))) ++p;
    if (p >= source.size() || source[p] != '"') continue;
    size_t end = source.find('"', p + 1);
    if (end == std::string::npos) break;
    std::string code = source.substr(p + 1, end - p - 1);
    if (!code.empty() &&
        code.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZ_") == std::string::npos) {
      codes.push_back(code);
    }
  }
  return codes;
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
  // Codes written literally where replies are built: JsonError(http::status::x, "CODE", ...)
  // and Error(http::status::x, "CODE", ...). (A hand scan: std::regex trips GCC 12 warnings
  // in the sanitizer builds.)
  for (const auto& entry : std::filesystem::directory_iterator(SourceDir() + "/src/server")) {
    const std::string name = entry.path().filename().string();
    if (entry.path().extension() != ".cc" || name.ends_with("_test.cc")) continue;
    std::ifstream in(entry.path());
    std::stringstream text;
    text << in.rdbuf();
    for (const std::string& code : LiteralErrorCodes(text.str())) sent.insert(code);
  }
  EXPECT_GT(sent.size(), 15u);
  for (const std::string& code : sent) {
    EXPECT_TRUE(documented.count(code)) << code << " is sent but not in the Error schema";
  }
}

}  // namespace
}  // namespace converge::server
