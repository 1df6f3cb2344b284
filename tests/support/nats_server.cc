#include "support/nats_server.h"

#include <nats/nats.h>
#include <signal.h>

#include <chrono>
#include <fstream>
#include <thread>

#pragma GCC diagnostic ignored "-Wrestrict"  // GCC bug 105329 on "literal" + std::string

namespace converge::testing {
namespace {

constexpr int kStartAttempts = 3;
constexpr int64_t kPollMs = 50;

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// One request-reply check of JetStream through `url`: OK once it answers API requests.
Status AskJetStream(const std::string& url, const std::string& stream, std::string* leader) {
  natsOptions* opts = nullptr;
  natsConnection* nc = nullptr;
  jsCtx* js = nullptr;
  natsStatus s = natsOptions_Create(&opts);
  if (s == NATS_OK) s = natsOptions_SetURL(opts, url.c_str());
  if (s == NATS_OK) s = natsOptions_SetTimeout(opts, 2000);
  if (s == NATS_OK) s = natsOptions_SetMaxReconnect(opts, 0);
  if (s == NATS_OK) s = natsConnection_Connect(&nc, opts);
  natsOptions_Destroy(opts);
  if (s == NATS_OK) {
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = 2000;
    s = natsConnection_JetStream(&js, nc, &jo);
  }
  jsErrCode jerr = static_cast<jsErrCode>(0);
  if (s == NATS_OK && stream.empty()) {
    jsAccountInfo* ai = nullptr;
    s = js_GetAccountInfo(&ai, js, nullptr, &jerr);
    if (ai != nullptr) jsAccountInfo_Destroy(ai);
  } else if (s == NATS_OK) {
    jsStreamInfo* si = nullptr;
    s = js_GetStreamInfo(&si, js, stream.c_str(), nullptr, &jerr);
    if (s == NATS_OK) {
      if (si->Cluster != nullptr && si->Cluster->Leader != nullptr) {
        *leader = si->Cluster->Leader;
      } else {
        s = NATS_ERR;
      }
    }
    if (si != nullptr) jsStreamInfo_Destroy(si);
  }
  if (js != nullptr) jsCtx_Destroy(js);
  if (nc != nullptr) natsConnection_Destroy(nc);
  if (s != NATS_OK) {
    return UnavailableError("JetStream via " + url + ": " + natsStatus_GetText(s) + " (" +
                            std::to_string(static_cast<int>(jerr)) + ")");
  }
  return Status::Ok();
}

// Whether a stream with `replicas` replicas can be created through `url` right now (a probe
// stream, deleted again): a cluster answers API requests before its meta group knows every
// peer, and until then such a create fails ("insufficient resources").
Status ProbeReplicatedStream(const std::string& url, int replicas) {
  natsOptions* opts = nullptr;
  natsConnection* nc = nullptr;
  jsCtx* js = nullptr;
  natsStatus s = natsOptions_Create(&opts);
  if (s == NATS_OK) s = natsOptions_SetURL(opts, url.c_str());
  if (s == NATS_OK) s = natsOptions_SetTimeout(opts, 2000);
  if (s == NATS_OK) s = natsOptions_SetMaxReconnect(opts, 0);
  if (s == NATS_OK) s = natsConnection_Connect(&nc, opts);
  natsOptions_Destroy(opts);
  if (s == NATS_OK) s = natsConnection_JetStream(&js, nc, nullptr);
  jsErrCode jerr = static_cast<jsErrCode>(0);
  if (s == NATS_OK) {
    jsStreamConfig cfg;
    jsStreamConfig_Init(&cfg);
    cfg.Name = "converge-fixture-probe";
    const char* subjects[] = {"converge-fixture-probe"};
    cfg.Subjects = subjects;
    cfg.SubjectsLen = 1;
    cfg.Storage = js_MemoryStorage;
    cfg.Replicas = replicas;
    jsStreamInfo* si = nullptr;
    s = js_AddStream(&si, js, &cfg, nullptr, &jerr);
    if (si != nullptr) jsStreamInfo_Destroy(si);
    if (s == NATS_OK) js_DeleteStream(js, "converge-fixture-probe", nullptr, nullptr);
  }
  if (js != nullptr) jsCtx_Destroy(js);
  if (nc != nullptr) natsConnection_Destroy(nc);
  if (s != NATS_OK) {
    return UnavailableError("replicated stream via " + url + ": " + natsStatus_GetText(s) + " (" +
                            std::to_string(static_cast<int>(jerr)) + ")");
  }
  return Status::Ok();
}

}  // namespace

Result<std::unique_ptr<NatsCluster>> NatsCluster::Start(const NatsClusterOptions& options) {
  if (options.nodes < 1) return InvalidArgumentError("NatsCluster: nodes must be >= 1");
  Status last = InternalError("nats cluster: not started");
  for (int attempt = 0; attempt < kStartAttempts; ++attempt) {
    std::unique_ptr<NatsCluster> c(new NatsCluster());
    c->options_ = options;
    CONVERGE_ASSIGN_OR_RETURN(c->dir_, TempDir::Create("converge-nats-", options.base_dir));
    c->nodes_.resize(static_cast<size_t>(options.nodes));
    for (Node& n : c->nodes_) {
      CONVERGE_ASSIGN_OR_RETURN(n.client_port, FreeLoopbackPort());
      CONVERGE_ASSIGN_OR_RETURN(n.cluster_port, FreeLoopbackPort());
    }
    for (int i = 0; i < options.nodes; ++i) {
      Node& n = c->nodes_[static_cast<size_t>(i)];
      n.config_path = c->dir_.Sub(NodeName(i) + ".conf");
      std::ofstream conf(n.config_path);
      conf << "server_name: " << NodeName(i) << "\n";
      conf << "listen: 127.0.0.1:" << n.client_port << "\n";
      conf << "jetstream { store_dir: \"" << c->dir_.Sub(NodeName(i)) << "\" }\n";
      if (options.nodes > 1) {
        conf << "cluster {\n  name: converge-test\n  listen: 127.0.0.1:" << n.cluster_port
             << "\n  routes: [\n";
        for (int k = 0; k < options.nodes; ++k) {
          if (k == i) continue;
          conf << "    nats-route://127.0.0.1:" << c->nodes_[static_cast<size_t>(k)].cluster_port
               << "\n";
        }
        conf << "  ]\n}\n";
      }
      if (!conf) return InternalError("writing " + n.config_path);
    }
    Status started = Status::Ok();
    for (int i = 0; i < options.nodes && started.ok(); ++i) started = c->StartNode(i);
    if (started.ok()) started = c->WaitJetStreamReady(options.ready_timeout_ms);
    if (started.ok()) return c;
    last = started;
    if (last.code() != StatusCode::kUnavailable) return last;
  }
  return last;
}

NatsCluster::~NatsCluster() {
  for (Node& n : nodes_) {
    if (n.process) n.process->Stop().IgnoreError();
  }
  dir_.Remove().IgnoreError();
}

Status NatsCluster::StartNode(int i) {
  Node& n = nodes_[static_cast<size_t>(i)];
  ServerSpec spec;
  spec.name = "nats-server " + NodeName(i);
  spec.port = n.client_port;
  spec.log_path = dir_.Sub(NodeName(i) + ".log");
  spec.argv = {options_.executable, "-c", n.config_path};
  CONVERGE_ASSIGN_OR_RETURN(n.process, ServerProcess::Start(std::move(spec)));
  return Status::Ok();
}

std::string NatsCluster::Url(int i) const {
  return "nats://127.0.0.1:" + std::to_string(nodes_[static_cast<size_t>(i)].client_port);
}

std::vector<std::string> NatsCluster::Urls() const {
  std::vector<std::string> out;
  for (int i = 0; i < size(); ++i) out.push_back(Url(i));
  return out;
}

int NatsCluster::NodeIndex(const std::string& name) const {
  for (int i = 0; i < size(); ++i) {
    if (NodeName(i) == name) return i;
  }
  return -1;
}

bool NatsCluster::running(int i) const {
  const Node& n = nodes_[static_cast<size_t>(i)];
  return n.process != nullptr && n.process->running();
}

pid_t NatsCluster::pid(int i) const {
  return running(i) ? nodes_[static_cast<size_t>(i)].process->pid() : -1;
}

Status NatsCluster::Kill(int i) {
  Node& n = nodes_[static_cast<size_t>(i)];
  if (!running(i)) return FailedPreconditionError("node " + NodeName(i) + " is not running");
  if (::kill(n.process->pid(), SIGKILL) != 0) return InternalError("kill " + NodeName(i));
  // Stop reaps the killed process (its SIGTERM finds it gone).
  Status s = n.process->Stop();
  n.process.reset();
  return s;
}

Status NatsCluster::Restart(int i) {
  if (running(i)) return FailedPreconditionError("node " + NodeName(i) + " is running");
  return StartNode(i);
}

Status NatsCluster::WaitJetStreamReady(int64_t timeout_ms, int via) const {
  const int64_t deadline = NowMs() + timeout_ms;
  Status last = UnavailableError("no node running");
  while (true) {
    bool all = true;
    for (int i = 0; i < size(); ++i) {
      if ((via >= 0 && i != via) || !running(i)) continue;
      std::string unused;
      last = AskJetStream(Url(i), "", &unused);
      if (!last.ok()) all = false;
    }
    // A cluster with every node up: also until a stream replicated on all of them can be
    // created (the meta group knows every peer).
    if (all && last.ok() && size() > 1 && via < 0) {
      bool every = true;
      for (int i = 0; i < size(); ++i) every = every && running(i);
      if (every) {
        for (int i = 0; i < size(); ++i) {
          if (running(i)) {
            last = ProbeReplicatedStream(Url(i), size());
            break;
          }
        }
        all = last.ok();
      }
    }
    if (all && last.ok()) return Status::Ok();
    if (NowMs() > deadline) {
      return DeadlineExceededError("JetStream not ready within " + std::to_string(timeout_ms) +
                                   " ms: " + std::string(last.message()));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(kPollMs));
  }
}

Result<std::string> NatsCluster::StreamLeader(const std::string& stream) const {
  Status last = UnavailableError("no node running");
  for (int i = 0; i < size(); ++i) {
    if (!running(i)) continue;
    std::string leader;
    last = AskJetStream(Url(i), stream, &leader);
    if (last.ok()) return leader;
  }
  return last;
}

}  // namespace converge::testing
