// The saga routes (saga_routes.h) on a real orchestrator and participants on the simulated
// Env, routed and read by the server's router (ServeSagaRequest).
#include "server/saga_routes.h"

#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "converge/log.h"
#include "converge/saga.h"
#include "converge/sim_env.h"
#include "saga/testing/orchestrator_fixture.h"

namespace converge::server {
namespace {

using OrchestratorTest = saga_testing::OrchestratorFixture;

TEST_F(OrchestratorTest, SidecarRoutes) {
  struct Reply {
    int status;
    std::string body;
  };
  auto call = [&](std::string_view method, std::string target, std::string body = "") {
    HttpResponse res = ServeSagaRequest(*orch_, http::string_to_verb(method), target, std::move(body));
    return Reply{static_cast<int>(res.result_int()), res.body()};
  };
  const char* yaml =
      "name: trip\nversion: 1\nsteps:\n"
      "  - {name: a, participant: inventory, action: inventory.reserve, "
      "compensation: inventory.release}\n"
      "  - {name: b, participant: payments, action: payments.reserve, pivot: true}\n";
  EXPECT_EQ(call("POST", "/v1/saga-definitions", yaml).status, 201);
  EXPECT_EQ(call("POST", "/v1/saga-definitions", "name: [").status, 400);
  Reply defs = call("GET", "/v1/saga-definitions");
  EXPECT_EQ(defs.status, 200);
  EXPECT_NE(defs.body.find("\"trip\""), std::string::npos);

  Reply started =
      call("POST", "/v1/sagas", R"({"definition":"trip","id":"s-1","data":{"x":[1,2]}})");
  ASSERT_EQ(started.status, 201) << started.body;
  EXPECT_EQ(started.body, R"({"id":"s-1"})");
  EXPECT_EQ(call("POST", "/v1/sagas", R"({"definition":"nope"})").status, 404);
  EXPECT_EQ(call("POST", "/v1/sagas", R"({"definition":7})").status, 400);
  EXPECT_EQ(call("POST", "/v1/sagas", "not json").status, 400);
  refuse_type_ = "payments.reserve";
  env_.RunUntilIdle();

  Reply show = call("GET", "/v1/sagas/s-1");
  ASSERT_EQ(show.status, 200);
  EXPECT_NE(show.body.find(R"("state":"compensated")"), std::string::npos) << show.body;
  EXPECT_NE(show.body.find(R"("data":{"x":[1,2]})"), std::string::npos) << show.body;
  EXPECT_NE(show.body.find(R"("history":[)"), std::string::npos);
  EXPECT_EQ(call("GET", "/v1/sagas/missing").status, 404);
  EXPECT_NE(call("GET", "/v1/sagas/missing").body.find("NOT_FOUND"), std::string::npos);

  Reply ls = call("GET", "/v1/sagas?state=compensated&limit=10");
  ASSERT_EQ(ls.status, 200);
  EXPECT_NE(ls.body.find("s-1"), std::string::npos);
  EXPECT_EQ(call("GET", "/v1/sagas?state=weird").status, 400);
  EXPECT_EQ(call("GET", "/v1/sagas?limit=0").status, 400);
  EXPECT_EQ(call("GET", "/v1/sagas?state=running").body, R"({"sagas":[]})");

  // A saga waiting on a participant that is down: timers, cancel.
  participants_[0]->Close();
  refuse_type_.clear();
  ASSERT_EQ(call("POST", "/v1/sagas", R"({"definition":"trip","id":"s-2"})").status, 201);
  env_.RunFor(1'000'000);
  Reply timers = call("GET", "/v1/saga-timers");
  EXPECT_NE(timers.body.find(R"("kind":"step-timeout")"), std::string::npos) << timers.body;
  EXPECT_EQ(call("PUT", "/v1/sagas/s-2/timers/step-timeout", R"({"due_micros":1})").status, 200);
  EXPECT_EQ(call("PUT", "/v1/sagas/s-2/timers/bogus", R"({"due_micros":1})").status, 400);
  EXPECT_EQ(call("DELETE", "/v1/sagas/s-1/timers/retry").status, 404);
  Reply cancelled = call("POST", "/v1/sagas/s-2/cancel", R"({"reason":"ops"})");
  EXPECT_EQ(cancelled.status, 200) << cancelled.body;
  EXPECT_EQ(call("DELETE", "/v1/sagas").status, 405);
  EXPECT_EQ(call("GET", "/v1/other").status, 404);
  EXPECT_EQ(call("GET", "/v1/topics").status, 404);  // not a saga route
}

}  // namespace
}  // namespace converge::server
