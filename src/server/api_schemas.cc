// API v1: the schema registry (docs/schemas.md). Reads are for any valid token; registering a
// version, setting a type's compatibility mode and binding a topic to a type are for admins,
// like creating a topic. Authorization comes before the body is read.
#include <boost/json.hpp>

#include "server/api.h"
#include "server/api_internal.h"
#include "server/json_util.h"

namespace converge::server {

namespace json = boost::json;

namespace {

Status NotAdmin(const Principal& p, std::string_view what) {
  return Status(StatusCode::kPermissionDenied,
                "service '" + p.service + "' may not " + std::string(what) +
                    ": only admin tokens may change the schema registry");
}

json::object TypeJson(const SchemaRegistry::TypeInfo& t) {
  json::object o;
  o["type"] = t.type;
  o["compatibility"] = CompatibilityName(t.mode);
  json::array versions;
  for (uint32_t v : t.versions) versions.push_back(v);
  o["versions"] = std::move(versions);
  o["latest_version"] = t.versions.empty() ? json::value(nullptr) : json::value(t.versions.back());
  return o;
}

json::object VersionJson(const std::string& type, const SchemaRegistry::Version& v) {
  json::object o;
  o["type"] = type;
  o["version"] = v.version;
  json::parse_options deep;
  deep.max_depth = 1000;
  o["schema"] = json::parse(v.schema, {}, deep);
  return o;
}

json::object BindingJson(const std::string& topic, const SchemaRegistry::Binding& b) {
  json::object o;
  o["topic"] = topic;
  o["type"] = b.type;
  o["version"] = b.version == 0 ? json::value("latest") : json::value(b.version);
  return o;
}

HttpReply JsonObjectReply(http::status status, const json::object& o) {
  return Reply(JsonReply(status, json::serialize(o)));
}

// "latest" or 1..UINT32_MAX.
Result<uint32_t> ParseVersion(const std::string& text) {
  if (text == "latest") return 0u;
  Result<uint64_t> n = ParseUintParam("version", text, 1, UINT32_MAX);
  if (!n.ok()) return n.status();
  return static_cast<uint32_t>(*n);
}

}  // namespace

asio::awaitable<HttpReply> Api::ListSchemaTypes(Call& call) {
  json::array types;
  for (const auto& t : d_.schemas->ListTypes()) types.push_back(TypeJson(t));
  json::object o;
  o["types"] = std::move(types);
  co_return JsonObjectReply(http::status::ok, o);
}

asio::awaitable<HttpReply> Api::DescribeSchemaType(Call& call) {
  const std::string& type = call.Param("type");
  if (Status s = CheckSchemaTypeName(type); !s.ok()) co_return Error(s);
  Result<SchemaRegistry::TypeInfo> t = d_.schemas->DescribeType(type);
  if (!t.ok()) co_return Error(t.status());
  co_return JsonObjectReply(http::status::ok, TypeJson(*t));
}

asio::awaitable<HttpReply> Api::SetSchemaCompatibility(Call& call) {
  if (!call.principal->admin) {
    co_return Error(NotAdmin(*call.principal, "set a compatibility mode"));
  }
  const std::string type = call.Param("type");
  if (Status s = CheckSchemaTypeName(type); !s.ok()) co_return Error(s);
  Result<json::object> body = ParseJsonObject(call.req.body());
  if (!body.ok())
    co_return Error(http::status::bad_request, "INVALID_JSON", body.status().message());
  std::string name;
  Status s = CheckFields(*body, {"compatibility"});
  if (s.ok()) s = ReadString(*body, "compatibility", &name);
  std::optional<schema::Compatibility> mode = ParseCompatibility(name);
  if (s.ok() && !mode) {
    s = InvalidArgumentError("field 'compatibility' must be backward, forward, full or none");
  }
  if (!s.ok()) co_return Error(s);
  auto job = [this, type, m = *mode] { return d_.schemas->SetCompatibility(type, m); };
  Result<SchemaRegistry::TypeInfo> t = co_await d_.pool->Run(std::move(job));
  if (!t.ok()) co_return Error(t.status());
  co_return JsonObjectReply(http::status::ok, TypeJson(*t));
}

asio::awaitable<HttpReply> Api::ListSchemaVersions(Call& call) {
  const std::string& type = call.Param("type");
  if (Status s = CheckSchemaTypeName(type); !s.ok()) co_return Error(s);
  Result<std::vector<SchemaRegistry::Version>> versions = d_.schemas->ListVersions(type);
  if (!versions.ok()) co_return Error(versions.status());
  json::array out;
  for (const auto& v : *versions) out.push_back(VersionJson(type, v));
  json::object o;
  o["type"] = type;
  o["versions"] = std::move(out);
  co_return JsonObjectReply(http::status::ok, o);
}

asio::awaitable<HttpReply> Api::RegisterSchemaVersion(Call& call) {
  if (!call.principal->admin) co_return Error(NotAdmin(*call.principal, "register schemas"));
  const std::string type = call.Param("type");
  if (Status s = CheckSchemaTypeName(type); !s.ok()) co_return Error(s);
  Result<json::object> body = ParseJsonObject(call.req.body());
  if (!body.ok())
    co_return Error(http::status::bad_request, "INVALID_JSON", body.status().message());
  Status s = CheckFields(*body, {"schema"});
  const json::value* schema = body->if_contains("schema");
  if (s.ok() && schema == nullptr) s = InvalidArgumentError("field 'schema' is required");
  if (!s.ok()) co_return Error(s);
  auto job = [this, type, schema = *schema] { return d_.schemas->Register(type, schema); };
  Result<SchemaRegistry::RegisterResult> r = co_await d_.pool->Run(std::move(job));
  if (!r.ok()) {
    if (r.status().code() == StatusCode::kInvalidArgument) {
      co_return Error(http::status::bad_request, "INVALID_SCHEMA", r.status().message());
    }
    co_return Error(r.status());
  }
  if (!r->findings.empty()) {
    std::optional<SchemaRegistry::TypeInfo> t;
    if (auto d = d_.schemas->DescribeType(type); d.ok()) t = *d;
    json::object o;
    o["code"] = "SCHEMA_INCOMPATIBLE";
    std::string message =
        "the schema is not " + std::string(t ? CompatibilityName(t->mode) : "backward") +
        " compatible with version " +
        std::to_string(t && !t->versions.empty() ? t->versions.back() : 0) + " of '" + type + "': ";
    json::array findings;
    for (size_t i = 0; i < r->findings.size(); ++i) {
      const auto& f = r->findings[i];
      if (i < 3)
        message += (i ? "; " : "") + (f.path.empty() ? "(root)" : f.path) + ": " + f.reason;
      json::object fo;
      fo["path"] = f.path;
      fo["reason"] = f.reason;
      findings.push_back(std::move(fo));
    }
    if (r->findings.size() > 3) message += "; ...";
    o["message"] = message;
    o["findings"] = std::move(findings);
    co_return JsonObjectReply(http::status::conflict, o);
  }
  Result<SchemaRegistry::Version> v = d_.schemas->GetVersion(type, r->version);
  if (!v.ok()) co_return Error(v.status());
  HttpResponse res = JsonReply(r->created ? http::status::created : http::status::ok,
                               json::serialize(VersionJson(type, *v)));
  res.set(http::field::location, "/v1/schemas/" + type + "/versions/" + std::to_string(r->version));
  co_return Reply(std::move(res));
}

asio::awaitable<HttpReply> Api::GetSchemaVersion(Call& call) {
  const std::string& type = call.Param("type");
  if (Status s = CheckSchemaTypeName(type); !s.ok()) co_return Error(s);
  Result<uint32_t> version = ParseVersion(call.Param("version"));
  if (!version.ok()) co_return Error(version.status());
  Result<SchemaRegistry::Version> v = d_.schemas->GetVersion(type, *version);
  if (!v.ok()) co_return Error(v.status());
  co_return JsonObjectReply(http::status::ok, VersionJson(type, *v));
}

asio::awaitable<HttpReply> Api::GetTopicSchema(Call& call) {
  // Admins set it, so they may read it; services that may see the topic too.
  if (!call.principal->admin && !call.principal->CanSee(call.topic)) {
    co_return Error(NotAllowed(*call.principal, "see", call.topic));
  }
  if (Status s = CheckTopicName(call.topic); !s.ok()) co_return Error(s);
  std::optional<SchemaRegistry::Binding> b = d_.schemas->BindingOf(call.topic);
  if (!b) {
    co_return Error(Status(StatusCode::kNotFound, "topic '" + call.topic + "' has no schema"));
  }
  co_return JsonObjectReply(http::status::ok, BindingJson(call.topic, *b));
}

asio::awaitable<HttpReply> Api::PutTopicSchema(Call& call) {
  if (!call.principal->admin) {
    co_return Error(NotAdmin(*call.principal, "set the schema of topic '" + call.topic + "'"));
  }
  if (Status s = CheckTopicName(call.topic); !s.ok()) co_return Error(s);
  Result<json::object> body = ParseJsonObject(call.req.body());
  if (!body.ok())
    co_return Error(http::status::bad_request, "INVALID_JSON", body.status().message());
  SchemaRegistry::Binding binding;
  Status s = CheckFields(*body, {"type", "version"});
  if (s.ok()) s = ReadString(*body, "type", &binding.type);
  if (s.ok() && binding.type.empty()) s = InvalidArgumentError("field 'type' is required");
  if (s.ok()) s = CheckSchemaTypeName(binding.type);
  if (s.ok()) {
    if (const json::value* v = body->if_contains("version"); v && !v->is_null()) {
      if (v->is_string() && v->get_string() == "latest") {
        binding.version = 0;
      } else {
        uint64_t n = 0;
        s = ReadUint(*body, "version", 1, UINT32_MAX, &n);
        if (!s.ok())
          s = InvalidArgumentError("field 'version' must be \"latest\" or a version number");
        binding.version = static_cast<uint32_t>(n);
      }
    }
  }
  if (!s.ok()) co_return Error(s);
  const std::string topic = call.topic;
  auto job = [this, topic, binding] { return d_.schemas->Bind(topic, binding); };
  Status bound = co_await d_.pool->Run(std::move(job));
  if (!bound.ok()) co_return Error(bound);
  co_return JsonObjectReply(http::status::ok, BindingJson(topic, binding));
}

asio::awaitable<HttpReply> Api::DeleteTopicSchema(Call& call) {
  if (!call.principal->admin) {
    co_return Error(NotAdmin(*call.principal, "remove the schema of topic '" + call.topic + "'"));
  }
  if (Status s = CheckTopicName(call.topic); !s.ok()) co_return Error(s);
  const std::string topic = call.topic;
  auto job = [this, topic] { return d_.schemas->Unbind(topic); };
  Status s = co_await d_.pool->Run(std::move(job));
  if (!s.ok()) co_return Error(s);
  co_return Reply(HttpResponse{http::status::no_content, 11});
}

}  // namespace converge::server
