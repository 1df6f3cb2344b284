// converge systems of `converge bench store`:
//   converge-inproc  the store as a library: Store::Get, then Store::Put with If-Match.
//   converge         the sidecar: `converge serve` (this binary) with the store enabled, driven
//                    over HTTP/1.1 keep-alive (one connection per client): GET the document,
//                    then PUT it with If-Match.
// Both: store durability fsync (group commit) and the change feed on the event log (fsync).
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <cstdlib>
#include <fstream>
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

}  // namespace

std::unique_ptr<StoreSystem> MakeConvergeStoreSystem(bool via_sidecar) {
  if (!via_sidecar) return std::make_unique<InprocSystem>();
  return nullptr;  // the sidecar does not host the store in this build
}

}  // namespace converge::bench
