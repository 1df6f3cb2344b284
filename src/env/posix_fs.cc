#include "env/posix_fs.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>

namespace converge::internal {

Status PosixError(std::string_view op, const std::string& path, int err) {
  char buf[256];
  // GNU strerror_r: returns a pointer to the message (maybe not into buf).
  const char* text = strerror_r(err, buf, sizeof(buf));
  std::string message;
  message.reserve(op.size() + path.size() + 64);
  message.append(op).append(" '").append(path).append("': ").append(text);
  switch (err) {
    case ENOENT:
      return NotFoundError(message);
    case EEXIST:
      return AlreadyExistsError(message);
    case ENOSPC:
    case EDQUOT:
      return StorageFullError(message);
    case EMFILE:
    case ENFILE:
      return ResourceExhaustedError(message);
    case EACCES:
    case EPERM:
    case EROFS:
      return PermissionDeniedError(message);
    case ENOTEMPTY:
    case EISDIR:
    case ENOTDIR:
      return FailedPreconditionError(message);
    case ENAMETOOLONG:
    case EINVAL:
      return InvalidArgumentError(message);
    default:
      return InternalError(message);
  }
}

namespace {

std::string ParentOf(const std::string& path) {
  size_t end = path.size();
  while (end > 1 && path[end - 1] == '/') --end;  // ignore trailing slashes
  size_t slash = path.rfind('/', end - 1);
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

Status FsyncDirectory(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return PosixError("open dir", dir, errno);
  Status status;
  if (::fsync(fd) != 0) status = PosixError("fsync dir", dir, errno);
  ::close(fd);
  return status;
}

class PosixWritableFile : public WritableFile {
 public:
  PosixWritableFile(std::string path, int fd, uint64_t size)
      : path_(std::move(path)), fd_(fd), size_(size) {}
  ~PosixWritableFile() override {
    if (fd_ >= 0) ::close(fd_);
  }

  Status Append(std::span<const uint8_t> data) override {
    CONVERGE_RETURN_IF_ERROR(CheckUsable("append"));
    const uint8_t* p = data.data();
    size_t left = data.size();
    while (left > 0) {
      ssize_t n = ::write(fd_, p, std::min<size_t>(left, SSIZE_MAX));
      if (n < 0) {
        if (errno == EINTR) continue;
        const int err = errno;
        // Nothing half-applied: cut back what this call managed to write (best effort).
        if (left != data.size() && ::ftruncate(fd_, static_cast<off_t>(size_)) == 0) {
          (void)::lseek(fd_, static_cast<off_t>(size_), SEEK_SET);
        }
        return PosixError("write", path_, err);
      }
      p += n;
      left -= static_cast<size_t>(n);
    }
    size_ += data.size();
    return Status::Ok();
  }

  Status Sync() override {
    CONVERGE_RETURN_IF_ERROR(CheckUsable("sync"));
    if (::fdatasync(fd_) != 0) {
      sync_failed_ = true;
      return PosixError("fdatasync", path_, errno);
    }
    return Status::Ok();
  }

  Status Close() override {
    if (fd_ < 0) return FailedPreconditionError("close '" + path_ + "': file already closed");
    int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0) return PosixError("close", path_, errno);
    return Status::Ok();
  }

  uint64_t Size() const override { return size_; }

 private:
  Status CheckUsable(std::string_view op) const {
    if (fd_ < 0) {
      return FailedPreconditionError(std::string(op) + " '" + path_ + "': file is closed");
    }
    if (sync_failed_) {
      return InternalError(std::string(op) + " '" + path_ +
                           "': an earlier fdatasync failed; unsynced data may be lost");
    }
    return Status::Ok();
  }

  const std::string path_;
  int fd_;
  uint64_t size_;
  bool sync_failed_ = false;
};

class PosixRandomAccessFile : public RandomAccessFile {
 public:
  PosixRandomAccessFile(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  ~PosixRandomAccessFile() override { ::close(fd_); }

  Result<size_t> Read(uint64_t offset, size_t n, uint8_t* scratch) const override {
    size_t done = 0;
    while (done < n) {
      ssize_t r = ::pread(fd_, scratch + done, std::min<size_t>(n - done, SSIZE_MAX),
                          static_cast<off_t>(offset + done));
      if (r < 0) {
        if (errno == EINTR) continue;
        return PosixError("pread", path_, errno);
      }
      if (r == 0) break;  // end of file
      done += static_cast<size_t>(r);
    }
    return done;
  }

  Result<uint64_t> Size() const override {
    struct stat st;
    if (::fstat(fd_, &st) != 0) return PosixError("fstat", path_, errno);
    return static_cast<uint64_t>(st.st_size);
  }

 private:
  const std::string path_;
  const int fd_;
};

class PosixFileLock : public FileLock {
 public:
  explicit PosixFileLock(int fd) : fd_(fd) {}
  ~PosixFileLock() override { ::close(fd_); }  // releases the flock

