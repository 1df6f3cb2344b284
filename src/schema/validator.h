// Validation of JSON values against a JSON Schema (draft-04; docs/schemas.md lists what is not
// supported). A Validator is compiled once per schema (property lookup tables, required
// properties as bit masks, $refs resolved, regular expressions compiled to linear-time NFAs)
// and is then immutable: any number of threads may validate with one at the same time, each
// call with its own scratch state (a parsed value, the regular expressions' matching state).
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
// The deepest nesting of arrays and objects a validated text may have.
inline constexpr uint32_t kMaxTextDepth = 128;

class Validator;
Result<std::shared_ptr<const Validator>> CompileUnchecked(const boost::json::value& schema);

class Validator {
 public:
  // kInvalidArgument when `schema` is not a schema the validator can use faithfully: not an
  // object, a keyword of the wrong JSON type, a $ref outside the document or to nothing, a
  // schema that applies itself to the same value again (a $ref loop through allOf/anyOf/
  // oneOf/not), a pattern the regular expressions do not support, nesting deeper than
  // kMaxSchemaDepth, or a keyword of a later draft that draft-04 would silently ignore (const,
  // contains, propertyNames, if/then/else, ...).
  static Result<std::shared_ptr<const Validator>> Compile(const boost::json::value& schema);

  ~Validator();
  Validator(const Validator&) = delete;
  Validator& operator=(const Validator&) = delete;

  // nullopt when `instance` is valid. The first failure in document order is reported (the
  // value's own keywords before enum/allOf/anyOf/oneOf/not, an object's members before its
  // required/minProperties/maxProperties/dependencies), as RapidJSON's validator did.
  std::optional<Violation> Validate(const boost::json::value& instance) const;
  // The same for JSON text, parsed completely (syntax, UTF-8, escapes) into a tape that is
  // then walked; text that is not one JSON value, or nests deeper than kMaxTextDepth, is
  // reported as the keyword "json".
  std::optional<Violation> ValidateText(std::string_view json) const;

  struct Impl;

  // Validates many values in a row (a publish's batch) with one scratch state, allocated once
  // and reused for every value. One thread at a time; must not outlive the Validator.
  class Batch {
   public:
    explicit Batch(const Validator& validator);
    ~Batch();
    Batch(const Batch&) = delete;
    Batch& operator=(const Batch&) = delete;
    // As Validator::ValidateText, nesting at most `max_depth` (at most kMaxTextDepth). Text
    // this accepts is also text Boost.JSON's parser accepts (the publish path relies on it:
    // the data of an event bound to a schema is parsed only here).
    std::optional<Violation> ValidateText(std::string_view json,
                                          uint32_t max_depth = kMaxTextDepth);

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

// The same compile without Compile's refusals, for schemas stored by an earlier version (the
// registry's log): never fails. A schema that cannot be enforced at all (a $ref loop through
// allOf/anyOf/oneOf/not, a pattern the regular expressions cannot read) gives a validator that
// refuses every value with the keyword "schema" and the reason.
Result<std::shared_ptr<const Validator>> CompileUnchecked(const boost::json::value& schema);

}  // namespace converge::schema
