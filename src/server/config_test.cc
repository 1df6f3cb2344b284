#include "server/config.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "server/remote_source.h"

namespace converge::server {
namespace {

TEST(Config, EmptyDocumentGivesLoopbackDefaults) {
  Result<ServerConfig> c = ParseConfig("");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->listen_address, "127.0.0.1");
  EXPECT_EQ(c->listen_port, 8080);
  EXPECT_EQ(c->data_dir, "var/data");
  EXPECT_FALSE(c->auth_enabled());
  EXPECT_FALSE(c->tls_enabled());
  EXPECT_FALSE(c->auto_create_topics);
  EXPECT_EQ(c->topic_defaults.durability, Durability::kFsync);
}

TEST(Config, ParsesEveryKey) {
  setenv("CONVERGE_CONFIG_TEST_TOKEN", "from-the-environment-123", 1);
  Result<ServerConfig> c = ParseConfig(R"(
listen: 0.0.0.0:9090
data_dir: /tmp/x
io_threads: 2
storage_threads: 4
tls:
  cert_file: c.pem
  key_file: k.pem
auth:
  metrics_require_token: true
  tokens:
    - service: orders
      token: orders-secret-0123456789
      publish: ["orders.*"]
      subscribe: payments
      admin: true
    - service: billing
      token_env: CONVERGE_CONFIG_TEST_TOKEN
      subscribe: ["*"]
auto_create_topics: true
topic_defaults:
  partitions: 8
  durability: interval
  sync_interval_ms: 20
  segment_max_bytes: 1048576
  retention_max_bytes: 1000000
  retention_max_age_ms: 3600000
  dedup_window_ms: 1000
  dedup_max_ids: 50
groups:
  lease_ms: 1000
  max_lease_ms: 5000
  max_deliveries: 3
  max_nack_delay_ms: 100
  sync_acks: false
  commit_interval_ms: 25
  on_damage: stop
limits:
  max_body_bytes: 2000
  max_batch_events: 5
  max_event_bytes: 1000
  max_inflight_requests: 7
  max_connections: 9
  max_header_bytes: 2048
  max_subscribers: 3
  max_fetch_events: 11
  max_fetch_bytes: 12
  max_wait_ms: 13
  idle_timeout_ms: 14
  request_timeout_ms: 15
  shutdown_timeout_ms: 16
  stream_heartbeat_ms: 17
)");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->listen_address, "0.0.0.0");
  EXPECT_EQ(c->listen_port, 9090);
  EXPECT_EQ(c->data_dir, "/tmp/x");
  EXPECT_EQ(c->io_threads, 2u);
  EXPECT_EQ(c->storage_threads, 4u);
  EXPECT_TRUE(c->tls_enabled());
  EXPECT_TRUE(c->metrics_require_token);
  ASSERT_EQ(c->tokens.size(), 2u);
  EXPECT_EQ(c->tokens[0].service, "orders");
  EXPECT_EQ(c->tokens[0].publish, std::vector<std::string>{"orders.*"});
  EXPECT_EQ(c->tokens[0].subscribe, std::vector<std::string>{"payments"});
  EXPECT_TRUE(c->tokens[0].admin);
  EXPECT_EQ(c->tokens[1].token, "from-the-environment-123");
  EXPECT_TRUE(c->auto_create_topics);
  EXPECT_EQ(c->topic_defaults.partitions, 8u);
  EXPECT_EQ(c->topic_defaults.durability, Durability::kInterval);
  EXPECT_EQ(c->topic_defaults.sync_interval_ms, 20);
  EXPECT_EQ(c->topic_defaults.segment_max_bytes, 1048576u);
  EXPECT_EQ(c->topic_defaults.retention_max_bytes, 1000000u);
  EXPECT_EQ(c->topic_defaults.retention_max_age_ms, 3600000);
  EXPECT_EQ(c->topic_defaults.dedup_window_ms, 1000);
  EXPECT_EQ(c->topic_defaults.dedup_max_ids, 50u);
  EXPECT_EQ(c->groups.lease_ms, 1000);
  EXPECT_EQ(c->groups.max_lease_ms, 5000);
  EXPECT_EQ(c->groups.max_deliveries, 3u);
  EXPECT_EQ(c->groups.max_nack_delay_ms, 100);
  EXPECT_FALSE(c->groups.sync_acks);
  EXPECT_EQ(c->groups.commit_interval_ms, 25);
  EXPECT_EQ(c->groups.on_damage, DamagePolicy::kStop);
  EXPECT_EQ(c->limits.max_body_bytes, 2000u);
  EXPECT_EQ(c->limits.max_batch_events, 5u);
  EXPECT_EQ(c->limits.max_event_bytes, 1000u);
  EXPECT_EQ(c->limits.max_inflight_requests, 7u);
  EXPECT_EQ(c->limits.max_connections, 9u);
  EXPECT_EQ(c->limits.max_header_bytes, 2048u);
  EXPECT_EQ(c->limits.max_subscribers, 3u);
  EXPECT_EQ(c->limits.max_fetch_events, 11u);
  EXPECT_EQ(c->limits.max_fetch_bytes, 12u);
  EXPECT_EQ(c->limits.max_wait_ms, 13);
  EXPECT_EQ(c->limits.idle_timeout_ms, 14);
  EXPECT_EQ(c->limits.request_timeout_ms, 15);
  EXPECT_EQ(c->limits.shutdown_timeout_ms, 16);
  EXPECT_EQ(c->limits.stream_heartbeat_ms, 17);
}

void ExpectRejected(const std::string& yaml, const std::string& names) {
  Result<ServerConfig> c = ParseConfig(yaml);
  ASSERT_FALSE(c.ok()) << yaml;
  EXPECT_EQ(c.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(c.status().message().find(names), std::string_view::npos)
      << c.status().ToString() << " should name " << names;
}

TEST(Config, RejectsBadInputNamingTheKey) {
  ExpectRejected("lisen: 1.2.3.4:5", "lisen");
  ExpectRejected("limits: {max_body_byte: 3}", "limits.max_body_byte");
  ExpectRejected("limits: {max_body_bytes: -3}", "limits.max_body_bytes");
  ExpectRejected("limits: {max_body_bytes: lots}", "limits.max_body_bytes");
  ExpectRejected("topic_defaults: {durability: sometimes}", "topic_defaults.durability");
  ExpectRejected("topic_defaults: {partitions: 0}", "topic_defaults.partitions");
  ExpectRejected("groups: {on_damage: ignore}", "groups.on_damage");
  ExpectRejected("listen: nowhere", "listen");
  ExpectRejected("listen: 127.0.0.1:99999", "listen");
  ExpectRejected("tls: {cert_file: a.pem}", "tls");
  ExpectRejected("auth: {tokens: [{service: a, token: short}]}", "auth.tokens[0].token");
  ExpectRejected("auth: {tokens: [{token: long-enough-token-123}]}", "auth.tokens[0].service");
  ExpectRejected("auth: {tokens: [{service: a, token_env: CONVERGE_SURELY_UNSET_VAR}]}",
                 "CONVERGE_SURELY_UNSET_VAR");
  ExpectRejected("auth: {tokens: [{service: a, token: long-enough-token-123, publish: ['a/b']}]}",
                 "a/b");
  ExpectRejected("[1, 2", "YAML");
  ExpectRejected("- just\n- a list\n", "must be a mapping");
  // A key given twice: yaml-cpp would read either value.
  ExpectRejected("listen: 127.0.0.1:1\nlisten: 0.0.0.0:2\n", "'listen' appears more than once");
  ExpectRejected("auth:\n  enabled: true\n  enabled: false\n", "'enabled' appears more than once");
  ExpectRejected("relays:\n  sources:\n    - {name: a, name: b, database: x.db}\n",
                 "'name' appears more than once");
}

TEST(Config, AuditSection) {
  Result<ServerConfig> d = ParseConfig("");
  ASSERT_TRUE(d.ok());
  EXPECT_FALSE(d->audit.enabled);
  EXPECT_EQ(d->audit.interval_ms, 60'000);
  Result<ServerConfig> c = ParseConfig(
      "audit: {enabled: true, interval_ms: 50, max_tracked_events: 7, max_findings: 3}");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_TRUE(c->audit.enabled);
  EXPECT_EQ(c->audit.interval_ms, 50);
  EXPECT_EQ(c->audit.max_tracked_events, 7u);
  EXPECT_EQ(c->audit.max_findings, 3u);
  ExpectRejected("audit: {enabled: maybe}", "audit.enabled");
  ExpectRejected("audit: {interval_ms: 0}", "audit.interval_ms");
  ExpectRejected("audit: {max_tracked_events: 0}", "audit.max_tracked_events");
  ExpectRejected("audit: {intervall_ms: 5}", "audit.intervall_ms");
  ExpectRejected("audit: [1]", "audit");
}

TEST(Config, ClusterSection) {
  Result<ServerConfig> d = ParseConfig("");
  ASSERT_TRUE(d.ok());
  EXPECT_FALSE(d->cluster.enabled);
  Result<ServerConfig> c = ParseConfig(
      "cluster: {instance_id: node-1.a, postgres_conninfo: 'host=db dbname=x', lease_table: "
      "shop_leases, lease_ttl_ms: 3000, lease_renew_interval_ms: 900, lease_safety_margin_ms: "
      "600, postgres_connect_timeout_ms: 2000}");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_TRUE(c->cluster.enabled);
  EXPECT_EQ(c->cluster.instance_id, "node-1.a");
  EXPECT_EQ(c->cluster.lease_table, "shop_leases");
  EXPECT_EQ(c->cluster.lease_ttl_ms, 3000);
  lease::LeaseKeeperOptions o = LeaseOptionsFor(*c, "relay:orders");
  EXPECT_EQ(o.ttl_ms, 3000);
  EXPECT_EQ(o.renew_interval_ms, 900);
  EXPECT_EQ(o.safety_margin_ms, 600);
  ExpectRejected("cluster: {postgres_conninfo: 'host=db'}", "cluster.instance_id");
  ExpectRejected("cluster: {instance_id: 'a b', postgres_conninfo: 'host=db'}",
                 "cluster.instance_id");
  ExpectRejected("cluster: {instance_id: a}", "cluster.postgres_conninfo");
  ExpectRejected("cluster: {instance_id: a, postgres_conninfo: x, lease_table: Bad-Name}",
                 "cluster.lease_table");
  ExpectRejected("cluster: {instance_id: a, postgres_conninfo: x, lease_ttl_ms: 100}",
                 "cluster.lease_ttl_ms");
  // A renewal must have time to land before the holder's deadline.
  ExpectRejected(
      "cluster: {instance_id: a, postgres_conninfo: x, lease_ttl_ms: 1000, "
      "lease_renew_interval_ms: 900}",
      "cluster");
  ExpectRejected("cluster: {instance_id: a, postgres_conninfo: x, ttl_ms: 1000}", "cluster.ttl_ms");
  ExpectRejected("cluster: [1]", "cluster");
}

TEST(Config, ClusterConsumerGroups) {
  const std::string js =
      "log: {backend: jetstream, jetstream: {servers: ['nats://127.0.0.1:4222']}}\n";
  // Shared by default with the JetStream log, local otherwise.
  Result<ServerConfig> c = ParseConfig(js + "cluster: {instance_id: a, postgres_conninfo: x}");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_TRUE(SharedConsumerGroups(*c));
  EXPECT_EQ(c->cluster.group_state_table, "converge_group_state");
  c = ParseConfig("cluster: {instance_id: a, postgres_conninfo: x}");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_FALSE(SharedConsumerGroups(*c));
  c = ParseConfig(js + "cluster: {instance_id: a, postgres_conninfo: x, consumer_groups: local}");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_FALSE(SharedConsumerGroups(*c));
  c = ParseConfig(js +
                  "cluster: {instance_id: a, postgres_conninfo: x, advertise_url: "
                  "'http://10.0.0.5:8080', group_state_table: shop_groups}");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->cluster.advertise_url, "http://10.0.0.5:8080");
  EXPECT_EQ(c->cluster.group_state_table, "shop_groups");
  ExpectRejected(js + "cluster: {instance_id: a, postgres_conninfo: x, consumer_groups: both}",
                 "cluster.consumer_groups");
  // Shared groups need a log every sidecar shares.
  ExpectRejected("cluster: {instance_id: a, postgres_conninfo: x, consumer_groups: shared}",
                 "cluster.consumer_groups");
  ExpectRejected(js + "cluster: {instance_id: a, postgres_conninfo: x, advertise_url: 'ftp://x'}",
                 "cluster.advertise_url");
  ExpectRejected(
      js + "cluster: {instance_id: a, postgres_conninfo: x, advertise_url: 'http://h:1/p'}",
      "cluster.advertise_url");
  ExpectRejected(js + "cluster: {instance_id: a, postgres_conninfo: x, group_state_table: A-b}",
                 "cluster.group_state_table");
  // Listening on every address: how the others reach this sidecar must be said.
  ExpectRejected(js + "listen: '0.0.0.0:8080'\nauth: {allow_unauthenticated: true}\n"
                      "cluster: {instance_id: a, postgres_conninfo: x}",
                 "cluster.advertise_url");
}

TEST(Config, LogBackendSection) {
  Result<ServerConfig> d = ParseConfig("");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->log.backend, LogBackend::kEmbedded);
  Result<ServerConfig> c = ParseConfig(R"(
log:
  backend: jetstream
  jetstream:
    servers: [nats://127.0.0.1:4222, nats://127.0.0.1:4223]
    replicas: 3
    stream_prefix: shop-a
    connect_timeout_ms: 1000
    ack_timeout_ms: 2000
    max_pending_publishes: 1000
)");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->log.backend, LogBackend::kJetStream);
  EXPECT_EQ(c->log.jetstream.servers.size(), 2u);
  EXPECT_EQ(c->log.jetstream.replicas, 3u);
  EXPECT_EQ(c->log.jetstream.stream_prefix, "shop-a");
  EXPECT_EQ(c->log.jetstream.connect_timeout_ms, 1000);
  EXPECT_EQ(c->log.jetstream.ack_timeout_ms, 2000);
  EXPECT_EQ(c->log.jetstream.max_pending_publishes, 1000);
  ExpectRejected("log: {backend: kafka}", "log.backend");
  ExpectRejected("log: {colour: red}", "log.colour");
  ExpectRejected("log: {jetstream: {servers: [nats://a:1]}}", "log.jetstream");
  ExpectRejected("log: {backend: embedded, jetstream: {servers: [nats://a:1]}}", "log.jetstream");
  ExpectRejected("log: {backend: jetstream}", "log.jetstream");
  ExpectRejected("log: {backend: jetstream, jetstream: {replicas: 3}}", "log.jetstream.servers");
  ExpectRejected("log: {backend: jetstream, jetstream: {servers: [x], replicas: 7}}",
                 "log.jetstream.replicas");
  ExpectRejected("log: {backend: jetstream, jetstream: {servers: [x], stream_prefix: a.b}}",
                 "log.jetstream");
  ExpectRejected("log: {backend: jetstream, jetstream: {servers: [x], ack_timeout_ms: 0}}",
                 "log.jetstream.ack_timeout_ms");
  ExpectRejected("log: {backend: jetstream, jetstream: {servers: [x], server: y}}",
                 "log.jetstream.server");
}

TEST(Config, StoreSection) {
  Result<ServerConfig> d = ParseConfig("");
  ASSERT_TRUE(d.ok());
  EXPECT_TRUE(d->store.enabled);
  EXPECT_EQ(d->store.durability, Durability::kFsync);
  EXPECT_EQ(d->store.feed_topic, "store-changes");
  Result<ServerConfig> c = ParseConfig(R"(
store:
  enabled: false
  durability: interval
  sync_interval_ms: 20
  max_document_bytes: 2048
  max_store_bytes: 1000000
  feed_topic: changes
  checkpoint_wal_bytes: 8192
  ttl_sweep_interval_ms: 0
)");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_FALSE(c->store.enabled);
  EXPECT_EQ(c->store.durability, Durability::kInterval);
  EXPECT_EQ(c->store.sync_interval_ms, 20);
  EXPECT_EQ(c->store.max_document_bytes, 2048u);
  EXPECT_EQ(c->store.max_store_bytes, 1000000u);
  EXPECT_EQ(c->store.feed_topic, "changes");
  EXPECT_EQ(c->store.checkpoint_wal_bytes, 8192u);
  EXPECT_EQ(c->store.ttl_sweep_interval_ms, 0);
  for (const char* bad : {"store: {colour: red}", "store: {durability: sometimes}",
                          "store: {max_document_bytes: 0}", "store: {feed_topic: ''}"}) {
    Result<ServerConfig> r = ParseConfig(bad);
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(r.status().message().find("store"), std::string_view::npos) << bad;
  }
}

TEST(Config, StoreBackendPostgres) {
  Result<ServerConfig> d = ParseConfig("");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->store.backend, "embedded");
  Result<ServerConfig> c = ParseConfig(R"(
store:
  backend: postgres
  postgres_conninfo: "host=db dbname=app"
  postgres_table_prefix: shop_store
  postgres_connect_timeout_ms: 1500
  postgres_statement_timeout_ms: 0
)");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->store.backend, "postgres");
  const PostgresStoreOptions pg = PostgresStoreOptionsFor(*c);
  EXPECT_EQ(pg.conninfo, "host=db dbname=app");
  EXPECT_EQ(pg.table_prefix, "shop_store");
  EXPECT_EQ(pg.connect_timeout_ms, 1500);
  EXPECT_EQ(pg.statement_timeout_ms, 0);
  // Each refusal names its key.
  for (const auto& [bad, key] : std::vector<std::pair<std::string, std::string>>{
           {"store: {backend: mysql}", "store.backend"},
           {"store: {backend: postgres}", "store.postgres_conninfo"},
           {"store: {postgres_conninfo: 'host=db'}", "store.postgres_conninfo"},
           {"store: {backend: embedded, postgres_table_prefix: x}", "store.postgres_table_prefix"},
           {"store: {backend: postgres, postgres_conninfo: 'host=db', postgres_table_prefix: "
            "'Bad-Prefix'}",
            "table_prefix"},
           {"store: {backend: postgres, postgres_conninfo: 'host=db', "
            "postgres_connect_timeout_ms: 0}",
            "store.postgres_connect_timeout_ms"},
           {"store: {backend: postgres, postgres_conninfo: [a]}", "store.postgres_conninfo"},
           {"store: {backend: postgres, postgres_conninfo: 'h', postgres_port: 5}",
            "postgres_port"}}) {
    Result<ServerConfig> r = ParseConfig(bad);
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(r.status().message().find(key), std::string_view::npos)
        << bad << ": " << r.status().ToString();
  }
}

TEST(Config, MultiWriterSection) {
  Result<ServerConfig> c = ParseConfig(R"(
multi_writer:
  - collection: carts
    node_id: 1
    policy: crdt-fields
    crdt_fields: {count: g-counter, tags: or-set}
    poll_interval_ms: 100
    tombstone_retention_ms: 60000
    peers:
      - {node_id: 2, url: "http://10.0.0.2:8080", token: peer-secret}
)");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  ASSERT_EQ(c->multi_writer.size(), 1u);
  const MultiWriterConfig& m = c->multi_writer[0];
  EXPECT_EQ(m.collection, "carts");
  EXPECT_EQ(m.node_id, 1u);
  EXPECT_EQ(m.policy, "crdt-fields");
  EXPECT_EQ(m.crdt_fields.at("count"), "g-counter");
  EXPECT_EQ(m.poll_interval_ms, 100);
  EXPECT_EQ(m.tombstone_retention_ms, 60000);
  ASSERT_EQ(m.peers.size(), 1u);
  EXPECT_EQ(m.peers[0].node_id, 2u);
  EXPECT_EQ(m.peers[0].token, "peer-secret");
  const std::string peers = "    peers: [{node_id: 2, url: 'http://10.0.0.2:8080'}]\n";
  // No policy by default: a multi-writer collection must declare one.
  ExpectRejected("multi_writer:\n  - collection: carts\n    node_id: 1\n" + peers,
                 "multi_writer.carts.policy");
  ExpectRejected("multi_writer:\n  - {collection: carts, node_id: 1, policy: owner-wins}\n",
                 "multi_writer.carts.policy");
  ExpectRejected("multi_writer:\n  - {collection: carts, node_id: 1, policy: lww}\n",
                 "multi_writer.carts.peers");
  ExpectRejected("multi_writer:\n  - collection: carts\n    policy: lww\n" + peers,
                 "multi_writer.carts.node_id");
  ExpectRejected("multi_writer:\n  - collection: carts\n    node_id: 2\n    policy: lww\n" + peers,
                 "multi_writer.carts.peers");
  ExpectRejected(
      "multi_writer:\n  - collection: carts\n    node_id: 1\n    policy: crdt-fields\n" + peers,
      "multi_writer.carts.crdt_fields");
  ExpectRejected(
      "multi_writer:\n  - collection: carts\n    node_id: 1\n    policy: crdt-fields\n"
      "    crdt_fields: {n: h-counter}\n" +
          peers,
      "multi_writer.carts.crdt_fields.n");
  ExpectRejected(
      "multi_writer:\n  - collection: carts\n    node_id: 1\n    policy: resolver\n" + peers,
      "multi_writer.carts.resolver");
  ExpectRejected(
      "multi_writer:\n  - collection: carts\n    node_id: 1\n    policy: lww\n"
      "    colour: red\n" +
          peers,
      "multi_writer[0].colour");
  ExpectRejected(
      "store: {enabled: false}\nmulti_writer:\n  - collection: carts\n    node_id: 1\n"
      "    policy: lww\n" +
          peers,
      "multi_writer.carts");
  ExpectRejected(
      "multi_writer:\n  - collection: converge-mw.x\n    node_id: 1\n    policy: lww\n" + peers,
      "multi_writer.converge-mw.x.collection");
}

TEST(Config, ReplicasSection) {
  Result<ServerConfig> c = ParseConfig(R"(
store: {feed_topic: changes}
replicas:
  - name: customers
    source: {store_collection: customers}
    target: {sqlite: /tmp/copy.db, table: customers_copy}
    max_batch: 50
    on_malformed: skip
    tombstone_retention_ms: 0
    poll_interval_ms: 250
  - name: orders
    source: {topic: order-changes}
    target: {postgres: "host=/tmp dbname=app", table: orders_copy}
)");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  ASSERT_EQ(c->replicas.size(), 2u);
  const ReplicaConfig& a = c->replicas[0];
  EXPECT_EQ(a.source_topic, "changes");
  EXPECT_EQ(a.store_collection, "customers");
  EXPECT_EQ(a.engine, sql::Engine::kSqlite);
  EXPECT_EQ(a.database, "/tmp/copy.db");
  EXPECT_EQ(a.max_batch, 50u);
  EXPECT_EQ(a.on_malformed, replica::OnMalformed::kSkip);
  EXPECT_EQ(a.tombstone_retention_ms, 0);
  EXPECT_EQ(a.poll_interval_ms, 250);
  const ReplicaConfig& b = c->replicas[1];
  EXPECT_EQ(b.source_topic, "order-changes");
  EXPECT_EQ(b.engine, sql::Engine::kPostgres);
  EXPECT_EQ(b.on_malformed, replica::OnMalformed::kStop);
  EXPECT_EQ(b.max_batch, 1000u);
  const std::string ok_target = "target: {sqlite: /tmp/a.db, table: t}";
  for (const std::string& bad : std::vector<std::string>{
           "replicas: {name: x}",
           "replicas: [{name: x, source: {topic: t}, " + ok_target + ", colour: red}]",
           "replicas: [{source: {topic: t}, " + ok_target + "}]",
           "replicas: [{name: 'a b', source: {topic: t}, " + ok_target + "}]",
           "replicas: [{name: x, " + ok_target + "}]",
           "replicas: [{name: x, source: {topic: t, store_collection: c}, " + ok_target + "}]",
           "replicas: [{name: x, source: {topic: _internal}, " + ok_target + "}]",
           "replicas: [{name: x, source: {topic: t}, target: {table: t}}]",
           "replicas: [{name: x, source: {topic: t}, target: {sqlite: a.db, postgres: b, "
           "table: t}}]",
           "replicas: [{name: x, source: {topic: t}, target: {sqlite: a.db, table: 'bad name'}}]",
           "replicas: [{name: x, source: {topic: t}, target: {sqlite: a.db, table: "
           "converge_replicas}}]",
           "replicas: [{name: x, source: {topic: t}, " + ok_target + ", max_batch: 0}]",
           "replicas: [{name: x, source: {topic: t}, " + ok_target + ", on_malformed: maybe}]",
           "replicas: [{name: x, source: {topic: t}, " + ok_target +
               ", on_position_gone: rebootstrap}]",
           "replicas: [{name: x, source: {remote: {url: 'http://127.0.0.1:1', collection: c}}, " +
               ok_target + ", on_position_gone: maybe}]",
           "replicas: [{name: x, source: {remote: {url: 'http://127.0.0.1:1', collection: c}}, "
           "target: {store_collection: copy}, on_position_gone: rebootstrap}]",
           "replicas: [{name: x, source: {topic: t}, " + ok_target +
               ", tombstone_retention_ms: -1}]",
           "replicas: [{name: x, source: {topic: t}, " + ok_target +
               "}, {name: x, source: "
               "{topic: u}, target: {sqlite: /tmp/b.db, table: t}}]",
           "replicas: [{name: x, source: {topic: t}, " + ok_target +
               "}, {name: y, source: "
               "{topic: u}, " +
               ok_target + "}]",
           "store: {enabled: false}\nreplicas: [{name: x, source: {store_collection: c}, " +
               ok_target + "}]",
       }) {
    Result<ServerConfig> r = ParseConfig(bad);
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(r.status().message().find("replicas"), std::string_view::npos)
        << bad << ": " << r.status().ToString();
  }
}

TEST(Config, RemoteReplicaSourceAndCollectionScopedTokens) {
  Result<ServerConfig> c = ParseConfig(R"(
auth:
  tokens:
    - {service: node-b, token: replicator-token-0123456789, read_collections: [customers]}
    - {service: writer, token: writer-token-0123456789, write_collections: [orders]}
    - {service: open, token: open-token-0123456789}
replicas:
  - name: customers
    source:
      remote: {url: "https://node-a:8443", token: secret-of-a-0123456789, collection: customers,
               feed_topic: a-changes}
    target: {sqlite: /tmp/copy.db, table: customers_copy}
)");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_TRUE(c->tokens[0].restrict_collections);
  EXPECT_EQ(c->tokens[0].read_collections, std::vector<std::string>{"customers"});
  EXPECT_TRUE(c->tokens[0].write_collections.empty());
  EXPECT_TRUE(c->tokens[1].restrict_collections);
  EXPECT_EQ(c->tokens[1].read_collections, std::vector<std::string>{"orders"});  // writable
  EXPECT_FALSE(c->tokens[2].restrict_collections);
  const ReplicaConfig& r = c->replicas[0];
  EXPECT_EQ(r.remote_url, "https://node-a:8443");
  EXPECT_EQ(r.remote_token, "secret-of-a-0123456789");
  EXPECT_EQ(r.remote_collection, "customers");
  EXPECT_EQ(r.source_topic, "a-changes");
  EXPECT_TRUE(r.store_collection.empty());
  EXPECT_EQ(ApplierOptionsFor(r).collection, "customers");
  Result<ServerConfig> d = ParseConfig(
      "replicas: [{name: x, source: {remote: {url: 'http://a:1', collection: c}}, "
      "target: {sqlite: /tmp/a.db, table: t}}]");
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->replicas[0].source_topic, "store-changes");
  EXPECT_FALSE(d->replicas[0].rebootstrap_on_position_gone);
  EXPECT_FALSE(RemoteSourceOptionsFor(d->replicas[0]).rebootstrap);
  Result<ServerConfig> g = ParseConfig(
      "replicas: [{name: x, source: {remote: {url: 'http://a:1', collection: c}}, "
      "target: {sqlite: /tmp/a.db, table: t}, on_position_gone: rebootstrap}]");
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  EXPECT_TRUE(g->replicas[0].rebootstrap_on_position_gone);
  EXPECT_TRUE(RemoteSourceOptionsFor(g->replicas[0]).rebootstrap);
  Result<ServerConfig> e = ParseConfig(
      "replicas: [{name: x, source: {remote: {url: 'http://a:1', collection: c}}, "
      "target: {store_collection: copy}, reconcile_interval_ms: 0}]");
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  EXPECT_EQ(e->replicas[0].target_collection, "copy");
  EXPECT_EQ(e->replicas[0].max_batch, kMaxStoreTargetBatch);
  // A store collection target is reconciled too, also on a schedule.
  Result<ServerConfig> h = ParseConfig(
      "replicas: [{name: x, source: {remote: {url: 'http://a:1', collection: c}}, "
      "target: {store_collection: c2}, reconcile_interval_ms: 5000}]");
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  EXPECT_EQ(h->replicas[0].reconcile_interval_ms, 5000);
  const std::string ok_target = "target: {sqlite: /tmp/a.db, table: t}";
  for (const std::string& bad : std::vector<std::string>{
           "replicas: [{name: x, source: {remote: {collection: c}}, " + ok_target + "}]",
           "replicas: [{name: x, source: {remote: {url: 'http://a:1'}}, " + ok_target + "}]",
           "replicas: [{name: x, source: {remote: {url: 'http://a:1/v1', collection: c}}, " +
               ok_target + "}]",
           "replicas: [{name: x, source: {remote: {url: 'ftp://a:1', collection: c}}, " +
               ok_target + "}]",
           "replicas: [{name: x, source: {remote: {url: 'http://a:1', collection: 'a b'}}, " +
               ok_target + "}]",
           "replicas: [{name: x, source: {remote: {url: 'http://a:1', collection: c, "
           "colour: r}}, " +
               ok_target + "}]",
           "replicas: [{name: x, source: {remote: {url: 'http://a:1', collection: c, ca_file: "
           "/nonexistent}}, " +
               ok_target + "}]",
           "replicas: [{name: x, source: {topic: t, remote: {url: 'http://a:1', collection: c}}, " +
               ok_target + "}]",
           "replicas: [{name: x, source: {remote: {url: 'http://a:1', collection: c, token: a, "
           "token_env: B}}, " +
               ok_target + "}]",
           "replicas: [{name: x, source: {remote: {url: 'http://a:1', collection: c}}, " +
               ok_target + ", reconcile_interval_ms: 10}]",
           "replicas: [{name: x, source: {topic: t}, " + ok_target +
               ", reconcile_interval_ms: 5000}]",
           "replicas: [{name: x, source: {store_collection: c}, target: {store_collection: c}}]",
           "replicas: [{name: x, source: {remote: {url: 'http://a:1', collection: c}}, "
           "target: {store_collection: c2, table: t}}]",
           "replicas: [{name: x, source: {remote: {url: 'http://a:1', collection: c}}, "
           "target: {store_collection: c2}, max_batch: 401}]",
       }) {
    Result<ServerConfig> r = ParseConfig(bad);
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(r.status().message().find("replicas"), std::string_view::npos)
        << bad << ": " << r.status().ToString();
  }
}

