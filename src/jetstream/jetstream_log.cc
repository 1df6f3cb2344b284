// JetStreamLog: converge::Log over NATS JetStream (see jetstream_log.h for the mapping and
// docs/formats/jetstream.md for the names and bytes).
#include "jetstream/jetstream_log.h"

#include <nats/nats.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <limits>
#include <list>
#include <map>
#include <mutex>
#include <optional>
#include <unordered_map>

#include <boost/json.hpp>

#include "core/coding.h"
#include "core/event_internal.h"

namespace converge::jetstream {
namespace {

constexpr char kPayloadVersion = 1;
// Bytes the payload adds to a record's id, key and value (version, timestamp, two lengths).
constexpr size_t kPayloadOverhead = 1 + 8 + 2 * internal::kMaxVarint32Bytes;
// Direct gets sent at once by one Read (one round trip for all of them). 1024 rather than
// 256 read about a fifth faster through the sidecar (consume_ack, 100,000 events).
constexpr size_t kReadPipelineMax = 1024;
// Reads of at least this many records go through a pull consumer kept for the reader
// (one request returns the batch); smaller ones (a long poll's next record) use direct gets.
constexpr size_t kCursorMinRecords = 32;
// Bound on those consumers per Log (least recently used ones are deleted first).
constexpr size_t kMaxCursors = 64;
// The server deletes a consumer nobody fetched from for this long.
constexpr int64_t kCursorInactiveNanos = 60'000'000'000;
constexpr uint32_t kMaxIdBytes = 0xFFFF;  // as the embedded log (log/record_format.h)
constexpr uint32_t kMaxKeyBytes = 0xFFFF;
constexpr int64_t kNanosPerMilli = 1'000'000;

std::string ToStr(uint64_t v) { return std::to_string(v); }

Status NatsError(const std::string& what, natsStatus s,
                 jsErrCode jerr = static_cast<jsErrCode>(0)) {
  std::string msg = "jetstream: " + what + ": " + natsStatus_GetText(s);
  if (jerr != 0) msg += " (JetStream error " + std::to_string(static_cast<int>(jerr)) + ")";
  return UnavailableError(msg);
}

int64_t MillisToNanos(int64_t ms) {
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max() / 2;
  if (ms > kMax / kNanosPerMilli) return kMax;
  return ms * kNanosPerMilli;
}

bool IsPlainChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-';
}

// The topic's options as held in each partition stream's description: space-separated
// key=value pairs (nats.c sends the description without JSON escaping, so no quotes here;
// topic names have none).
std::string DescribeOptions(const std::string& topic, const TopicOptions& o) {
  std::string d = "converge-topic format=1 topic=" + topic;
  d += " partitions=" + ToStr(o.partitions);
  d += " durability=" + std::string(DurabilityName(o.durability));
  d += " sync_interval_ms=" + ToStr(static_cast<uint64_t>(o.sync_interval_ms));
  d += " segment_max_bytes=" + ToStr(o.segment_max_bytes);
  d += " retention_max_bytes=" + ToStr(o.retention_max_bytes);
  d += " retention_max_age_ms=" + ToStr(static_cast<uint64_t>(o.retention_max_age_ms));
  d += " dedup_window_ms=" + ToStr(static_cast<uint64_t>(o.dedup_window_ms));
  d += " dedup_max_ids=" + ToStr(o.dedup_max_ids);
  d += " max_record_bytes=" + ToStr(o.max_record_bytes);
  d += " internal=" + std::string(o.internal ? "1" : "0");
  return d;
}

Result<TopicOptions> ParseOptions(const std::string& topic, const char* description) {
  auto bad = [&topic](const std::string& why) {
    return DataLossError("jetstream: topic '" + topic + "': stream description unreadable (" + why +
                         ")");
  };
  if (description == nullptr) return bad("none");
  std::map<std::string, std::string> kv;
  std::string_view rest = description;
  if (rest.substr(0, 15) != "converge-topic ") return bad("not a converge topic");
  rest.remove_prefix(15);
  while (!rest.empty()) {
    const size_t sp = rest.find(' ');
    const std::string_view item = rest.substr(0, sp);
    const size_t eq = item.find('=');
    if (eq == std::string_view::npos) return bad("no '=' in " + std::string(item));
    kv[std::string(item.substr(0, eq))] = std::string(item.substr(eq + 1));
    if (sp == std::string_view::npos) break;
    rest.remove_prefix(sp + 1);
  }
  auto num = [&kv](const char* key, uint64_t* out) {
    auto it = kv.find(key);
    if (it == kv.end() || it->second.empty()) return false;
    char* end = nullptr;
    *out = std::strtoull(it->second.c_str(), &end, 10);
    return *end == '\0';
  };
  TopicOptions o;
  uint64_t v = 0;
  if (!num("format", &v) || v != 1) return bad("unknown format");
  if (kv["topic"] != topic) return bad("names topic '" + kv["topic"] + "'");
  if (!num("partitions", &v)) return bad("partitions");
  o.partitions = static_cast<uint32_t>(v);
  Result<Durability> d = ParseDurability(kv["durability"]);
  if (!d.ok()) return bad("durability");
  o.durability = *d;
  if (!num("sync_interval_ms", &v)) return bad("sync_interval_ms");
  o.sync_interval_ms = static_cast<int64_t>(v);
  if (!num("segment_max_bytes", &o.segment_max_bytes)) return bad("segment_max_bytes");
  if (!num("retention_max_bytes", &o.retention_max_bytes)) return bad("retention_max_bytes");
  if (!num("retention_max_age_ms", &v)) return bad("retention_max_age_ms");
  o.retention_max_age_ms = static_cast<int64_t>(v);
  if (!num("dedup_window_ms", &v)) return bad("dedup_window_ms");
  o.dedup_window_ms = static_cast<int64_t>(v);
  if (!num("dedup_max_ids", &o.dedup_max_ids)) return bad("dedup_max_ids");
  if (!num("max_record_bytes", &v)) return bad("max_record_bytes");
  o.max_record_bytes = static_cast<uint32_t>(v);
  if (!num("internal", &v)) return bad("internal");
  o.internal = v != 0;
  if (!ValidateTopicOptions(o).ok()) return bad("invalid options");
  return o;
}

// What a topic on JetStream promises, whatever durability it was created with (kept in its
// description): JetStream acknowledges before any fsync and nats-server syncs its files every
// 2 minutes by default, so DescribeTopic says interval / 120000 ms rather than overstate it.
constexpr int64_t kNatsSyncIntervalMs = 120'000;
TopicOptions Effective(TopicOptions requested) {
  requested.durability = Durability::kInterval;
  requested.sync_interval_ms = kNatsSyncIntervalMs;
  return requested;
}

// How long a topic's options read from the server are used without asking again: a topic
// deleted (or re-created) through another instance is seen here within this time.
constexpr int64_t kMetaCacheNanos = 5'000'000'000;

struct TopicMeta {
  std::string name;
  std::string escaped;
  TopicOptions options;
  int64_t fetched_nanos = 0;  // monotonic
};

// One Append(Async) call waiting for its PubAcks.
struct PendingBatch {
  std::shared_ptr<const TopicMeta> meta;  // the topic's name and escaped name (not copied)
  std::vector<AppendResult> results;
  std::atomic<size_t> remaining{0};
  std::mutex mu;
  Status error;  // the first failure
  Log::AppendDone done;
};

struct PendingPublish {
  std::shared_ptr<PendingBatch> batch;
  size_t index = 0;
  uint32_t partition = 0;
};

class WatchHandle;

class JetStreamLog final : public Log {
 public:
  JetStreamLog(Env& env, JetStreamLogOptions options) : env_(env), options_(std::move(options)) {}
  ~JetStreamLog() override;

  Status Connect();

  Status CreateTopic(const std::string& topic, const TopicOptions& options) override;
  Status DeleteTopic(const std::string& topic) override;
  std::vector<std::string> ListTopics() override;
  Result<TopicInfo> DescribeTopic(const std::string& topic) override;
  Result<std::vector<AppendResult>> Append(const std::string& topic,
                                           std::span<const RecordView> records) override;
  void AppendAsync(const std::string& topic, std::span<const RecordView> records,
                   AppendDone done) override;
  Result<std::vector<AppendResult>> AppendToPartition(const std::string& topic, uint32_t partition,
                                                      std::span<const RecordView> records) override;
  Result<ReadBatch> Read(const std::string& topic, uint32_t partition, uint64_t offset,
                         size_t max_records, size_t max_bytes) override;
  Result<uint64_t> OffsetForTime(const std::string& topic, uint32_t partition,
                                 int64_t timestamp_micros) override;
  Result<std::unique_ptr<Watch>> WatchAppends(const std::string& topic, AppendCallback fn) override;
  Status EnforceRetention() override { return Status::Ok(); }
  Status Sync() override { return Status::Ok(); }
  Status WriteHealth() override;

  void RemoveWatch(const std::string& escaped, uint64_t id);

 private:
  struct StreamState {
    uint64_t first_seq = 0;
    uint64_t last_seq = 0;
    uint64_t msgs = 0;
    uint64_t bytes = 0;
    uint64_t replicas = 1;  // the stream's configured replicas
    std::string leader;     // the server leading a replicated stream (empty otherwise)
  };

