// converge systems of `converge bench store`:
//   converge-inproc  the store as a library: Store::Get, then Store::Put with If-Match.
//   converge         the sidecar: `converge serve` (this binary) with the store enabled, driven
//                    over HTTP/1.1 keep-alive (one connection per client): GET the document,
//                    then PUT it with If-Match.
// Both: store durability fsync (group commit) and the change feed on the event log (fsync).
#include <unistd.h>

#include <algorithm>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <cstdlib>
#include <fstream>
#include <initializer_list>
#include <string>

#include "bench/store_bench.h"
#include "converge/env.h"
#include "converge/log.h"
#include "converge/store.h"
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

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

// One keep-alive HTTP/1.1 connection to the sidecar.
class HttpSession : public StoreSession {
 public:
  explicit HttpSession(uint16_t port) : port_(port), socket_(ioc_) {}

  Status Connect() {
    beast::error_code ec;
    socket_.connect(asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), port_), ec);
    if (ec) return UnavailableError("connect to the sidecar: " + ec.message());
    socket_.set_option(asio::ip::tcp::no_delay(true), ec);
    return Status::Ok();
  }

  Status Read(const std::string& key, int64_t* value, std::string* version) override {
    http::request<http::string_body> req{http::verb::get, Target(key), 11};
    req.set(http::field::host, "127.0.0.1");
    http::response<http::string_body> res;
    CONVERGE_RETURN_IF_ERROR(RoundTrip(req, &res));
    if (res.result() == http::status::not_found) return NotFoundError("sidecar: no key " + key);
    if (res.result() != http::status::ok) return Unexpected("GET", res);
    *value = ParseCounter(res.body());
    *version = std::string(res[http::field::etag]);
    return Status::Ok();
  }

  // A request whose reply must have one of `ok` statuses.
  Status Send(http::verb verb, const std::string& target, const std::string& body,
              std::initializer_list<unsigned> ok) {
    http::request<http::string_body> req{verb, target, 11};
    req.set(http::field::host, "127.0.0.1");
    req.set(http::field::content_type, "application/json");
    req.body() = body;
    req.prepare_payload();
    http::response<http::string_body> res;
    CONVERGE_RETURN_IF_ERROR(RoundTrip(req, &res));
    for (unsigned code : ok) {
      if (res.result_int() == code) return Status::Ok();
    }
    return Unexpected(std::string(http::to_string(verb)).c_str(), res);
  }

  Status Write(const std::string& key, int64_t value, const std::string& version) override {
    http::request<http::string_body> req{http::verb::put, Target(key), 11};
    req.set(http::field::host, "127.0.0.1");
    req.set(http::field::content_type, "application/json");
    req.set(http::field::if_match, version);
    req.body() = std::to_string(value);
    req.prepare_payload();
    http::response<http::string_body> res;
    CONVERGE_RETURN_IF_ERROR(RoundTrip(req, &res));
    if (res.result() == http::status::ok || res.result() == http::status::created) {
      return Status::Ok();
    }
    if (res.result() == http::status::precondition_failed) return AbortedError("412");
    return Unexpected("PUT", res);
  }

 private:
  static std::string Target(const std::string& key) {
    return std::string("/v1/collections/") + kCollection + "/docs/" + key;
  }
  static Status Unexpected(const char* method, const http::response<http::string_body>& res) {
    return UnavailableError(std::string("sidecar ") + method + ": HTTP " +
                            std::to_string(res.result_int()) + " " + res.body());
  }
  Status RoundTrip(http::request<http::string_body>& req, http::response<http::string_body>* res) {
    beast::error_code ec;
    http::write(socket_, req, ec);
    if (!ec) http::read(socket_, buffer_, *res, ec);
    if (ec) return UnavailableError("sidecar connection: " + ec.message());
    return Status::Ok();
  }

  uint16_t port_;
  asio::io_context ioc_;
  asio::ip::tcp::socket socket_;
  beast::flat_buffer buffer_;
};

