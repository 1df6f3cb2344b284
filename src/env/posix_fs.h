// The production FileSystem: POSIX files, mapped onto env.h's durability model.
//
// - WritableFile::Append issues one write() per call (no user-space buffer: callers batch);
//   Sync is fdatasync. After a failed Sync the file refuses further Append/Sync (the kernel may
//   have dropped the dirty pages, so a later "successful" sync would be a lie).
// - SyncDir opens the directory and fsyncs it.
// - CreateDirs and DeleteDir fsync the parent directory, so they are durable when they return.
// - Truncate cuts the file and fdatasyncs it, so the new length is durable when it returns.
// - LockFile uses flock(LOCK_EX | LOCK_NB) on a file it creates if missing.
//
// Errors carry the operation, the path and strerror. errno mapping:
//   ENOENT                                -> NotFound
//   EEXIST                                -> AlreadyExists
//   ENOSPC, EDQUOT, EMFILE, ENFILE        -> ResourceExhausted
//   EACCES, EPERM, EROFS                  -> PermissionDenied
//   ENOTEMPTY, EISDIR, ENOTDIR            -> FailedPrecondition
//   ENAMETOOLONG, EINVAL                  -> InvalidArgument
//   anything else (EIO, ...)              -> Internal
//
// Thread-safety: PosixFileSystem and RandomAccessFile are thread-safe; a WritableFile is used by
// one thread at a time.
#pragma once

#include <string>
#include <string_view>

#include "converge/env.h"

namespace converge::internal {

// Status for a failed system call `op` on `path` with errno `err`.
Status PosixError(std::string_view op, const std::string& path, int err);

class PosixFileSystem : public FileSystem {
 public:
  Result<std::unique_ptr<WritableFile>> NewWritableFile(const std::string& path,
                                                        OpenMode mode) override;
  Result<std::unique_ptr<RandomAccessFile>> NewRandomAccessFile(const std::string& path) override;
  bool FileExists(const std::string& path) override;
  Result<uint64_t> GetFileSize(const std::string& path) override;
  Result<std::vector<std::string>> ListDir(const std::string& dir) override;
  Status CreateDirs(const std::string& dir) override;
  Status DeleteFile(const std::string& path) override;
  Status DeleteDir(const std::string& dir) override;
  Status RenameFile(const std::string& from, const std::string& to) override;
  Status Truncate(const std::string& path, uint64_t size) override;
  Status SyncDir(const std::string& dir) override;
  Result<std::unique_ptr<FileLock>> LockFile(const std::string& path) override;
};

}  // namespace converge::internal
