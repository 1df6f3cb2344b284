// PostgreSQL fixture. An edge (test support), so it uses POSIX, libpq and std::chrono directly.
#include "support/postgres_server.h"

#include <fcntl.h>
#include <grp.h>
#include <libpq-fe.h>
#include <pwd.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

namespace converge::testing {
namespace {

using SteadyClock = std::chrono::steady_clock;

std::string ErrnoText(const std::string& what) { return what + ": " + std::strerror(errno); }

// Forks and execs argv with stdout/stderr appended to `log_path`, dropping to uid/gid first if
// asked. In the child only async-signal-safe calls run. `pdeath_signal` (0 = none) is sent to
// the child if this process dies.
Result<pid_t> Spawn(const std::vector<std::string>& args, const std::string& log_path, bool drop,
                    uid_t uid, gid_t gid, int pdeath_signal) {
  std::vector<std::string> copy = args;
  std::vector<char*> argv;
  for (std::string& a : copy) argv.push_back(a.data());
  argv.push_back(nullptr);
  int log_fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) return InternalError(ErrnoText("open " + log_path));
  if (drop && ::fchown(log_fd, uid, gid) != 0) {
    ::close(log_fd);
    return InternalError(ErrnoText("chown " + log_path));
  }
  int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  const pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) {
    ::close(log_fd);
    ::close(null_fd);
    return InternalError(ErrnoText("fork"));
  }
  if (pid == 0) {
    if (drop) {
      if (::setgroups(0, nullptr) != 0 || ::setgid(gid) != 0 || ::setuid(uid) != 0) _exit(125);
    }
    // After the credential change (which clears it).
    if (pdeath_signal != 0) {
      ::prctl(PR_SET_PDEATHSIG, pdeath_signal);
      if (::getppid() != parent) _exit(126);
    }
    ::dup2(null_fd, STDIN_FILENO);
    ::dup2(log_fd, STDOUT_FILENO);
    ::dup2(log_fd, STDERR_FILENO);
    ::execv(argv[0], argv.data());
    _exit(127);
  }
  ::close(log_fd);
  ::close(null_fd);
  return pid;
}

// Waits for `pid` up to `timeout_ms`; returns its wait status, or nullopt on timeout.
std::optional<int> WaitFor(pid_t pid, int64_t timeout_ms) {
  auto deadline = SteadyClock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    int status = 0;
    pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) return status;
    if (r < 0 && errno != EINTR) return 0;
    if (SteadyClock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

Status ChownTree(const std::string& path, uid_t uid, gid_t gid) {
  if (::chown(path.c_str(), uid, gid) != 0) return InternalError(ErrnoText("chown " + path));
  return Status::Ok();
}

}  // namespace

Result<std::unique_ptr<PostgresServer>> PostgresServer::Start(
    const PostgresServerOptions& options) {
  std::string postgres = options.bin_dir + "/postgres";
  if (::access(postgres.c_str(), X_OK) != 0) {
    return NotFoundError("postgres: cannot execute " + postgres +
                         " (install postgresql-15: scripts/install-deps)");
  }
  CONVERGE_ASSIGN_OR_RETURN(TempDir dir, TempDir::Create("converge-pg-", options.base_dir));
  std::unique_ptr<PostgresServer> server(new PostgresServer(options, std::move(dir)));
  if (::geteuid() == 0) {
    struct passwd* pw = ::getpwnam(options.run_as_user.c_str());
    if (pw == nullptr) {
      return NotFoundError("postgres: running as root needs the user '" + options.run_as_user +
                           "' (created by the postgresql package)");
    }
    server->drop_privileges_ = true;
    server->uid_ = pw->pw_uid;
    server->gid_ = pw->pw_gid;
    CONVERGE_RETURN_IF_ERROR(ChownTree(server->dir(), server->uid_, server->gid_));
  }
  CONVERGE_RETURN_IF_ERROR(server->InitDb());
  Status last;
  for (int attempt = 0; attempt < 4; ++attempt) {
    CONVERGE_ASSIGN_OR_RETURN(server->port_, FreeLoopbackPort());
    last = server->Launch();
    if (last.ok()) last = server->WaitReady();
    if (last.ok()) return server;
    server->Kill().IgnoreError();
    if (last.code() != StatusCode::kUnavailable) break;  // only a lost port race is retried
  }
  return last;
}

PostgresServer::~PostgresServer() {
  if (Stop().ok() == false) Kill().IgnoreError();
  // TempDir's destructor removes the directory (we are root or its owner).
}

std::string PostgresServer::ConnInfo(const std::string& dbname) const {
  return "host=127.0.0.1 port=" + std::to_string(port_) + " user=postgres dbname=" + dbname +
         " sslmode=disable";
}

