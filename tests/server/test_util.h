// Helpers shared by the black-box server suites (gtest only; not part of the library).
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

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

// One HTTP exchange as a client without a converge library sees it: the status, every
// header field of the reply (repeats kept, in order) and the body. status 0: the exchange
// failed (the test is failed with the reason).
struct HttpResult {
  int status = 0;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;

  // The first value of header `name` (case-insensitive), "" without one.
  std::string Header(std::string_view name) const;
  // The "code" / "message" member of a JSON error body, "" without one.
  std::string code() const;
  std::string message() const;
};

using HttpHeaders = std::vector<std::pair<std::string, std::string>>;

// Sends one request on a new connection to 127.0.0.1:`port`. `headers` are added as given
// (repeats included); `token` non-empty adds "Authorization: Bearer <token>". A body is sent
// with its Content-Length (no Content-Type unless `headers` has one).
HttpResult HttpCall(uint16_t port, std::string_view method, const std::string& target,
                    const std::string& body = "", const HttpHeaders& headers = {},
                    const std::string& token = "");

}  // namespace converge::testing
