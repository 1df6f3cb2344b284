// Status and Result<T>: how every fallible converge operation reports its outcome.
//
// Contract
// - No exception crosses converge's public API. A function that can fail returns a Status
//   (no value) or a Result<T> (a value or a non-OK Status). Both are [[nodiscard]].
// - The code tells the caller what to do next; the message is for people and logs:
//     kOk                  success.
//     kInvalidArgument     the input is wrong; retrying the same call fails the same way.
//     kNotFound            the named thing does not exist.
//     kAlreadyExists       a create found the thing already there.
//     kPermissionDenied    the caller is known but may not do this.
//     kUnauthenticated     the caller could not be identified.
//     kResourceExhausted   a limit (size, count, queue, disk) was hit; back off or shrink.
//     kFailedPrecondition  the system is not in a state that allows this; do not retry until
//                          that state changes.
//     kAborted             a concurrency conflict (e.g. a stale ETag); redo the whole
//                          read-modify-write.
//     kOutOfRange          a position past the valid range (e.g. beyond the end of a log).
//     kUnavailable         transient; retry the same call, with backoff.
//     kDeadlineExceeded    the deadline passed; the operation may or may not have happened.
//     kDataLoss            stored data is corrupt or lost; the damaged range is named.
//     kCancelled           the operation was cancelled (usually by shutdown).
//     kInternal            an invariant of converge or the OS failed (I/O error, bug).
// Thread-safety: Status and Result are values; distinct objects may be used from distinct
// threads, one object is not synchronized.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace converge {

enum class StatusCode : uint8_t {
  kOk = 0,
  kCancelled = 1,
  kInvalidArgument = 3,
  kDeadlineExceeded = 4,
  kNotFound = 5,
  kAlreadyExists = 6,
  kPermissionDenied = 7,
  kResourceExhausted = 8,
  kFailedPrecondition = 9,
  kAborted = 10,
  kOutOfRange = 11,
  kInternal = 13,
  kUnavailable = 14,
  kDataLoss = 15,
  kUnauthenticated = 16,
};

// "INVALID_ARGUMENT", "NOT_FOUND", ... (stable; used in JSON errors and logs).
std::string_view StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  // An OK status. Cheap: holds no allocation.
  Status() = default;
  Status(StatusCode code, std::string_view message);

  Status(const Status& other);
  Status& operator=(const Status& other);
  Status(Status&&) noexcept = default;
  Status& operator=(Status&&) noexcept = default;
  ~Status() = default;

  static Status Ok() { return Status(); }

  bool ok() const { return state_ == nullptr; }
  StatusCode code() const { return state_ ? state_->code : StatusCode::kOk; }
  // Empty for OK.
  std::string_view message() const {
    return state_ ? std::string_view(state_->message) : std::string_view();
  }
  // "OK" or "NOT_FOUND: topic 'orders' does not exist".
  std::string ToString() const;

  // A copy whose message is "<prefix>: <message>"; OK stays OK.
  Status WithContext(std::string_view prefix) const;
  // A copy with `message` in place of this one's (the code and storage_full kept); OK stays
  // OK.
  Status WithMessage(std::string_view message) const;

  // The file system refused a write because the disk (or the quota) is full: a
  // ResourceExhausted made by StorageFullError at the source, kept by copies, WithContext and
  // WithMessage. Unlike the other ResourceExhausted errors (limits, load) it is retryable once
  // space is freed.
  bool storage_full() const { return state_ != nullptr && state_->storage_full; }

  // Marks a status as deliberately ignored.
  void IgnoreError() const {}

  friend bool operator==(const Status& a, const Status& b) {
    return a.code() == b.code() && a.message() == b.message();
  }

 private:
  friend Status StorageFullError(std::string_view message);

  struct State {
    StatusCode code;
    std::string message;
    bool storage_full = false;
  };
  std::unique_ptr<State> state_;
};