std::string SelfExecutable() {
  char buf[4096];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
}

class SidecarSystem : public StoreSystem {
 public:
  // `synced`: store and feed durability fsync; otherwise none (written to the OS, synced at
  // shutdown), for a like-for-like comparison with peers that do not fsync.
  explicit SidecarSystem(bool synced) : synced_(synced) {}
  ~SidecarSystem() override { Stop().IgnoreError(); }
  std::string name() const override { return synced_ ? "converge" : "converge-nosync"; }
  std::string durability() const override { return synced_ ? "fsync" : "none"; }
  std::string note() const override {
    return "converge serve over HTTP/1.1 keep-alive: GET + PUT If-Match; change feed to the log";
  }

  Status Start(const StoreWorkload& w, const std::vector<std::string>& keys) override {
    const std::string exe = SelfExecutable();
    if (exe.empty()) return InternalError("cannot find this executable (/proc/self/exe)");
    const std::string config = w.dir + "/converge.yaml";
    std::ofstream(config) << "limits:\n"
                             "  max_inflight_requests: 8192\n"
                             "  max_connections: 8192\n"
                          << (synced_ ? ""
                                      : "store:\n  durability: none\n"
                                        "topic_defaults:\n  durability: none\n");
    Status last;
    for (int attempt = 0; attempt < 5; ++attempt) {  // a free port may be taken meanwhile
      CONVERGE_ASSIGN_OR_RETURN(uint16_t port, testing::FreeLoopbackPort());
      testing::ServerSpec spec;
      spec.name = "converge serve";
      spec.argv = {exe,        "serve", "--listen",   "127.0.0.1:" + std::to_string(port),
                   "--config", config,  "--data-dir", w.dir + "/data"};
      spec.port = port;
      spec.log_path = w.dir + "/serve.log";
      Result<std::unique_ptr<testing::ServerProcess>> p = testing::ServerProcess::Start(spec);
      if (p.ok()) {
        process_ = std::move(p).value();
        break;
      }
      last = p.status();
      if (last.code() != StatusCode::kUnavailable) return last;
    }
    if (!process_) return last;
    // Load through the API: one transaction per 1000 keys.
    HttpSession s(process_->port());
    CONVERGE_RETURN_IF_ERROR(s.Connect());
    CONVERGE_RETURN_IF_ERROR(
        s.Send(http::verb::put, std::string("/v1/collections/") + kCollection, "{}", {201}));
    for (size_t i = 0; i < keys.size(); i += 1000) {
      std::string body = "{\"ops\":[";
      for (size_t j = i; j < std::min(keys.size(), i + 1000); ++j) {
        if (j > i) body += ",";
        body += std::string("{\"op\":\"put\",\"collection\":\"") + kCollection + "\",\"key\":\"" +
                keys[j] + "\",\"value\":0}";
      }
      body += "]}";
      CONVERGE_RETURN_IF_ERROR(
          s.Send(http::verb::post, "/v1/collections/_transaction", body, {200}));
    }
    return Status::Ok();
  }

  Result<std::unique_ptr<StoreSession>> NewSession() override {
    auto s = std::make_unique<HttpSession>(process_->port());
    CONVERGE_RETURN_IF_ERROR(s->Connect());
    return std::unique_ptr<StoreSession>(std::move(s));
  }

  Status Stop() override {
    if (process_ == nullptr) return Status::Ok();
    Status s = process_->Stop();
    process_.reset();
    return s;
  }

 private:
  bool synced_;
  std::unique_ptr<testing::ServerProcess> process_;
};

}  // namespace

std::unique_ptr<StoreSystem> MakeConvergeStoreSystem(bool via_sidecar, bool synced) {
  if (!via_sidecar) return std::make_unique<InprocSystem>();
  return std::make_unique<SidecarSystem>(synced);
}

}  // namespace converge::bench
