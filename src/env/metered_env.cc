#include "env/metered_env.h"

#include <utility>

namespace converge::internal {

namespace {

class MeteredWritableFile : public WritableFile {
 public:
  MeteredWritableFile(std::unique_ptr<WritableFile> base, Clock& clock, SyncObserver observer)
      : base_(std::move(base)), clock_(clock), observer_(std::move(observer)) {}
  Status Append(std::span<const uint8_t> data) override { return base_->Append(data); }
  Status Sync() override {
    int64_t start = clock_.NowMonotonicNanos();
    Status s = base_->Sync();
    observer_(SyncKind::kFile, static_cast<double>(clock_.NowMonotonicNanos() - start) * 1e-9);
    return s;
  }
  Status Close() override { return base_->Close(); }
  uint64_t Size() const override { return base_->Size(); }

 private:
  std::unique_ptr<WritableFile> base_;
  Clock& clock_;
  SyncObserver observer_;  // a copy: a file needs only the base Env (its clock) to live
};

}  // namespace

class MeteredEnv::MeteredFileSystem : public FileSystem {
 public:
  MeteredFileSystem(Env& base, SyncObserver observer)
      : base_(base.fs()), clock_(base.clock()), observer_(std::move(observer)) {}

  Result<std::unique_ptr<WritableFile>> NewWritableFile(const std::string& path,
                                                        OpenMode mode) override {
    CONVERGE_ASSIGN_OR_RETURN(std::unique_ptr<WritableFile> f, base_.NewWritableFile(path, mode));
    return std::unique_ptr<WritableFile>(
        std::make_unique<MeteredWritableFile>(std::move(f), clock_, observer_));
  }
  Result<std::unique_ptr<RandomAccessFile>> NewRandomAccessFile(const std::string& path) override {
    return base_.NewRandomAccessFile(path);
  }
  bool FileExists(const std::string& path) override { return base_.FileExists(path); }
  Result<uint64_t> GetFileSize(const std::string& path) override { return base_.GetFileSize(path); }
  Result<std::vector<std::string>> ListDir(const std::string& dir) override {
    return base_.ListDir(dir);
  }
  Status CreateDirs(const std::string& dir) override { return base_.CreateDirs(dir); }
  Status DeleteFile(const std::string& path) override { return base_.DeleteFile(path); }
  Status DeleteDir(const std::string& dir) override { return base_.DeleteDir(dir); }
  Status RenameFile(const std::string& from, const std::string& to) override {
    return base_.RenameFile(from, to);
  }
  Status Truncate(const std::string& path, uint64_t size) override {
    return base_.Truncate(path, size);
  }
  Status SyncDir(const std::string& dir) override {
    int64_t start = clock_.NowMonotonicNanos();
    Status s = base_.SyncDir(dir);
    observer_(SyncKind::kDirectory, static_cast<double>(clock_.NowMonotonicNanos() - start) * 1e-9);
    return s;
  }
  Result<std::unique_ptr<FileLock>> LockFile(const std::string& path) override {
    return base_.LockFile(path);
  }

 private:
  FileSystem& base_;
  Clock& clock_;
  SyncObserver observer_;
};

MeteredEnv::MeteredEnv(Env& base, SyncObserver observer)
    : base_(base), fs_(std::make_unique<MeteredFileSystem>(base, std::move(observer))) {}

MeteredEnv::~MeteredEnv() = default;

FileSystem& MeteredEnv::fs() { return *fs_; }

}  // namespace converge::internal
