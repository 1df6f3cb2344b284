#include "server/schema_registry.h"

#include <cstdio>

namespace converge::server {

namespace json = boost::json;
namespace record_log = ::converge::internal::record_log;

std::string_view CompatibilityName(schema::Compatibility mode) {
  switch (mode) {
    case schema::Compatibility::kBackward:
      return "backward";
    case schema::Compatibility::kForward:
      return "forward";
    case schema::Compatibility::kFull:
      return "full";
    case schema::Compatibility::kNone:
      return "none";
  }
  return "backward";
}

std::optional<schema::Compatibility> ParseCompatibility(std::string_view name) {
  if (name == "backward") return schema::Compatibility::kBackward;
  if (name == "forward") return schema::Compatibility::kForward;
  if (name == "full") return schema::Compatibility::kFull;
  if (name == "none") return schema::Compatibility::kNone;
  return std::nullopt;
}

Status CheckSchemaTypeName(std::string_view type) {
  bool ok = !type.empty() && type.size() <= 255;
  for (char c : type) {
    ok = ok && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                c == '.' || c == '_' || c == ':' || c == '-');
  }
  if (ok) return Status::Ok();
  return Status(StatusCode::kInvalidArgument,
                "event type names are 1 to 255 characters of A-Z a-z 0-9 . _ : -");
}

// ---- records: one JSON object each (docs/formats/schema_registry.md) ----
//   {"op":"version","type":T,"version":N,"schema":{...}}
//   {"op":"mode","type":T,"mode":"backward|forward|full|none"}
//   {"op":"bind","topic":X,"type":T,"version":N}   (N 0 = latest)
//   {"op":"unbind","topic":X}

Status SchemaRegistry::Apply(std::string_view payload) {
  boost::system::error_code ec;
  json::parse_options opts;
  opts.max_depth = 1000;  // a schema's depth is bounded when it is registered
  json::value v = json::parse(payload, ec, {}, opts);
  const json::object* o = ec ? nullptr : v.if_object();
  auto str = [&](const char* key) -> const json::string* {
    const json::value* f = o ? o->if_contains(key) : nullptr;
    return f ? f->if_string() : nullptr;
  };
  auto num = [&](const char* key) -> std::optional<uint32_t> {
    const json::value* f = o ? o->if_contains(key) : nullptr;
    if (f == nullptr) return std::nullopt;
    if (f->is_uint64() && f->get_uint64() <= UINT32_MAX)
      return static_cast<uint32_t>(f->get_uint64());
    if (f->is_int64() && f->get_int64() >= 0 && f->get_int64() <= UINT32_MAX) {
      return static_cast<uint32_t>(f->get_int64());
    }
    return std::nullopt;
  };
  const json::string* op = str("op");
  if (op == nullptr) return Status(StatusCode::kInvalidArgument, "a record without an op");
  if (*op == "version") {
    const json::string* type = str("type");
    std::optional<uint32_t> version = num("version");
    const json::value* schema = o->if_contains("schema");
    if (type == nullptr || !version || schema == nullptr) {
      return Status(StatusCode::kInvalidArgument, "a version record without type/version/schema");
    }
    // Compiled without the registration-time refusals: what was accepted then stays usable.
    CONVERGE_ASSIGN_OR_RETURN(std::shared_ptr<const schema::Validator> validator,
                              schema::CompileUnchecked(*schema));
    std::unique_lock lock(mu_);
    TypeState& t = types_[std::string(*type)];
    if (*version != t.versions.size() + 1) {
      return Status(StatusCode::kInvalidArgument, "version " + std::to_string(*version) + " of '" +
                                                      std::string(*type) + "' out of order");
    }
    t.versions.push_back(Version{*version, json::serialize(*schema), std::move(validator)});
    return Status::Ok();
  }
  if (*op == "mode") {
    const json::string* type = str("type");
    const json::string* mode = str("mode");
    std::optional<schema::Compatibility> m = mode ? ParseCompatibility(*mode) : std::nullopt;
    if (type == nullptr || !m) return Status(StatusCode::kInvalidArgument, "a bad mode record");
    std::unique_lock lock(mu_);
    TypeState& t = types_[std::string(*type)];
    t.mode = *m;
    t.mode_set = true;
    return Status::Ok();
  }
  if (*op == "bind") {
    const json::string* topic = str("topic");
    const json::string* type = str("type");
    std::optional<uint32_t> version = num("version");
    if (topic == nullptr || type == nullptr || !version) {
      return Status(StatusCode::kInvalidArgument, "a bad bind record");
    }
    std::unique_lock lock(mu_);
    bindings_[std::string(*topic)] = Binding{std::string(*type), *version};
    any_binding_.store(true, std::memory_order_release);
    return Status::Ok();
  }
  if (*op == "unbind") {
    const json::string* topic = str("topic");
    if (topic == nullptr) return Status(StatusCode::kInvalidArgument, "a bad unbind record");
    std::unique_lock lock(mu_);
    bindings_.erase(std::string(*topic));
    any_binding_.store(!bindings_.empty(), std::memory_order_release);
    return Status::Ok();
  }
  return Status(StatusCode::kInvalidArgument, "unknown op '" + std::string(*op) + "'");
}

