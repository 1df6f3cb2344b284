// PgInstance: a test fixture (an edge), so it uses POSIX, libpq and std::chrono directly.
#include "support/pg_instance.h"

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
#include <optional>
#include <sstream>
#include <thread>

namespace converge::testing {
namespace {

using SteadyClock = std::chrono::steady_clock;

// fork + exec with output appended to `log`, as uid/gid when `drop`; the child gets `death_signal`
// if this process dies.
Result<pid_t> Spawn(const std::vector<std::string>& args, const std::string& log, bool drop,
                    uid_t uid, gid_t gid, int death_signal) {
  std::vector<std::string> copy = args;
  std::vector<char*> argv;
  for (std::string& a : copy) argv.push_back(a.data());
  argv.push_back(nullptr);
  const int log_fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) return InternalError("open " + log + ": " + std::strerror(errno));
  if (drop && ::fchown(log_fd, uid, gid) != 0) {
    ::close(log_fd);
    return InternalError("chown " + log + ": " + std::strerror(errno));
  }
  const int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(log_fd);
    ::close(null_fd);
    return InternalError(std::string("fork: ") + std::strerror(errno));
  }
  if (pid == 0) {
    if (drop && (::setgroups(0, nullptr) != 0 || ::setgid(gid) != 0 || ::setuid(uid) != 0)) {
      _exit(125);
    }
    ::prctl(PR_SET_PDEATHSIG, death_signal);
    if (::getppid() != parent) _exit(126);
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

std::optional<int> WaitPid(pid_t pid, int64_t timeout_ms) {
  const auto deadline = SteadyClock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    int status = 0;
    const pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) return status;
    if (r < 0 && errno != EINTR) return 0;
    if (SteadyClock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

}  // namespace

Result<std::unique_ptr<PgInstance>> PgInstance::Start(const PgInstanceOptions& options) {
  const std::string postgres = options.bin_dir + "/postgres";
  if (::access(postgres.c_str(), X_OK) != 0) {
    return NotFoundError("PostgreSQL is not installed (" + postgres + ")");
  }
  CONVERGE_ASSIGN_OR_RETURN(TempDir dir, TempDir::Create("converge-pg-", options.base_dir));
  std::unique_ptr<PgInstance> pg(new PgInstance(options, std::move(dir)));
  if (::geteuid() == 0) {
    struct passwd* pw = ::getpwnam(options.run_as_user.c_str());
    if (pw == nullptr)
      return NotFoundError("no user '" + options.run_as_user + "' to run postgres");
    pg->drop_ = true;
    pg->uid_ = pw->pw_uid;
    pg->gid_ = pw->pw_gid;
    if (::chown(pg->dir_.path().c_str(), pg->uid_, pg->gid_) != 0) {
      return InternalError(std::string("chown: ") + std::strerror(errno));
    }
  }
  const std::string sock = pg->dir_.path() + "/sock";
  if (::mkdir(sock.c_str(), 0700) != 0 ||
      (pg->drop_ && ::chown(sock.c_str(), pg->uid_, pg->gid_) != 0)) {
    return InternalError("mkdir " + sock + ": " + std::strerror(errno));
  }
  // --no-sync only skips flushing initdb's own files; the server runs with fsync on.
  CONVERGE_RETURN_IF_ERROR(pg->RunToCompletion(
      {options.bin_dir + "/initdb", "-D", pg->dir_.path() + "/data", "-U", "postgres",
       "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"}));
  Status last;
  for (int attempt = 0; attempt < 4; ++attempt) {
    CONVERGE_ASSIGN_OR_RETURN(pg->port_, FreeLoopbackPort());
    last = pg->Launch();
    if (last.ok()) last = pg->WaitReady();
    if (last.ok()) return pg;
    pg->Kill().IgnoreError();
    if (last.code() != StatusCode::kUnavailable) break;  // retry only a lost port race
  }
  return last;
}

PgInstance::~PgInstance() {
  if (!Stop().ok()) Kill().IgnoreError();
}

std::string PgInstance::ConnInfo(const std::string& dbname) const {
  return "host=127.0.0.1 port=" + std::to_string(port_) + " user=postgres dbname=" + dbname +
         " sslmode=disable";
}

std::string PgInstance::LogTail(size_t max_bytes) const {
  std::ifstream in(dir_.path() + "/server.log", std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string all = ss.str();
  return all.size() > max_bytes ? all.substr(all.size() - max_bytes) : all;
}

Status PgInstance::RunToCompletion(const std::vector<std::string>& argv) {
  CONVERGE_ASSIGN_OR_RETURN(pid_t pid,
                            Spawn(argv, dir_.path() + "/server.log", drop_, uid_, gid_, SIGKILL));
  std::optional<int> status = WaitPid(pid, options_.timeout_ms);
  if (!status) {
    ::kill(pid, SIGKILL);
    WaitPid(pid, 5'000);
    return DeadlineExceededError(argv[0] + " did not finish\n" + LogTail());
  }
  if (!WIFEXITED(*status) || WEXITSTATUS(*status) != 0) {
    return InternalError(argv[0] + " failed\n" + LogTail());
  }
  return Status::Ok();
}

Status PgInstance::Launch() {
  std::vector<std::string> argv = {
      options_.bin_dir + "/postgres",
      "-D",
      dir_.path() + "/data",
      "-p",
      std::to_string(port_),
      "-c",
      "listen_addresses=127.0.0.1",
      "-c",
      "unix_socket_directories=" + dir_.path() + "/sock",
      "-c",
      "fsync=on",
      "-c",
      "synchronous_commit=on",
      "-c",
      "max_prepared_transactions=" + std::to_string(options_.max_prepared_transactions),
      "-c",
      "max_connections=" + std::to_string(options_.max_connections)};
  for (const std::string& s : options_.settings) {
    argv.push_back("-c");
    argv.push_back(s);
  }
  // SIGQUIT: PostgreSQL's immediate shutdown, should this process die.
  CONVERGE_ASSIGN_OR_RETURN(pid_,
                            Spawn(argv, dir_.path() + "/server.log", drop_, uid_, gid_, SIGQUIT));
  return Status::Ok();
}

Status PgInstance::WaitReady() {
  const std::string conninfo = ConnInfo() + " connect_timeout=2";
  const auto deadline = SteadyClock::now() + std::chrono::milliseconds(options_.timeout_ms);
  for (;;) {
    if (PQping(conninfo.c_str()) == PQPING_OK) return Status::Ok();
    if (WaitPid(pid_, 0).has_value()) {
      pid_ = -1;
      const std::string tail = LogTail();
      if (tail.find("could not bind") != std::string::npos ||
          tail.find("already in use") != std::string::npos) {
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

Status PgInstance::Stop() {
  if (pid_ <= 0) return Status::Ok();
  Status s = RunToCompletion(
      {options_.bin_dir + "/pg_ctl", "stop", "-D", dir_.path() + "/data", "-m", "fast", "-w"});
  if (!WaitPid(pid_, s.ok() ? options_.timeout_ms : 0)) return Kill();
  pid_ = -1;
  return Status::Ok();
}

Status PgInstance::Kill() {
  if (pid_ <= 0) return Status::Ok();
  ::kill(pid_, SIGKILL);
  WaitPid(pid_, 10'000);
  pid_ = -1;
  // Backends notice the postmaster is gone and exit; give them a moment to release the port
  // and shared memory before a restart.
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  return Status::Ok();
}

Status PgInstance::Restart() {
  if (pid_ > 0) return FailedPreconditionError("postgres is running");
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

Status PgInstance::CreateDatabase(const std::string& name) {
  for (char c : name) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) {
      return InvalidArgumentError("database name must be [a-z0-9_]+");
    }
  }
  return Query("postgres", "CREATE DATABASE " + name).status();
}

Result<std::string> PgInstance::Query(const std::string& dbname, const std::string& sql) {
  PGconn* conn = PQconnectdb(ConnInfo(dbname).c_str());
  if (PQstatus(conn) != CONNECTION_OK) {
    std::string msg = PQerrorMessage(conn);
    PQfinish(conn);
    return UnavailableError("connect: " + msg);
  }
  PGresult* r = PQexec(conn, sql.c_str());
  const ExecStatusType st = PQresultStatus(r);
  Result<std::string> out = std::string();
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
    out = InternalError(sql + ": " + PQresultErrorMessage(r));
  } else if (st == PGRES_TUPLES_OK && PQntuples(r) > 0 && PQnfields(r) > 0) {
    out = std::string(PQgetvalue(r, 0, 0));
  }
  PQclear(r);
  PQfinish(conn);
  return out;
}

}  // namespace converge::testing