  jsOptions RequestOptions() const;
  Result<std::shared_ptr<const TopicMeta>> GetMeta(const std::string& topic);
  // The stream's state as its leader holds it: Unavailable while the stream has no leader
  // (see the definition). `any_member`: an answer from a member without a leader will do
  // (only whether the stream exists is wanted).
  Result<StreamState> GetStreamState(const std::string& stream, const std::string& topic,
                                     bool any_member = false);
  // The stream info request again, its replies collected until the leader's (GetStreamState
  // got one from a member without a leader); Unavailable if none names a leader in time.
  Result<StreamState> LeaderStreamState(const std::string& stream, const std::string& topic);
  Status AddStream(const std::string& topic, const std::string& escaped, const TopicOptions& o,
                   uint32_t partition);
  // The record at `seq` from the stream leader; NotFound if it is not there.
  Result<natsMsg*> GetFromLeader(const std::string& stream, uint64_t seq);
  Result<uint64_t> NextPresentOffset(const std::string& stream, const std::string& topic,
                                     uint32_t partition, uint64_t from, uint64_t end_seq);
  // The batch is validated; `partition` < 0 picks partitions by key.
  void Publish(std::shared_ptr<const TopicMeta> meta, std::span<const RecordView> records,
               int64_t partition, AppendDone done);
  Result<std::vector<AppendResult>> AppendSync(const std::string& topic,
                                               std::span<const RecordView> records,
                                               int64_t partition);
  // `leader_only`: the gets go to the stream leader (STREAM.MSG.GET), not to any replica
  // (direct gets); see Read.
  Status ReadByGets(const std::string& stream, uint64_t from, size_t count, size_t max_bytes,
                    bool leader_only, std::vector<std::string>* storage);
  // Reads [from, ...) through a pull consumer positioned there (reused by a reader that goes
  // on where the last batch ended). False (and *storage untouched) when it could not: the
  // caller then reads by gets. Every payload is checked to be the next stream sequence.
  // `leader` non-empty: only a consumer placed on that server (the stream's leader) will do.
  bool FetchSequential(const std::string& stream, uint32_t partition, const std::string& topic,
                       uint64_t from, size_t count, size_t max_bytes, const std::string& leader,
                       std::vector<std::string>* storage);
  struct Cursor {
    std::string stream;
    uint64_t next_seq = 0;
    natsSubscription* sub = nullptr;
    std::string server;  // where its consumer runs, when that was asked (replicated streams)
  };
  void CloseCursor(Cursor& c);
  void OnAck(natsMsg* msg, jsPubAck* pa, jsPubAckErr* pae);
  void FinishOne(const std::shared_ptr<PendingBatch>& batch);
  void NotifyLocal(const std::string& escaped, uint32_t partition, uint64_t end_offset);
  void OnWatchMessage(natsMsg* msg);

  static void AckHandler(jsCtx*, natsMsg* msg, jsPubAck* pa, jsPubAckErr* pae, void* closure) {
    static_cast<JetStreamLog*>(closure)->OnAck(msg, pa, pae);
  }
  // The server's max_payload, cached: natsConnection_GetMaxPayload takes the connection's
  // lock, which the threads publishing and taking PubAcks contend for on every record.
  static void ReconnectedHandler(natsConnection* nc, void* closure) {
    static_cast<JetStreamLog*>(closure)->max_payload_.store(natsConnection_GetMaxPayload(nc),
                                                            std::memory_order_relaxed);
  }
  static void WatchHandler(natsConnection*, natsSubscription*, natsMsg* msg, void* closure) {
    static_cast<JetStreamLog*>(closure)->OnWatchMessage(msg);
    natsMsg_Destroy(msg);
  }

  Env& env_;
  const JetStreamLogOptions options_;
  std::string instance_;  // tells this Log's own append notices from other instances'
  std::string watch_prefix_;
  natsConnection* nc_ = nullptr;
  natsConnection* notice_nc_ = nullptr;  // append notices to and from other instances
  jsCtx* js_ = nullptr;
  natsSubscription* watch_sub_ = nullptr;
  std::atomic<uint64_t> round_robin_{0};
  std::atomic<int64_t> max_payload_{0};  // of the server connected to (set again on reconnect)

  std::mutex meta_mu_;
  std::unordered_map<std::string, std::shared_ptr<const TopicMeta>> meta_;

  std::mutex pending_mu_;
  std::unordered_map<natsMsg*, PendingPublish> pending_;

  std::mutex cursors_mu_;
  std::list<Cursor> cursors_;  // most recently used first

  // Held while a watcher runs, so a destroyed handle is never called afterwards.
  std::mutex watch_mu_;
  uint64_t next_watch_id_ = 1;
  std::unordered_map<std::string, std::map<uint64_t, AppendCallback>> watchers_;
};

class WatchHandle final : public Log::Watch {
 public:
  WatchHandle(JetStreamLog* log, std::string escaped, uint64_t id)
      : log_(log), escaped_(std::move(escaped)), id_(id) {}
  ~WatchHandle() override { log_->RemoveWatch(escaped_, id_); }