Result<std::unique_ptr<SchemaRegistry>> SchemaRegistry::Open(Env& env, const std::string& dir) {
  FileSystem& fs = env.fs();
  CONVERGE_RETURN_IF_ERROR(fs.CreateDirs(dir));
  const std::string path = dir + "/registry.log";
  std::unique_ptr<SchemaRegistry> r(new SchemaRegistry(env, path));
  if (!fs.FileExists(path)) {
    CONVERGE_ASSIGN_OR_RETURN(r->writer_,
                              record_log::Writer::Create(fs, path, OpenMode::kCreateNew));
    CONVERGE_RETURN_IF_ERROR(fs.SyncDir(dir));
    return r;
  }
  CONVERGE_ASSIGN_OR_RETURN(std::string data, fs.ReadFileToString(path));
  record_log::Reader reader = record_log::Reader::ForFile(data, record_log::Legacy::kNone);
  std::string_view payload;
  while (reader.Next(&payload)) {
    Status s = r->Apply(payload);
    if (!s.ok()) {
      return Status(StatusCode::kDataLoss, path + ": record at byte " +
                                               std::to_string(reader.last_record_offset()) + ": " +
                                               std::string(s.message()));
    }
  }
  if (reader.stop() == record_log::Stop::kCorrupt) {
    return Status(StatusCode::kDataLoss, path + ": damaged record at byte " +
                                             std::to_string(reader.valid_bytes()) +
                                             " with records after it");
  }
  if (reader.stop() == record_log::Stop::kTorn) {
    // What a crash mid-write leaves: that registration was never acknowledged.
    std::fprintf(stderr, "converge serve: schema registry: cut a torn tail of %s at byte %zu\n",
                 path.c_str(), reader.valid_bytes());
    CONVERGE_RETURN_IF_ERROR(fs.Truncate(path, reader.valid_bytes()));
  }
  CONVERGE_ASSIGN_OR_RETURN(r->writer_, record_log::Writer::Reopen(fs, path));
  return r;
}

Status SchemaRegistry::Write(const std::string& payload) {
  const uint64_t before = writer_->size();
  Status s = writer_->AddRecord(payload);
  if (s.ok()) s = writer_->Sync();
  if (s.ok()) return s;
  // Cut the file back to what the state holds and reopen; the caller's change is refused.
  writer_.reset();
  Status cut = env_.fs().Truncate(path_, before);
  if (cut.ok()) {
    auto reopened = record_log::Writer::Reopen(env_.fs(), path_);
    if (reopened.ok()) writer_ = std::move(reopened).value();
  }
  return s.WithContext("schema registry");
}

SchemaRegistry::TypeInfo SchemaRegistry::Info(const std::string& type, const TypeState& state) {
  TypeInfo info;
  info.type = type;
  info.mode = state.mode;
  for (const Version& v : state.versions) info.versions.push_back(v.version);
  return info;
}

Result<SchemaRegistry::RegisterResult> SchemaRegistry::Register(const std::string& type,
                                                                const json::value& schema) {
  CONVERGE_RETURN_IF_ERROR(CheckSchemaTypeName(type));
  CONVERGE_RETURN_IF_ERROR(schema::Validator::Compile(schema).status());
  std::lock_guard write(write_mu_);
  if (writer_ == nullptr) return Status(StatusCode::kUnavailable, "schema registry: file lost");
  RegisterResult out;
  schema::Compatibility mode = schema::Compatibility::kBackward;
  std::optional<std::string> latest;
  uint32_t next = 1;
  {
    std::shared_lock lock(mu_);
    auto it = types_.find(type);
    if (it != types_.end()) {
      mode = it->second.mode;
      if (!it->second.versions.empty()) latest = it->second.versions.back().schema;
      next = static_cast<uint32_t>(it->second.versions.size()) + 1;
    }
  }
  const std::string text = json::serialize(schema);
  if (latest) {
    json::parse_options deep;
    deep.max_depth = 1000;
    json::value previous = json::parse(*latest, {}, deep);
    if (previous == schema) {
      out.version = next - 1;
      return out;
    }
    out.findings = schema::CheckCompatibility(previous, schema, mode);
    if (!out.findings.empty()) return out;
  }
  json::object rec;
  rec["op"] = "version";
  rec["type"] = type;
  rec["version"] = next;
  rec["schema"] = schema;
  const std::string payload = json::serialize(rec);
  CONVERGE_RETURN_IF_ERROR(Write(payload));
  CONVERGE_RETURN_IF_ERROR(Apply(payload));
  out.version = next;
  out.created = true;
  return out;
}

