// JetStream KV peer of `converge bench store`: nats-server 2.9 (Debian) on loopback, a bucket
// on file storage with 1 replica and history 1, driven through nats.c: kvStore_Get for the
// value and its revision, kvStore_Update with that revision as the expected last one.
#include <nats/nats.h>

#include <cstdlib>
#include <cstring>
#include <string>

#include "bench/nats_util.h"
#include "bench/store_bench.h"
#include "support/server_process.h"

namespace converge::bench {
namespace {

constexpr int64_t kTimeoutMs = 10'000;
constexpr const char* kBucket = "bench";

Status NatsError(const std::string& what, natsStatus s) {
  return bench::NatsError("jetstream-kv", what, s);
}

// A connection, its JetStream context and the bucket handle.
struct Conn {
  natsConnection* nc = nullptr;
  jsCtx* js = nullptr;
  kvStore* kv = nullptr;
  ~Conn() {
    if (kv != nullptr) kvStore_Destroy(kv);
    if (js != nullptr) jsCtx_Destroy(js);
    if (nc != nullptr) natsConnection_Destroy(nc);
  }
};

Status Connect(const std::string& url, bool create_bucket, Conn* c) {
  // Request/reply round trips: flush each request at once.
  CONVERGE_RETURN_IF_ERROR(NatsConnect("jetstream-kv", {url, kTimeoutMs, true}, &c->nc));
  jsOptions jo;
  jsOptions_Init(&jo);
  jo.Wait = kTimeoutMs;
  natsStatus s = natsConnection_JetStream(&c->js, c->nc, &jo);
  if (s != NATS_OK) return NatsError("JetStream context", s);
  if (create_bucket) {
    kvConfig cfg;
    kvConfig_Init(&cfg);
    cfg.Bucket = kBucket;
    cfg.History = 1;
    cfg.StorageType = js_FileStorage;
    cfg.Replicas = 1;
    s = js_CreateKeyValue(&c->kv, c->js, &cfg);
    if (s != NATS_OK) return NatsError("js_CreateKeyValue", s);
  } else {
    s = js_KeyValue(&c->kv, c->js, kBucket);
    if (s != NATS_OK) return NatsError("js_KeyValue", s);
  }
  return Status::Ok();
}

class KvSession : public StoreSession {
 public:
  explicit KvSession(std::unique_ptr<Conn> conn) : c_(std::move(conn)) {}

  Status Read(const std::string& key, int64_t* value, std::string* version) override {
    kvEntry* e = nullptr;
    natsStatus s = kvStore_Get(&e, c_->kv, key.c_str());
    if (s == NATS_NOT_FOUND) return NotFoundError("jetstream-kv: no key " + key);
    if (s != NATS_OK) return NatsError("kvStore_Get", s);
    const char* data = static_cast<const char*>(kvEntry_Value(e));
    const int len = kvEntry_ValueLen(e);
    *value = std::strtoll(std::string(data, static_cast<size_t>(len)).c_str(), nullptr, 10);
    *version = std::to_string(kvEntry_Revision(e));
    kvEntry_Destroy(e);
    return Status::Ok();
  }

  Status Write(const std::string& key, int64_t value, const std::string& version) override {
    const std::string text = std::to_string(value);
    const uint64_t last = std::strtoull(version.c_str(), nullptr, 10);
    natsStatus s = kvStore_Update(nullptr, c_->kv, key.c_str(), text.data(),
                                  static_cast<int>(text.size()), last);
    if (s == NATS_OK) return Status::Ok();
    const char* err = nats_GetLastError(nullptr);
    if (err != nullptr && std::strstr(err, "wrong last sequence") != nullptr) {
      return AbortedError("jetstream-kv: wrong last sequence");
    }
    return NatsError("kvStore_Update", s);
  }

 private:
  std::unique_ptr<Conn> c_;
};

class JetStreamKvSystem : public StoreSystem {
 public:
  ~JetStreamKvSystem() override { Stop().IgnoreError(); }

  std::string name() const override { return "jetstream-kv"; }
  std::string durability() const override { return "interval-2m"; }
  std::string note() const override {
    return "nats.c kvStore_Get + kvStore_Update(last revision), file storage, R1";
  }

  Status Start(const StoreWorkload& w, const std::vector<std::string>& keys) override {
    testing::NatsServerOptions options;
    options.base_dir = w.dir;
    CONVERGE_ASSIGN_OR_RETURN(server_, testing::StartNatsServer(options));
    url_ = server_->Url("nats");
    Conn c;
    CONVERGE_RETURN_IF_ERROR(Connect(url_, /*create_bucket=*/true, &c));
    for (const std::string& key : keys) {
      natsStatus s = kvStore_PutString(nullptr, c.kv, key.c_str(), "0");
      if (s != NATS_OK) return NatsError("kvStore_PutString", s);
    }
    return Status::Ok();
  }

  Result<std::unique_ptr<StoreSession>> NewSession() override {
    auto c = std::make_unique<Conn>();
    CONVERGE_RETURN_IF_ERROR(Connect(url_, /*create_bucket=*/false, c.get()));
    return std::unique_ptr<StoreSession>(std::make_unique<KvSession>(std::move(c)));
  }

  Status Stop() override {
    if (server_ == nullptr) return Status::Ok();
    Status s = server_->Shutdown();
    server_.reset();
    return s;
  }

 private:
  std::unique_ptr<testing::ManagedServer> server_;
  std::string url_;
};

}  // namespace

std::unique_ptr<StoreSystem> MakeJetStreamKvStoreSystem() {
  return std::make_unique<JetStreamKvSystem>();
}

}  // namespace converge::bench
