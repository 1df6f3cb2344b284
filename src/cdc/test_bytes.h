// Hand-built replication-stream bytes for the cdc unit tests (big-endian, as PostgreSQL sends).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cdc/pgoutput.h"
#include "converge/env.h"

namespace converge::cdc::testing {

class Bytes {
 public:
  Bytes& U8(uint8_t v) {
    s_.push_back(static_cast<char>(v));
    return *this;
  }
  Bytes& U16(uint16_t v) { return Big(v, 2); }
  Bytes& U32(uint32_t v) { return Big(v, 4); }
  Bytes& U64(uint64_t v) { return Big(v, 8); }
  Bytes& Str(std::string_view v) {
    s_.append(v);
    s_.push_back('\0');
    return *this;
  }
  Bytes& Raw(std::string_view v) {
    s_.append(v);
    return *this;
  }
  const std::string& str() const { return s_; }

 private:
  Bytes& Big(uint64_t v, int n) {
    for (int i = n - 1; i >= 0; --i) s_.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
    return *this;
  }
  std::string s_;
};

inline std::string XLog(Lsn start, std::string_view payload, Lsn wal_end = 0) {
  return Bytes().U8('w').U64(start).U64(wal_end).U64(0).Raw(payload).str();
}
inline std::string Keepalive(Lsn wal_end, bool reply) {
  return Bytes().U8('k').U64(wal_end).U64(0).U8(reply ? 1 : 0).str();
}
inline std::string BeginMsg(Lsn final_lsn, int64_t ts_pg, uint32_t xid) {
  return Bytes().U8('B').U64(final_lsn).U64(static_cast<uint64_t>(ts_pg)).U32(xid).str();
}
inline std::string CommitMsg(Lsn commit_lsn, Lsn end_lsn, int64_t ts_pg) {
  return Bytes().U8('C').U8(0).U64(commit_lsn).U64(end_lsn).U64(static_cast<uint64_t>(ts_pg)).str();
}
inline std::string MessageMsg(bool transactional, Lsn lsn, std::string_view prefix,
                              std::string_view content) {
  return Bytes()
      .U8('M')
      .U8(transactional ? 1 : 0)
      .U64(lsn)
      .Str(prefix)
      .U32(static_cast<uint32_t>(content.size()))
      .Raw(content)
      .str();
}

class TestClock : public Clock {
 public:
  int64_t NowMonotonicNanos() override { return mono_; }
  int64_t NowWallNanos() override { return wall_; }
  void Advance(int64_t ns) {
    mono_ += ns;
    wall_ += ns;
  }

 private:
  int64_t mono_ = 1'000'000'000;
  int64_t wall_ = 1'800'000'000'000'000'000;
};

}  // namespace converge::cdc::testing
