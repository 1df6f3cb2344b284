// Optimistic concurrency: values with versions and strong ETags.
//
// Contract
// - A VersionedValue holds a value (or its absence: never written or deleted) and a version
//   vector recording every write that produced it. Every successful write advances the writing
//   replica's entry, so the version changes with each write and never repeats (no ABA).
// - etag() is a strong entity tag derived from the version and the content: two replicas
//   holding the same version of the same value report the same ETag, and any write changes it.
// - A conditional write (If-Match) whose ETag no longer matches fails with Aborted and changes
//   nothing: the caller must re-read and redo its read-modify-write. A create-only write
//   (If-None-Match: *) on an existing value fails with AlreadyExists.
// - Merge between replicas never picks a winner among concurrent writes: if neither version
//   contains the other it fails with Aborted and the local value stays. This is the
//   "reject on conflict" strategy; it fits values owned by one authority (one leader, one
//   shared store) where concurrent writes are errors to surface, not to resolve.
//
// Thread-safety: values; one object is not synchronized.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "converge/conflict/causality.h"
#include "converge/status.h"

namespace converge::conflict {

class ETag {
 public:
  // The empty ETag (matches nothing).
  ETag() = default;

  // Parses an HTTP entity tag: a quoted strong tag such as "\"abc\"". InvalidArgument for a
  // weak tag (W/"..."; conditional writes need strong comparison), a missing quote, or a
  // character outside the RFC 9110 etagc set.
  static Result<ETag> Parse(std::string_view header_value);
  // The strong tag of some bytes: a quoted 128-bit content hash (32 hex digits).
  static ETag ForContent(std::string_view bytes);

  // With the quotes, ready for an ETag header.
  const std::string& text() const { return text_; }
  bool empty() const { return text_.empty(); }

  bool operator==(const ETag&) const = default;

 private:
  explicit ETag(std::string text) : text_(std::move(text)) {}
  std::string text_;
};

// HTTP-style preconditions of a write.
struct WritePrecondition {
  std::optional<ETag> if_match;    // apply only if the current ETag equals this one
  bool if_none_match_any = false;  // apply only if no value exists (create-only)
};

// Checks `pre` against the current ETag and existence. OK, Aborted (If-Match mismatch, the
// value changed since it was read) or AlreadyExists (If-None-Match: * and a value exists).
Status CheckPrecondition(const WritePrecondition& pre, const ETag& current, bool exists);

class VersionedValue {
 public:
  VersionedValue() = default;

  // True when a value is present (written and not deleted).
  bool exists() const { return exists_; }
  // The value; empty when !exists().
  const std::string& value() const { return value_; }
  const VersionVector& version() const { return version_; }
  ETag etag() const;

  // Writes `value` if `pre` holds. Returns the new ETag.
  // InvalidArgument: replica 0. Aborted / AlreadyExists: see CheckPrecondition.
  // OutOfRange: the replica's version counter is exhausted.
  Result<ETag> Write(ReplicaId replica, std::string value, const WritePrecondition& pre = {});
  // Deletes the value if `pre` holds (the version still advances, so a stale ETag of the
  // deleted value keeps failing). Same failures as Write.
  Result<ETag> Delete(ReplicaId replica, const WritePrecondition& pre = {});

  // Adopts `other` if its version is causally after ours; keeps ours if equal or before.
  // Aborted (nothing changes) if the versions are concurrent.
  Status Merge(const VersionedValue& other);

  bool operator==(const VersionedValue&) const = default;

  // {"type":"versioned-value","version":{"1":3},"value":"x"}  ("value" absent when deleted)
  std::string ToJson() const;
  static Result<VersionedValue> FromJson(std::string_view json, const DecodeLimits& limits = {});
  void AppendBinary(std::string* out) const;
  std::string ToBinary() const;
  static Result<VersionedValue> FromBinary(std::string_view bytes, const DecodeLimits& limits = {});

 private:
  Result<ETag> Apply(ReplicaId replica, bool exists, std::string value,
                     const WritePrecondition& pre);

  VersionVector version_;
  bool exists_ = false;
  std::string value_;
};

}  // namespace converge::conflict
