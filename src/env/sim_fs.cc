// SimFileSystem: an in-memory filesystem that loses exactly what was not made durable.
//
// Representation: a file's content is an inode shared by the directory entries naming it (the
// current entry and, until SyncDir, possibly an older durable entry elsewhere). An inode's
// durable content is normally the prefix data[0, durable_len), so Append and Sync cost O(bytes
// appended), not O(file size); only when the durable content stops being a prefix of the current
// one (a kTruncate reopen) is it kept separately in durable_override.
#include <algorithm>
#include <map>
#include <optional>
#include <set>
#include <utility>

#include "converge/sim_env.h"
#include "env/prng.h"

namespace converge::sim {
namespace {

struct Inode {
  explicit Inode(uint64_t id_in) : id(id_in) {}
  const uint64_t id;
  std::string data;                             // current content
  uint64_t durable_len = 0;                     // durable content = data prefix of this length
  std::optional<std::string> durable_override;  // ...unless this is set

  void MakeDurable() {
    durable_override.reset();
    durable_len = data.size();
  }
};
using InodePtr = std::shared_ptr<Inode>;

struct DirNode {
  std::map<std::string, InodePtr> files;          // current entries
  std::map<std::string, InodePtr> durable_files;  // entries as of the last SyncDir
  std::set<std::string> subdirs;                  // always durable (CreateDirs/DeleteDir)
};

// "a//b/./c/../d/" -> "/a/b/d"; "" -> "/".
std::string Normalize(std::string_view path) {
  std::vector<std::string_view> parts;
  size_t i = 0;
  while (i <= path.size()) {
    size_t j = path.find('/', i);
    if (j == std::string_view::npos) j = path.size();
    std::string_view part = path.substr(i, j - i);
    if (part == "..") {
      if (!parts.empty()) parts.pop_back();
    } else if (!part.empty() && part != ".") {
      parts.push_back(part);
    }
    i = j + 1;
  }
  if (parts.empty()) return "/";
  std::string out;
  for (std::string_view p : parts) out.append("/").append(p);
  return out;
}

// "/a/b" -> {"/a", "b"}; "/a" -> {"/", "a"}. `norm` is normalized and not "/".
std::pair<std::string, std::string> Split(const std::string& norm) {
  const size_t slash = norm.rfind('/');
  return {slash == 0 ? std::string("/") : norm.substr(0, slash), norm.substr(slash + 1)};
}

Status Error(StatusCode code, std::string_view op, const std::string& path, std::string_view why) {
  std::string message;
  message.append(op).append(" '").append(path).append("': ").append(why).append(" (simulated)");
  return Status(code, message);
}

std::string_view ModeName(OpenMode mode) {
  switch (mode) {
    case OpenMode::kTruncate:
      return "truncate";
    case OpenMode::kAppend:
      return "append";
    case OpenMode::kCreateNew:
      return "create-new";
  }
  return "?";
}

}  // namespace

struct SimFileSystem::Impl {
  Impl(SimEnv& env_in, uint64_t seed, const std::string& name)
      : env(env_in), rng(seed), trace_prefix(name.empty() ? "fs" : "fs[" + name + "]") {
    dirs.emplace("/", DirNode{});
  }

  void Trace(std::string_view op, const std::string& path, std::string_view extra = {}) {
    std::string line;
    line.reserve(trace_prefix.size() + op.size() + path.size() + extra.size() + 3);
    line.append(trace_prefix).append(" ").append(op).append(" ").append(path);
    if (!extra.empty()) line.append(" ").append(extra);
    env.Trace(line);
  }

  Status Dead(std::string_view op, const std::string& path) const {
    return Error(StatusCode::kInternal, op, path, "simulated crash: the filesystem is down");
  }

  // Called first by every mutating operation: counts it and fires the armed crash point.
  Status Mutate(std::string_view op, const std::string& path) {
    if (dead) return Dead(op, path);
    ++mutating_ops;
    if (countdown > 0 && --countdown == 0) {
      dead = true;
      Trace("crash-point", path, op);
      return Error(StatusCode::kInternal, op, path,
                   "simulated crash at mutating op " + std::to_string(mutating_ops));
    }
    return Status::Ok();
  }

  Status CheckAlive(std::string_view op, const std::string& path) const {
    return dead ? Dead(op, path) : Status::Ok();
  }

  Status CheckHandle(std::string_view op, const std::string& path, uint64_t handle_epoch) const {
    if (dead) return Dead(op, path);
    if (handle_epoch != epoch) {
      return Error(StatusCode::kInternal, op, path, "handle was opened before a simulated crash");
    }
    return Status::Ok();
  }

