// converge systems of `converge bench store`:
//   converge-inproc  the store as a library: Store::Get, then Store::Put with If-Match.
//   converge         the sidecar: `converge serve` (this binary) with the store enabled, driven
//                    over HTTP/1.1 keep-alive (one connection per client, a lean client over
//                    a plain socket): GET the document, then PUT it with If-Match.
// Both: store durability fsync (group commit) and the change feed on the event log (fsync).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

#include "bench/sidecar_process.h"
#include "bench/store_bench.h"
#include "converge/env.h"
#include "converge/log.h"
#include "converge/store.h"
#include "support/postgres_server.h"
#include "support/server_process.h"

namespace converge::bench {
namespace {

constexpr const char* kCollection = "bench";
const Caller kCaller = Caller::Service("bench");

int64_t ParseCounter(std::string_view text) {
  return std::strtoll(std::string(text).c_str(), nullptr, 10);
}

// ---------------------------------------------------------------------------------------
// In-process

class InprocSession : public StoreSession {
 public:
  explicit InprocSession(Store* store) : store_(store) {}
  Status Read(const std::string& key, int64_t* value, std::string* version) override {
    CONVERGE_ASSIGN_OR_RETURN(Document doc, store_->Get(kCollection, key));
    *value = ParseCounter(doc.value);
    *version = std::move(doc.etag);
    return Status::Ok();
  }
  Status Write(const std::string& key, int64_t value, const std::string& version) override {
    return store_
        ->Put(kCaller, kCollection, key, std::to_string(value), Precondition::IfMatch(version))
        .status();
  }

 private:
  Store* store_;
};

Status LoadKeys(Store& store, const std::vector<std::string>& keys) {
  CollectionConfig config;
  config.owner = kCaller.service;
  CONVERGE_RETURN_IF_ERROR(store.CreateCollection(kCaller, kCollection, config));
  std::vector<WriteOp> batch;
  for (size_t i = 0; i < keys.size(); ++i) {
    batch.push_back(WriteOp::Put(kCollection, keys[i], "0"));
    if (batch.size() == 1000 || i + 1 == keys.size()) {
      CONVERGE_RETURN_IF_ERROR(store.Commit(kCaller, batch).status());
      batch.clear();
    }
  }
  return Status::Ok();
}

class InprocSystem : public StoreSystem {
 public:
  ~InprocSystem() override { Stop().IgnoreError(); }
  std::string name() const override { return "converge-inproc"; }
  std::string durability() const override { return "fsync"; }
  std::string note() const override {
    return "Store::Get + Store::Put(If-Match) in-process; change feed to the log";
  }
  Status Start(const StoreWorkload& w, const std::vector<std::string>& keys) override {
    LogOptions lo;
    lo.dir = w.dir + "/log";
    CONVERGE_ASSIGN_OR_RETURN(log_, Log::Open(Env::Default(), lo));
    StoreOptions so;
    so.dir = w.dir + "/store";
    so.feed_log = log_.get();
    CONVERGE_ASSIGN_OR_RETURN(store_, Store::Open(Env::Default(), so));
    return LoadKeys(*store_, keys);
  }
  Result<std::unique_ptr<StoreSession>> NewSession() override {
    return std::unique_ptr<StoreSession>(std::make_unique<InprocSession>(store_.get()));
  }
  Status Stop() override {
    store_.reset();
    log_.reset();
    return Status::Ok();
  }

 private:
  std::unique_ptr<Log> log_;
  std::unique_ptr<Store> store_;
};

// ---------------------------------------------------------------------------------------
// Through the sidecar

// One keep-alive HTTP/1.1 connection to the sidecar, spoken directly over a socket: the
// request is formatted into a reused buffer and sent with one send(); the reply is parsed in
// place (status line, Content-Length, ETag). A client library as lean as libpq or nats.c is to
// the peers, so that the figure measures the sidecar rather than a client framework.
class HttpSession : public StoreSession {
 public:
  explicit HttpSession(uint16_t port) : port_(port) { in_.resize(kInitialBuffer); }
  ~HttpSession() override {
    if (fd_ >= 0) ::close(fd_);
  }
  HttpSession(const HttpSession&) = delete;
  HttpSession& operator=(const HttpSession&) = delete;