TEST(Config, SagasSection) {
  Result<ServerConfig> d = ParseConfig("");
  ASSERT_TRUE(d.ok());
  EXPECT_TRUE(d->sagas.enabled);
  EXPECT_EQ(d->sagas.orchestrator.reply_topic, "saga.replies");
  EXPECT_TRUE(d->sagas.definitions.empty());
  Result<ServerConfig> c = ParseConfig(R"(
sagas:
  enabled: false
  reply_topic: replies
  definitions: [a.yaml, b.json]
  postgres_conninfo: host=127.0.0.1 dbname=sagas
  postgres_table: my_sagas
  postgres_connect_timeout_ms: 2500
  postgres_statement_timeout_ms: 0
  max_in_flight: 10
  finished_retain_max: 5
  finished_retain_ms: 1000
)");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_FALSE(c->sagas.enabled);
  EXPECT_EQ(c->sagas.orchestrator.reply_topic, "replies");
  EXPECT_EQ(c->sagas.definitions, (std::vector<std::string>{"a.yaml", "b.json"}));
  EXPECT_EQ(c->sagas.orchestrator.postgres_conninfo, "host=127.0.0.1 dbname=sagas");
  EXPECT_EQ(c->sagas.orchestrator.postgres_table, "my_sagas");
  EXPECT_EQ(d->sagas.orchestrator.postgres_connect_timeout_ms, 5000);
  EXPECT_EQ(d->sagas.orchestrator.postgres_statement_timeout_ms, 30000);
  EXPECT_EQ(c->sagas.orchestrator.postgres_connect_timeout_ms, 2500);
  EXPECT_EQ(c->sagas.orchestrator.postgres_statement_timeout_ms, 0);
  EXPECT_EQ(c->sagas.orchestrator.max_in_flight, 10u);
  EXPECT_EQ(c->sagas.orchestrator.finished_retain_max, 5u);
  EXPECT_EQ(c->sagas.orchestrator.finished_retain_ms, 1000);
  for (const char* bad :
       {"sagas: {colour: red}", "sagas: {max_in_flight: 0}", "sagas: {reply_topic: ''}",
        "sagas: {definitions: {a: b}}", "sagas: {postgres_connect_timeout_ms: 0}",
        "sagas: {postgres_statement_timeout_ms: -1}"}) {
    Result<ServerConfig> r = ParseConfig(bad);
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(r.status().message().find("sagas"), std::string_view::npos) << bad;
  }
}