  DirNode* FindDir(const std::string& norm) {
    auto it = dirs.find(norm);
    return it == dirs.end() ? nullptr : &it->second;
  }

  bool IsFile(const std::string& norm) {
    if (norm == "/") return false;
    auto [parent, name] = Split(norm);
    DirNode* dir = FindDir(parent);
    return dir != nullptr && dir->files.count(name) > 0;
  }

  // The existing directory that would hold `norm`.
  Result<DirNode*> ParentDir(std::string_view op, const std::string& norm) {
    if (norm == "/") return Error(StatusCode::kFailedPrecondition, op, norm, "is a directory");
    const std::string parent = Split(norm).first;
    if (DirNode* dir = FindDir(parent)) return dir;
    // Like ENOTDIR vs ENOENT: some ancestor may be a file.
    for (std::string p = parent; p != "/"; p = Split(p).first) {
      if (IsFile(p)) return Error(StatusCode::kFailedPrecondition, op, norm, "not a directory");
    }
    return Error(StatusCode::kNotFound, op, norm, "no such file or directory");
  }

  struct FileRef {
    DirNode* dir;
    std::string name;
    InodePtr inode;
  };
  Result<FileRef> FindFile(std::string_view op, const std::string& norm) {
    if (FindDir(norm)) return Error(StatusCode::kFailedPrecondition, op, norm, "is a directory");
    CONVERGE_ASSIGN_OR_RETURN(DirNode * dir, ParentDir(op, norm));
    std::string name = Split(norm).second;
    auto it = dir->files.find(name);
    if (it == dir->files.end()) {
      return Error(StatusCode::kNotFound, op, norm, "no such file or directory");
    }
    return FileRef{dir, std::move(name), it->second};
  }

  Result<DirNode*> FindExistingDir(std::string_view op, const std::string& norm) {
    if (DirNode* dir = FindDir(norm)) return dir;
    if (IsFile(norm)) return Error(StatusCode::kFailedPrecondition, op, norm, "not a directory");
    return Error(StatusCode::kNotFound, op, norm, "no such file or directory");
  }

  // Crash: the inode's content becomes its durable content (torn mode: plus part of the tail).
  void Revert(Inode& inode) {
    if (inode.durable_override) {
      inode.data = std::move(*inode.durable_override);
    } else if (torn && inode.data.size() > inode.durable_len) {
      const uint64_t tail = inode.data.size() - inode.durable_len;
      const uint64_t keep = rng.Uniform(tail + 1);
      inode.data.resize(inode.durable_len + keep);
      if (keep > 0 && rng.Bernoulli(0.5)) {
        const uint64_t garble = 1 + rng.Uniform(std::min<uint64_t>(keep, kTornGarbleMaxBytes));
        for (uint64_t i = inode.data.size() - garble; i < inode.data.size(); ++i) {
          inode.data[i] = static_cast<char>(inode.data[i] ^ (1 + rng.Uniform(255)));
        }
      }
    } else {
      inode.data.resize(inode.durable_len);
    }
    inode.MakeDurable();
  }

  SimEnv& env;
  internal::SeededRandom rng;
  const std::string trace_prefix;
  std::map<std::string, DirNode> dirs;  // normalized path -> directory; "/" always present
  std::set<std::string> locks;
  uint64_t epoch = 0;  // bumped by Crash(); handles from older epochs fail
  uint64_t next_inode = 1;
  uint64_t mutating_ops = 0;
  uint64_t countdown = 0;  // armed crash point; 0 = disarmed
  bool dead = false;
  bool torn = false;
};

namespace {

using Impl = SimFileSystem::Impl;

class SimWritableFile : public WritableFile {
 public:
  SimWritableFile(Impl& fs, InodePtr inode, std::string path)
      : fs_(fs), inode_(std::move(inode)), path_(std::move(path)), epoch_(fs.epoch) {}

  Status Append(std::span<const uint8_t> data) override {
    CONVERGE_RETURN_IF_ERROR(CheckOpen("append"));
    CONVERGE_RETURN_IF_ERROR(fs_.Mutate("append", path_));
    inode_->data.append(reinterpret_cast<const char*>(data.data()), data.size());
    const uint64_t hash = internal::Fnv1a(internal::kFnvOffset, data.data(), data.size());
    fs_.Trace("append", path_, std::to_string(data.size()) + " " + std::to_string(hash));
    return Status::Ok();
  }

  Status Sync() override {
    CONVERGE_RETURN_IF_ERROR(CheckOpen("sync"));
    CONVERGE_RETURN_IF_ERROR(fs_.Mutate("sync", path_));
    inode_->MakeDurable();
    fs_.Trace("sync", path_, std::to_string(inode_->data.size()));
    return Status::Ok();
  }

