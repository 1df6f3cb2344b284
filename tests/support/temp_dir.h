// A temporary directory for a test, removed with everything in it when the object goes: the
// one every suite uses (unit, simulation and integration tests alike).
#pragma once

#include <stdlib.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "converge/status.h"

namespace converge::testing {

class TempDir {
 public:
  // Creates "<base>/<prefix>XXXXXX". `base` empty means $TMPDIR or /tmp. Internal if the
  // directory cannot be created.
  static Result<TempDir> Create(const std::string& prefix, const std::string& base = "") {
    std::string root = base;
    if (root.empty()) {
      const char* env = std::getenv("TMPDIR");
      root = (env != nullptr && *env != '\0') ? env : "/tmp";
    }
    std::string templ = root + "/" + prefix + "XXXXXX";
    std::vector<char> buf(templ.begin(), templ.end());
    buf.push_back('\0');
    if (::mkdtemp(buf.data()) == nullptr) {
      return InternalError("mkdtemp " + templ + ": " + std::strerror(errno));
    }
    return TempDir(std::string(buf.data()), 0);
  }

  // The same for tests that cannot go on without one: stops the process if it cannot be made.
  explicit TempDir(const std::string& prefix = "converge-") {
    Result<TempDir> made = Create(prefix);
    CONVERGE_CHECK_MSG(made.ok(), made.status().ToString());
    path_ = std::move(made->path_);
    made->path_.clear();
  }

  TempDir(TempDir&& other) noexcept : path_(std::move(other.path_)) { other.path_.clear(); }
  TempDir& operator=(TempDir&& other) noexcept {
    if (this != &other) {
      Remove().IgnoreError();
      path_ = std::move(other.path_);
      other.path_.clear();
    }
    return *this;
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir() { Remove().IgnoreError(); }

  const std::string& path() const { return path_; }
  // A path inside the directory.
  std::string Sub(const std::string& name) const { return path_ + "/" + name; }
  // Removes the directory now (idempotent). Internal if something could not be removed.
  Status Remove() {
    if (path_.empty()) return Status::Ok();
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
    if (ec) return InternalError("removing " + path_ + ": " + ec.message());
    path_.clear();
    return Status::Ok();
  }

 private:
  TempDir(std::string path, int) : path_(std::move(path)) {}
  std::string path_;
};

}  // namespace converge::testing
