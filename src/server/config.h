// Configuration of `converge serve`: what the YAML file says, with the defaults that apply
// when a key (or the whole file) is absent. Every key is documented in docs/configuration.md.
//
// Contract
// - ParseConfig never throws and never asserts on input: a malformed document, an unknown key,
//   a value of the wrong type or out of range gives InvalidArgument naming the key.
// - The defaults describe a safe local sidecar: loopback only, no auth, embedded storage in
//   ./var/data, fsync durability.
// Thread-safety: plain values.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "converge/consumer_group.h"
#include "converge/log.h"
#include "converge/relay.h"
#include "converge/replica.h"
#include "converge/saga.h"
#include "converge/status.h"
#include "converge/store.h"
#include "jetstream/jetstream_log.h"
#include "lease/lease.h"
#include "store/postgres_store.h"
#include "topology/topology.h"

namespace converge::server {

// One bearer token and what it may do.
struct TokenConfig {
  std::string service;                 // a name for logs and metrics
  std::string token;                   // the secret (from `token` or `token_env`)
  std::vector<std::string> publish;    // topic patterns ('*' matches any run of chars)
  std::vector<std::string> subscribe;  // topic patterns: fetch, ack, stream, dead letters
  bool admin = false;                  // may create topics
  // Set from the service's topology manifest (ApplyTopology), or from the file's
  // `read_collections` / `write_collections`: its store collections are limited to these
  // (admins excepted).
  bool restrict_collections = false;
  std::vector<std::string> write_collections;  // owned
  std::vector<std::string> read_collections;   // owned, and the sources of its replicas
};

struct LimitsConfig {
  uint64_t max_body_bytes = 16ull << 20;   // a request body; larger gets 413
  uint32_t max_batch_events = 10'000;      // events in one batch; more gets 413
  uint32_t max_event_bytes = 1u << 20;     // one encoded event; larger gets 413
  uint32_t max_inflight_requests = 1024;   // requests being served at once; more gets 429
  uint32_t max_connections = 4096;         // open connections; more are closed at accept
  uint32_t max_header_bytes = 16u << 10;   // request line + headers; more gets 431
  uint32_t max_subscribers = 256;          // concurrent streaming subscriptions; more gets 429
  uint32_t max_fetch_events = 10'000;      // events in one fetch or stream batch
  uint64_t max_fetch_bytes = 16ull << 20;  // about this many bytes per fetch reply
  int64_t max_wait_ms = 30'000;            // longest long-poll wait of a fetch
  int64_t idle_timeout_ms = 60'000;        // a keep-alive connection idle this long is closed
  int64_t request_timeout_ms = 30'000;     // to receive a whole request / send a reply
  int64_t shutdown_timeout_ms = 30'000;    // drain bound on SIGTERM before forcing close
  int64_t stream_heartbeat_ms = 15'000;    // SSE comment line sent when idle
};

// Bounds of a group's member session timeout (the configuration's default and a group's own).
// Below 100 ms a member that fetches in a loop would lose its partitions between calls.
constexpr int64_t kMinSessionTimeoutMs = 100;
constexpr int64_t kMaxSessionTimeoutMs = 86'400'000;

// Defaults for consumer groups created on first use.
struct GroupConfig {
  int64_t lease_ms = 30'000;       // default lease of a fetched event
  // A member (a fetching consumer) that makes no call for this long leaves the group: its
  // partitions go to the others and its leases end as failed attempts.
  int64_t session_timeout_ms = 30'000;
  int64_t max_lease_ms = 600'000;  // longest lease a client may ask for
  uint32_t max_deliveries = 5;     // deliveries before an event is dead-lettered
  int64_t max_nack_delay_ms = 3'600'000;
  // true: an ack reply means the ack is on disk (a synced commit, shared by concurrent acks).
  // false: acks are applied at once and synced every commit_interval_ms; a crash may lose
  // that window (those events are delivered again, never lost).
  bool sync_acks = true;
  int64_t commit_interval_ms = 100;
  // Where the log reports damaged events: "skip" them (counted, reported, delivery goes on)
  // or "stop" the partition's delivery with DATA_LOSS errors naming the range (until the
  // group is seeked past it; over HTTP: a restart with "skip").
  DamagePolicy on_damage = DamagePolicy::kSkip;
};

// The shared store (/v1/collections, docs/formats/store.md), embedded in <data_dir>/store.
struct StoreConfig {
  bool enabled = true;
  Durability durability = Durability::kFsync;  // fsync | interval | none
  int64_t sync_interval_ms = 50;               // for interval
  uint32_t max_document_bytes = 1u << 20;      // larger documents get 413
  uint64_t max_store_bytes = 4ull << 30;       // keys + values of all documents
  std::string feed_topic = "store-changes";    // every committed change, as CloudEvents
  uint64_t checkpoint_wal_bytes = 64ull << 20;
  int64_t ttl_sweep_interval_ms = 1000;
  // "embedded" (files in <data_dir>/store) or "postgres" (tables in PostgreSQL shared by every
  // sidecar naming the same conninfo and table prefix; docs/configuration.md "Backends").
  std::string backend = "embedded";
  std::string postgres_conninfo;  // required with backend: postgres
  std::string postgres_table_prefix = "converge_store";
  int64_t postgres_connect_timeout_ms = 5'000;
  int64_t postgres_statement_timeout_ms = 30'000;
};

// Sagas (/v1/sagas, /v1/saga-definitions, /v1/saga-timers, docs/formats/saga.md): the
// orchestrator with its saga log in <data_dir>/sagas; commands and replies travel on this
// server's event log, so participants in any language consume and reply over HTTP.
struct SagaConfig {
  bool enabled = true;
  // Definition files (YAML or JSON, one definition each) registered at start; a file whose
  // (name, version) is registered with other content stops the start.
  std::vector<std::string> definitions;
  // The orchestrator's own options, read from the section's keys (their defaults are the
  // library's): reply_topic; the saga log in PostgreSQL instead of <data_dir>/sagas
  // (postgres_conninfo, a libpq connection string; postgres_table, created if missing, one
  // orchestrator per table; postgres_connect_timeout_ms > 0 and postgres_statement_timeout_ms,
  // 0 = none); max_in_flight (running instances, beyond: 429); finished_retain_max and
  // finished_retain_ms (finished instances kept for show/ls). SagaOptionsFor sets the rest.
  SagaOrchestratorOptions orchestrator;
};

// Outbox relays run inside the server (docs/formats/outbox.md, "Running a relay"): each source
// database's committed outbox rows are published into the server's own log.
struct RelaysConfig {
  bool enabled = false;  // a `relays:` section is present
  RelayServiceConfig service;
};

// One replica run by the server (docs/formats/replica.md, "Replicas in converge serve"): a
// topic of change events of this node's log applied to a table of a SQLite or PostgreSQL
// database.
// The largest max_batch of a replica into a store collection (and its default): a batch is one
// store transaction of two ops per change plus the position (StoreOptions::max_transaction_ops).
inline constexpr uint32_t kMaxStoreTargetBatch = 400;

struct ReplicaConfig {
  std::string name;  // [A-Za-z0-9_-]{1,64}; the replica's row in converge_replicas
  // Exactly one of: a topic of this node's log in the change-event convention, or a store
  // collection (then the source is store.feed_topic, filtered to that collection).
  std::string topic;
  std::string store_collection;
  // Or: a collection of another converge serve node's store, pulled over HTTP
  // (GET /v1/collections/{collection}/changes on that node; docs/formats/replica.md).
  std::string remote_url;         // http:// or https://host:port of the other node
  std::string remote_token;       // its bearer token (from token or token_env)
  std::string remote_collection;  // the collection on the other node
  std::string remote_ca_file;     // https: trust only these PEM certificates
  // The topic read: `topic`, or store.feed_topic; for a remote source the other node's feed
  // topic (source.remote.feed_topic, default store-changes), which its consistency tokens name.
  std::string source_topic;
  sql::Engine engine = sql::Engine::kSqlite;
  std::string database;  // the SQLite path or the PostgreSQL conninfo
  std::string table;
  // Or: a read-only collection of this node's store holds the copy (target.store_collection;
  // then database and table are empty).
  std::string target_collection;
  uint32_t max_batch = 1000;
  replica::OnMalformed on_malformed = replica::OnMalformed::kStop;
  // on_position_gone: rebootstrap (source.remote into a SQL table only): a position the
  // source's retention removed is repaired from a new snapshot instead of stopping.
  bool rebootstrap_on_position_gone = false;
  int64_t tombstone_retention_ms = 7LL * 24 * 3600 * 1000;
  // The applier is woken by appends to its source topic; it also looks this often.
  int64_t poll_interval_ms = 1000;
  // Reconcile the copy with its source this often, repairing (0 = only when asked).
  int64_t reconcile_interval_ms = 0;
};

// One multi-writer collection (docs/formats/replica.md, "Multi-writer collections"): this
// node and its peers all accept writes to `collection` and merge them in the background with
// the declared policy (there is no default).
struct MultiWriterPeerConfig {
  uint64_t node_id = 0;
  std::string url;      // http(s)://host:port of the peer
  std::string token;    // a token of the peer that may read the collection (token or token_env)
  std::string ca_file;  // https: trust only these PEM certificates
};
struct MultiWriterConfig {
  std::string collection;  // a collection of this node's store (created if missing)
  uint64_t node_id = 0;    // this node's id among the peers, >= 1, unique
  std::string policy;      // lww | multi-value | crdt-fields | resolver (required)
  std::map<std::string, std::string> crdt_fields;  // crdt-fields: field -> built-in CRDT kind
  std::string resolver;  // resolver: a merge function's name (built-in CRDT joins)
  std::vector<MultiWriterPeerConfig> peers;
  uint32_t max_siblings = 64;
  int64_t poll_interval_ms = 1000;
  int64_t tombstone_retention_ms = 7LL * 24 * 3600 * 1000;
  // Anti-entropy with each peer this often, repairing by merging (0 = off; else >= 1000).
  int64_t reconcile_interval_ms = 0;
};

// One push subscription (docs/push.md): the events of `topic`, delivered for consumer group
// `group`, are POSTed to `endpoint`. From the `subscriptions:` section or POST /v1/subscriptions.
struct SubscriptionConfig {
  std::string name;      // [A-Za-z0-9_-]{1,64}
  std::string topic;
  std::string group;     // default "push-<name>"; created on first use if missing
  std::string endpoint;  // an http:// or https:// URL
  bool binary = false;   // CloudEvents binary content mode; else structured
  uint32_t max_concurrency = 16;  // requests in flight across keys (one per key)
  int64_t timeout_ms = 10'000;
  int64_t initial_backoff_ms = 250;
  int64_t max_backoff_ms = 60'000;
  uint32_t max_deliveries = 0;  // for a group the subscription creates; 0 = groups.max_deliveries
  std::string secret;           // the HMAC key (from secret, secret_env or secret_file)
  std::string ca_file;          // https: trust only these PEM certificates (config only)
  bool from_config = false;     // set for the serve config's entries (not deletable by the API)
};

// The value checks every subscription passes, from the file or the API (names, the URL's
// scheme, ranges; not the secret's presence). InvalidArgument naming `where`.<field>.
Status CheckSubscription(const SubscriptionConfig& s, const std::string& where);

// Where the event log lives (docs/configuration.md, "Backends"): the embedded files under
// <data_dir>/log (the default), or NATS JetStream shared by several servers.
enum class LogBackend : uint8_t { kEmbedded, kJetStream };
struct LogConfig {
  LogBackend backend = LogBackend::kEmbedded;
  jetstream::JetStreamLogOptions jetstream;  // with backend: jetstream
};

// The end-to-end audit of the log (docs/formats/audit.md). Off by default.
struct AuditConfig {
  bool enabled = false;
  int64_t interval_ms = 60'000;          // how often the auditor runs
  uint64_t max_tracked_events = 1'000'000;  // acknowledged appends remembered for checking
  uint32_t max_findings = 1000;          // listed by GET /v1/audit (all are counted)
};

// Several sidecars sharing singleton work (docs/scaling.md, "Leases"): with a `cluster:`
// section, each outbox relay source, the saga orchestrator on a PostgreSQL saga log and each
// replica into a shared target run only in the instance holding its lease, a row of a table of
// PostgreSQL shared by every instance naming the same conninfo and lease_table.
struct ClusterConfig {
  bool enabled = false;           // a `cluster:` section is present
  std::string instance_id;        // [A-Za-z0-9_.-]{1,64}, required; names this sidecar in the table
  std::string postgres_conninfo;  // required
  std::string lease_table = "converge_leases";  // [a-z0-9_]{1,60}
  int64_t lease_ttl_ms = 10'000;
  int64_t lease_renew_interval_ms = 0;  // 0 = lease_ttl_ms / 3
  int64_t lease_safety_margin_ms = 0;   // 0 = lease_ttl_ms / 5
  int64_t postgres_connect_timeout_ms = 2'000;
  // Consumer groups across sidecars (docs/scaling.md, "Consumer groups across sidecars"): with
  // the JetStream log, "shared" (the default there) runs each group in the one sidecar holding
  // its lease "group:<topic>/<group>", with its state in PostgreSQL; the others forward the
  // group's requests to it. "local" keeps each sidecar's groups in <data_dir>/groups.
  std::string consumer_groups;  // "" (= shared with the JetStream log, else local) | shared | local
  // How the other sidecars reach this one (forwarded group requests): http(s)://host:port.
  // Empty: http(s)://<listen address>:<port it listens on> (not allowed when listening on
  // 0.0.0.0 or ::).
  std::string advertise_url;
  std::string group_state_table = "converge_group_state";  // [a-z0-9_]{1,60}
};

struct ServerConfig {
  std::string listen_address = "127.0.0.1";
  uint16_t listen_port = 8080;  // 0 picks a free port (printed at start)
  std::string data_dir = "var/data";
  uint32_t io_threads = 0;       // 0 = min(2, hardware threads)
  uint32_t storage_threads = 8;  // group commits and blocking storage calls run here
  std::string tls_cert_file;     // both set = HTTPS
  std::string tls_key_file;
  std::vector<TokenConfig> tokens;     // empty = auth disabled (loopback only)
  bool allow_unauthenticated = false;  // permit no tokens on a non-loopback address
  bool metrics_require_token = false;  // /metrics needs any valid token
  bool auto_create_topics = false;     // publish to an unknown topic creates it
  TopicOptions topic_defaults;         // for created topics unless the request says
  LogConfig log;
  GroupConfig groups;
  LimitsConfig limits;
  StoreConfig store;
  SagaConfig sagas;
  RelaysConfig relays;
  // A directory of service manifests (docs/topology.md): each token of a service with a
  // manifest gets its permissions from it, and GET /v1/topology serves the declared graph.
  std::string topology_dir;
  // The declared topology, loaded from topology_dir by ApplyTopology (null without one).
  std::shared_ptr<const topology::System> topology;
  std::vector<ReplicaConfig> replicas;
  std::vector<MultiWriterConfig> multi_writer;
  std::vector<SubscriptionConfig> subscriptions;
  AuditConfig audit;
  ClusterConfig cluster;

