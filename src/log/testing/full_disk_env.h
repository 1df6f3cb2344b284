// FullDiskEnv (test-only): an Env that forwards to another one (usually a SimEnv) and whose
// filesystem runs out of space on demand, the way a full disk fails: an append that does not
// fit writes the part that fits and fails with ResourceExhausted ("No space left on device"),
// and, when asked, syncs fail too. Giving space back lets later writes succeed again.
//
// Thread-safety: none (like the SimEnv it wraps).
#pragma once

#include <cstdint>
#include <limits>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "converge/env.h"

namespace converge::log_testing {

class FullDiskEnv : public Env {
 public:
  explicit FullDiskEnv(Env& base) : base_(base), fs_(*this) {}

  // Bytes that may still be appended before appends fail. Unlimited by default.
  void SetFreeBytes(uint64_t bytes) { free_ = bytes; }
  void SetUnlimited() {
    free_ = std::numeric_limits<uint64_t>::max();
    fail_syncs_ = false;
    fail_dir_syncs_ = false;
  }
  // Makes every WritableFile::Sync fail while true.
  void FailSyncs(bool fail) { fail_syncs_ = fail; }
  // Makes every SyncDir fail while true.
  void FailDirSyncs(bool fail) { fail_dir_syncs_ = fail; }
  uint64_t failed_writes() const { return failed_writes_; }

  Clock& clock() override { return base_.clock(); }
  Random& random() override { return base_.random(); }
  Executor& executor() override { return base_.executor(); }
  FileSystem& fs() override { return fs_; }
  Transport& transport() override { return base_.transport(); }

 private:
  static Status NoSpace(const std::string& what) {
    return StorageFullError(what + ": No space left on device (simulated full disk)");
  }

  class File : public WritableFile {
   public:
    File(FullDiskEnv& env, std::unique_ptr<WritableFile> inner, std::string path)
        : env_(env), inner_(std::move(inner)), path_(std::move(path)) {}
    Status Append(std::span<const uint8_t> data) override {
      if (data.size() > env_.free_) {
        ++env_.failed_writes_;
        const size_t fits = static_cast<size_t>(env_.free_);
        if (fits > 0) {
          env_.free_ = 0;
          inner_->Append(data.subspan(0, fits)).IgnoreError();  // a short write, like write(2)
        }
        return NoSpace("write '" + path_ + "'");
      }
      if (env_.free_ != std::numeric_limits<uint64_t>::max()) env_.free_ -= data.size();
      return inner_->Append(data);
    }
    Status Sync() override {
      if (env_.fail_syncs_) {
        ++env_.failed_writes_;
        return NoSpace("fdatasync '" + path_ + "'");
      }
      return inner_->Sync();
    }
    Status Close() override { return inner_->Close(); }
    uint64_t Size() const override { return inner_->Size(); }

   private:
    FullDiskEnv& env_;
    std::unique_ptr<WritableFile> inner_;
    std::string path_;
  };

  class Fs : public FileSystem {
   public:
    explicit Fs(FullDiskEnv& env) : env_(env) {}
    FileSystem& base() { return env_.base_.fs(); }
    Result<std::unique_ptr<WritableFile>> NewWritableFile(const std::string& path,
                                                          OpenMode mode) override {
      CONVERGE_ASSIGN_OR_RETURN(std::unique_ptr<WritableFile> f, base().NewWritableFile(path, mode));
      return std::unique_ptr<WritableFile>(new File(env_, std::move(f), path));
    }
    Result<std::unique_ptr<RandomAccessFile>> NewRandomAccessFile(
        const std::string& path) override {
      return base().NewRandomAccessFile(path);
    }
    bool FileExists(const std::string& path) override { return base().FileExists(path); }
    Result<uint64_t> GetFileSize(const std::string& path) override {
      return base().GetFileSize(path);
    }
    Result<std::vector<std::string>> ListDir(const std::string& dir) override {
      return base().ListDir(dir);
    }
    Status CreateDirs(const std::string& dir) override { return base().CreateDirs(dir); }
    Status DeleteFile(const std::string& path) override { return base().DeleteFile(path); }
    Status DeleteDir(const std::string& dir) override { return base().DeleteDir(dir); }
    Status RenameFile(const std::string& from, const std::string& to) override {
      return base().RenameFile(from, to);
    }
    Status Truncate(const std::string& path, uint64_t size) override {
      return base().Truncate(path, size);
    }
    Status SyncDir(const std::string& dir) override {
      if (env_.fail_dir_syncs_) {
        ++env_.failed_writes_;
        return NoSpace("fsync directory '" + dir + "'");
      }
      return base().SyncDir(dir);
    }
    Result<std::unique_ptr<FileLock>> LockFile(const std::string& path) override {
      return base().LockFile(path);
    }

   private:
    FullDiskEnv& env_;
  };

  Env& base_;
  Fs fs_;
  uint64_t free_ = std::numeric_limits<uint64_t>::max();
  bool fail_syncs_ = false;
  bool fail_dir_syncs_ = false;
  uint64_t failed_writes_ = 0;
};

}  // namespace converge::log_testing
