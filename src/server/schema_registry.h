// The schema registry of `converge serve` (docs/schemas.md): versions of each event type with
// their JSON Schema, a compatibility mode per type checked when a version is registered, and
// the topics whose publishes are validated against a type.
//
// Contract
// - Durable: every change is one record of <dir>/registry.log (core/record_log.h, synced
//   before the call returns; docs/formats/schema_registry.md), replayed at Open. A torn tail
//   (a crash mid-write) is cut; a damaged record with records after it fails Open (DataLoss).
// - Register compiles the schema (schema::Validator::Compile: InvalidArgument when it cannot be
//   enforced as written) and checks it against the type's latest version under the type's
//   mode: findings are returned and nothing is stored. The same schema as the latest version
//   registers nothing and returns that version.
// - Validation lookups (ForTopic) take a shared lock for a map lookup only; the validators are
//   compiled once, at registration or Open, and shared.
// Thread-safety: every method may be called from any thread.
#pragma once

#include <atomic>
#include <boost/json.hpp>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <vector>

#include "converge/env.h"
#include "converge/status.h"
#include "core/record_log.h"
#include "schema/compat.h"
#include "schema/validator.h"

namespace converge::server {

std::string_view CompatibilityName(schema::Compatibility mode);
std::optional<schema::Compatibility> ParseCompatibility(std::string_view name);
// Event type names: 1..255 of [A-Za-z0-9._:-] (a CloudEvents type such as
// "com.example.order.created"). InvalidArgument naming the rule otherwise.
Status CheckSchemaTypeName(std::string_view type);

class SchemaRegistry {
 public:
  struct Version {
    uint32_t version = 0;
    std::string schema;  // compact JSON text
    std::shared_ptr<const schema::Validator> validator;
  };
  struct TypeInfo {
    std::string type;
    schema::Compatibility mode = schema::Compatibility::kBackward;
    std::vector<uint32_t> versions;
  };
  // What a topic's publishes are validated against. version 0: the type's latest.
  struct Binding {
    std::string type;
    uint32_t version = 0;
  };
  // What a publish to a bound topic checks: the type and the validator of the version.
  struct TopicSchema {
    std::string type;
    uint32_t version = 0;
    std::shared_ptr<const schema::Validator> validator;
  };
  struct RegisterResult {
    uint32_t version = 0;
    bool created = false;                   // false: the latest version already had it
    std::vector<schema::Finding> findings;  // non-empty: refused, nothing stored
  };

  static Result<std::unique_ptr<SchemaRegistry>> Open(Env& env, const std::string& dir);

  Result<RegisterResult> Register(const std::string& type, const boost::json::value& schema);
  // Sets the mode used for the type's next registrations (the type need not exist yet).
  Result<TypeInfo> SetCompatibility(const std::string& type, schema::Compatibility mode);
  std::vector<TypeInfo> ListTypes() const;
  // NotFound for a type with neither versions nor a mode set.
  Result<TypeInfo> DescribeType(const std::string& type) const;
  // version 0: the latest. NotFound if none.
  Result<Version> GetVersion(const std::string& type, uint32_t version) const;
  Result<std::vector<Version>> ListVersions(const std::string& type) const;

  // Binds a topic to a type (and version, 0 = latest). NotFound for an unknown type or
  // version.
  Status Bind(const std::string& topic, const Binding& binding);
  // NotFound if the topic is not bound.
  Status Unbind(const std::string& topic);
  std::optional<Binding> BindingOf(const std::string& topic) const;
  // For a publish: nullopt when the topic is not bound (no lock taken while no topic is).
  std::optional<TopicSchema> ForTopic(const std::string& topic) const;

 private:
  struct TypeState {
    schema::Compatibility mode = schema::Compatibility::kBackward;
    bool mode_set = false;
    std::vector<Version> versions;  // version i+1 at index i
  };
  SchemaRegistry(Env& env, std::string path) : env_(env), path_(std::move(path)) {}
  // Applies one record (at Open and after a write). InvalidArgument if it does not decode.
  Status Apply(std::string_view payload);
  // Appends and syncs one record; on failure the file is cut back so state and file agree.
  Status Write(const std::string& payload);
  static TypeInfo Info(const std::string& type, const TypeState& state);

  Env& env_;
  std::string path_;
  std::mutex write_mu_;  // one writer of the file at a time; held across check and write
  std::unique_ptr<::converge::internal::record_log::Writer> writer_;
  mutable std::shared_mutex mu_;  // the maps below
  std::map<std::string, TypeState> types_;
  std::map<std::string, Binding> bindings_;
  std::atomic<bool> any_binding_{false};
};

}  // namespace converge::server