  Status Connect() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) return UnavailableError(std::string("socket: ") + std::strerror(errno));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port_);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
      return UnavailableError(std::string("connect to the sidecar: ") + std::strerror(errno));
    }
    const int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return Status::Ok();
  }

  Status Read(const std::string& key, int64_t* value, std::string* version) override {
    StartRequest("GET", key);
    req_ += "\r\n";
    CONVERGE_RETURN_IF_ERROR(RoundTrip());
    if (status_ == 404) return NotFoundError("sidecar: no key " + key);
    if (status_ != 200) return Unexpected("GET");
    *value = ParseCounter(body_);
    version->assign(etag_);
    return Status::Ok();
  }

  Status Write(const std::string& key, int64_t value, const std::string& version) override {
    char body[24];
    const int n = std::snprintf(body, sizeof(body), "%" PRId64, value);
    StartRequest("PUT", key);
    req_ += "Content-Type: application/json\r\nIf-Match: ";
    req_ += version;
    req_ += "\r\nContent-Length: ";
    req_ += std::to_string(n);
    req_ += "\r\n\r\n";
    req_.append(body, static_cast<size_t>(n));
    CONVERGE_RETURN_IF_ERROR(RoundTrip());
    if (status_ == 200 || status_ == 201) return Status::Ok();
    if (status_ == 412) return AbortedError("412");
    return Unexpected("PUT");
  }

  // A request whose reply must have one of `ok` statuses (setup: not measured).
  Status Send(const char* method, const std::string& target, const std::string& body,
              std::initializer_list<int> ok) {
    req_.assign(method);
    req_ += " ";
    req_ += target;
    req_ += " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: ";
    req_ += std::to_string(body.size());
    req_ += "\r\n\r\n";
    req_ += body;
    CONVERGE_RETURN_IF_ERROR(RoundTrip());
    for (int code : ok) {
      if (status_ == code) return Status::Ok();
    }
    return Unexpected(method);
  }

 private:
  static constexpr size_t kInitialBuffer = 64 * 1024;
  static constexpr size_t kMaxReply = 64u << 20;

  // The request line and Host of a request for the document `key` (header not ended).
  void StartRequest(const char* method, const std::string& key) {
    req_.assign(method);
    req_ += " /v1/collections/";
    req_ += kCollection;
    req_ += "/docs/";
    req_ += key;
    req_ += " HTTP/1.1\r\nHost: 127.0.0.1\r\n";
  }

  Status Unexpected(const char* method) const {
    return UnavailableError(std::string("sidecar ") + method + ": HTTP " + std::to_string(status_) +
                            " " + std::string(body_));
  }

  static bool HeaderIs(std::string_view line, std::string_view name) {
    return line.size() > name.size() && line[name.size()] == ':' &&
           ::strncasecmp(line.data(), name.data(), name.size()) == 0;
  }
  static std::string_view HeaderValue(std::string_view line, size_t name_size) {
    std::string_view v = line.substr(name_size + 1);
    while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
    while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
    return v;
  }

  // Receives more bytes after the `have_` already buffered.
  Status Receive() {
    if (have_ == in_.size()) {
      if (in_.size() >= kMaxReply) return UnavailableError("sidecar reply too large");
      in_.resize(in_.size() * 2);
    }
    for (;;) {
      const ssize_t n = ::recv(fd_, in_.data() + have_, in_.size() - have_, 0);
      if (n > 0) {
        have_ += static_cast<size_t>(n);
        return Status::Ok();
      }
      if (n < 0 && errno == EINTR) continue;
      return UnavailableError(n == 0 ? std::string("sidecar closed the connection")
                                     : std::string("recv: ") + std::strerror(errno));
    }
  }

  // Sends req_ and reads one reply into status_, etag_, body_.
  Status RoundTrip() {
    size_t sent = 0;
    while (sent < req_.size()) {
      const ssize_t n = ::send(fd_, req_.data() + sent, req_.size() - sent, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return UnavailableError(std::string("send: ") + std::strerror(errno));
      sent += static_cast<size_t>(n);
    }
    have_ = 0;  // one request at a time: nothing is left over from the last reply
    size_t header_end = std::string_view::npos;
    while (header_end == std::string_view::npos) {
      CONVERGE_RETURN_IF_ERROR(Receive());
      header_end = std::string_view(in_.data(), have_).find("\r\n\r\n");
    }
    const std::string_view head(in_.data(), header_end);
    // "HTTP/1.1 200 OK"
    if (head.size() < 12 || head.substr(0, 5) != "HTTP/") {
      return UnavailableError("sidecar: malformed reply");
    }
    status_ = std::atoi(head.data() + 9);
    size_t etag_at = 0, etag_size = 0;  // offsets: in_ may grow while the body arrives
    size_t content_length = 0;
    size_t pos = head.find("\r\n");
    while (pos != std::string_view::npos && pos < head.size()) {
      const size_t next = head.find("\r\n", pos + 2);
      const std::string_view line =
          head.substr(pos + 2, next == std::string_view::npos ? head.npos : next - pos - 2);
      if (HeaderIs(line, "Content-Length")) {
        content_length = std::strtoull(std::string(HeaderValue(line, 14)).c_str(), nullptr, 10);
      } else if (HeaderIs(line, "ETag")) {
        const std::string_view v = HeaderValue(line, 4);
        etag_at = static_cast<size_t>(v.data() - in_.data());
        etag_size = v.size();
      } else if (HeaderIs(line, "Transfer-Encoding")) {
        return UnavailableError("sidecar: unexpected Transfer-Encoding");
      }
      pos = next;
    }
    const size_t body_start = header_end + 4;
    if (content_length > kMaxReply) return UnavailableError("sidecar reply too large");
    while (have_ < body_start + content_length) CONVERGE_RETURN_IF_ERROR(Receive());
    etag_ = std::string_view(in_.data() + etag_at, etag_size);
    body_ = std::string_view(in_.data() + body_start, content_length);
    return Status::Ok();
  }

  uint16_t port_;
  int fd_ = -1;
  std::string req_;       // the request being sent, reused
  std::vector<char> in_;  // the reply being read, reused
  size_t have_ = 0;
  int status_ = 0;
  std::string_view etag_;  // into in_
  std::string_view body_;  // into in_
};


