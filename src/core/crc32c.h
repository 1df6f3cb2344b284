// CRC32C (Castagnoli polynomial 0x1EDC6F41, reflected 0x82F63B78), the one checksum of every
// on-disk format: log records, the framed record logs (core/record_log.h), store snapshots. Uses
// the SSE4.2 crc32 instruction when the CPU has it (checked once at runtime) and a table-driven
// slicing-by-8 implementation otherwise; both give identical results. Thread-safe: pure functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace converge::internal {

// Extends `crc` (the value returned for the preceding bytes, 0 to start) over data[0, n).
uint32_t Crc32cExtend(uint32_t crc, const void* data, size_t n);

inline uint32_t Crc32c(const void* data, size_t n) { return Crc32cExtend(0, data, n); }
inline uint32_t Crc32c(std::string_view s) { return Crc32cExtend(0, s.data(), s.size()); }

// A CRC stored next to the data it covers is masked (rotated and offset, as leveldb does):
// the CRC of a string that itself holds CRCs is then not trivially related to them, and a run
// of zero bytes does not check out as a valid (crc 0, length 0) frame.
inline constexpr uint32_t kCrcMaskDelta = 0xa282ead8u;
inline uint32_t MaskCrc(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + kCrcMaskDelta; }
inline uint32_t UnmaskCrc(uint32_t masked) {
  const uint32_t rot = masked - kCrcMaskDelta;
  return (rot >> 17) | (rot << 15);
}

// The portable implementation, exposed so tests can check both paths agree.
uint32_t Crc32cExtendPortable(uint32_t crc, const void* data, size_t n);

// True if the hardware path is in use.
bool Crc32cHardwareAccelerated();

}  // namespace converge::internal