TEST(Config, RelaysSection) {
  Result<ServerConfig> d = ParseConfig("");
  ASSERT_TRUE(d.ok());
  EXPECT_FALSE(d->relays.enabled);
  Result<ServerConfig> c = ParseConfig(R"(
topic_defaults: {partitions: 3, durability: interval, dedup_window_ms: 5000}
relays:
  sink: {topic_map: {orders: orders-v2}}
  sources:
    - name: orders
      database: sqlite:/var/lib/orders.db
      poll_interval_ms: 50
    - name: billing
      database: host=db dbname=billing
      postgres_buckets: 8
)");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  ASSERT_TRUE(c->relays.enabled);
  const RelayServiceConfig& r = c->relays.service;
  ASSERT_EQ(r.sources.size(), 2u);
  EXPECT_EQ(r.sources[0].name, "orders");
  EXPECT_EQ(r.sources[0].database, "sqlite:/var/lib/orders.db");
  EXPECT_EQ(r.sources[0].options.poll_interval_ms, 50);
  EXPECT_EQ(r.sources[1].options.postgres_buckets, 8u);
  EXPECT_EQ(r.sink.topic_map.at("orders"), "orders-v2");
  // Created topics inherit topic_defaults unless relays.sink says otherwise.
  EXPECT_EQ(r.sink.topic_options.partitions, 3u);
  EXPECT_EQ(r.sink.topic_options.durability, Durability::kInterval);
  EXPECT_EQ(r.sink.topic_options.dedup_window_ms, 5000);
  Result<ServerConfig> own = ParseConfig(
      "topic_defaults: {partitions: 3}\n"
      "relays: {sink: {partitions: 2, durability: none}, sources: [{name: a, database: a.db}]}");
  ASSERT_TRUE(own.ok()) << own.status().ToString();
  EXPECT_EQ(own->relays.service.sink.topic_options.partitions, 2u);
  EXPECT_EQ(own->relays.service.sink.topic_options.durability, Durability::kNone);
  for (const char* bad :
       {"relays: {sources: []}", "relays: [1]",
        "relays: {sources: [{name: a, database: a.db, colour: red}]}",
        "relays: {sources: [{database: a.db}]}", "relays: {sink: {x: 1}}",
        "relays: {sources: [{name: a, database: a.db}, {name: a, database: b.db}]}",
        "relays: {sources: [{name: a, database: 'no idea'}]}"}) {
    Result<ServerConfig> r2 = ParseConfig(bad);
    EXPECT_EQ(r2.status().code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(r2.status().message().find("relays"), std::string_view::npos)
        << bad << ": " << r2.status().message();
  }
}

TEST(Config, RefusesOpenNetworkWithoutTokens) {
  ExpectRejected("listen: 0.0.0.0:8080", "without auth tokens");
  EXPECT_TRUE(ParseConfig("listen: 0.0.0.0:8080\nauth: {allow_unauthenticated: true}").ok());
  EXPECT_TRUE(ParseConfig("listen: '[::1]:8080'").ok());
}

TEST(Config, Loopback) {
  EXPECT_TRUE(IsLoopbackAddress("127.0.0.1"));
  EXPECT_TRUE(IsLoopbackAddress("127.1.2.3"));
  EXPECT_TRUE(IsLoopbackAddress("::1"));
  EXPECT_TRUE(IsLoopbackAddress("localhost"));
  EXPECT_FALSE(IsLoopbackAddress("0.0.0.0"));
  EXPECT_FALSE(IsLoopbackAddress("10.0.0.1"));
}

// Every setting that becomes a module's options is checked by that module's own validation at
// start: before, these configs started and then every topic created from topic_defaults (or
// the first group, store commit or saga) failed.
TEST(Config, RefusesAtStartWhatTheModulesWouldRefuseLater) {
  const std::pair<const char*, const char*> cases[] = {
      {"topic_defaults: {sync_interval_ms: 3600001}", "topic_defaults"},
      {"topic_defaults: {segment_max_bytes: 4294967296}", "topic_defaults"},
      {"topic_defaults: {dedup_max_ids: 100000001}", "topic_defaults"},
      {"topic_defaults: {dedup_window_ms: 9223372036854776}", "topic_defaults"},
      {"topic_defaults: {retention_max_age_ms: 9223372036854776}", "topic_defaults"},
      {"limits: {max_body_bytes: 100000000, max_event_bytes: 40000000}", "limits.max_event_bytes"},
      {"groups: {lease_ms: 86400001, max_lease_ms: 86400001}", "groups"},
      {"groups: {max_lease_ms: 86400001}", "groups.max_lease_ms"},
      {"groups: {max_deliveries: 10001}", "groups"},
      {"groups: {max_nack_delay_ms: 2592000001}", "groups"},
      {"groups: {commit_interval_ms: 60001}", "groups"},
      {"store: {feed_topic: 'no spaces'}", "store"},
      {"store: {feed_topic: _internal}", "store"},
      {"sagas: {reply_topic: 'bad/name'}", "sagas"},
      {"sagas: {reply_topic: .hidden}", "sagas"},
  };
  for (const auto& [yaml, key] : cases) {
    SCOPED_TRACE(yaml);
    ExpectRejected(yaml, key);
  }
  // The log's own message comes through, so the operator sees the allowed range.
  Result<ServerConfig> c = ParseConfig("topic_defaults: {sync_interval_ms: 3600001}");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("sync_interval_ms must be 1..3600000"),
            std::string_view::npos)
      << c.status().ToString();
  // Relays: the topics the sink creates are checked as the sink creates them.
  ExpectRejected(
      "relays: {sources: [{name: a, database: 'sqlite:/x.db'}], sink: {topic_map: {o: "
      "'bad name'}}}",
      "relays.sink.topic_map");
  ExpectRejected(
      "relays: {sources: [{name: a, database: 'sqlite:/x.db'}], sink: "
      "{dead_letter_topic: 'bad name'}}",
      "relays.sink.dead_letter_topic");
  EXPECT_TRUE(ParseConfig("relays: {sources: [{name: a, database: 'sqlite:/x.db'}], sink: "
                          "{dead_letter_topic: outbox-dead}}")
                  .ok());
  // A disabled module's settings are not its concern at start.
  EXPECT_TRUE(ParseConfig("store: {enabled: false, feed_topic: 'no spaces'}").ok());
  EXPECT_TRUE(ParseConfig("sagas: {enabled: false, reply_topic: 'bad/name'}").ok());
  // The builders give what ValidateConfig checked.
  Result<ServerConfig> d = ParseConfig("data_dir: /d\ntopic_defaults: {partitions: 3}");
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(AutoCreatedTopicOptions(*d).partitions, 3u);
  EXPECT_EQ(StoreOptionsFor(*d).dir, "/d/store");
  EXPECT_EQ(StoreFeedTopicOptions(StoreOptionsFor(*d)).partitions, 1u);
  EXPECT_EQ(SagaOptionsFor(*d).topic_options.partitions, 3u);
  EXPECT_EQ(GroupsOptionsFor(*d).dir, "/d/groups");
}