 private:
  JetStreamLog* log_;
  std::string escaped_;
  uint64_t id_;
};

// ---------------------------------------------------------------------------------------
// Connection

Status JetStreamLog::Connect() {
  // Two connections: publishes and requests on one, written at once; the append notices for
  // other instances (one per acknowledged record) on the other, buffered.
  auto connect = [this](bool send_asap, natsConnection** out) {
    natsOptions* opts = nullptr;
    natsStatus s = natsOptions_Create(&opts);
    std::vector<const char*> urls;
    for (const std::string& u : options_.servers) urls.push_back(u.c_str());
    if (s == NATS_OK) s = natsOptions_SetServers(opts, urls.data(), static_cast<int>(urls.size()));
    if (s == NATS_OK) s = natsOptions_SetTimeout(opts, options_.connect_timeout_ms);
    // Reconnect forever: a cluster member's restart or a leader change must not end the log.
    // While disconnected, publishes are buffered (up to nats.c's reconnect buffer) and fail
    // after ack_timeout_ms without a PubAck.
    if (s == NATS_OK) s = natsOptions_SetMaxReconnect(opts, -1);
    if (s == NATS_OK) s = natsOptions_SetReconnectWait(opts, 100);
    if (s == NATS_OK) s = natsOptions_SetName(opts, "converge serve");
    // Every publish is written at once (a request waits for its PubAck, so batching in the
    // flusher only adds latency). The notice connection instead lets nats.c's flusher gather
    // what was published within about a millisecond into one write: a notice per record,
    // each written at once, cost a send(2) per acknowledged record (a tenth of the sidecar's
    // CPU at one event per request), and a watcher elsewhere loses nothing by waking a
    // millisecond later. No connection gets its own notices back (its watchers were told at
    // the PubAck already).
    if (s == NATS_OK && send_asap) s = natsOptions_SetSendAsap(opts, true);
    if (s == NATS_OK && send_asap) {
      s = natsOptions_SetReconnectedCB(opts, &JetStreamLog::ReconnectedHandler, this);
    }
    if (s == NATS_OK) s = natsOptions_SetNoEcho(opts, true);
    if (s == NATS_OK) s = natsConnection_Connect(out, opts);
    natsOptions_Destroy(opts);
    return s;
  };
  natsStatus s = connect(/*send_asap=*/true, &nc_);
  if (s == NATS_OK) {
    max_payload_.store(natsConnection_GetMaxPayload(nc_), std::memory_order_relaxed);
    s = connect(/*send_asap=*/false, &notice_nc_);
  }
  if (s != NATS_OK) {
    std::string all;
    for (const std::string& u : options_.servers) all += (all.empty() ? "" : ", ") + u;
    return NatsError("connect to " + all, s);
  }
  jsOptions jo;
  jsOptions_Init(&jo);
  jo.Wait = options_.ack_timeout_ms;
  jo.PublishAsync.MaxPending = options_.max_pending_publishes;
  jo.PublishAsync.StallWait = options_.ack_timeout_ms;
  jo.PublishAsync.AckHandler = &JetStreamLog::AckHandler;
  jo.PublishAsync.AckHandlerClosure = this;
  s = natsConnection_JetStream(&js_, nc_, &jo);
  if (s != NATS_OK) return NatsError("JetStream context", s);
  // Is JetStream there at all (an account info request answers only when it is)?
  jsAccountInfo* ai = nullptr;
  jsErrCode jerr = static_cast<jsErrCode>(0);
  jsOptions ro = RequestOptions();
  s = js_GetAccountInfo(&ai, js_, &ro, &jerr);
  if (ai != nullptr) jsAccountInfo_Destroy(ai);
  if (s != NATS_OK) return NatsError("JetStream account info (is JetStream enabled?)", s, jerr);

  char* nuid = nullptr;
  natsInbox_Create(&nuid);
  instance_ = nuid != nullptr ? std::string(nuid) : std::string("x");
  natsInbox_Destroy(nuid);
  watch_prefix_ = options_.stream_prefix + "-appended.";
  const std::string watch_subject = watch_prefix_ + "*";
  s = natsConnection_Subscribe(&watch_sub_, notice_nc_, watch_subject.c_str(),
                               &JetStreamLog::WatchHandler, this);
  if (s != NATS_OK) return NatsError("subscribe " + watch_subject, s);
  return Status::Ok();
}

JetStreamLog::~JetStreamLog() {
  for (Cursor& c : cursors_) CloseCursor(c);
  cursors_.clear();
  if (watch_sub_ != nullptr) {
    natsSubscription_Unsubscribe(watch_sub_);
    natsSubscription_Destroy(watch_sub_);
  }
  if (js_ != nullptr) {
    // Give the publishes in flight their PubAcks (bounded), then fail what is left.
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = options_.ack_timeout_ms;
    js_PublishAsyncComplete(js_, &po);
  }
  if (nc_ != nullptr) natsConnection_Close(nc_);
  if (js_ != nullptr) jsCtx_Destroy(js_);
  if (nc_ != nullptr) natsConnection_Destroy(nc_);
  // After the publishes' connection: a late PubAck still sends its notice here.
  if (notice_nc_ != nullptr) {
    natsConnection_Close(notice_nc_);
    natsConnection_Destroy(notice_nc_);
  }
  std::unordered_map<natsMsg*, PendingPublish> left;
  {
    std::lock_guard<std::mutex> lock(pending_mu_);
    left.swap(pending_);
  }
  for (auto& [msg, p] : left) {
    {
      std::lock_guard<std::mutex> lock(p.batch->mu);
      if (p.batch->error.ok()) {
        p.batch->error = UnavailableError("jetstream: log closed before the PubAck arrived");
      }
    }
    FinishOne(p.batch);
  }
}

jsOptions JetStreamLog::RequestOptions() const {
  jsOptions o;
  jsOptions_Init(&o);
  o.Wait = options_.ack_timeout_ms;
  return o;
}

Status JetStreamLog::WriteHealth() {
  if (natsConnection_Status(nc_) != NATS_CONN_STATUS_CONNECTED) {
    return UnavailableError("jetstream: not connected to a NATS server (reconnecting)");
  }
  jsAccountInfo* ai = nullptr;
  jsErrCode jerr = static_cast<jsErrCode>(0);
  jsOptions ro = RequestOptions();
  natsStatus s = js_GetAccountInfo(&ai, js_, &ro, &jerr);
  if (ai != nullptr) jsAccountInfo_Destroy(ai);
  if (s != NATS_OK) return NatsError("JetStream does not answer", s, jerr);
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------
// Topics

Result<JetStreamLog::StreamState> JetStreamLog::GetStreamState(const std::string& stream,
                                                               const std::string& topic,
                                                               bool any_member) {
  jsStreamInfo* info = nullptr;
  jsErrCode jerr = static_cast<jsErrCode>(0);
  jsOptions ro = RequestOptions();
  natsStatus s = js_GetStreamInfo(&info, js_, stream.c_str(), &ro, &jerr);
  if (s == NATS_NOT_FOUND || jerr == JSStreamNotFoundErr) {
    return NotFoundError("topic '" + topic + "' does not exist (no stream " + stream + ")");
  }
  if (s != NATS_OK) return NatsError("stream info " + stream, s, jerr);
  // While a replicated stream has no leader (an election after its leader died, or a member
  // that has not heard from one yet), nats-server 2.9 lets every member that sees no leader
  // answer this request with its own state, and the first answer wins. A member's state can be
  // behind what the leader acknowledged (a node restarted and catching up): its end would hide
  // acknowledged records from readers (and make the audit report them missing), its start
  // could make a reader skip records. Such an answer names no leader: it is not used, the
  // leader's answer is waited for instead (LeaderStreamState).
  const bool leaderless = info->Cluster != nullptr &&
                          (info->Cluster->Leader == nullptr || info->Cluster->Leader[0] == '\0');
  if (leaderless && !any_member) {
    jsStreamInfo_Destroy(info);
    return LeaderStreamState(stream, topic);
  }
  StreamState st;
  st.first_seq = info->State.FirstSeq;
  st.last_seq = info->State.LastSeq;
  st.msgs = info->State.Msgs;
  st.bytes = info->State.Bytes;
  if (info->Config != nullptr && info->Config->Replicas > 0) {
    st.replicas = static_cast<uint64_t>(info->Config->Replicas);
  }
  if (info->Cluster != nullptr && info->Cluster->Leader != nullptr) {
    st.leader = info->Cluster->Leader;
  }
  jsStreamInfo_Destroy(info);
  // An empty stream reports first = last + 1 (or 0 when nothing was ever stored).
  if (st.msgs == 0) st.first_seq = st.last_seq + 1;
  return st;
}

namespace {

// The API reply `data` parsed (nats-server's JetStream API answers in JSON); null if it is not
// a JSON object.
boost::json::object ParseApiReply(const char* data, int len) {
  boost::json::error_code ec;
  boost::json::value v = boost::json::parse(std::string_view(data, static_cast<size_t>(len)), ec);
  if (ec || !v.is_object()) return {};
  return std::move(v.as_object());
}

// `obj[key]` as an unsigned number, nullopt if absent or not one.
std::optional<uint64_t> UnsignedField(const boost::json::object& obj, std::string_view key) {
  const boost::json::value* v = obj.if_contains(key);
  if (v == nullptr) return std::nullopt;
  if (v->is_uint64()) return v->as_uint64();
  if (v->is_int64() && v->as_int64() >= 0) return static_cast<uint64_t>(v->as_int64());
  return std::nullopt;
}

// The JetStream API error code of a reply ({"error":{"code":N,"err_code":N,...}}), 0 if the
// reply is no error.
uint64_t ApiErrorCode(const boost::json::object& reply) {
  const boost::json::value* e = reply.if_contains("error");
  if (e == nullptr) return 0;
  if (!e->is_object()) return 1;
  return UnsignedField(e->as_object(), "err_code").value_or(1);
}

}  // namespace

Result<JetStreamLog::StreamState> JetStreamLog::LeaderStreamState(const std::string& stream,
                                                                  const std::string& topic) {
  // Every member that sees no leader answers, and the leader (if there is one) answers too: the
  // replies are collected on one inbox until one names a leader, or ack_timeout_ms passes.
  char* inbox = nullptr;
  natsInbox_Create(&inbox);
  const std::string reply(inbox != nullptr ? inbox : "");
  natsInbox_Destroy(inbox);
  natsSubscription* sub = nullptr;
  natsStatus s = natsConnection_SubscribeSync(&sub, nc_, reply.c_str());
  if (s != NATS_OK) return NatsError("subscribe for stream info", s);
  const std::string api = "$JS.API.STREAM.INFO." + stream;
  s = natsConnection_PublishRequest(nc_, api.c_str(), reply.c_str(), nullptr, 0);
  std::optional<StreamState> found;
  std::string last_error = "no member of the stream answered";
  const int64_t deadline =
      env_.clock().NowMonotonicNanos() + MillisToNanos(options_.ack_timeout_ms);
  while (s == NATS_OK && !found) {
    const int64_t left_ms = (deadline - env_.clock().NowMonotonicNanos()) / kNanosPerMilli;
    if (left_ms <= 0) break;
    natsMsg* m = nullptr;
    if (natsSubscription_NextMsg(&m, sub, left_ms) != NATS_OK) break;
    const boost::json::object info = ParseApiReply(natsMsg_GetData(m), natsMsg_GetDataLength(m));
    const std::string text(natsMsg_GetData(m), static_cast<size_t>(natsMsg_GetDataLength(m)));
    natsMsg_Destroy(m);
    if (info.empty()) {
      last_error = "an answer that is not a JSON object: " + text.substr(0, 200);
      continue;
    }
    if (const uint64_t code = ApiErrorCode(info); code != 0) {
      if (code == 10059) {  // stream not found
        natsSubscription_Destroy(sub);
        return NotFoundError("topic '" + topic + "' does not exist (no stream " + stream + ")");
      }
      last_error = text.substr(0, 400);
      continue;
    }
    // {"type":...,"config":{...},"created":...,"state":{"messages":N,"bytes":N,"first_seq":N,
    // ...,"last_seq":N,...},"cluster":{"name":...,"leader":"<server>",...}}: "leader" is left
    // out by a member that sees no leader.
    const boost::json::value* cluster = info.if_contains("cluster");
    std::string leader_name;
    if (cluster != nullptr && cluster->is_object()) {
      const boost::json::value* leader = cluster->as_object().if_contains("leader");
      if (leader == nullptr || !leader->is_string() || leader->as_string().empty()) {
        last_error = "only members without a leader answered";
        continue;
      }
      leader_name = leader->as_string();
    }
    const boost::json::value* state = info.if_contains("state");
    if (state == nullptr || !state->is_object()) {
      last_error = "a stream info without a state";
      continue;
    }
    std::optional<uint64_t> msgs = UnsignedField(state->as_object(), "messages");
    std::optional<uint64_t> bytes = UnsignedField(state->as_object(), "bytes");
    std::optional<uint64_t> first = UnsignedField(state->as_object(), "first_seq");
    std::optional<uint64_t> last = UnsignedField(state->as_object(), "last_seq");
    if (!msgs || !bytes || !first || !last) {
      last_error = "a stream info state without its numbers";
      continue;
    }
    StreamState st;
    st.msgs = *msgs;
    st.bytes = *bytes;
    st.first_seq = *first;
    st.last_seq = *last;
    if (const boost::json::value* config = info.if_contains("config");
        config != nullptr && config->is_object()) {
      st.replicas = UnsignedField(config->as_object(), "num_replicas").value_or(1);
    }
    st.leader = std::move(leader_name);
    if (st.msgs == 0) st.first_seq = st.last_seq + 1;
    found = st;
  }
  natsSubscription_Unsubscribe(sub);
  natsSubscription_Destroy(sub);
  if (s != NATS_OK) return NatsError("stream info " + stream, s);
  if (found) return *found;
  return UnavailableError("jetstream: stream " + stream + " of topic '" + topic +
                          "' has no leader right now (an election is under way; the state of a "
                          "replica may be behind what was acknowledged): " +
                          last_error);
}

Result<std::shared_ptr<const TopicMeta>> JetStreamLog::GetMeta(const std::string& topic) {
  {
    std::lock_guard<std::mutex> lock(meta_mu_);
    auto it = meta_.find(topic);
    if (it != meta_.end() &&
        env_.clock().NowMonotonicNanos() - it->second->fetched_nanos < kMetaCacheNanos) {
      return it->second;
    }
  }
  if (!ValidateTopicName(topic, !topic.empty() && topic.front() == '_').ok()) {
    return NotFoundError("topic '" + topic + "' does not exist");
  }
  const std::string stream = StreamName(options_.stream_prefix, topic, 0);
  jsStreamInfo* info = nullptr;
  jsErrCode jerr = static_cast<jsErrCode>(0);
  jsOptions ro = RequestOptions();
  natsStatus s = js_GetStreamInfo(&info, js_, stream.c_str(), &ro, &jerr);
  if (s == NATS_NOT_FOUND || jerr == JSStreamNotFoundErr) {
    return NotFoundError("topic '" + topic + "' does not exist");
  }
  if (s != NATS_OK) return NatsError("stream info " + stream, s, jerr);
  Result<TopicOptions> options = ParseOptions(topic, info->Config->Description);
  jsStreamInfo_Destroy(info);
  if (!options.ok()) return options.status();
  auto meta = std::make_shared<TopicMeta>();
  meta->name = topic;
  meta->escaped = EscapeTopicName(topic);
  meta->options = Effective(*options);
  meta->fetched_nanos = env_.clock().NowMonotonicNanos();
  std::lock_guard<std::mutex> lock(meta_mu_);
  meta_[topic] = meta;
  return std::shared_ptr<const TopicMeta>(meta);
}

Status JetStreamLog::AddStream(const std::string& topic, const std::string& escaped,
                               const TopicOptions& o, uint32_t partition) {
  const std::string name = StreamName(options_.stream_prefix, topic, partition);
  const std::string subject = SubjectName(options_.stream_prefix, topic, partition);
  const std::string description = DescribeOptions(topic, o);
  jsStreamConfig cfg;
  jsStreamConfig_Init(&cfg);
  cfg.Name = name.c_str();
  cfg.Description = description.c_str();
  const char* subjects[] = {subject.c_str()};
  cfg.Subjects = subjects;
  cfg.SubjectsLen = 1;
  cfg.Storage = js_FileStorage;
  cfg.Retention = js_LimitsPolicy;
  cfg.Discard = js_DiscardOld;
  cfg.Replicas = static_cast<int64_t>(options_.replicas);
  cfg.MaxBytes = o.retention_max_bytes > 0 ? static_cast<int64_t>(o.retention_max_bytes) : -1;
  // Age retention never drops a record younger than the dedup window (as in the embedded
  // log); JetStream also refuses a duplicate window longer than max age.
  if (o.retention_max_age_ms > 0) {
    cfg.MaxAge = MillisToNanos(std::max(o.retention_max_age_ms, o.dedup_window_ms));
  }
  // 0 would mean JetStream's default (2 minutes); with dedup off no Nats-Msg-Id is sent.
  cfg.Duplicates = MillisToNanos(std::max<int64_t>(o.dedup_window_ms, 100));
  cfg.MaxMsgSize = static_cast<int32_t>(std::min<uint64_t>(o.max_record_bytes + kPayloadOverhead,
                                                           std::numeric_limits<int32_t>::max()));
  cfg.AllowDirect = true;
  jsStreamInfo* info = nullptr;
  jsErrCode jerr = static_cast<jsErrCode>(0);
  jsOptions ro = RequestOptions();
  natsStatus s = js_AddStream(&info, js_, &cfg, &ro, &jerr);
  if (info != nullptr) jsStreamInfo_Destroy(info);
  if (jerr == JSStreamNameExistErr) {
    return AlreadyExistsError("topic '" + topic + "' already exists");
  }
  if (s != NATS_OK) return NatsError("create stream " + name, s, jerr);
  (void)escaped;
  return Status::Ok();
}

Status JetStreamLog::CreateTopic(const std::string& topic, const TopicOptions& options) {
  CONVERGE_RETURN_IF_ERROR(ValidateTopicName(topic, options.internal));
  CONVERGE_RETURN_IF_ERROR(ValidateTopicOptions(options));
  const std::string escaped = EscapeTopicName(topic);
  const std::string first = StreamName(options_.stream_prefix, topic, 0);
  Result<StreamState> existing = GetStreamState(first, topic, /*any_member=*/true);
  if (existing.ok()) return AlreadyExistsError("topic '" + topic + "' already exists");
  if (existing.status().code() != StatusCode::kNotFound) return existing.status();
  // Partitions 1..N-1 first, partition 0 last: the topic exists once its stream 0 does. A
  // stream of a partition left by an unfinished create or delete is removed first, so a new
  // topic never starts with an old topic's records.
  for (uint32_t p = options.partitions; p-- > 1;) {
    const std::string name = StreamName(options_.stream_prefix, topic, p);
    jsErrCode jerr = static_cast<jsErrCode>(0);
    jsOptions ro = RequestOptions();
    natsStatus s = js_DeleteStream(js_, name.c_str(), &ro, &jerr);
    if (s != NATS_OK && s != NATS_NOT_FOUND && jerr != JSStreamNotFoundErr) {
      return NatsError("remove leftover stream " + name, s, jerr);
    }
    CONVERGE_RETURN_IF_ERROR(AddStream(topic, escaped, options, p));
  }
  CONVERGE_RETURN_IF_ERROR(AddStream(topic, escaped, options, 0));
  auto meta = std::make_shared<TopicMeta>();
  meta->name = topic;
  meta->escaped = escaped;
  meta->options = Effective(options);
  meta->fetched_nanos = env_.clock().NowMonotonicNanos();
  std::lock_guard<std::mutex> lock(meta_mu_);
  meta_[topic] = meta;
  return Status::Ok();
}

Status JetStreamLog::DeleteTopic(const std::string& topic) {
  CONVERGE_ASSIGN_OR_RETURN(std::shared_ptr<const TopicMeta> meta, GetMeta(topic));
  {
    std::lock_guard<std::mutex> lock(meta_mu_);
    meta_.erase(topic);
  }
  // Partition 0 first: from then on the topic does not exist for any instance.
  for (uint32_t p = 0; p < meta->options.partitions; ++p) {
    const std::string name = StreamName(options_.stream_prefix, topic, p);
    jsErrCode jerr = static_cast<jsErrCode>(0);
    jsOptions ro = RequestOptions();
    natsStatus s = js_DeleteStream(js_, name.c_str(), &ro, &jerr);
    if (s == NATS_NOT_FOUND || jerr == JSStreamNotFoundErr) {
      if (p == 0) return NotFoundError("topic '" + topic + "' does not exist");
      continue;
    }
    if (s != NATS_OK) return NatsError("delete stream " + name, s, jerr);
  }
  return Status::Ok();
}

std::vector<std::string> JetStreamLog::ListTopics() {
  std::vector<std::string> topics;
  jsStreamNamesList* list = nullptr;
  jsErrCode jerr = static_cast<jsErrCode>(0);
  jsOptions ro = RequestOptions();
  if (js_StreamNames(&list, js_, &ro, &jerr) != NATS_OK || list == nullptr) return topics;
  const std::string head = options_.stream_prefix + "_";
  for (int i = 0; i < list->Count; ++i) {
    std::string_view name = list->List[i];
    if (name.size() <= head.size() + 2 || name.substr(0, head.size()) != head) continue;
    if (name.substr(name.size() - 2) != "_0") continue;
    std::string_view escaped = name.substr(head.size(), name.size() - head.size() - 2);
    // Unescape: "_XX" is the byte 0xXX; anything else is itself.
    std::string topic;
    bool ok = true;
    for (size_t k = 0; k < escaped.size() && ok; ++k) {
      if (escaped[k] != '_') {
        topic.push_back(escaped[k]);
        continue;
      }
      if (k + 2 >= escaped.size()) {
        ok = false;
        break;
      }
      const std::string hex(escaped.substr(k + 1, 2));
      char* end = nullptr;
      const long c = std::strtol(hex.c_str(), &end, 16);
      if (end != hex.c_str() + 2) ok = false;
      topic.push_back(static_cast<char>(c));
      k += 2;
    }
    if (ok && EscapeTopicName(topic) == escaped) topics.push_back(std::move(topic));
  }
  jsStreamNamesList_Destroy(list);
  std::sort(topics.begin(), topics.end());
  return topics;
}

Result<TopicInfo> JetStreamLog::DescribeTopic(const std::string& topic) {
  CONVERGE_ASSIGN_OR_RETURN(std::shared_ptr<const TopicMeta> meta, GetMeta(topic));
  TopicInfo info;
  info.name = topic;
  info.options = meta->options;
  for (uint32_t p = 0; p < meta->options.partitions; ++p) {
    CONVERGE_ASSIGN_OR_RETURN(StreamState st,
                              GetStreamState(StreamName(options_.stream_prefix, topic, p), topic));
    PartitionInfo pi;
    pi.partition = p;
    pi.start_offset = st.first_seq - 1;
    pi.end_offset = st.last_seq;
    pi.size_bytes = st.bytes;
    info.partitions.push_back(pi);
  }
  return info;
}

// ---------------------------------------------------------------------------------------
// Appends

Result<std::vector<AppendResult>> JetStreamLog::Append(const std::string& topic,
                                                       std::span<const RecordView> records) {
  return AppendSync(topic, records, -1);
}

Result<std::vector<AppendResult>> JetStreamLog::AppendToPartition(
    const std::string& topic, uint32_t partition, std::span<const RecordView> records) {
  return AppendSync(topic, records, partition);
}

Result<std::vector<AppendResult>> JetStreamLog::AppendSync(const std::string& topic,
                                                           std::span<const RecordView> records,
                                                           int64_t partition) {
  CONVERGE_ASSIGN_OR_RETURN(std::shared_ptr<const TopicMeta> meta, GetMeta(topic));
  std::mutex mu;
  std::condition_variable cv;
  std::optional<Result<std::vector<AppendResult>>> out;
  Publish(meta, records, partition, [&](Result<std::vector<AppendResult>> r) {
    std::lock_guard<std::mutex> lock(mu);
    out.emplace(std::move(r));
    cv.notify_all();
  });
  std::unique_lock<std::mutex> lock(mu);
  cv.wait(lock, [&] { return out.has_value(); });
  return std::move(*out);
}

void JetStreamLog::AppendAsync(const std::string& topic, std::span<const RecordView> records,
                               AppendDone done) {
  Result<std::shared_ptr<const TopicMeta>> meta = GetMeta(topic);
  if (!meta.ok()) {
    done(meta.status());
    return;
  }
  Publish(*meta, records, -1, std::move(done));
}

void JetStreamLog::Publish(std::shared_ptr<const TopicMeta> meta,
                           std::span<const RecordView> records, int64_t partition,
                           AppendDone done) {
  const TopicOptions& o = meta->options;
  if (partition >= static_cast<int64_t>(o.partitions)) {
    done(InvalidArgumentError("topic '" + meta->name + "' has no partition " +
                              ToStr(static_cast<uint64_t>(partition))));
    return;
  }
  const uint64_t max_payload = static_cast<uint64_t>(max_payload_.load(std::memory_order_relaxed));
  // Validate the whole batch before publishing any of it.
  for (size_t i = 0; i < records.size(); ++i) {
    const RecordView& r = records[i];
    if (r.id.size() > kMaxIdBytes || r.key.size() > kMaxKeyBytes) {
      done(InvalidArgumentError("record " + ToStr(i) + ": id and key may have at most " +
                                ToStr(kMaxIdBytes) + " bytes each"));
      return;
    }
    const uint64_t body = r.id.size() + r.key.size() + r.value.size();
    if (body > o.max_record_bytes) {
      done(InvalidArgumentError("record " + ToStr(i) + ": " + ToStr(body) +
                                " bytes of id, key and value exceed max_record_bytes (" +
                                ToStr(o.max_record_bytes) + ") of topic '" + meta->name + "'"));
      return;
    }
    if (max_payload > 0 && body + kPayloadOverhead > max_payload) {
      done(InvalidArgumentError("record " + ToStr(i) + ": " + ToStr(body) +
                                " bytes exceed the NATS server's max_payload (" +
                                ToStr(max_payload) + ")"));
      return;
    }
    if (r.timestamp_micros < 0) {
      done(InvalidArgumentError("record " + ToStr(i) + ": negative timestamp"));
      return;
    }
  }
  if (records.empty()) {
    done(std::vector<AppendResult>{});
    return;
  }
  auto batch = std::make_shared<PendingBatch>();
  batch->meta = meta;
  batch->results.resize(records.size());
  batch->remaining.store(records.size());
  batch->done = std::move(done);
  // Keyless records without an id rotate between calls, one partition per call (as the
  // embedded log); a keyless record with an id goes where its id hashes, so a retry meets
  // the first attempt's Nats-Msg-Id in the same stream.
  const uint32_t keyless =
      static_cast<uint32_t>(round_robin_.fetch_add(1, std::memory_order_relaxed) % o.partitions);
  const int64_t now = env_.clock().NowWallMicros();
  jsPubOptions po;
  jsPubOptions_Init(&po);
  po.MaxWait = options_.ack_timeout_ms;
  for (size_t i = 0; i < records.size(); ++i) {
    const RecordView& r = records[i];
    uint32_t p;
    if (partition >= 0) {
      p = static_cast<uint32_t>(partition);
    } else if (!r.key.empty()) {
      p = PartitionForKey(r.key, o.partitions);
    } else if (!r.id.empty()) {
      p = PartitionForKey(r.id, o.partitions);
    } else {
      p = keyless;
    }
    // The subject, payload and id are built in this thread's buffers (natsMsg_Create copies
    // them): no allocation per record once the buffers have grown. The subject is
    // SubjectName's, from the escaped name the topic's metadata holds.
    thread_local std::string subject, payload, id;
    subject.assign(options_.stream_prefix).append(".").append(meta->escaped).append(".");
    subject += std::to_string(p);  // short: no allocation
    payload.clear();
    AppendRecordPayload(r, r.timestamp_micros > 0 ? r.timestamp_micros : now, &payload);
    natsMsg* msg = nullptr;
    natsStatus s = natsMsg_Create(&msg, subject.c_str(), nullptr, payload.data(),
                                  static_cast<int>(payload.size()));
    if (s == NATS_OK && !r.id.empty() && o.dedup_window_ms > 0) {
      id.assign(r.id);
      s = natsMsgHeader_Set(msg, "Nats-Msg-Id", id.c_str());
    }
    if (s != NATS_OK) {
      if (msg != nullptr) natsMsg_Destroy(msg);
      {
        std::lock_guard<std::mutex> lock(batch->mu);
        if (batch->error.ok()) batch->error = NatsError("message " + ToStr(i), s);
      }
      FinishOne(batch);
      continue;
    }
    natsMsg* key = msg;
    {
      std::lock_guard<std::mutex> lock(pending_mu_);
      pending_[key] = PendingPublish{batch, i, p};
    }
    s = js_PublishMsgAsync(js_, &msg, &po);
    if (s != NATS_OK) {
      // Refused before it was sent (no room among the pending publishes in time, or the
      // connection is closed): no PubAck will come for it.
      bool ours = false;
      {
        std::lock_guard<std::mutex> lock(pending_mu_);
        ours = pending_.erase(key) > 0;
      }
      if (ours) {
        if (msg != nullptr) natsMsg_Destroy(msg);
        {
          std::lock_guard<std::mutex> lock(batch->mu);
          if (batch->error.ok()) batch->error = NatsError("publish record " + ToStr(i), s);
        }
        FinishOne(batch);
      }
    }
  }
}

void JetStreamLog::OnAck(natsMsg* msg, jsPubAck* pa, jsPubAckErr* pae) {
  PendingPublish p;
  {
    std::lock_guard<std::mutex> lock(pending_mu_);
    auto it = pending_.find(msg);
    if (it == pending_.end()) {
      natsMsg_Destroy(msg);
      return;
    }
    p = std::move(it->second);
    pending_.erase(it);
  }
  natsMsg_Destroy(msg);
  if (pa != nullptr && pae == nullptr) {
    const uint64_t offset = pa->Sequence > 0 ? pa->Sequence - 1 : 0;
    p.batch->results[p.index] = AppendResult{p.partition, offset, pa->Duplicate};
    if (!pa->Duplicate) {
      NotifyLocal(p.batch->meta->escaped, p.partition, pa->Sequence);
      // Other instances' watchers: a notice on core NATS, sent only after the PubAck, so a
      // woken reader finds the record. (Core NATS may drop a notice during a reconnect; a
      // long poll then ends at its own timeout and the next fetch reads the record.)
      // Built in this thread's buffers: no allocation per acknowledged record.
      thread_local std::string subject, body;
      subject.assign(watch_prefix_).append(p.batch->meta->escaped);
      body.assign(instance_).append(" ").append(ToStr(p.partition)).append(" ");
      body.append(ToStr(pa->Sequence));
      natsConnection_Publish(notice_nc_, subject.c_str(), body.data(),
                             static_cast<int>(body.size()));
    }
  } else {
    Status err;
    if (pae == nullptr) {
      err = UnavailableError("jetstream: publish failed without a reason");
    } else if (pae->Err == NATS_TIMEOUT) {
      err = UnavailableError(
          "jetstream: no PubAck within ack_timeout_ms for topic '" + p.batch->meta->name +
          "' partition " + ToStr(p.partition) +
          " (the record may or may not be stored; a retry with the same id is deduplicated "
          "within the topic's dedup window)");
    } else if (pae->Err == NATS_NO_RESPONDERS) {
      err = UnavailableError("jetstream: no stream answers for topic '" + p.batch->meta->name +
                             "' partition " + ToStr(p.partition) +
                             " (no stream leader right now, or the topic was deleted)");
    } else {
      err = UnavailableError(
          "jetstream: publish to topic '" + p.batch->meta->name + "' partition " +
          ToStr(p.partition) +
          " failed: " + (pae->ErrText != nullptr ? pae->ErrText : natsStatus_GetText(pae->Err)) +
          " (JetStream error " + std::to_string(static_cast<int>(pae->ErrCode)) + ")");
    }
    std::lock_guard<std::mutex> lock(p.batch->mu);
    if (p.batch->error.ok()) p.batch->error = err;
  }
  FinishOne(p.batch);
}

void JetStreamLog::FinishOne(const std::shared_ptr<PendingBatch>& batch) {
  if (batch->remaining.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
  Status error;
  {
    std::lock_guard<std::mutex> lock(batch->mu);
    error = batch->error;
  }
  AppendDone done = std::move(batch->done);
  if (!error.ok()) {
    done(error);
  } else {
    done(std::move(batch->results));
  }
}

// ---------------------------------------------------------------------------------------
// Watches

Result<std::unique_ptr<Log::Watch>> JetStreamLog::WatchAppends(const std::string& topic,
                                                               AppendCallback fn) {
  if (!fn) return InvalidArgumentError("WatchAppends needs a callback");
  CONVERGE_ASSIGN_OR_RETURN(std::shared_ptr<const TopicMeta> meta, GetMeta(topic));
  std::lock_guard<std::mutex> lock(watch_mu_);
  const uint64_t id = next_watch_id_++;
  watchers_[meta->escaped][id] = std::move(fn);
  return std::unique_ptr<Watch>(std::make_unique<WatchHandle>(this, meta->escaped, id));
}

void JetStreamLog::RemoveWatch(const std::string& escaped, uint64_t id) {
  std::lock_guard<std::mutex> lock(watch_mu_);
  auto it = watchers_.find(escaped);
  if (it == watchers_.end()) return;
  it->second.erase(id);
  if (it->second.empty()) watchers_.erase(it);
}

void JetStreamLog::NotifyLocal(const std::string& escaped, uint32_t partition,
                               uint64_t end_offset) {
  std::lock_guard<std::mutex> lock(watch_mu_);
  auto it = watchers_.find(escaped);
  if (it == watchers_.end()) return;
  for (auto& [id, fn] : it->second) fn(partition, end_offset);
}

void JetStreamLog::OnWatchMessage(natsMsg* msg) {
  std::string_view subject = natsMsg_GetSubject(msg);
  if (subject.size() <= watch_prefix_.size()) return;
  const std::string escaped(subject.substr(watch_prefix_.size()));
  const std::string body(natsMsg_GetData(msg), static_cast<size_t>(natsMsg_GetDataLength(msg)));
  const size_t a = body.find(' ');
  const size_t b = a == std::string::npos ? a : body.find(' ', a + 1);
  if (b == std::string::npos) return;
  if (std::string_view(body).substr(0, a) == instance_) return;  // told locally already
  const uint64_t p = std::strtoull(body.c_str() + a + 1, nullptr, 10);
  const uint64_t end = std::strtoull(body.c_str() + b + 1, nullptr, 10);
  NotifyLocal(escaped, static_cast<uint32_t>(p), end);
}

// ---------------------------------------------------------------------------------------
// Reads

Result<natsMsg*> JetStreamLog::GetFromLeader(const std::string& stream, uint64_t seq) {
  natsMsg* msg = nullptr;
  jsErrCode jerr = static_cast<jsErrCode>(0);
  jsOptions ro = RequestOptions();
  natsStatus s = js_GetMsg(&msg, js_, stream.c_str(), seq, &ro, &jerr);
  if (s == NATS_NOT_FOUND || jerr == JSNoMessageFoundErr || jerr == JSStreamNotFoundErr) {
    return NotFoundError("no message " + ToStr(seq) + " in " + stream);
  }
  if (s != NATS_OK) return NatsError("get message " + ToStr(seq) + " of " + stream, s, jerr);
  return msg;
}

void JetStreamLog::CloseCursor(Cursor& c) {
  if (c.sub == nullptr) return;
  // Deleting the consumer is a request: only while connected (a close while NATS is away
  // must not wait for it); otherwise the server deletes it after kCursorInactiveNanos.
  if (natsConnection_Status(nc_) == NATS_CONN_STATUS_CONNECTED) {
    natsSubscription_Unsubscribe(c.sub);
  }
  natsSubscription_Destroy(c.sub);
  c.sub = nullptr;
}

bool JetStreamLog::FetchSequential(const std::string& stream, uint32_t partition,
                                   const std::string& topic, uint64_t from, size_t count,
                                   size_t max_bytes, const std::string& leader,
                                   std::vector<std::string>* storage) {
  Cursor cursor;
  {
    std::lock_guard<std::mutex> lock(cursors_mu_);
    for (auto it = cursors_.begin(); it != cursors_.end(); ++it) {
      if (it->stream == stream && it->next_seq == from + 1) {
        cursor = *it;
        cursors_.erase(it);
        break;
      }
    }
  }
  // A consumer reads the store of the server it runs on. One of a replicated stream must run
  // on the stream's leader (see Read); the leader may have changed since it was made.
  if (cursor.sub != nullptr && cursor.server != leader) CloseCursor(cursor);
  // nats-server places a consumer of one replica on any of the stream's servers: one made
  // elsewhere than on the leader is deleted and another one made, a few times.
  constexpr int kPlacementAttempts = 4;
  for (int attempt = 0; cursor.sub == nullptr && attempt < kPlacementAttempts; ++attempt) {
    const std::string subject = SubjectName(options_.stream_prefix, topic, partition);
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = stream.c_str();
    so.Config.DeliverPolicy = js_DeliverByStartSequence;
    so.Config.OptStartSeq = from + 1;
    so.Config.AckPolicy = js_AckNone;
    so.Config.MemoryStorage = true;
    so.Config.Replicas = 1;
    so.Config.InactiveThreshold = kCursorInactiveNanos;
    jsErrCode jerr = static_cast<jsErrCode>(0);
    jsOptions ro = RequestOptions();
    if (js_PullSubscribe(&cursor.sub, js_, subject.c_str(), nullptr, &ro, &so, &jerr) != NATS_OK) {
      cursor.sub = nullptr;
      return false;
    }
    cursor.stream = stream;
    cursor.next_seq = from + 1;
    cursor.server.clear();
    if (leader.empty()) break;
    jsConsumerInfo* ci = nullptr;
    if (natsSubscription_GetConsumerInfo(&ci, cursor.sub, &ro, &jerr) == NATS_OK &&
        ci->Cluster != nullptr && ci->Cluster->Leader != nullptr) {
      cursor.server = ci->Cluster->Leader;
    }
    if (ci != nullptr) jsConsumerInfo_Destroy(ci);
    if (cursor.server != leader) CloseCursor(cursor);
  }
  if (cursor.sub == nullptr) return false;
  jsFetchRequest req;
  jsFetchRequest_Init(&req);
  req.Batch = static_cast<int>(count);
  req.NoWait = true;
  req.Expires = MillisToNanos(options_.ack_timeout_ms);
  natsMsgList list{nullptr, 0};
  const natsStatus s = natsSubscription_FetchRequest(&list, cursor.sub, &req);
  uint64_t expected = from + 1;
  size_t bytes = 0;
  bool whole = s == NATS_OK;  // every message fetched was taken (the cursor stays valid)
  for (int i = 0; whole && i < list.Count; ++i) {
    natsMsg* m = list.Msgs[i];
    jsMsgMetaData* md = nullptr;
    const bool in_order = natsMsg_GetMetaData(&md, m) == NATS_OK && md->Sequence.Stream == expected;
    if (md != nullptr) jsMsgMetaData_Destroy(md);
    if (!in_order || (bytes >= max_bytes && !storage->empty())) {
      whole = false;
      break;
    }
    storage->emplace_back(natsMsg_GetData(m), static_cast<size_t>(natsMsg_GetDataLength(m)));
    bytes += storage->back().size();
    ++expected;
  }
  if (list.Msgs != nullptr) natsMsgList_Destroy(&list);
  if (!whole || storage->empty()) {
    CloseCursor(cursor);
    return !storage->empty();
  }
  cursor.next_seq = expected;
  std::list<Cursor> evicted;
  {
    std::lock_guard<std::mutex> lock(cursors_mu_);
    cursors_.push_front(cursor);
    while (cursors_.size() > kMaxCursors) {
      evicted.splice(evicted.end(), cursors_, std::prev(cursors_.end()));
    }
  }
  for (Cursor& c : evicted) CloseCursor(c);
  return true;
}

namespace {

// The payload of message `seq` in a STREAM.MSG.GET reply ({"type":...,"message":{"subject":
// ...,"seq":N,"data":"<base64>","time":...}}, or {"type":...,"error":{...}}): false when the
// reply is an error, another message's or not readable.
bool PayloadOfMsgGetReply(const char* data, int len, uint64_t seq, std::string* out) {
  const boost::json::object reply = ParseApiReply(data, len);
  if (reply.empty() || ApiErrorCode(reply) != 0) return false;
  const boost::json::value* msg = reply.if_contains("message");
  if (msg == nullptr || !msg->is_object()) return false;
  if (UnsignedField(msg->as_object(), "seq") != seq) return false;
  out->clear();
  const boost::json::value* body = msg->as_object().if_contains("data");
  if (body == nullptr) return true;  // an empty payload
  if (!body->is_string()) return false;
  return internal::DecodeBase64(std::string_view(body->as_string()), out);
}

}  // namespace

// Reads [from, from + count) by gets into *storage (stopping early as Read may).
Status JetStreamLog::ReadByGets(const std::string& stream, uint64_t from, size_t count,
                                size_t max_bytes, bool leader_only,
                                std::vector<std::string>* storage) {
  // Every get of the batch is sent at once to one inbox (direct gets, answered by any
  // replica, or gets answered by the leader alone); the replies are collected in one wait, so
  // a read costs one round trip, not one per record.
  std::vector<natsMsg*> replies(count, nullptr);
  char* inbox = nullptr;
  natsInbox_Create(&inbox);
  const std::string reply_prefix = std::string(inbox) + ".";
  natsInbox_Destroy(inbox);
  natsSubscription* sub = nullptr;
  natsStatus s = natsConnection_SubscribeSync(&sub, nc_, (reply_prefix + "*").c_str());
  if (s != NATS_OK) return NatsError("subscribe for reads", s);
  const std::string api =
      (leader_only ? "$JS.API.STREAM.MSG.GET." : "$JS.API.DIRECT.GET.") + stream;
  for (size_t i = 0; i < count && s == NATS_OK; ++i) {
    const std::string body = "{\"seq\":" + ToStr(from + i + 1) + "}";
    s = natsConnection_PublishRequest(nc_, api.c_str(), (reply_prefix + ToStr(i)).c_str(),
                                      body.data(), static_cast<int>(body.size()));
  }
  size_t received = 0;
  const int64_t deadline =
      env_.clock().NowMonotonicNanos() + MillisToNanos(options_.ack_timeout_ms);
  while (s == NATS_OK && received < count) {
    const int64_t left_ms = (deadline - env_.clock().NowMonotonicNanos()) / kNanosPerMilli;
    if (left_ms <= 0) break;
    natsMsg* m = nullptr;
    if (natsSubscription_NextMsg(&m, sub, left_ms) != NATS_OK) break;
    const std::string_view subj = natsMsg_GetSubject(m);
    const uint64_t i =
        std::strtoull(std::string(subj.substr(reply_prefix.size())).c_str(), nullptr, 10);
    if (i < count && replies[i] == nullptr) {
      replies[i] = m;
      ++received;
    } else {
      natsMsg_Destroy(m);
    }
  }
  natsSubscription_Unsubscribe(sub);
  natsSubscription_Destroy(sub);
  if (s != NATS_OK) {
    for (natsMsg* m : replies) natsMsg_Destroy(m);
    return NatsError("request reads of " + stream, s);
  }

  // Keep the payloads; a reply that is missing, a status or error (404 from a replica behind
  // the leader) or of the wrong sequence is fetched again from the leader.
  auto payload_of = [](natsMsg* m) {
    return std::string_view(natsMsg_GetData(m), static_cast<size_t>(natsMsg_GetDataLength(m)));
  };
  Status error;
  size_t bytes = 0;
  for (size_t i = 0; i < count; ++i) {
    natsMsg* m = replies[i];
    replies[i] = nullptr;
    const uint64_t seq = from + i + 1;
    std::string payload;
    bool usable = false;
    if (m != nullptr && leader_only) {
      usable = PayloadOfMsgGetReply(natsMsg_GetData(m), natsMsg_GetDataLength(m), seq, &payload);
    } else if (m != nullptr) {
      const char* status = nullptr;
      const char* got_seq = nullptr;
      const bool has_status = natsMsgHeader_Get(m, "Status", &status) == NATS_OK;
      const bool has_seq = natsMsgHeader_Get(m, "Nats-Sequence", &got_seq) == NATS_OK;
      usable = !has_status && has_seq && std::strtoull(got_seq, nullptr, 10) == seq;
      if (usable) payload.assign(payload_of(m));
    }
    if (m != nullptr) natsMsg_Destroy(m);
    if (!usable && error.ok()) {
      Result<natsMsg*> leader = GetFromLeader(stream, seq);
      if (leader.ok()) {
        payload.assign(payload_of(*leader));
        natsMsg_Destroy(*leader);
        usable = true;
      } else if (leader.status().code() != StatusCode::kNotFound || storage->empty()) {
        // Not found below the end: removed by retention meanwhile; the next read starts at
        // the new start. Anything else is reported.
        if (leader.status().code() != StatusCode::kNotFound) error = leader.status();
      }
    }
    if (!usable || !error.ok() || (bytes >= max_bytes && !storage->empty())) {
      for (size_t k = i + 1; k < count; ++k) natsMsg_Destroy(replies[k]);
      break;
    }
    bytes += payload.size();
    storage->push_back(std::move(payload));
  }
  if (!error.ok() && storage->empty()) return error;
  return Status::Ok();
}

// The offset of the first message at or after offset `from` + 1 of the partition's stream
// (`end_seq` when there is none: the hole runs to the end). Asked of the stream leader
// (STREAM.MSG.GET with next_by_subj): a direct get may be answered by a replica behind the
// leader, whose "no message after" would make the hole run over records that are there.
Result<uint64_t> JetStreamLog::NextPresentOffset(const std::string& stream,
                                                 const std::string& topic, uint32_t partition,
                                                 uint64_t from, uint64_t end_seq) {
  const std::string subject = SubjectName(options_.stream_prefix, topic, partition);
  const std::string api = "$JS.API.STREAM.MSG.GET." + stream;
  // The message after the one missing at `from`.
  const std::string body = boost::json::serialize(
      boost::json::object{{"seq", from + 2}, {"next_by_subj", subject}});
  natsMsg* reply = nullptr;
  const natsStatus s =
      natsConnection_Request(&reply, nc_, api.c_str(), body.data(), static_cast<int>(body.size()),
                             options_.ack_timeout_ms);
  const std::string what = "find the message after " + ToStr(from + 1) + " of " + stream;
  if (s != NATS_OK) return NatsError(what, s);
  const boost::json::object got = ParseApiReply(natsMsg_GetData(reply), natsMsg_GetDataLength(reply));
  const std::string text(natsMsg_GetData(reply), static_cast<size_t>(natsMsg_GetDataLength(reply)));
  natsMsg_Destroy(reply);
  // {"type":...,"message":{"subject":...,"seq":N,...}} or {"type":...,"error":{...}}: only
  // the sequence is needed.
  if (got.empty()) return UnavailableError("jetstream: " + what + ": " + text.substr(0, 400));
  if (const uint64_t code = ApiErrorCode(got); code != 0) {
    if (code == 10037) return end_seq;  // no message found (nothing after the hole)
    return UnavailableError("jetstream: " + what + ": " + text.substr(0, 400));
  }
  uint64_t seq = 0;
  if (const boost::json::value* msg = got.if_contains("message"); msg != nullptr && msg->is_object()) {
    seq = UnsignedField(msg->as_object(), "seq").value_or(0);
  }
  if (seq <= from + 1) {
    return InternalError("jetstream: " + stream + " answered sequence " + ToStr(seq) +
                         " for the message after " + ToStr(from + 1));
  }
  return seq - 1;
}

Result<ReadBatch> JetStreamLog::Read(const std::string& topic, uint32_t partition, uint64_t offset,
                                     size_t max_records, size_t max_bytes) {
  CONVERGE_ASSIGN_OR_RETURN(std::shared_ptr<const TopicMeta> meta, GetMeta(topic));
  if (partition >= meta->options.partitions) {
    return InvalidArgumentError("topic '" + topic + "' has no partition " + ToStr(partition));
  }
  const std::string stream = StreamName(options_.stream_prefix, topic, partition);
  CONVERGE_ASSIGN_OR_RETURN(StreamState st, GetStreamState(stream, topic));
  ReadBatch batch;
  const uint64_t start_offset = st.first_seq - 1;
  const uint64_t end_offset = st.last_seq;
  uint64_t from = std::max(offset, start_offset);
  if (from >= end_offset || max_records == 0) {
    batch.next_offset = from >= end_offset ? end_offset : from;
    return batch;
  }
  // Ask for about max_bytes worth, judged by the stream's mean message size (at least one
  // record, at most kReadPipelineMax), so large records do not pile up in replies to discard.
  const uint64_t mean_bytes = st.msgs > 0 ? std::max<uint64_t>(1, st.bytes / st.msgs) : 1;
  const uint64_t by_bytes = std::max<uint64_t>(1, max_bytes / mean_bytes + 1);
  const size_t count = static_cast<size_t>(
      std::min<uint64_t>({max_records, end_offset - from, kReadPipelineMax, by_bytes}));

  // A replicated stream is read from its leader alone, whose records are the ones its PubAcks
  // gave the offsets of. A replica may hold other records at the same sequences: with
  // nats-server 2.9.10, after the leader's SIGKILL and restart, readers were seen to disagree
  // with the PubAcks and with each other (docs/formats/jetstream.md, Reads). Any replica
  // answers a direct get, and a consumer may be placed on any replica. So such a stream is
  // read by gets the leader answers (STREAM.MSG.GET) or through a consumer running on the
  // leader.
  const bool leader_only = st.replicas > 1;
  auto storage = std::make_shared<std::vector<std::string>>();
  storage->reserve(count);
  if (count >= kCursorMinRecords && (!leader_only || !st.leader.empty()) &&
      FetchSequential(stream, partition, meta->name, from, count, max_bytes,
                      leader_only ? st.leader : std::string(), storage.get())) {
    // Read through a pull consumer (one request for the whole batch).
  } else {
    storage->clear();
    CONVERGE_RETURN_IF_ERROR(
        ReadByGets(stream, from, count, max_bytes, leader_only, storage.get()));
  }

  batch.records.reserve(storage->size());
  for (size_t i = 0; i < storage->size(); ++i) {
    StoredRecord r;
    r.offset = from + i;
    if (!DecodeRecordPayload((*storage)[i], &r.timestamp_micros, &r.id, &r.key, &r.value)) {
      if (!batch.records.empty()) break;  // returned first; the next read reports it
      return DataLossError("topic '" + topic + "' partition " + ToStr(partition) + ": records [" +
                           ToStr(r.offset) + ", " + ToStr(r.offset + 1) +
                           ") are damaged (not a converge record); resume at offset " +
                           ToStr(r.offset + 1));
    }
    batch.records.push_back(r);
  }
  if (batch.records.empty()) {
    CONVERGE_ASSIGN_OR_RETURN(StreamState now, GetStreamState(stream, topic));
    if (from + 1 < now.first_seq) {
      // Nothing at `from` though the stream said so: retention removed it meanwhile.
      batch.next_offset = now.first_seq - 1;
      return batch;
    }
    // `from` is retained and below the end, yet the stream has no message there: a hole
    // (a message deleted from the stream, or lost by the engine). Reported as damage like a
    // damaged range of the embedded log, so readers apply their damage policy instead of
    // waiting at `from` forever.
    CONVERGE_ASSIGN_OR_RETURN(uint64_t resume,
                              NextPresentOffset(stream, topic, partition, from, now.last_seq));
    return DataLossError("topic '" + topic + "' partition " + ToStr(partition) + ": records [" +
                         ToStr(from) + ", " + ToStr(resume) +
                         ") are damaged (missing from the JetStream stream); resume at offset " +
                         ToStr(resume));
  }
  batch.next_offset = batch.records.back().offset + 1;
  batch.storage = std::move(storage);
  return batch;
}

Result<uint64_t> JetStreamLog::OffsetForTime(const std::string& topic, uint32_t partition,
                                             int64_t timestamp_micros) {
  CONVERGE_ASSIGN_OR_RETURN(std::shared_ptr<const TopicMeta> meta, GetMeta(topic));
  if (partition >= meta->options.partitions) {
    return InvalidArgumentError("topic '" + topic + "' has no partition " + ToStr(partition));
  }
  const std::string stream = StreamName(options_.stream_prefix, topic, partition);
  CONVERGE_ASSIGN_OR_RETURN(StreamState st, GetStreamState(stream, topic));
  // Binary search over the records' own timestamps: log2(n) gets from the leader.
  uint64_t lo = st.first_seq;
  uint64_t hi = st.last_seq + 1;
  while (lo < hi) {
    uint64_t mid = lo + (hi - lo) / 2;
    Result<natsMsg*> m = GetFromLeader(stream, mid);
    if (!m.ok() && m.status().code() == StatusCode::kNotFound) {
      // Removed by retention meanwhile (older than anything left), or a hole: probe the next
      // message present instead, so a hole never sends the search past the records it seeks.
      CONVERGE_ASSIGN_OR_RETURN(uint64_t next,
                                NextPresentOffset(stream, topic, partition, mid - 1, hi - 1));
      if (next + 1 >= hi) {
        hi = mid;  // nothing present in [mid, hi)
        continue;
      }
      mid = next + 1;
      m = GetFromLeader(stream, mid);
      if (!m.ok() && m.status().code() == StatusCode::kNotFound) {
        lo = mid + 1;  // removed by retention between the two requests
        continue;
      }
    }
    if (!m.ok()) return m.status();
    int64_t ts = 0;
    std::string_view id, key, value;
    const std::string_view data(natsMsg_GetData(*m),
                                static_cast<size_t>(natsMsg_GetDataLength(*m)));
    const bool ok = DecodeRecordPayload(data, &ts, &id, &key, &value);
    natsMsg_Destroy(*m);
    if (ok && ts >= timestamp_micros) {
      hi = mid;
    } else {
      lo = mid + 1;
    }
  }
  // The search may end on a hole: the answer is then the next record present (or the end).
  if (lo > st.last_seq) return lo - 1;
  Result<natsMsg*> at = GetFromLeader(stream, lo);
  if (at.ok()) {
    natsMsg_Destroy(*at);
    return lo - 1;
  }
  if (at.status().code() != StatusCode::kNotFound) return at.status();
  return NextPresentOffset(stream, topic, partition, lo - 1, st.last_seq);
}

}  // namespace

// ---------------------------------------------------------------------------------------

Status ValidateJetStreamLogOptions(const JetStreamLogOptions& o) {
  if (o.servers.empty()) return InvalidArgumentError("servers: at least one NATS URL is needed");
  for (const std::string& s : o.servers) {
    if (s.empty()) return InvalidArgumentError("servers: an empty URL");
  }
  if (o.replicas < 1 || o.replicas > 5) return InvalidArgumentError("replicas must be 1..5");
  if (o.stream_prefix.empty() || o.stream_prefix.size() > 32 ||
      !std::all_of(o.stream_prefix.begin(), o.stream_prefix.end(), IsPlainChar)) {
    return InvalidArgumentError("stream_prefix must be 1..32 of [A-Za-z0-9-]");
  }
  if (o.connect_timeout_ms < 1) return InvalidArgumentError("connect_timeout_ms must be > 0");
  if (o.ack_timeout_ms < 1) return InvalidArgumentError("ack_timeout_ms must be > 0");
  if (o.max_pending_publishes < 1) {
    return InvalidArgumentError("max_pending_publishes must be > 0");
  }
  return Status::Ok();
}

Result<std::unique_ptr<Log>> OpenJetStreamLog(Env& env, const JetStreamLogOptions& options) {
  CONVERGE_RETURN_IF_ERROR(ValidateJetStreamLogOptions(options));
  auto log = std::make_unique<JetStreamLog>(env, options);
  CONVERGE_RETURN_IF_ERROR(log->Connect());
  return std::unique_ptr<Log>(std::move(log));
}

std::string EscapeTopicName(std::string_view topic) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(topic.size());
  for (char c : topic) {
    if (IsPlainChar(c)) {
      out.push_back(c);
    } else {
      const auto u = static_cast<unsigned char>(c);
      out.push_back('_');
      out.push_back(kHex[u >> 4]);
      out.push_back(kHex[u & 15]);
    }
  }
  return out;
}

std::string StreamName(std::string_view prefix, std::string_view topic, uint32_t partition) {
  return std::string(prefix) + "_" + EscapeTopicName(topic) + "_" + std::to_string(partition);
}

std::string SubjectName(std::string_view prefix, std::string_view topic, uint32_t partition) {
  return std::string(prefix) + "." + EscapeTopicName(topic) + "." + std::to_string(partition);
}

std::string EncodeRecordPayload(const RecordView& record, int64_t timestamp_micros) {
  std::string out;
  AppendRecordPayload(record, timestamp_micros, &out);
  return out;
}

void AppendRecordPayload(const RecordView& record, int64_t timestamp_micros, std::string* out) {
  out->reserve(out->size() + kPayloadOverhead + record.id.size() + record.key.size() +
               record.value.size());
  out->push_back(kPayloadVersion);
  internal::PutFixed64(out, static_cast<uint64_t>(timestamp_micros));
  internal::PutLengthPrefixed(out, record.id);
  internal::PutLengthPrefixed(out, record.key);
  out->append(record.value);
}

bool DecodeRecordPayload(std::string_view payload, int64_t* timestamp_micros, std::string_view* id,
                         std::string_view* key, std::string_view* value) {
  if (payload.empty() || payload[0] != kPayloadVersion) return false;
  payload.remove_prefix(1);
  uint64_t ts = 0;
  if (!internal::GetFixed64(&payload, &ts)) return false;
  if (!internal::GetLengthPrefixed(&payload, id)) return false;
  if (!internal::GetLengthPrefixed(&payload, key)) return false;
  *timestamp_micros = static_cast<int64_t>(ts);
  *value = payload;
  return true;
}

}  // namespace converge::jetstream