  Status Close() override {
    CONVERGE_RETURN_IF_ERROR(CheckOpen("close"));
    closed_ = true;
    CONVERGE_RETURN_IF_ERROR(fs_.Mutate("close", path_));
    fs_.Trace("close", path_);
    return Status::Ok();
  }

  uint64_t Size() const override { return inode_->data.size(); }

 private:
  Status CheckOpen(std::string_view op) const {
    if (closed_) return Error(StatusCode::kFailedPrecondition, op, path_, "file is closed");
    return fs_.CheckHandle(op, path_, epoch_);
  }

  Impl& fs_;
  const InodePtr inode_;
  const std::string path_;
  const uint64_t epoch_;
  bool closed_ = false;
};

class SimRandomAccessFile : public RandomAccessFile {
 public:
  SimRandomAccessFile(Impl& fs, InodePtr inode, std::string path)
      : fs_(fs), inode_(std::move(inode)), path_(std::move(path)), epoch_(fs.epoch) {}

  Result<size_t> Read(uint64_t offset, size_t n, uint8_t* scratch) const override {
    CONVERGE_RETURN_IF_ERROR(fs_.CheckHandle("read", path_, epoch_));
    const std::string& data = inode_->data;
    if (offset >= data.size()) return size_t{0};
    const size_t count = std::min<uint64_t>(n, data.size() - offset);
    std::copy_n(data.data() + offset, count, scratch);
    return count;
  }

  Result<uint64_t> Size() const override {
    CONVERGE_RETURN_IF_ERROR(fs_.CheckHandle("size", path_, epoch_));
    return static_cast<uint64_t>(inode_->data.size());
  }

 private:
  Impl& fs_;
  const InodePtr inode_;
  const std::string path_;
  const uint64_t epoch_;
};

class SimFileLock : public FileLock {
 public:
  SimFileLock(Impl& fs, std::string path) : fs_(fs), path_(std::move(path)), epoch_(fs.epoch) {}
  ~SimFileLock() override {
    if (fs_.epoch == epoch_) fs_.locks.erase(path_);  // after a crash the lock is already gone
  }

