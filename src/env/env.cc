// Helpers shared by every Env implementation.
#include "converge/env.h"

#include <algorithm>
#include <cstring>

namespace converge {

uint64_t Random::Uniform(uint64_t n) {
  CONVERGE_CHECK(n > 0);
  // Lemire's nearly-divisionless method would be faster; rejection keeps it unbiased and simple.
  const uint64_t limit = UINT64_MAX - (UINT64_MAX % n);
  uint64_t x;
  do {
    x = Next64();
  } while (x >= limit);
  return x % n;
}

int64_t Random::UniformRange(int64_t lo, int64_t hi) {
  CONVERGE_CHECK(lo <= hi);
  const uint64_t span = static_cast<uint64_t>(hi) - static_cast<uint64_t>(lo);
  if (span == UINT64_MAX) return static_cast<int64_t>(Next64());
  return static_cast<int64_t>(static_cast<uint64_t>(lo) + Uniform(span + 1));
}

double Random::NextDouble() { return static_cast<double>(Next64() >> 11) * 0x1.0p-53; }

void Random::Fill(std::span<uint8_t> out) {
  size_t i = 0;
  while (i < out.size()) {
    uint64_t x = Next64();
    size_t n = std::min(out.size() - i, sizeof(x));
    std::memcpy(out.data() + i, &x, n);
    i += n;
  }
}

Result<std::string> FileSystem::ReadFileToString(const std::string& path) {
  CONVERGE_ASSIGN_OR_RETURN(std::unique_ptr<RandomAccessFile> file, NewRandomAccessFile(path));
  CONVERGE_ASSIGN_OR_RETURN(uint64_t size, file->Size());
  std::string out(size, '\0');
  CONVERGE_ASSIGN_OR_RETURN(size_t n, file->Read(0, size, reinterpret_cast<uint8_t*>(out.data())));
  out.resize(n);
  return out;
}

static std::string ParentDir(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

Status FileSystem::WriteFileAtomically(const std::string& path, std::string_view data) {
  const std::string tmp = path + ".tmp";
  {
    CONVERGE_ASSIGN_OR_RETURN(std::unique_ptr<WritableFile> file,
                              NewWritableFile(tmp, OpenMode::kTruncate));
    CONVERGE_RETURN_IF_ERROR(file->Append(data));
    CONVERGE_RETURN_IF_ERROR(file->Sync());
    CONVERGE_RETURN_IF_ERROR(file->Close());
  }
  CONVERGE_RETURN_IF_ERROR(RenameFile(tmp, path));
  return SyncDir(ParentDir(path));
}

}  // namespace converge