std::string PostgresServer::LogTail(size_t max_bytes) const {
  std::ifstream in(dir() + "/server.log", std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string all = ss.str();
  if (all.size() > max_bytes) all = all.substr(all.size() - max_bytes);
  return all;
}

Status PostgresServer::Run(const std::vector<std::string>& argv) {
  CONVERGE_ASSIGN_OR_RETURN(
      pid_t pid, Spawn(argv, dir() + "/server.log", drop_privileges_, uid_, gid_, SIGKILL));
  std::optional<int> status = WaitFor(pid, options_.ready_timeout_ms);
  if (!status) {
    ::kill(pid, SIGKILL);
    WaitFor(pid, 5'000);
    return DeadlineExceededError(argv[0] + " did not finish\n" + LogTail());
  }
  if (!WIFEXITED(*status) || WEXITSTATUS(*status) != 0) {
    return InternalError(argv[0] + " failed (status " + std::to_string(*status) + ")\n" +
                         LogTail());
  }
  return Status::Ok();
}

Status PostgresServer::InitDb() {
  std::string data = dir() + "/data";
  std::string sock = dir() + "/sock";
  if (::mkdir(sock.c_str(), 0700) != 0) return InternalError(ErrnoText("mkdir " + sock));
  if (drop_privileges_) CONVERGE_RETURN_IF_ERROR(ChownTree(sock, uid_, gid_));
  // --no-sync only skips flushing initdb's own files (a test cluster is thrown away); the
  // server runs with fsync on.
  return Run({options_.bin_dir + "/initdb", "-D", data, "-U", "postgres", "--auth=trust",
              "--encoding=UTF8", "--locale=C", "--no-sync"});
}

Status PostgresServer::Launch() {
  std::vector<std::string> argv = {options_.bin_dir + "/postgres",
                                   "-D",
                                   dir() + "/data",
                                   "-p",
                                   std::to_string(port_),
                                   "-c",
                                   "listen_addresses=127.0.0.1",
                                   "-c",
                                   "unix_socket_directories=" + dir() + "/sock",
                                   "-c",
                                   "fsync=on",
                                   "-c",
                                   "synchronous_commit=on",
                                   "-c",
                                   "logging_collector=off"};
  for (const std::string& s : options_.settings) {
    argv.push_back("-c");
    argv.push_back(s);
  }
  // SIGQUIT is PostgreSQL's immediate shutdown: the postmaster takes its backends down too.
  CONVERGE_ASSIGN_OR_RETURN(
      pid_, Spawn(argv, dir() + "/server.log", drop_privileges_, uid_, gid_, SIGQUIT));
  return Status::Ok();
}

Status PostgresServer::WaitReady() {
  const std::string conninfo = ConnInfo() + " connect_timeout=2";
  auto deadline = SteadyClock::now() + std::chrono::milliseconds(options_.ready_timeout_ms);
  for (;;) {
    if (PQping(conninfo.c_str()) == PQPING_OK) return Status::Ok();
    if (WaitFor(pid_, 0).has_value()) {
      pid_ = -1;
      std::string tail = LogTail();
      if (tail.find("could not bind") != std::string::npos ||
          tail.find("Address already in use") != std::string::npos) {
        return UnavailableError("postgres: port taken\n" + tail);
      }
      return InternalError("postgres exited during start-up\n" + tail);
    }
    if (SteadyClock::now() >= deadline) {
      return DeadlineExceededError("postgres not ready in time\n" + LogTail());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

Status PostgresServer::Stop() {
  if (pid_ <= 0) return Status::Ok();
  Status s = Run({options_.bin_dir + "/pg_ctl", "stop", "-D", dir() + "/data", "-m", "fast", "-w",
                  "-t", std::to_string(options_.stop_timeout_ms / 1000 + 1)});
  std::optional<int> status = WaitFor(pid_, s.ok() ? options_.stop_timeout_ms : 0);
  if (!status) return Kill();
  pid_ = -1;
  return Status::Ok();
}

Status PostgresServer::Kill() {
  if (pid_ <= 0) return Status::Ok();
  ::kill(pid_, SIGKILL);
  WaitFor(pid_, 10'000);
  pid_ = -1;
  // Orphaned backends notice the postmaster is gone and exit; wait until the data directory
  // is free again (postmaster.pid is removed by the next start's recovery otherwise).
  return Status::Ok();
}

Status PostgresServer::Restart() {
  if (pid_ > 0) return FailedPreconditionError("postgres: still running");
  Status last;
  for (int attempt = 0; attempt < 50; ++attempt) {
    last = Launch();
    if (last.ok()) last = WaitReady();
    if (last.ok()) return Status::Ok();
    // After a SIGKILL the old backends may still hold the shared memory for a moment.
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return last;
}

Status PostgresServer::CreateDatabase(const std::string& name) {
  for (char c : name) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) {
      return InvalidArgumentError("database name must be [a-z0-9_]+");
    }
  }
  return Query("postgres", "CREATE DATABASE " + name).status();
}

Result<std::string> PostgresServer::Query(const std::string& dbname, const std::string& sql) {
  PGconn* conn = PQconnectdb(ConnInfo(dbname).c_str());
  if (PQstatus(conn) != CONNECTION_OK) {
    std::string m = PQerrorMessage(conn);
    PQfinish(conn);
    return UnavailableError("postgres: " + m);
  }
  PGresult* res = PQexec(conn, sql.c_str());
  const ExecStatusType st = PQresultStatus(res);
  Result<std::string> out = std::string();
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
    out = InternalError(sql + ": " + PQresultErrorMessage(res));
  } else if (st == PGRES_TUPLES_OK && PQntuples(res) > 0 && PQnfields(res) > 0) {
    out = std::string(PQgetvalue(res, 0, 0));
  }
  PQclear(res);
  PQfinish(conn);
  return out;
}

}  // namespace converge::testing
