// Validation of JSON values against a JSON Schema (draft-04, the draft RapidJSON implements;
// docs/schemas.md lists what it does not support). A Validator is compiled once per schema and
// is then immutable: any number of threads may validate with one at the same time (a schema
// with patterns keeps one compiled copy per concurrent caller, see validator.cc).
#pragma once

#include <boost/json.hpp>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "converge/status.h"

namespace converge::schema {

// Why a value failed its schema: where in the value, and which keyword of which subschema.
struct Violation {
  std::string instance_path;  // JSON pointer into the value ("" is the value itself)
  std::string keyword;        // the failing keyword: "type", "required", "enum", ...
  std::string schema_path;    // JSON pointer into the schema, to the subschema that failed
};

// The limits a schema must stay within to be compiled (a registry takes schemas from clients).
inline constexpr int kMaxSchemaDepth = 64;

class Validator;
Result<std::shared_ptr<const Validator>> CompileUnchecked(const boost::json::value& schema);

class Validator {
 public:
  // kInvalidArgument when `schema` is not a schema the validator can use faithfully: not an
  // object, a keyword of the wrong JSON type, a $ref outside the document or to nothing,
  // nesting deeper than kMaxSchemaDepth, or a keyword RapidJSON would silently ignore (a
  // draft-06/07 keyword such as const, contains, propertyNames, if/then/else).
  static Result<std::shared_ptr<const Validator>> Compile(const boost::json::value& schema);

  ~Validator();
  Validator(const Validator&) = delete;
  Validator& operator=(const Validator&) = delete;

  // nullopt when `instance` is valid. Walks the value straight into the validator (no copy).
  std::optional<Violation> Validate(const boost::json::value& instance) const;
  // The same for JSON text (valid UTF-8: not checked again), parsed straight into the
  // validator; a parse error, or nesting deeper than 128, is reported as the keyword "json".
  std::optional<Violation> ValidateText(std::string_view json) const;

  struct Impl;

  // Validates many values in a row (a publish's batch) with one validator taken from the
  // pool once, rather than once per value. One thread at a time; must not outlive the
  // Validator.
  class Batch {
   public:
    explicit Batch(const Validator& validator);
    ~Batch();
    Batch(const Batch&) = delete;
    Batch& operator=(const Batch&) = delete;
    std::optional<Violation> ValidateText(std::string_view json);

   private:
    struct Slot;
    Impl& impl_;
    std::unique_ptr<Slot> slot_;
  };

 private:
  friend Result<std::shared_ptr<const Validator>> CompileUnchecked(const boost::json::value&);
  explicit Validator(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The same compile without the checks of keywords RapidJSON ignores, for the conformance
// test only (it runs the official suite's schemas as they are).
Result<std::shared_ptr<const Validator>> CompileUnchecked(const boost::json::value& schema);

}  // namespace converge::schema