class SidecarSystem : public StoreSystem {
 public:
  // `synced`: store and feed durability fsync; otherwise none (written to the OS, synced at
  // shutdown), for a like-for-like comparison with peers that do not fsync. `postgres`: the
  // store in a PostgreSQL started by the benchmark (store.backend: postgres, synchronous_commit
  // on), shared by `sidecars` sidecars; clients are spread over them round-robin.
  SidecarSystem(bool synced, bool postgres = false, int sidecars = 1)
      : synced_(synced), postgres_(postgres), sidecars_(sidecars) {}
  ~SidecarSystem() override { Stop().IgnoreError(); }
  std::string name() const override {
    if (postgres_) {
      return sidecars_ == 1 ? "converge-pg" : "converge-pg-x" + std::to_string(sidecars_);
    }
    return synced_ ? "converge" : "converge-nosync";
  }
  std::string durability() const override { return synced_ ? "fsync" : "none"; }
  std::string note() const override {
    if (postgres_) {
      return std::to_string(sidecars_) +
             " converge serve on one PostgreSQL store (synchronous_commit on), HTTP/1.1 "
             "keep-alive: GET + PUT If-Match; each sidecar's change feed to its log";
    }
    return "converge serve over HTTP/1.1 keep-alive: GET + PUT If-Match; change feed to the log";
  }

