// The version of libconverge and the converge binary.
#pragma once

namespace converge {
inline constexpr char kVersion[] = "0.1.0";
}  // namespace converge
