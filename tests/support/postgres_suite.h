// A GoogleTest suite sharing one PostgreSQL server (support/postgres_server.h): started once
// for the suite and stopped after it. Integration suites fail, never skip, when their server
// is missing: every test of the suite then fails naming why the server did not start.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "support/postgres_server.h"

namespace converge::testing {

class PostgresSuite : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    Result<std::unique_ptr<PostgresServer>> pg = PostgresServer::Start();
    if (!pg.ok()) {
      start_error_ = pg.status().ToString();
      return;
    }
    server_ = std::move(pg).value();
  }
  static void TearDownTestSuite() { server_.reset(); }

  // A suite's own SetUp calls this first and returns if HasFatalFailure().
  void SetUp() override {
    ASSERT_NE(server_, nullptr) << "PostgreSQL did not start: " << start_error_;
  }

  static inline std::unique_ptr<PostgresServer> server_;
  static inline std::string start_error_;
};

}  // namespace converge::testing