  Status Start(const StoreWorkload& w, const std::vector<std::string>& keys) override {
    const std::string config = w.dir + "/converge.yaml";
    std::string store_keys;
    if (postgres_) {
      testing::PostgresServerOptions options;
      options.base_dir = w.dir;
      // Each sidecar's pool (storage_threads + 2) and the benchmark's own connections.
      options.settings.push_back("max_connections=" + std::to_string(sidecars_ * 16 + 20));
      CONVERGE_ASSIGN_OR_RETURN(pg_, testing::PostgresServer::Start(options));
      store_keys = "store:\n  backend: postgres\n  postgres_conninfo: \"" + pg_->ConnInfo() +
                   "\"\n  postgres_table_prefix: bench\n";
    } else if (!synced_) {
      store_keys = "store:\n  durability: none\ntopic_defaults:\n  durability: none\n";
    }
    std::ofstream(config) << "limits:\n"
                             "  max_inflight_requests: 8192\n"
                             "  max_connections: 8192\n"
                          << store_keys;
    for (int i = 0; i < sidecars_; ++i) {
      const std::string suffix = i == 0 ? "" : std::to_string(i);
      CONVERGE_ASSIGN_OR_RETURN(
          std::unique_ptr<testing::ServerProcess> p,
          StartSidecar(config, w.dir + "/data" + suffix, w.dir + "/serve" + suffix + ".log"));
      processes_.push_back(std::move(p));
    }
    // Load through the API: one transaction per 1000 keys.
    HttpSession s(processes_[0]->port());
    CONVERGE_RETURN_IF_ERROR(s.Connect());
    CONVERGE_RETURN_IF_ERROR(
        s.Send("PUT", std::string("/v1/collections/") + kCollection, "{}", {201}));
    for (size_t i = 0; i < keys.size(); i += 1000) {
      std::string body = "{\"ops\":[";
      for (size_t j = i; j < std::min(keys.size(), i + 1000); ++j) {
        if (j > i) body += ",";
        body += std::string("{\"op\":\"put\",\"collection\":\"") + kCollection + "\",\"key\":\"" +
                keys[j] + "\",\"value\":0}";
      }
      body += "]}";
      CONVERGE_RETURN_IF_ERROR(s.Send("POST", "/v1/collections/_transaction", body, {200}));
    }
    return Status::Ok();
  }

  Result<std::unique_ptr<StoreSession>> NewSession() override {
    const size_t i = next_session_++ % processes_.size();
    auto s = std::make_unique<HttpSession>(processes_[i]->port());
    CONVERGE_RETURN_IF_ERROR(s->Connect());
    return std::unique_ptr<StoreSession>(std::move(s));
  }

  Status Stop() override {
    Status status = Status::Ok();
    for (auto& p : processes_) {
      Status s = p->Stop();
      if (status.ok()) status = s;
    }
    processes_.clear();
    pg_.reset();
    return status;
  }

 private:
  bool synced_;
  bool postgres_;
  int sidecars_;
  size_t next_session_ = 0;
  std::unique_ptr<testing::PostgresServer> pg_;
  std::vector<std::unique_ptr<testing::ServerProcess>> processes_;
};

}  // namespace

std::unique_ptr<StoreSystem> MakeConvergeStoreSystem(bool via_sidecar, bool synced) {
  if (!via_sidecar) return std::make_unique<InprocSystem>();
  return std::make_unique<SidecarSystem>(synced);
}

std::unique_ptr<StoreSystem> MakeConvergePostgresStoreSystem(int sidecars) {
  return std::make_unique<SidecarSystem>(/*synced=*/true, /*postgres=*/true, sidecars);
}

}  // namespace converge::bench
