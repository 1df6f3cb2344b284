// Helpers shared by the black-box server suites (gtest only; not part of the library).
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <utility>

#include "converge/status.h"

// Asserts that a Status is OK, printing the expression and the status otherwise.
#define ASSERT_OK(expr)                                     \
  do {                                                      \
    const ::converge::Status s_ = (expr);                   \
    ASSERT_TRUE(s_.ok()) << #expr << ": " << s_.ToString(); \
  } while (0)

namespace converge::testing {

// The value of `r`; a failed result fails the test and aborts it (nothing after it could run
// meaningfully without the value).
template <typename T>
T Must(Result<T> r, const char* what = "") {
  if (!r.ok()) {
    ADD_FAILURE() << what << ": " << r.status().ToString();
    std::abort();
  }
  return std::move(r).value();
}

}  // namespace converge::testing
