// CRC32C (Castagnoli polynomial 0x1EDC6F41, reflected 0x82F63B78), the checksum of every
// record of the event log. Uses the SSE4.2 crc32 instruction when the CPU has it (checked once
// at runtime) and a table-driven slicing-by-8 implementation otherwise; both give identical
// results. Thread-safe: pure functions.
#pragma once

#include <cstddef>
#include <cstdint>

namespace converge::internal {

// Extends `crc` (the value returned for the preceding bytes, 0 to start) over data[0, n).
uint32_t Crc32cExtend(uint32_t crc, const void* data, size_t n);

inline uint32_t Crc32c(const void* data, size_t n) { return Crc32cExtend(0, data, n); }

// The portable implementation, exposed so tests can check both paths agree.
uint32_t Crc32cExtendPortable(uint32_t crc, const void* data, size_t n);

// True if the hardware path is in use.
bool Crc32cHardwareAccelerated();

}  // namespace converge::internal
