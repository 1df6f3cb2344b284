#include "support/server_process.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>

#include <chrono>
#include <filesystem>
#include <thread>

namespace converge::testing {
namespace {

bool PathExists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

bool ProcessAlive(pid_t pid) { return ::kill(pid, 0) == 0; }

TEST(TempDirTest, CreatedAndRemovedWithItsContents) {
  std::string path;
  {
    Result<TempDir> dir = TempDir::Create("converge-tempdir-test-");
    ASSERT_TRUE(dir.ok()) << dir.status().ToString();
    path = dir->path();
    ASSERT_TRUE(PathExists(path));
    std::filesystem::create_directories(path + "/a/b");
    std::FILE* f = std::fopen((path + "/a/b/file").c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fclose(f);
  }
  EXPECT_FALSE(PathExists(path));
}

TEST(TempDirTest, FailsCleanlyUnderAMissingBase) {
  Result<TempDir> dir = TempDir::Create("x-", "/nonexistent-converge-base");
  EXPECT_FALSE(dir.ok());
  EXPECT_EQ(dir.status().code(), StatusCode::kInternal);
}

TEST(FreeLoopbackPortTest, ReturnsABindablePort) {
  Result<uint16_t> port = FreeLoopbackPort();
  ASSERT_TRUE(port.ok()) << port.status().ToString();
  EXPECT_GT(*port, 0);
  EXPECT_FALSE(LoopbackPortAccepts(*port));
}

TEST(ServerProcessTest, MissingExecutableIsNotFound) {
  ServerSpec spec;
  spec.name = "nothing";
  spec.argv = {"/nonexistent/converge-server"};
  Result<std::unique_ptr<ServerProcess>> p = ServerProcess::Start(spec);
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), StatusCode::kNotFound);
}

TEST(ServerProcessTest, EarlyExitIsUnavailableWithTheLog) {
  Result<TempDir> dir = TempDir::Create("converge-sp-test-");
  ASSERT_TRUE(dir.ok());
  Result<uint16_t> port = FreeLoopbackPort();
  ASSERT_TRUE(port.ok());
  ServerSpec spec;
  spec.name = "sh";
  spec.argv = {"/bin/sh", "-c", "echo cannot-bind-here; exit 3"};
  spec.port = *port;
  spec.log_path = dir->path() + "/log";
  Result<std::unique_ptr<ServerProcess>> p = ServerProcess::Start(spec);
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(p.status().message().find("cannot-bind-here"), std::string_view::npos)
      << p.status().ToString();
}

TEST(ServerProcessTest, StopEscalatesToSigkillWhenTermIsIgnored) {
  Result<TempDir> dir = TempDir::Create("converge-sp-test-");
  ASSERT_TRUE(dir.ok());
  ServerSpec spec;
  spec.name = "stubborn";
  // An ignored signal stays ignored across exec, so `sleep` ignores SIGTERM.
  spec.argv = {"/bin/sh", "-c", "trap '' TERM; echo ignoring-term; exec sleep 60"};
  spec.log_path = dir->path() + "/log";
  spec.stop_timeout_ms = 200;
  Result<std::unique_ptr<ServerProcess>> p = ServerProcess::Start(spec);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  const pid_t pid = (*p)->pid();
  // Wait (bounded) until the shell has installed its trap, or SIGTERM would simply work.
  for (int i = 0; i < 2000 && (*p)->LogTail().find("ignoring-term") == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_NE((*p)->LogTail().find("ignoring-term"), std::string::npos);
  ASSERT_TRUE(ProcessAlive(pid));
  const auto start = std::chrono::steady_clock::now();
  EXPECT_TRUE((*p)->Stop().ok());
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(200));
  EXPECT_FALSE((*p)->running());
  EXPECT_FALSE(ProcessAlive(pid));
}

void ExpectServesThenCleansUp(Result<std::unique_ptr<ManagedServer>> started) {
  ASSERT_TRUE(started.ok()) << started.status().ToString();
  std::unique_ptr<ManagedServer> server = std::move(started).value();
  const uint16_t port = server->port();
  const std::string dir = server->dir();
  const pid_t pid = server->process().pid();
  EXPECT_TRUE(LoopbackPortAccepts(port));
  EXPECT_TRUE(PathExists(dir + "/data"));
  EXPECT_TRUE(server->Shutdown().ok());
  EXPECT_FALSE(ProcessAlive(pid));
  EXPECT_FALSE(LoopbackPortAccepts(port));
  EXPECT_FALSE(PathExists(dir));
}

TEST(ManagedServerTest, RedisServerStartsOnLoopbackAndCleansUp) {
  RedisServerOptions options;
  options.appendfsync = "always";
  ExpectServesThenCleansUp(StartRedisServer(options));
}

TEST(ManagedServerTest, NatsServerStartsOnLoopbackAndCleansUp) {
  ExpectServesThenCleansUp(StartNatsServer(NatsServerOptions{}));
}

TEST(ManagedServerTest, DestructorStopsTheServerAndRemovesTheDirectory) {
  pid_t pid;
  std::string dir;
  {
    Result<std::unique_ptr<ManagedServer>> server = StartRedisServer(RedisServerOptions{});
    ASSERT_TRUE(server.ok()) << server.status().ToString();
    pid = (*server)->process().pid();
    dir = (*server)->dir();
  }
  EXPECT_FALSE(ProcessAlive(pid));
  EXPECT_FALSE(PathExists(dir));
}

}  // namespace
}  // namespace converge::testing