// The store's change events carry the whole document: a max_document_bytes whose feed records
// the log would refuse fails at start, not at the first commit.
TEST(Config, StoreDocumentsMustFitTheFeedTopic) {
  EXPECT_TRUE(ParseConfig("store: {max_document_bytes: 67103232}").ok());
  Result<ServerConfig> c = ParseConfig("store: {max_document_bytes: 67108864}");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("store"), std::string_view::npos) << c.status().ToString();
  EXPECT_NE(c.status().message().find("max_record_bytes"), std::string_view::npos)
      << c.status().ToString();
}

}  // namespace
}  // namespace converge::server

namespace converge::server {
namespace {

TEST(Config, SubscriptionsSection) {
  ::setenv("CONVERGE_TEST_PUSH_SECRET", "from-the-environment-0123", 1);
  Result<ServerConfig> c = ParseConfig(R"(
subscriptions:
  - name: billing
    topic: orders
    endpoint: https://billing.internal:8443/events?x=1
    mode: binary
    max_concurrency: 4
    timeout_ms: 2000
    initial_backoff_ms: 10
    max_backoff_ms: 500
    max_deliveries: 9
    secret_env: CONVERGE_TEST_PUSH_SECRET
  - name: audit
    topic: orders
    group: audit-g
    endpoint: http://127.0.0.1:9000/
    secret: "0123456789abcdef"
)");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  ASSERT_EQ(c->subscriptions.size(), 2u);
  const SubscriptionConfig& a = c->subscriptions[0];
  EXPECT_EQ(a.group, "push-billing");
  EXPECT_TRUE(a.binary);
  EXPECT_EQ(a.max_concurrency, 4u);
  EXPECT_EQ(a.timeout_ms, 2000);
  EXPECT_EQ(a.max_deliveries, 9u);
  EXPECT_EQ(a.secret, "from-the-environment-0123");
  EXPECT_TRUE(a.from_config);
  EXPECT_EQ(c->subscriptions[1].group, "audit-g");
  EXPECT_FALSE(c->subscriptions[1].binary);
  const std::string ok = "topic: t, endpoint: 'http://h/', secret: 0123456789abcdef";
  for (const std::string& bad : std::vector<std::string>{
           "subscriptions: {name: x}",
           "subscriptions: [{name: x, " + ok + ", colour: red}]",
           "subscriptions: [{" + ok + "}]",
           "subscriptions: [{name: x, topic: t, endpoint: 'ftp://h/', secret: 0123456789abcdef}]",
           "subscriptions: [{name: x, topic: t, endpoint: 'http://h/'}]",
           "subscriptions: [{name: x, topic: t, endpoint: 'http://h/', secret: short}]",
           "subscriptions: [{name: x, " + ok + ", secret_env: CONVERGE_TEST_PUSH_SECRET}]",
           "subscriptions: [{name: x, topic: t, endpoint: 'http://h/', secret_env: NO_SUCH_VAR_X}]",
           "subscriptions: [{name: x, topic: t, endpoint: 'http://h/', secret_file: /no/such}]",
           "subscriptions: [{name: x, " + ok + ", mode: other}]",
           "subscriptions: [{name: x, " + ok + ", max_concurrency: 0}]",
           "subscriptions: [{name: x, " + ok + "}, {name: x, " + ok + ", group: g2}]",
           "subscriptions: [{name: x, " + ok + "}, {name: y, " + ok + ", group: push-x}]",
       }) {
    Result<ServerConfig> r = ParseConfig(bad);
    EXPECT_FALSE(r.ok()) << bad;
    if (!r.ok()) {
      EXPECT_NE(r.status().message().find("subscriptions"), std::string::npos) << bad;
    }
  }
}

}  // namespace
}  // namespace converge::server