// Constructors named after the codes, e.g. InvalidArgumentError("offset must be >= 0").
Status CancelledError(std::string_view message);
Status InvalidArgumentError(std::string_view message);
Status DeadlineExceededError(std::string_view message);
Status NotFoundError(std::string_view message);
Status AlreadyExistsError(std::string_view message);
Status PermissionDeniedError(std::string_view message);
Status ResourceExhaustedError(std::string_view message);
Status FailedPreconditionError(std::string_view message);
Status AbortedError(std::string_view message);
Status OutOfRangeError(std::string_view message);
Status InternalError(std::string_view message);
Status UnavailableError(std::string_view message);
Status DataLossError(std::string_view message);
Status UnauthenticatedError(std::string_view message);
// ResourceExhausted with storage_full(): the disk (or quota) refused a write (ENOSPC, EDQUOT).
Status StorageFullError(std::string_view message);

namespace internal {
[[noreturn]] void CheckFailed(const char* file, int line, const char* expr, std::string_view msg);
}  // namespace internal

// A value of type T, or the non-OK Status explaining why there is none.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(const T& value) : value_(value) {}                     // NOLINT: implicit by design
  Result(T&& value) : value_(std::move(value)) {}               // NOLINT
  Result(Status status) : status_(std::move(status)) {          // NOLINT
    if (status_.ok()) {
      internal::CheckFailed(__FILE__, __LINE__, "!status.ok()",
                            "Result constructed from an OK Status without a value");
    }
  }
  template <typename U>
    requires(std::is_constructible_v<T, U &&> && !std::is_same_v<std::decay_t<U>, T> &&
             !std::is_same_v<std::decay_t<U>, Status> && !std::is_same_v<std::decay_t<U>, Result>)
  Result(U&& v) : value_(std::forward<U>(v)) {}  // NOLINT

  bool ok() const { return value_.has_value(); }
  const Status& status() const { return status_; }

  // Precondition: ok(). Violations crash with the status in the message.
  T& value() & {
    CheckOk();
    return *value_;
  }
  const T& value() const& {
    CheckOk();
    return *value_;
  }
  T&& value() && {
    CheckOk();
    return std::move(*value_);
  }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  template <typename U>
  T value_or(U&& fallback) const& {
    return ok() ? *value_ : static_cast<T>(std::forward<U>(fallback));
  }

 private:
  void CheckOk() const {
    if (!value_.has_value()) {
      internal::CheckFailed(__FILE__, __LINE__, "result.ok()", status_.ToString());
    }
  }
  std::optional<T> value_;
  Status status_;
};

}  // namespace converge

// Always-on assertion for converge's own invariants (never for input from the world).
#define CONVERGE_CHECK(cond)                                                 \
  do {                                                                       \
    if (!(cond)) ::converge::internal::CheckFailed(__FILE__, __LINE__, #cond, ""); \
  } while (0)
#define CONVERGE_CHECK_MSG(cond, msg)                                           \
  do {                                                                          \
    if (!(cond)) ::converge::internal::CheckFailed(__FILE__, __LINE__, #cond, (msg)); \
  } while (0)

#define CONVERGE_CONCAT_INNER_(a, b) a##b
#define CONVERGE_CONCAT_(a, b) CONVERGE_CONCAT_INNER_(a, b)

// Returns the status from the enclosing function if `expr` (a Status) is not OK.
#define CONVERGE_RETURN_IF_ERROR(expr)                  \
  do {                                                  \
    ::converge::Status converge_status_ = (expr);       \
    if (!converge_status_.ok()) return converge_status_; \
  } while (0)

// `lhs = value of expr` (a Result<T>), or returns its status from the enclosing function.
#define CONVERGE_ASSIGN_OR_RETURN(lhs, expr) \
  CONVERGE_ASSIGN_OR_RETURN_IMPL_(CONVERGE_CONCAT_(converge_result_, __LINE__), lhs, expr)
#define CONVERGE_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                    \
  if (!tmp.ok()) return tmp.status();                   \
  lhs = std::move(tmp).value()
