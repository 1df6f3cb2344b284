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
  // Straight from the dispatch table (Api::Routes() lists Api::RouteTable()): a route added to
  // the table without a doc, or a documented route the table lacks, fails here.
  std::set<std::string> served;
  for (const RouteInfo& r : Api::Routes()) served.insert(r.method + " " + r.path);
  EXPECT_EQ(served.size(), Api::RouteTable().size()) << "a route is in the table twice";
  for (const std::string& route : served) {
    EXPECT_TRUE(documented.count(route)) << route << " is served but not in openapi.yaml";
  }
  for (const std::string& route : documented) {
    EXPECT_TRUE(served.count(route)) << route << " is in openapi.yaml but not served";
  }
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

// The node `ref` ("#/components/schemas/X") points to in `spec`, or an undefined node.
YAML::Node Resolve(const YAML::Node& spec, const std::string& ref) {
  if (ref.rfind("#/", 0) != 0) return YAML::Node(YAML::NodeType::Undefined);
  YAML::Node node;
  node.reset(spec);  // rebinds; assignment would overwrite the spec's node
  size_t at = 2;
  while (at <= ref.size()) {
    size_t slash = ref.find('/', at);
    if (slash == std::string::npos) slash = ref.size();
    // JSON Pointer escapes: ~1 is '/', ~0 is '~'. (Built by push_back: GCC 12 reports a false
    // -Wrestrict on std::string::replace here.)
    std::string part;
    for (size_t i = at; i < slash; ++i) {
      if (ref[i] == '~' && i + 1 < slash && (ref[i + 1] == '0' || ref[i + 1] == '1')) {
        part.push_back(ref[i + 1] == '1' ? '/' : '~');
        ++i;
      } else {
        part.push_back(ref[i]);
      }
    }
    const YAML::Node& current = node;  // const: a lookup never adds the key
    if (!current.IsMap() || !current[part]) return YAML::Node(YAML::NodeType::Undefined);
    node.reset(current[part]);
    at = slash + 1;
  }
  return node;
}

void CheckRefs(const YAML::Node& spec, const YAML::Node& node, const std::string& where) {
  if (node.IsMap()) {
    for (const auto& kv : node) {
      const std::string key = kv.first.as<std::string>();
      if (key == "$ref" && kv.second.IsScalar()) {
        EXPECT_TRUE(Resolve(spec, kv.second.as<std::string>()).IsDefined())
            << where << ": unresolved $ref " << kv.second.as<std::string>();
      } else {
        CheckRefs(spec, kv.second, where + "/" + key);
      }
    }
  } else if (node.IsSequence()) {
    for (size_t i = 0; i < node.size(); ++i) {
      CheckRefs(spec, node[i], where + "/" + std::to_string(i));
    }
  }
}

// What OpenAPI 3.1 requires of the document beyond YAML: the fields a validator checks
// (info, license, operations and responses, path parameters, references), written out here
// because no OpenAPI 3.1 validator is packaged for the build machines.
TEST(OpenApi, IsAValidOpenApi31Document) {
  YAML::Node spec = LoadSpec();
  const std::string version = spec["openapi"].as<std::string>();
  EXPECT_EQ(version.rfind("3.1.", 0), 0u) << version;
  YAML::Node info = spec["info"];
  ASSERT_TRUE(info.IsMap());
  EXPECT_TRUE(info["title"].IsScalar());
  EXPECT_TRUE(info["version"].IsScalar());
  YAML::Node license = info["license"];
  ASSERT_TRUE(license.IsMap());
  EXPECT_TRUE(license["name"].IsScalar()) << "license.name is required";
  EXPECT_TRUE(license["identifier"].IsScalar()) << "license.identifier: an SPDX expression";
  EXPECT_FALSE(license["identifier"] && license["url"]) << "license: identifier or url, not both";

  YAML::Node schemes = spec["components"]["securitySchemes"];
  auto check_security = [&](const YAML::Node& security, const std::string& where) {
    if (!security) return;
    ASSERT_TRUE(security.IsSequence()) << where;
    for (const auto& requirement : security) {
      for (const auto& kv : requirement) {
        EXPECT_TRUE(schemes[kv.first.as<std::string>()].IsDefined())
            << where << ": unknown security scheme " << kv.first.as<std::string>();
      }
    }
  };
  check_security(spec["security"], "security");

  const std::set<std::string> methods = {"get",     "put",  "post",  "delete",
                                         "options", "head", "patch", "trace"};
  std::set<std::string> operation_ids;
  for (const auto& path : spec["paths"]) {
    const std::string route = path.first.as<std::string>();
    EXPECT_EQ(route.front(), '/') << route;
    std::set<std::string> templated;
    for (size_t open = route.find('{'); open != std::string::npos;
         open = route.find('{', open + 1)) {
      templated.insert(route.substr(open + 1, route.find('}', open) - open - 1));
    }
    for (const auto& op : path.second) {
      const std::string method = op.first.as<std::string>();
      if (method == "parameters" || method == "summary" || method == "description") continue;
      const std::string where = method + " " + route;
      EXPECT_TRUE(methods.count(method)) << where << ": not an HTTP method";
      const YAML::Node operation = op.second;
      if (operation["operationId"]) {
        EXPECT_TRUE(operation_ids.insert(operation["operationId"].as<std::string>()).second)
            << where << ": duplicate operationId";
      }
      ASSERT_TRUE(operation["responses"].IsMap()) << where << ": responses are required";
      EXPECT_GT(operation["responses"].size(), 0u) << where;
      for (const auto& response : operation["responses"]) {
        YAML::Node r;
        r.reset(response.second);
        if (r["$ref"]) r.reset(Resolve(spec, r["$ref"].as<std::string>()));
        EXPECT_TRUE(r["description"].IsScalar())
            << where << " " << response.first.as<std::string>() << ": description is required";
      }
      check_security(operation["security"], where);
      // Path parameters: each {name} of the template is declared, in: path and required;
      // none is declared that the template lacks.
      std::set<std::string> declared;
      for (const YAML::Node& list : {path.second["parameters"], operation["parameters"]}) {
        if (!list) continue;
        for (const YAML::Node& item : list) {
          YAML::Node p;
          p.reset(item);
          if (p["$ref"]) p.reset(Resolve(spec, p["$ref"].as<std::string>()));
          ASSERT_TRUE(p.IsMap()) << where;
          const std::string in = p["in"].as<std::string>();
          EXPECT_TRUE(in == "query" || in == "header" || in == "path" || in == "cookie") << where;
          EXPECT_TRUE(p["schema"] || p["content"]) << where << ": parameter needs a schema";
          if (in != "path") continue;
          declared.insert(p["name"].as<std::string>());
          EXPECT_TRUE(p["required"] && p["required"].as<bool>())
              << where << ": path parameter " << p["name"].as<std::string>() << " must be required";
        }
      }
      EXPECT_EQ(declared, templated) << where;
    }
  }
  CheckRefs(spec, spec, "");
}

}  // namespace
}  // namespace converge::server
