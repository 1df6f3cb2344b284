// `converge saga ls|show|cancel|timers` end to end: the server's saga routes (ServeSagaRequest) served by
// a small HTTP server in this test, a real orchestrator on the production Env, and the converge
// binary run as a child process ($CONVERGE_BINARY); then --dir on the saga log.
#include <gtest/gtest.h>

#include <atomic>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cstdio>
#include <filesystem>
#include <thread>

#include "converge/log.h"
#include "converge/saga.h"
#include "server/saga_routes.h"
#include "support/run_command.h"

namespace converge {
namespace {

namespace http = boost::beast::http;
using boost::asio::ip::tcp;

// Serves the saga routes on 127.0.0.1 (one request per connection) until destroyed.
class TestServer {
 public:
  explicit TestServer(SagaOrchestrator& orch)
      : orch_(orch), acceptor_(io_, tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"), 0)) {
    port_ = acceptor_.local_endpoint().port();
    thread_ = std::thread([this] { Serve(); });
  }
  ~TestServer() {
    stop_ = true;
    boost::system::error_code ec;
    // Wake the blocking accept with a connection of our own.
    tcp::socket s(io_);
    s.connect(tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"), port_), ec);
    thread_.join();
  }
  uint16_t port() const { return port_; }

 private:
  void Serve() {
    while (!stop_) {
      tcp::socket socket(io_);
      boost::system::error_code ec;
      acceptor_.accept(socket, ec);
      if (ec || stop_) continue;
      boost::beast::flat_buffer buffer;
      http::request<http::string_body> req;
      http::read(socket, buffer, req, ec);
      if (ec) continue;
      http::response<http::string_body> res = server::ServeSagaRequest(
          orch_, req.method(), std::string_view(req.target().data(), req.target().size()),
          req.body());
      res.prepare_payload();
      http::write(socket, res, ec);
      socket.shutdown(tcp::socket::shutdown_both, ec);
    }
  }

  SagaOrchestrator& orch_;
  boost::asio::io_context io_;
  tcp::acceptor acceptor_;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

struct Output {
  int code = -1;
  std::string text;
};

Output RunCli(const std::string& args) {
  const char* bin = std::getenv("CONVERGE_BINARY");
  Output out;
  if (bin == nullptr) return out;
  const std::string cmd = std::string(bin) + " saga " + args + " 2>&1";
  testing::CommandOutput r = testing::RunCommand(cmd);
  out.code = r.exit_code;
  out.text = std::move(r.out);
  return out;
}

TEST(SagaCliTest, ListShowCancelAndOffline) {
  // Integration suites fail, never skip, when the server they need is missing.
  ASSERT_NE(std::getenv("CONVERGE_BINARY"), nullptr)
      << "CONVERGE_BINARY is not set (run the test through ctest, which points it at the "
         "converge binary of the build)";
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("converge-saga-cli-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  Env& env = Env::Default();
  LogOptions lo;
  lo.dir = (dir / "log").string();
  std::unique_ptr<Log> log = Log::Open(env, lo).value();
  std::unique_ptr<SagaLedger> ledger = NewMemorySagaLedger(env.clock());
  SagaParticipantCore core(*ledger);
  core.Handle("hold", [](const SagaCommand&, std::string*) { return Status::Ok(); });
  core.Handle("release", [](const SagaCommand&, std::string*) { return Status::Ok(); });
  // The second step keeps failing transiently: the saga waits in retries until cancelled.
  core.Handle("wait", [](const SagaCommand&, std::string*) { return UnavailableError("not yet"); });
  core.Handle("unwait", [](const SagaCommand&, std::string*) { return Status::Ok(); });
  SagaParticipantOptions po;
  po.topic = "holds";
  auto participant = SagaParticipant::Start(env, *log, core, po).value();

  SagaOrchestratorOptions oo;
  oo.dir = (dir / "saga").string();
  auto orch = SagaOrchestrator::Open(env, *log, oo).value();
  RetryPolicy patient;
  patient.base_delay_ms = 200;
  patient.max_delay_ms = 200;
  patient.max_attempts = 10'000;
  patient.deadline_ms = 3'600'000;
  ASSERT_TRUE(orch->RegisterDefinition(SagaDefinitionBuilder("cli", 1)
                                           .Step("hold", "holds", "hold", "release")
                                           .Step("wait", "holds", "wait", "unwait")
                                           .Retry(patient)
                                           .Build()
                                           .value())
                  .ok());
  SagaStartRequest req;
  req.definition = "cli";
  req.id = "cli-1";
  req.data = R"({"order":7})";
  ASSERT_TRUE(orch->Start(req).ok());
  // Wait (real time, bounded) until the first step is done and the second is waiting.
  for (int i = 0; i < 500; ++i) {
    if (orch->Describe("cli-1")->summary.step == 1) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_EQ(orch->Describe("cli-1")->summary.step, 1u);

  {
    TestServer server(*orch);
    const std::string url = " --server http://127.0.0.1:" + std::to_string(server.port());
    Output ls = RunCli("ls" + url);
    EXPECT_EQ(ls.code, 0) << ls.text;
    EXPECT_NE(ls.text.find("cli-1"), std::string::npos) << ls.text;
    EXPECT_NE(ls.text.find("running"), std::string::npos) << ls.text;

    Output show = RunCli("show cli-1" + url);
    EXPECT_EQ(show.code, 0) << show.text;
    EXPECT_NE(show.text.find("hold"), std::string::npos) << show.text;
    EXPECT_NE(show.text.find("timers:"), std::string::npos) << show.text;
    EXPECT_NE(show.text.find("{\"order\":7}"), std::string::npos) << show.text;

    Output timers = RunCli("timers --json" + url);
    EXPECT_EQ(timers.code, 0);
    EXPECT_NE(timers.text.find("\"saga_id\":\"cli-1\""), std::string::npos) << timers.text;

    Output missing = RunCli("show nobody" + url);
    EXPECT_EQ(missing.code, 1);
    EXPECT_NE(missing.text.find("NOT_FOUND"), std::string::npos) << missing.text;

    Output cancel = RunCli("cancel cli-1 --reason testing" + url);
    EXPECT_EQ(cancel.code, 0) << cancel.text;
    for (int i = 0; i < 500; ++i) {
      if (orch->Describe("cli-1")->summary.state == SagaState::kCompensated) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    Output done = RunCli("ls --state compensated" + url);
    EXPECT_NE(done.text.find("cli-1"), std::string::npos) << done.text;

    Output started = RunCli("start cli --id cli-2 --data '{\"order\":8}'" + url);
    EXPECT_EQ(started.code, 0) << started.text;
    EXPECT_EQ(started.text, "cli-2\n");
    EXPECT_TRUE(orch->Describe("cli-2").ok());
    EXPECT_EQ(RunCli("start nope" + url).code, 1);
    EXPECT_EQ(RunCli("bogus" + url).code, 2);
    EXPECT_EQ(RunCli("ls --server http://127.0.0.1:1").code, 1);
  }
  orch->Close();
  participant->Close();

  // Offline, from the saga log directory.
  Output offline = RunCli("show cli-1 --dir " + oo.dir);
  EXPECT_EQ(offline.code, 0) << offline.text;
  EXPECT_NE(offline.text.find("compensated"), std::string::npos) << offline.text;
  EXPECT_NE(offline.text.find("testing"), std::string::npos) << offline.text;
  Output offline_ls = RunCli("ls --json --dir " + oo.dir);
  EXPECT_NE(offline_ls.text.find("\"id\":\"cli-1\""), std::string::npos) << offline_ls.text;

  orch.reset();
  participant.reset();
  log.reset();
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace converge