 private:
  Impl& fs_;
  const std::string path_;
  const uint64_t epoch_;
};

}  // namespace

SimFileSystem::SimFileSystem(SimEnv& env, uint64_t seed, std::string name)
    : impl_(std::make_unique<Impl>(env, seed, name)) {}

SimFileSystem::~SimFileSystem() = default;

void SimFileSystem::Crash() {
  Impl& s = *impl_;
  ++s.epoch;
  s.dead = false;
  s.countdown = 0;
  s.locks.clear();
  std::set<uint64_t> reverted;  // an inode may be named durably in two places (unsynced rename)
  for (auto& [path, dir] : s.dirs) {
    dir.files = dir.durable_files;
    for (auto& [name, inode] : dir.files) {
      if (reverted.insert(inode->id).second) s.Revert(*inode);
    }
  }
  s.Trace("crash", "/", s.torn ? "torn" : "");
}

void SimFileSystem::CrashAfterOps(uint64_t n) { impl_->countdown = n; }
bool SimFileSystem::crashed() const { return impl_->dead; }
void SimFileSystem::SetTornWrites(bool torn) { impl_->torn = torn; }
uint64_t SimFileSystem::mutating_ops() const { return impl_->mutating_ops; }

Status SimFileSystem::CorruptByte(const std::string& path, uint64_t offset, uint8_t xor_mask) {
  const std::string norm = Normalize(path);
  CONVERGE_ASSIGN_OR_RETURN(Impl::FileRef ref, impl_->FindFile("corrupt", norm));
  Inode& inode = *ref.inode;
  if (offset >= inode.data.size()) {
    return Error(StatusCode::kOutOfRange, "corrupt", norm,
                 "offset " + std::to_string(offset) + " is past the end");
  }
  inode.data[offset] = static_cast<char>(inode.data[offset] ^ xor_mask);  // durable prefix too
  if (inode.durable_override && offset < inode.durable_override->size()) {
    (*inode.durable_override)[offset] =
        static_cast<char>((*inode.durable_override)[offset] ^ xor_mask);
  }
  impl_->Trace("corrupt", norm, std::to_string(offset));
  return Status::Ok();
}

Status SimFileSystem::CorruptTruncate(const std::string& path, uint64_t size) {
  const std::string norm = Normalize(path);
  CONVERGE_ASSIGN_OR_RETURN(Impl::FileRef ref, impl_->FindFile("corrupt-truncate", norm));
  Inode& inode = *ref.inode;
  if (size < inode.data.size()) inode.data.resize(size);
  inode.durable_len = std::min<uint64_t>(inode.durable_len, size);
  if (inode.durable_override && size < inode.durable_override->size()) {
    inode.durable_override->resize(size);
  }
  impl_->Trace("corrupt-truncate", norm, std::to_string(size));
  return Status::Ok();
}

Result<std::unique_ptr<WritableFile>> SimFileSystem::NewWritableFile(const std::string& path,
                                                                     OpenMode mode) {
  Impl& s = *impl_;
  const std::string norm = Normalize(path);
  CONVERGE_RETURN_IF_ERROR(s.Mutate("open", norm));
  if (s.FindDir(norm))
    return Error(StatusCode::kFailedPrecondition, "open", norm, "is a directory");
  CONVERGE_ASSIGN_OR_RETURN(DirNode * dir, s.ParentDir("open", norm));
  const std::string name = Split(norm).second;
  InodePtr inode;
  auto it = dir->files.find(name);
  if (it != dir->files.end()) {
    if (mode == OpenMode::kCreateNew) {
      return Error(StatusCode::kAlreadyExists, "open", norm, "file exists");
    }
    inode = it->second;
    if (mode == OpenMode::kTruncate && !inode->data.empty()) {
      // The old content stays durable until a Sync; it is no longer a prefix of the new one.
      if (!inode->durable_override) {
        inode->durable_override = inode->data.substr(0, inode->durable_len);
      }
      inode->data.clear();
    }
  } else {
    inode = std::make_shared<Inode>(s.next_inode++);
    dir->files.emplace(name, inode);
  }
  s.Trace("open", norm, ModeName(mode));
  return std::unique_ptr<WritableFile>(std::make_unique<SimWritableFile>(s, inode, norm));
}

Result<std::unique_ptr<RandomAccessFile>> SimFileSystem::NewRandomAccessFile(
    const std::string& path) {
  Impl& s = *impl_;
  const std::string norm = Normalize(path);
  CONVERGE_RETURN_IF_ERROR(s.CheckAlive("open", norm));
  CONVERGE_ASSIGN_OR_RETURN(Impl::FileRef ref, s.FindFile("open", norm));
  return std::unique_ptr<RandomAccessFile>(
      std::make_unique<SimRandomAccessFile>(s, ref.inode, norm));
}

bool SimFileSystem::FileExists(const std::string& path) {
  Impl& s = *impl_;
  if (s.dead) return false;
  const std::string norm = Normalize(path);
  return s.FindDir(norm) != nullptr || s.IsFile(norm);
}

Result<uint64_t> SimFileSystem::GetFileSize(const std::string& path) {
  Impl& s = *impl_;
  const std::string norm = Normalize(path);
  CONVERGE_RETURN_IF_ERROR(s.CheckAlive("stat", norm));
  CONVERGE_ASSIGN_OR_RETURN(Impl::FileRef ref, s.FindFile("stat", norm));
  return static_cast<uint64_t>(ref.inode->data.size());
}

Result<std::vector<std::string>> SimFileSystem::ListDir(const std::string& dir) {
  Impl& s = *impl_;
  const std::string norm = Normalize(dir);
  CONVERGE_RETURN_IF_ERROR(s.CheckAlive("opendir", norm));
  CONVERGE_ASSIGN_OR_RETURN(DirNode * node, s.FindExistingDir("opendir", norm));
  std::vector<std::string> names;
  names.reserve(node->files.size() + node->subdirs.size());
  for (const auto& [name, inode] : node->files) names.push_back(name);
  names.insert(names.end(), node->subdirs.begin(), node->subdirs.end());
  std::sort(names.begin(), names.end());
  return names;
}

Status SimFileSystem::CreateDirs(const std::string& dir) {
  Impl& s = *impl_;
  const std::string norm = Normalize(dir);
  CONVERGE_RETURN_IF_ERROR(s.Mutate("mkdir", norm));
  if (norm == "/") return Status::Ok();
  std::string current = "/";
  size_t pos = 1;
  while (pos <= norm.size()) {
    size_t end = norm.find('/', pos);
    if (end == std::string::npos) end = norm.size();
    const std::string name = norm.substr(pos, end - pos);
    const std::string next = norm.substr(0, end);
    if (!s.FindDir(next)) {
      DirNode& parent = s.dirs.at(current);
      if (parent.files.count(name)) {
        return Error(StatusCode::kAlreadyExists, "mkdir", next, "exists and is not a directory");
      }
      s.dirs.emplace(next, DirNode{});
      parent.subdirs.insert(name);
      s.Trace("mkdir", next);
    }
    current = next;
    pos = end + 1;
  }
  return Status::Ok();
}

Status SimFileSystem::DeleteFile(const std::string& path) {
  Impl& s = *impl_;
  const std::string norm = Normalize(path);
  CONVERGE_RETURN_IF_ERROR(s.Mutate("unlink", norm));
  CONVERGE_ASSIGN_OR_RETURN(Impl::FileRef ref, s.FindFile("unlink", norm));
  ref.dir->files.erase(ref.name);
  s.Trace("unlink", norm);
  return Status::Ok();
}

Status SimFileSystem::DeleteDir(const std::string& dir) {
  Impl& s = *impl_;
  const std::string norm = Normalize(dir);
  CONVERGE_RETURN_IF_ERROR(s.Mutate("rmdir", norm));
  if (norm == "/") {
    return Error(StatusCode::kFailedPrecondition, "rmdir", norm, "cannot remove the root");
  }
  CONVERGE_ASSIGN_OR_RETURN(DirNode * node, s.FindExistingDir("rmdir", norm));
  if (!node->files.empty() || !node->subdirs.empty()) {
    return Error(StatusCode::kFailedPrecondition, "rmdir", norm, "directory not empty");
  }
  auto [parent, name] = Split(norm);
  s.dirs.erase(norm);
  s.dirs.at(parent).subdirs.erase(name);
  s.Trace("rmdir", norm);
  return Status::Ok();
}

Status SimFileSystem::RenameFile(const std::string& from, const std::string& to) {
  Impl& s = *impl_;
  const std::string from_norm = Normalize(from);
  const std::string to_norm = Normalize(to);
  CONVERGE_RETURN_IF_ERROR(s.Mutate("rename", from_norm));
  if (s.FindDir(from_norm)) {
    return Error(StatusCode::kInvalidArgument, "rename", from_norm,
                 "renaming a directory is not supported by the simulated filesystem");
  }
  CONVERGE_ASSIGN_OR_RETURN(Impl::FileRef ref, s.FindFile("rename", from_norm));
  if (s.FindDir(to_norm)) {
    return Error(StatusCode::kFailedPrecondition, "rename to", to_norm, "is a directory");
  }
  CONVERGE_ASSIGN_OR_RETURN(DirNode * to_dir, s.ParentDir("rename to", to_norm));
  if (from_norm != to_norm) {
    to_dir->files[Split(to_norm).second] = ref.inode;
    ref.dir->files.erase(ref.name);
  }
  s.Trace("rename", from_norm, to_norm);
  return Status::Ok();
}

Status SimFileSystem::Truncate(const std::string& path, uint64_t size) {
  Impl& s = *impl_;
  const std::string norm = Normalize(path);
  CONVERGE_RETURN_IF_ERROR(s.Mutate("truncate", norm));
  CONVERGE_ASSIGN_OR_RETURN(Impl::FileRef ref, s.FindFile("truncate", norm));
  ref.inode->data.resize(size, '\0');
  ref.inode->MakeDurable();  // like ftruncate + fdatasync in production
  s.Trace("truncate", norm, std::to_string(size));
  return Status::Ok();
}

Status SimFileSystem::SyncDir(const std::string& dir) {
  Impl& s = *impl_;
  const std::string norm = Normalize(dir);
  CONVERGE_RETURN_IF_ERROR(s.Mutate("syncdir", norm));
  CONVERGE_ASSIGN_OR_RETURN(DirNode * node, s.FindExistingDir("syncdir", norm));
  node->durable_files = node->files;
  s.Trace("syncdir", norm);
  return Status::Ok();
}

Result<std::unique_ptr<FileLock>> SimFileSystem::LockFile(const std::string& path) {
  Impl& s = *impl_;
  const std::string norm = Normalize(path);
  CONVERGE_RETURN_IF_ERROR(s.CheckAlive("lock", norm));
  if (s.FindDir(norm))
    return Error(StatusCode::kFailedPrecondition, "lock", norm, "is a directory");
  if (s.locks.count(norm)) {
    return Error(StatusCode::kFailedPrecondition, "lock", norm, "held by another holder");
  }
  CONVERGE_ASSIGN_OR_RETURN(DirNode * dir, s.ParentDir("lock", norm));
  const std::string name = Split(norm).second;
  if (!dir->files.count(name)) dir->files.emplace(name, std::make_shared<Inode>(s.next_inode++));
  s.locks.insert(norm);
  s.Trace("lock", norm);
  return std::unique_ptr<FileLock>(std::make_unique<SimFileLock>(s, norm));
}

}  // namespace converge::sim