  bool tls_enabled() const { return !tls_cert_file.empty(); }
  bool auth_enabled() const { return !tokens.empty(); }
};

// Parses a YAML document (see docs/configuration.md). Environment variables named by
// `token_env` are read here. InvalidArgument names the offending key.
Result<ServerConfig> ParseConfig(std::string_view yaml_text);

// Reads and parses a file. NotFound if it does not exist; otherwise as ParseConfig.
Result<ServerConfig> LoadConfigFile(const std::string& path);

// Cross-key checks: TLS needs both files, no tokens on a non-loopback address needs
// allow_unauthenticated, limits positive; and every section that becomes the options of a
// module is checked by that module's own validation (topics as Log::CreateTopic checks them,
// groups as ConsumerGroups does, the store as Store::Open, sagas as SagaOrchestrator::Open),
// so that a configuration which starts never fails later on the same settings.
// InvalidArgument naming the config key otherwise.
Status ValidateConfig(const ServerConfig& config);

// The options the server gives its modules, built from the configuration (callbacks, the log
// and executors are the caller's to add). ValidateConfig checks exactly these.
TopicOptions AutoCreatedTopicOptions(const ServerConfig& config);  // topics created on publish
ConsumerGroupsOptions GroupsOptionsFor(const ServerConfig& config);
GroupOptions GroupDefaultsFor(const ServerConfig& config);  // groups created on first use
StoreOptions StoreOptionsFor(const ServerConfig& config);   // feed_log left null
PostgresStoreOptions PostgresStoreOptionsFor(const ServerConfig& config);  // store.backend postgres
SagaOrchestratorOptions SagaOptionsFor(const ServerConfig& config);
replica::ApplierOptions ApplierOptionsFor(const ReplicaConfig& replica);  // report left empty
replica::SqlTargetOptions SqlTargetOptionsFor(const ReplicaConfig& replica);
// A keeper's options for lease `name` from cluster: (holder, run_blocking and on_change left
// for the caller).
lease::LeaseKeeperOptions LeaseOptionsFor(const ServerConfig& config, const std::string& name);
// Whether consumer groups are shared between sidecars (cluster.consumer_groups resolved).
bool SharedConsumerGroups(const ServerConfig& config);

// True for 127.0.0.0/8, ::1 and "localhost".
bool IsLoopbackAddress(std::string_view address);

// Splits "host:port" or "[v6]:port". InvalidArgument on a malformed string.
Status ParseListen(std::string_view text, std::string* host, uint16_t* port);

}  // namespace converge::server