 private:
  const int fd_;
};

}  // namespace

Result<std::unique_ptr<WritableFile>> PosixFileSystem::NewWritableFile(const std::string& path,
                                                                       OpenMode mode) {
  int flags = O_WRONLY | O_CREAT | O_CLOEXEC;
  switch (mode) {
    case OpenMode::kTruncate:
      flags |= O_TRUNC;
      break;
    case OpenMode::kAppend:
      flags |= O_APPEND;
      break;
    case OpenMode::kCreateNew:
      flags |= O_EXCL;
      break;
  }
  int fd;
  do {
    fd = ::open(path.c_str(), flags, 0644);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) return PosixError("open", path, errno);
  uint64_t size = 0;
  if (mode == OpenMode::kAppend) {
    struct stat st;
    if (::fstat(fd, &st) != 0) {
      Status status = PosixError("fstat", path, errno);
      ::close(fd);
      return status;
    }
    size = static_cast<uint64_t>(st.st_size);
  }
  return std::unique_ptr<WritableFile>(std::make_unique<PosixWritableFile>(path, fd, size));
}

Result<std::unique_ptr<RandomAccessFile>> PosixFileSystem::NewRandomAccessFile(
    const std::string& path) {
  int fd;
  do {
    fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) return PosixError("open", path, errno);
  return std::unique_ptr<RandomAccessFile>(std::make_unique<PosixRandomAccessFile>(path, fd));
}

bool PosixFileSystem::FileExists(const std::string& path) {
  return ::access(path.c_str(), F_OK) == 0;
}

Result<uint64_t> PosixFileSystem::GetFileSize(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return PosixError("stat", path, errno);
  if (S_ISDIR(st.st_mode)) return PosixError("stat", path, EISDIR);
  return static_cast<uint64_t>(st.st_size);
}

Result<std::vector<std::string>> PosixFileSystem::ListDir(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return PosixError("opendir", dir, errno);
  std::vector<std::string> names;
  for (;;) {
    errno = 0;
    struct dirent* entry = ::readdir(d);
    if (entry == nullptr) {
      if (errno != 0) {
        Status status = PosixError("readdir", dir, errno);
        ::closedir(d);
        return status;
      }
      break;
    }
    if (std::strcmp(entry->d_name, ".") == 0 || std::strcmp(entry->d_name, "..") == 0) continue;
    names.emplace_back(entry->d_name);
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  return names;
}

Status PosixFileSystem::CreateDirs(const std::string& dir) {
  if (dir.empty()) return InvalidArgumentError("create dirs: empty path");
  // Walk the prefixes "/a", "/a/b", ... creating the missing ones.
  size_t pos = 0;
  while (pos != std::string::npos) {
    pos = dir.find('/', pos + 1);
    std::string prefix = dir.substr(0, pos);
    if (prefix.empty() || prefix.back() == '/') continue;  // "//" or the root
    if (::mkdir(prefix.c_str(), 0755) == 0) {
      CONVERGE_RETURN_IF_ERROR(FsyncDirectory(ParentOf(prefix)));
      continue;
    }
    const int err = errno;
    if (err != EEXIST) return PosixError("mkdir", prefix, err);
    struct stat st;
    if (::stat(prefix.c_str(), &st) != 0) return PosixError("stat", prefix, errno);
    if (!S_ISDIR(st.st_mode)) {
      return AlreadyExistsError("mkdir '" + prefix + "': exists and is not a directory");
    }
  }
  return Status::Ok();
}

Status PosixFileSystem::DeleteFile(const std::string& path) {
  if (::unlink(path.c_str()) != 0) return PosixError("unlink", path, errno);
  return Status::Ok();
}

Status PosixFileSystem::DeleteDir(const std::string& dir) {
  if (::rmdir(dir.c_str()) != 0) return PosixError("rmdir", dir, errno);
  return FsyncDirectory(ParentOf(dir));
}

Status PosixFileSystem::RenameFile(const std::string& from, const std::string& to) {
  if (::rename(from.c_str(), to.c_str()) != 0) {
    return PosixError("rename to '" + to + "' from", from, errno);
  }
  return Status::Ok();
}

Status PosixFileSystem::Truncate(const std::string& path, uint64_t size) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return PosixError("open", path, errno);
  Status status;
  if (::ftruncate(fd, static_cast<off_t>(size)) != 0) {
    status = PosixError("ftruncate", path, errno);
  } else if (::fdatasync(fd) != 0) {
    status = PosixError("fdatasync", path, errno);
  }
  ::close(fd);
  return status;
}

Status PosixFileSystem::SyncDir(const std::string& dir) { return FsyncDirectory(dir); }

Result<std::unique_ptr<FileLock>> PosixFileSystem::LockFile(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return PosixError("open lock file", path, errno);
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    ::close(fd);
    if (err == EWOULDBLOCK) {
      return FailedPreconditionError("lock '" + path + "': held by another holder");
    }
    return PosixError("flock", path, err);
  }
  return std::unique_ptr<FileLock>(std::make_unique<PosixFileLock>(fd));
}

}  // namespace converge::internal