Result<SchemaRegistry::TypeInfo> SchemaRegistry::SetCompatibility(const std::string& type,
                                                                  schema::Compatibility mode) {
  CONVERGE_RETURN_IF_ERROR(CheckSchemaTypeName(type));
  std::lock_guard write(write_mu_);
  if (writer_ == nullptr) return Status(StatusCode::kUnavailable, "schema registry: file lost");
  json::object rec;
  rec["op"] = "mode";
  rec["type"] = type;
  rec["mode"] = CompatibilityName(mode);
  const std::string payload = json::serialize(rec);
  CONVERGE_RETURN_IF_ERROR(Write(payload));
  CONVERGE_RETURN_IF_ERROR(Apply(payload));
  std::shared_lock lock(mu_);
  return Info(type, types_.at(type));
}

std::vector<SchemaRegistry::TypeInfo> SchemaRegistry::ListTypes() const {
  std::shared_lock lock(mu_);
  std::vector<TypeInfo> out;
  for (const auto& [type, state] : types_) out.push_back(Info(type, state));
  return out;
}

Result<SchemaRegistry::TypeInfo> SchemaRegistry::DescribeType(const std::string& type) const {
  std::shared_lock lock(mu_);
  auto it = types_.find(type);
  if (it == types_.end()) {
    return Status(StatusCode::kNotFound, "no schema registered for type '" + type + "'");
  }
  return Info(type, it->second);
}

Result<SchemaRegistry::Version> SchemaRegistry::GetVersion(const std::string& type,
                                                           uint32_t version) const {
  std::shared_lock lock(mu_);
  auto it = types_.find(type);
  if (it == types_.end() || it->second.versions.empty()) {
    return Status(StatusCode::kNotFound, "no schema registered for type '" + type + "'");
  }
  const auto& versions = it->second.versions;
  if (version == 0) return versions.back();
  if (version > versions.size()) {
    return Status(StatusCode::kNotFound, "type '" + type + "' has no version " +
                                             std::to_string(version) + " (latest is " +
                                             std::to_string(versions.size()) + ")");
  }
  return versions[version - 1];
}

Result<std::vector<SchemaRegistry::Version>> SchemaRegistry::ListVersions(
    const std::string& type) const {
  std::shared_lock lock(mu_);
  auto it = types_.find(type);
  if (it == types_.end()) {
    return Status(StatusCode::kNotFound, "no schema registered for type '" + type + "'");
  }
  return it->second.versions;
}

Status SchemaRegistry::Bind(const std::string& topic, const Binding& binding) {
  std::lock_guard write(write_mu_);
  if (writer_ == nullptr) return Status(StatusCode::kUnavailable, "schema registry: file lost");
  CONVERGE_RETURN_IF_ERROR(GetVersion(binding.type, binding.version).status());
  json::object rec;
  rec["op"] = "bind";
  rec["topic"] = topic;
  rec["type"] = binding.type;
  rec["version"] = binding.version;
  const std::string payload = json::serialize(rec);
  CONVERGE_RETURN_IF_ERROR(Write(payload));
  return Apply(payload);
}

Status SchemaRegistry::Unbind(const std::string& topic) {
  std::lock_guard write(write_mu_);
  if (writer_ == nullptr) return Status(StatusCode::kUnavailable, "schema registry: file lost");
  if (!BindingOf(topic)) {
    return Status(StatusCode::kNotFound, "topic '" + topic + "' has no schema");
  }
  json::object rec;
  rec["op"] = "unbind";
  rec["topic"] = topic;
  const std::string payload = json::serialize(rec);
  CONVERGE_RETURN_IF_ERROR(Write(payload));
  return Apply(payload);
}

std::optional<SchemaRegistry::Binding> SchemaRegistry::BindingOf(const std::string& topic) const {
  std::shared_lock lock(mu_);
  auto it = bindings_.find(topic);
  if (it == bindings_.end()) return std::nullopt;
  return it->second;
}

std::optional<SchemaRegistry::TopicSchema> SchemaRegistry::ForTopic(
    const std::string& topic) const {
  if (!any_binding_.load(std::memory_order_acquire)) return std::nullopt;
  std::shared_lock lock(mu_);
  auto it = bindings_.find(topic);
  if (it == bindings_.end()) return std::nullopt;
  auto t = types_.find(it->second.type);
  // Bind checks the version exists, and versions are never removed.
  if (t == types_.end() || t->second.versions.empty()) return std::nullopt;
  const auto& versions = t->second.versions;
  const Version& v = it->second.version == 0 || it->second.version > versions.size()
                         ? versions.back()
                         : versions[it->second.version - 1];
  return TopicSchema{it->second.type, v.version, v.validator};
}

}  // namespace converge::server
