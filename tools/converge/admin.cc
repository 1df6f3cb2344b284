// `converge topics|groups|publish|consume|dlq|store`: operating a running `converge serve`
// over its HTTP API (docs/api/openapi.yaml), as any client would. Tables by default, the
// server's JSON with --json; an error prints the server's code and message and exits 1.
#include <boost/beast/http.hpp>
#include <boost/json.hpp>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <functional>
#include <iostream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include "command.h"
#include "converge/env.h"
#include "converge/ids.h"
#include "core/command_line.h"
#include "http_call.h"

namespace converge::cli {
namespace {

namespace json = boost::json;
namespace http = boost::beast::http;

// ---- what every command shares ----

struct Common {
  HttpEndpoint endpoint;
  int64_t timeout_s = 30;
  bool json = false;
};

const char kCommonHelp[] =
    "Connection (every command):\n"
    "  --server URL       http://host:port or https://host:port (default $CONVERGE_SERVER or\n"
    "                     http://127.0.0.1:8080)\n"
    "  --token T          bearer token (default $CONVERGE_TOKEN)\n"
    "  --cacert FILE      https: the CA certificate (PEM) the server's must chain to (default\n"
    "                     $CONVERGE_CACERT, else the system's trust store)\n"
    "  --timeout S        seconds per request, 1..3600 (default 30)\n"
    "  --json             print the server's JSON reply instead of a table\n";

std::string Env(const char* name, const char* fallback = "") {
  const char* v = std::getenv(name);
  return v != nullptr ? v : fallback;
}

void AddCommon(CLI::App& app, Common* c) {
  c->endpoint.server = Env("CONVERGE_SERVER", "http://127.0.0.1:8080");
  c->endpoint.token = Env("CONVERGE_TOKEN");
  c->endpoint.cacert = Env("CONVERGE_CACERT");
  app.add_option("--server", c->endpoint.server);
  app.add_option("--token", c->endpoint.token);
  app.add_option("--cacert", c->endpoint.cacert);
  app.add_option("--timeout", c->timeout_s)->check(Integer(1, 3600));
  app.add_flag("--json", c->json);
}

// Parses; prints the usage on --help (0) or the error and the usage (2). -1: go on.
int ParseArgs(CLI::App& app, int argc, char** argv, const std::string& name,
              const std::string& usage) {
  bool help = false;
  Status s = Parse(app, argc, argv, &help);
  if (help) {
    std::fputs(usage.c_str(), stdout);
    return 0;
  }
  if (!s.ok()) {
    std::fprintf(stderr, "converge %s: %s\n\n%s", name.c_str(), std::string(s.message()).c_str(),
                 usage.c_str());
    return 2;
  }
  return -1;
}

int UsageError(const std::string& name, const std::string& message) {
  std::fprintf(stderr, "converge %s: %s (see converge %s --help)\n", name.c_str(), message.c_str(),
               name.c_str());
  return 2;
}

std::string Str(const json::value* v) {
  if (v == nullptr || v->is_null()) return "";
  if (v->is_string()) return std::string(v->get_string());
  return json::serialize(*v);
}
std::string Str(const json::object& o, std::string_view key) { return Str(o.if_contains(key)); }

long long Num(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  if (v == nullptr) return 0;
  if (v->is_int64()) return static_cast<long long>(v->get_int64());
  if (v->is_uint64()) return static_cast<long long>(v->get_uint64());
  if (v->is_string()) return std::atoll(v->get_string().c_str());
  return 0;
}

const json::array& Arr(const json::object& o, std::string_view key) {
  static const json::array kEmpty;
  const json::value* v = o.if_contains(key);
  return v != nullptr && v->is_array() ? v->get_array() : kEmpty;
}

// One request; its reply printed as JSON or by `table`. Exit code: 0, or 1 for any error
// (the server's code and message, or why the server could not be reached).
int Run(const std::string& name, const Common& c, http::verb method, const std::string& target,
        const std::string& body, const std::function<void(const json::object&)>& table,
        const std::string& content_type = "application/json", const HttpCallHeaders& headers = {},
        HttpCallReply* raw = nullptr) {
  HttpEndpoint endpoint = c.endpoint;
  endpoint.timeout = std::chrono::seconds(c.timeout_s);
  Result<HttpCallReply> reply = HttpCall(endpoint, method, target, body, content_type, headers);
  if (!reply.ok()) {
    std::fprintf(stderr, "converge %s: %s\n", name.c_str(), reply.status().ToString().c_str());
    return 1;
  }
  boost::system::error_code ec;
  json::value v = json::parse(reply->body, ec);
  if (reply->status < 200 || reply->status >= 300) {
    if (!ec && v.is_object() && v.get_object().contains("code")) {
      std::fprintf(stderr, "converge %s: %s: %s (HTTP %d)\n", name.c_str(),
                   Str(v.get_object(), "code").c_str(), Str(v.get_object(), "message").c_str(),
                   reply->status);
    } else {
      std::fprintf(stderr, "converge %s: HTTP %d: %s\n", name.c_str(), reply->status,
                   reply->body.c_str());
    }
    return 1;
  }
  if (raw != nullptr) *raw = *reply;
  if (c.json) {
    std::printf("%s\n", reply->body.c_str());
    return 0;
  }
  if (ec || !v.is_object()) {
    std::fprintf(stderr, "converge %s: the server's reply is not a JSON object\n", name.c_str());
    return 1;
  }
  table(v.get_object());
  return 0;
}

std::string Seg(const std::string& s) { return EscapePathSegment(s); }

// A file's text, or stdin's for "-".
Result<std::string> ReadInput(const std::string& path) {
  if (path == "-") {
    return std::string(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFoundError("cannot read " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// One JSON value from --data (or --file).
Result<json::value> JsonInput(const std::string& data, const std::string& file, bool* given) {
  *given = !data.empty() || !file.empty();
  if (!data.empty() && !file.empty())
    return InvalidArgumentError("give --data or --file, not both");
  std::string text = data;
  if (!file.empty()) {
    CONVERGE_ASSIGN_OR_RETURN(text, ReadInput(file));
  }
  if (text.empty()) return json::value();
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  if (ec) return InvalidArgumentError("not one JSON value: " + ec.message());
  return v;
}

void PrintEvent(const json::object& delivery) {
  const json::value* ev = delivery.if_contains("event");
  if (ev == nullptr || !ev->is_object()) {
    std::printf("  (not a converge event: %s)\n", Str(delivery, "error").c_str());
    return;
  }
  const json::object& e = ev->get_object();
  std::string data = e.contains("data") ? Str(e, "data") : Str(e, "data_base64");
  if (data.size() > 60) data = data.substr(0, 57) + "...";
  std::printf("%-5lld %-8lld %-36s %-24s %s\n", Num(delivery, "partition"), Num(delivery, "offset"),
              Str(e, "id").c_str(), Str(e, "type").c_str(), data.c_str());
}

// ---- converge topics ----

const char kTopicsUsage[] =
    "Usage: converge topics <command> [options]\n"
    "\n"
    "Commands:\n"
    "  list               topics with partitions, retention and events held\n"
    "                     (--internal: internal topics too, admin tokens only)\n"
    "  describe NAME      one topic: options, partition offsets, groups\n"
    "  create NAME        --partitions N, --durability fsync|interval|none,\n"
    "                     --retention-bytes N, --retention-ms N (admin tokens)\n"
    "  delete NAME        the topic, its events and its groups (admin tokens)\n"
    "\n";

void PrintTopicRow(const json::object& t) {
  long long events = 0;
  for (const json::value& p : Arr(t, "partition_offsets")) {
    events += Num(p.get_object(), "end_offset") - Num(p.get_object(), "start_offset");
  }
  std::printf("%-32s %5lld %-9s %12lld %12lld %10lld\n", Str(t, "name").c_str(),
              Num(t, "partitions"), Str(t, "durability").c_str(), Num(t, "retention_max_bytes"),
              Num(t, "retention_max_age_ms"), events);
}

int RunTopics(int argc, char** argv) {
  const std::string usage = std::string(kTopicsUsage) + kCommonHelp;
  Common c;
  std::string name, durability;
  bool internal = false;
  int64_t partitions = 0, retention_bytes = -1, retention_ms = -1;
  CLI::App app("Topics of a running converge serve.", "converge topics");
  Configure(app);
  AddCommon(app, &c);
  app.add_flag("--internal", internal);
  app.add_option("--partitions", partitions)->check(Integer(1, 1024));
  app.add_option("--durability", durability);
  app.add_option("--retention-bytes", retention_bytes)->check(Integer(0, INT64_MAX));
  app.add_option("--retention-ms", retention_ms)->check(Integer(0, INT64_MAX));
  app.add_subcommand("list")->fallthrough();
  for (const char* sub : {"describe", "create", "delete"}) {
    app.add_subcommand(sub)->fallthrough()->add_option("NAME", name)->required();
  }
  app.require_subcommand(1, 1);
  if (int rc = ParseArgs(app, argc, argv, "topics", usage); rc >= 0) return rc;
  const std::string cmd = app.get_subcommands().front()->get_name();
  if (cmd == "list") {
    return Run("topics", c, http::verb::get, internal ? "/v1/topics?internal=true" : "/v1/topics",
               "", [](const json::object& o) {
                 std::printf("%-32s %5s %-9s %12s %12s %10s\n", "TOPIC", "PARTS", "DURABILITY",
                             "RETAIN_BYTES", "RETAIN_MS", "EVENTS");
                 for (const json::value& t : Arr(o, "topics")) PrintTopicRow(t.get_object());
               });
  }
  if (cmd == "describe") {
    return Run("topics", c, http::verb::get, "/v1/topics/" + Seg(name), "",
               [](const json::object& t) {
                 std::printf("topic:       %s\n", Str(t, "name").c_str());
                 std::printf("partitions:  %lld\n", Num(t, "partitions"));
                 std::printf("durability:  %s\n", Str(t, "durability").c_str());
                 std::printf("retention:   %lld bytes per partition, %lld ms (0 = unlimited)\n",
                             Num(t, "retention_max_bytes"), Num(t, "retention_max_age_ms"));
                 std::printf("\n%-9s %12s %12s %12s\n", "PARTITION", "START", "END", "BYTES");
                 for (const json::value& pv : Arr(t, "partition_offsets")) {
                   const json::object& p = pv.get_object();
                   std::printf("%-9lld %12lld %12lld %12lld\n", Num(p, "partition"),
                               Num(p, "start_offset"), Num(p, "end_offset"), Num(p, "size_bytes"));
                 }
                 std::printf("\n%-32s %10s %8s %12s\n", "GROUP", "LAG", "MEMBERS", "DEAD_LETTERS");
                 for (const json::value& gv : Arr(t, "groups")) {
                   const json::object& g = gv.get_object();
                   std::printf("%-32s %10lld %8lld %12lld\n", Str(g, "name").c_str(), Num(g, "lag"),
                               Num(g, "members"), Num(g, "dead_letters"));
                 }
               });
  }
  if (cmd == "create") {
    json::object body;
    body["name"] = name;
    if (partitions > 0) body["partitions"] = partitions;
    if (!durability.empty()) body["durability"] = durability;
    if (retention_bytes >= 0) body["retention_max_bytes"] = retention_bytes;
    if (retention_ms >= 0) body["retention_max_age_ms"] = retention_ms;
    return Run("topics", c, http::verb::post, "/v1/topics", json::serialize(body),
               [](const json::object& t) {
                 std::printf("created topic %s (%lld partitions, %s)\n", Str(t, "name").c_str(),
                             Num(t, "partitions"), Str(t, "durability").c_str());
               });
  }
  return Run("topics", c, http::verb::delete_, "/v1/topics/" + Seg(name), "",
             [](const json::object& o) {
               std::string groups;
               for (const json::value& g : Arr(o, "groups_deleted")) {
                 if (!groups.empty()) groups += ", ";
                 groups += Str(&g);
               }
               std::printf("deleted topic %s%s%s\n", Str(o, "deleted").c_str(),
                           groups.empty() ? "" : " and its groups ", groups.c_str());
             });
}

// ---- converge groups ----

const char kGroupsUsage[] =
    "Usage: converge groups <command> [options]\n"
    "\n"
    "Commands:\n"
    "  list TOPIC              the topic's consumer groups: lag, consumers, dead letters\n"
    "  describe TOPIC GROUP    consumers, the partitions each owns, leases, lag\n"
    "  seek TOPIC GROUP        move the group: --to earliest|latest|offset|time,\n"
    "                          --offset N (with offset), --time-ms MS since the epoch (with\n"
    "                          time), --partition P (one partition; default all)\n"
    "  delete TOPIC GROUP      the group's state (--force: also when it has dead letters not\n"
    "                          replayed; they are deleted with it)\n"
    "\n";

void PrintGroup(const json::object& g) {
  std::printf("group:        %s (topic %s)\n", Str(g, "name").c_str(), Str(g, "topic").c_str());
  std::printf("lag:          %lld\n", Num(g, "lag"));
  std::printf("generation:   %lld\n", Num(g, "generation"));
  std::printf("dead letters: %lld (%lld replayed) in %s\n", Num(g, "dead_letters"),
              Num(g, "dead_letters_replayed"), Str(g, "dead_letter_topic").c_str());
  std::printf("options:      lease %lld ms, max deliveries %lld, session %lld ms\n",
              Num(g, "lease_ms"), Num(g, "max_deliveries"), Num(g, "session_timeout_ms"));
  std::printf("\n%-32s %-20s %9s %10s\n", "CONSUMER", "PARTITIONS", "IN_FLIGHT", "IDLE_MS");
  for (const json::value& mv : Arr(g, "consumers")) {
    const json::object& m = mv.get_object();
    std::string parts;
    for (const json::value& p : Arr(m, "partitions")) {
      if (!parts.empty()) parts += ',';
      parts += Str(&p);
    }
    std::printf("%-32s %-20s %9lld %10lld\n", Str(m, "consumer").c_str(), parts.c_str(),
                Num(m, "in_flight"), Num(m, "idle_ms"));
  }
  std::printf("\n%-9s %-24s %10s %10s %8s %7s %7s\n", "PARTITION", "CONSUMER", "COMMITTED", "END",
              "LAG", "LEASED", "PENDING");
  const json::array& owners = Arr(g, "assignments");
  const json::array& parts = Arr(g, "partitions");
  for (size_t i = 0; i < parts.size(); ++i) {
    const json::object& p = parts[i].get_object();
    const json::object* a = i < owners.size() ? &owners[i].get_object() : nullptr;
    std::string owner = a ? Str(*a, "consumer") : "";
    std::printf("%-9lld %-24s %10lld %10lld %8lld %7lld %7lld\n", Num(p, "partition"),
                owner.empty() ? "-" : owner.c_str(), Num(p, "committed_offset"),
                Num(p, "end_offset"), Num(p, "lag"), a ? Num(*a, "leased") : 0,
                a ? Num(*a, "pending") : 0);
  }
}

int RunGroups(int argc, char** argv) {
  const std::string usage = std::string(kGroupsUsage) + kCommonHelp;
  Common c;
  std::string topic, group, to;
  int64_t offset = -1, time_ms = -1, partition = -1;
  bool force = false;
  CLI::App app("Consumer groups of a running converge serve.", "converge groups");
  Configure(app);
  AddCommon(app, &c);
  app.add_option("--to", to);
  app.add_option("--offset", offset)->check(Integer(0, INT64_MAX));
  app.add_option("--time-ms", time_ms)->check(Integer(0, INT64_MAX / 1000));
  app.add_option("--partition", partition)->check(Integer(0, 1023));
  app.add_flag("--force", force);
  app.add_subcommand("list")->fallthrough()->add_option("TOPIC", topic)->required();
  for (const char* sub : {"describe", "seek", "delete"}) {
    CLI::App* s = app.add_subcommand(sub)->fallthrough();
    s->add_option("TOPIC", topic)->required();
    s->add_option("GROUP", group)->required();
  }
  app.require_subcommand(1, 1);
  if (int rc = ParseArgs(app, argc, argv, "groups", usage); rc >= 0) return rc;
  const std::string cmd = app.get_subcommands().front()->get_name();
  const std::string base = "/v1/topics/" + Seg(topic) + "/groups";
  if (cmd == "list") {
    return Run("groups", c, http::verb::get, base, "", [](const json::object& o) {
      std::printf("%-32s %10s %9s %12s %9s\n", "GROUP", "LAG", "CONSUMERS", "DEAD_LETTERS",
                  "IN_FLIGHT");
      for (const json::value& gv : Arr(o, "groups")) {
        const json::object& g = gv.get_object();
        long long in_flight = 0;
        for (const json::value& p : Arr(g, "partitions"))
          in_flight += Num(p.get_object(), "in_flight");
        std::printf("%-32s %10lld %9lld %12lld %9lld\n", Str(g, "name").c_str(), Num(g, "lag"),
                    Num(g, "members"), Num(g, "dead_letters"), in_flight);
      }
    });
  }
  const std::string path = base + "/" + Seg(group);
  if (cmd == "describe") return Run("groups", c, http::verb::get, path, "", PrintGroup);
  if (cmd == "seek") {
    if (to.empty()) return UsageError("groups", "seek needs --to earliest|latest|offset|time");
    json::object body;
    body["to"] = to;
    if (offset >= 0) body["offset"] = offset;
    if (time_ms >= 0) body["time_ms"] = time_ms;
    if (partition >= 0) body["partition"] = partition;
    return Run("groups", c, http::verb::post, path + "/seek", json::serialize(body),
               [](const json::object& g) {
                 std::printf("seeked; now:\n");
                 for (const json::value& pv : Arr(g, "partitions")) {
                   const json::object& p = pv.get_object();
                   std::printf("  partition %lld: committed %lld, lag %lld\n", Num(p, "partition"),
                               Num(p, "committed_offset"), Num(p, "lag"));
                 }
               });
  }
  return Run("groups", c, http::verb::delete_, path + (force ? "?force=true" : ""), "",
             [](const json::object& o) {
               std::printf("deleted group %s of topic %s\n", Str(o, "deleted").c_str(),
                           Str(o, "topic").c_str());
             });
}

// ---- converge publish ----

const char kPublishUsage[] =
    "Usage: converge publish TOPIC [options]\n"
    "\n"
    "Publishes one CloudEvent built from the options, or the events of --file (one\n"
    "CloudEvent as JSON, or a JSON array of them; - for stdin).\n"
    "\n"
    "  --type TYPE        the event's type (required without --file)\n"
    "  --source SOURCE    its source (default converge-cli)\n"
    "  --id ID            its id (default: a new UUIDv7)\n"
    "  --subject S        its subject\n"
    "  --key K            its partition key (the partitionkey extension)\n"
    "  --data JSON        its data (one JSON value)\n"
    "  --file FILE        events to publish instead\n"
    "\n";

int RunPublish(int argc, char** argv) {
  const std::string usage = std::string(kPublishUsage) + kCommonHelp;
  Common c;
  std::string topic, type, source = "converge-cli", id, subject, key, data, file;
  CLI::App app("Publishes events.", "converge publish");
  Configure(app);
  AddCommon(app, &c);
  app.add_option("TOPIC", topic)->required();
  app.add_option("--type", type);
  app.add_option("--source", source);
  app.add_option("--id", id);
  app.add_option("--subject", subject);
  app.add_option("--key", key);
  app.add_option("--data", data);
  app.add_option("--file", file);
  if (int rc = ParseArgs(app, argc, argv, "publish", usage); rc >= 0) return rc;
  std::string body, content_type;
  if (!file.empty()) {
    if (!type.empty() || !data.empty() || !id.empty() || !subject.empty() || !key.empty()) {
      return UsageError("publish", "--file takes the events as they are: no --type, --data, ...");
    }
    Result<std::string> text = ReadInput(file);
    if (!text.ok()) return UsageError("publish", std::string(text.status().message()));
    body = *text;
    const size_t first = body.find_first_not_of(" \t\r\n");
    content_type = first != std::string::npos && body[first] == '['
                       ? "application/cloudevents-batch+json"
                       : "application/cloudevents+json";
  } else {
    if (type.empty()) return UsageError("publish", "--type is required (or --file)");
    json::object ev;
    ev["specversion"] = "1.0";
    if (id.empty()) {
      UuidV7Generator ids(Env::Default().clock(), Env::Default().random());
      id = ids.NextString();
    }
    ev["id"] = id;
    ev["source"] = source;
    ev["type"] = type;
    if (!subject.empty()) ev["subject"] = subject;
    if (!key.empty()) ev["partitionkey"] = key;
    if (!data.empty()) {
      boost::system::error_code ec;
      json::value v = json::parse(data, ec);
      if (ec) return UsageError("publish", "--data must be one JSON value");
      ev["datacontenttype"] = "application/json";
      ev["data"] = std::move(v);
    }
    body = json::serialize(ev);
    content_type = "application/cloudevents+json";
  }
  return Run(
      "publish", c, http::verb::post, "/v1/topics/" + Seg(topic) + "/events", body,
      [](const json::object& o) {
        std::printf("%-36s %9s %10s %s\n", "ID", "PARTITION", "OFFSET", "DUPLICATE");
        for (const json::value& rv : Arr(o, "results")) {
          const json::object& r = rv.get_object();
          std::printf("%-36s %9lld %10lld %s\n", Str(r, "id").c_str(), Num(r, "partition"),
                      Num(r, "offset"),
                      r.contains("duplicate") && r.at("duplicate").as_bool() ? "yes" : "no");
        }
      },
      content_type);
}

// ---- converge consume ----

const char kConsumeUsage[] =
    "Usage: converge consume TOPIC (--group GROUP | --from-offset N) [options]\n"
    "\n"
    "With --group: fetches events as a member of the group (created if missing) and acks\n"
    "them (unless --no-ack: their leases then expire and they are delivered again).\n"
    "  --consumer NAME    the member's name (default converge-cli)\n"
    "  --max N            at most N events, 1..10000 (default 100)\n"
    "  --wait-ms N        wait up to N ms for events (default 0)\n"
    "  --no-ack           do not ack what was fetched (one fetch)\n"
    "  (--json: the reply of each fetch, one per line)\n"
    "With --from-offset: reads one partition by offset, without a group (nothing changes).\n"
    "  --partition P      the partition (default 0)\n"
    "  --to-offset N      stop before this offset\n"
    "  --max N            at most N events (default 100)\n"
    "\n";

int RunConsume(int argc, char** argv) {
  const std::string usage = std::string(kConsumeUsage) + kCommonHelp;
  Common c;
  std::string topic, group, consumer = "converge-cli";
  int64_t from = -1, to = -1, partition = 0, max = 100, wait_ms = 0;
  bool no_ack = false;
  CLI::App app("Consumes events.", "converge consume");
  Configure(app);
  AddCommon(app, &c);
  app.add_option("TOPIC", topic)->required();
  app.add_option("--group", group);
  app.add_option("--consumer", consumer);
  app.add_option("--from-offset", from)->check(Integer(0, INT64_MAX));
  app.add_option("--to-offset", to)->check(Integer(0, INT64_MAX));
  app.add_option("--partition", partition)->check(Integer(0, 1023));
  app.add_option("--max", max)->check(Integer(1, 10'000));
  app.add_option("--wait-ms", wait_ms)->check(Integer(0, 3'600'000));
  app.add_flag("--no-ack", no_ack);
  if (int rc = ParseArgs(app, argc, argv, "consume", usage); rc >= 0) return rc;
  if (group.empty() == (from < 0)) {
    return UsageError("consume", "give one of --group or --from-offset");
  }
  const auto header = [] {
    std::printf("%-5s %-8s %-36s %-24s %s\n", "PART", "OFFSET", "ID", "TYPE", "DATA");
  };
  if (!group.empty()) {
    const std::string base = "/v1/topics/" + Seg(topic) + "/groups";
    // The group first (409 ALREADY_EXISTS when it is there: fine).
    HttpEndpoint endpoint = c.endpoint;
    endpoint.timeout = std::chrono::seconds(c.timeout_s);
    json::object create;
    create["name"] = group;
    Result<HttpCallReply> created =
        HttpCall(endpoint, http::verb::post, base, json::serialize(create));
    if (created.ok() && created->status != 201 && created->status != 409) {
      return Run("consume", c, http::verb::post, base, json::serialize(create),
                 [](const json::object&) {});
    }
    // Fetch and ack until --max events or nothing more is ready (a group leases one event per
    // partition key at a time, so one fetch may hold fewer than are there).
    Common quiet = c;
    quiet.json = false;
    int64_t total = 0;
    bool first = true;
    while (total < max) {
      json::object fetch;
      fetch["max_events"] = max - total;
      fetch["wait_ms"] = first ? wait_ms : 0;
      fetch["consumer"] = consumer;
      HttpCallReply fetched;
      int rc = Run(
          "consume", quiet, http::verb::post, base + "/" + Seg(group) + "/fetch",
          json::serialize(fetch),
          [&](const json::object& o) {
            if (c.json) return;
            if (first) header();
            for (const json::value& d : Arr(o, "deliveries")) PrintEvent(d.get_object());
          },
          "application/json", {}, &fetched);
      if (rc != 0) return rc;
      first = false;
      boost::system::error_code ec;
      json::value v = json::parse(fetched.body, ec);
      if (ec || !v.is_object()) return 1;
      if (c.json) std::printf("%s\n", fetched.body.c_str());
      json::array acks;
      for (const json::value& d : Arr(v.get_object(), "deliveries")) {
        const json::object& o = d.get_object();
        acks.push_back(json::object{{"partition", o.at("partition")},
                                    {"offset", o.at("offset")},
                                    {"lease_id", o.at("lease_id")}});
      }
      if (acks.empty()) return 0;
      total += static_cast<int64_t>(acks.size());
      if (no_ack) return 0;  // the leases stay: no more could be fetched before they expire
      json::object ack;
      ack["acks"] = std::move(acks);
      ack["consumer"] = consumer;
      rc = Run("consume", quiet, http::verb::post, base + "/" + Seg(group) + "/ack",
               json::serialize(ack), [&](const json::object& o) {
                 if (!Arr(o, "lost").empty()) {
                   std::fprintf(stderr, "converge consume: %zu lease(s) were lost (not acked)\n",
                                Arr(o, "lost").size());
                 }
               });
      if (rc != 0) return rc;
    }
    return 0;
  }
  std::string target = "/v1/topics/" + Seg(topic) +
                       "/events?partition=" + std::to_string(partition) +
                       "&from_offset=" + std::to_string(from) + "&limit=" + std::to_string(max);
  if (to >= 0) target += "&to_offset=" + std::to_string(to);
  return Run("consume", c, http::verb::get, target, "", [&](const json::object& o) {
    header();
    for (const json::value& ev : Arr(o, "events")) {
      json::object d = ev.get_object();
      d["partition"] = Num(o, "partition");
      PrintEvent(d);
    }
    std::printf("(next offset %lld; partition holds %lld..%lld)\n", Num(o, "next_offset"),
                Num(o, "start_offset"), Num(o, "end_offset"));
  });
}

// ---- converge dlq ----

const char kDlqUsage[] =
    "Usage: converge dlq <command> (TOPIC GROUP | --relays) [options]\n"
    "\n"
    "Dead letters of a consumer group (TOPIC GROUP), or of the outbox relays (--relays:\n"
    "admin tokens only).\n"
    "Commands:\n"
    "  list      --from N (dead-letter offset), --limit N; --relays: --state\n"
    "            pending|replayed|discarded\n"
    "  replay    append them again: --from N, --to N, --max N; a group's also\n"
    "            --target-topic T, --include-replayed\n"
    "  discard   --from N --to N: mark them handled without replaying them (a group's go\n"
    "            to an internal topic beside its dead letters and count as replayed)\n"
    "  status    --relays: the relays and their dead-letter counts\n"
    "\n";

void PrintRelayDeadLetters(const json::object& o) {
  std::printf("%-8s %-10s %-16s %-24s %s\n", "OFFSET", "STATE", "RELAY", "TOPIC", "REASON");
  for (const json::value& dv : Arr(o, "dead_letters")) {
    const json::object& d = dv.get_object();
    std::string topic = d.contains("row") ? "(malformed row)" : Str(d, "topic");
    std::printf("%-8lld %-10s %-16s %-24s %s\n", Num(d, "offset"), Str(d, "state").c_str(),
                Str(d, "relay").c_str(), topic.c_str(), Str(d, "reason").c_str());
  }
  std::printf("(next offset %lld of %lld)\n", Num(o, "next_offset"), Num(o, "end_offset"));
}

int RunDlq(int argc, char** argv) {
  const std::string usage = std::string(kDlqUsage) + kCommonHelp;
  Common c;
  std::vector<std::string> names;
  std::string state, target_topic;
  bool relays = false, include_replayed = false;
  int64_t from = -1, to = -1, limit = 100, max = -1;
  CLI::App app("Dead letters.", "converge dlq");
  Configure(app);
  AddCommon(app, &c);
  app.add_flag("--relays", relays);
  app.add_option("--state", state);
  app.add_option("--target-topic", target_topic);
  app.add_flag("--include-replayed", include_replayed);
  app.add_option("--from", from)->check(Integer(0, INT64_MAX));
  app.add_option("--to", to)->check(Integer(0, INT64_MAX));
  app.add_option("--limit", limit)->check(Integer(1, 10'000));
  app.add_option("--max", max)->check(Integer(1, 10'000));
  for (const char* sub : {"list", "replay", "discard", "status"}) {
    app.add_subcommand(sub)->fallthrough()->add_option("TOPIC_GROUP", names)->expected(0, 2);
  }
  app.require_subcommand(1, 1);
  if (int rc = ParseArgs(app, argc, argv, "dlq", usage); rc >= 0) return rc;
  const std::string cmd = app.get_subcommands().front()->get_name();
  if (relays != names.empty()) {
    return UsageError("dlq", "name a group (TOPIC GROUP) or give --relays");
  }
  if (!relays && names.size() != 2) return UsageError("dlq", "name TOPIC and GROUP");
  json::object range;
  if (from >= 0) range["from_offset"] = from;
  if (to >= 0) range["to_offset"] = to;
  if (max > 0) range["max_events"] = max;
  if (relays) {
    if (!target_topic.empty() || include_replayed) {
      return UsageError("dlq", "--target-topic and --include-replayed are for a group's");
    }
    if (cmd == "status") {
      return Run("dlq", c, http::verb::get, "/v1/relays", "", [](const json::object& o) {
        const json::value* dl = o.if_contains("dead_letters");
        const json::object empty;
        const json::object& d = dl && dl->is_object() ? dl->get_object() : empty;
        std::printf(
            "relays %s; dead letters in %s: %lld (%lld pending, %lld replayed, %lld "
            "discarded)\n",
            o.contains("enabled") && o.at("enabled").as_bool() ? "enabled" : "disabled",
            Str(o, "dead_letter_topic").c_str(), Num(d, "total"), Num(d, "pending"),
            Num(d, "replayed"), Num(d, "discarded"));
        std::printf("%-24s %-6s %10s %13s %8s %s\n", "RELAY", "ACTIVE", "PUBLISHED",
                    "DEAD_LETTERED", "FAILURES", "LAST_ERROR");
        for (const json::value& rv : Arr(o, "relays")) {
          const json::object& r = rv.get_object();
          std::printf("%-24s %-6s %10lld %13lld %8lld %s\n", Str(r, "name").c_str(),
                      r.at("active").as_bool() ? "yes" : "no", Num(r, "published"),
                      Num(r, "dead_lettered"), Num(r, "failures"), Str(r, "last_error").c_str());
        }
      });
    }
    if (cmd == "list") {
      std::string target = "/v1/relays/dead-letters?limit=" + std::to_string(limit);
      if (from >= 0) target += "&from_offset=" + std::to_string(from);
      if (!state.empty()) target += "&state=" + Seg(state);
      return Run("dlq", c, http::verb::get, target, "", PrintRelayDeadLetters);
    }
    if (cmd == "replay") {
      return Run("dlq", c, http::verb::post, "/v1/relays/dead-letters/replay",
                 json::serialize(range), [](const json::object& o) {
                   std::printf(
                       "replayed %lld, skipped %lld (already replayed or discarded), "
                       "failed %zu; next offset %lld\n",
                       Num(o, "replayed"), Num(o, "skipped"), Arr(o, "failed").size(),
                       Num(o, "next_offset"));
                   for (const json::value& fv : Arr(o, "failed")) {
                     std::printf("  offset %lld: %s\n", Num(fv.get_object(), "offset"),
                                 Str(fv.get_object(), "message").c_str());
                   }
                 });
    }
    return Run("dlq", c, http::verb::post, "/v1/relays/dead-letters/discard",
               json::serialize(range), [](const json::object& o) {
                 std::printf(
                     "discarded %lld, skipped %lld (already replayed or discarded); "
                     "next offset %lld\n",
                     Num(o, "discarded"), Num(o, "skipped"), Num(o, "next_offset"));
               });
  }
  if (cmd == "status") return UsageError("dlq", "status is for the relays (--relays)");
  if (!state.empty()) return UsageError("dlq", "--state is for the relays' dead letters");
  const std::string base =
      "/v1/topics/" + Seg(names[0]) + "/groups/" + Seg(names[1]) + "/dead-letters";
  if (cmd == "list") {
    std::string target = base + "?limit=" + std::to_string(limit);
    if (from >= 0) target += "&from_offset=" + std::to_string(from);
    return Run("dlq", c, http::verb::get, target, "", [](const json::object& o) {
      std::printf("%-8s %-9s %-10s %-8s %-8s %s\n", "OFFSET", "PARTITION", "EVENT_OFF", "TRIES",
                  "REPLAYED", "REASON");
      for (const json::value& dv : Arr(o, "dead_letters")) {
        const json::object& d = dv.get_object();
        std::printf("%-8lld %-9lld %-10lld %-8lld %-8s %s\n", Num(d, "dead_letter_offset"),
                    Num(d, "partition"), Num(d, "offset"), Num(d, "delivery_count"),
                    d.at("replayed").as_bool() ? "yes" : "no", Str(d, "reason").c_str());
      }
      std::printf("(next offset %lld of %lld)\n", Num(o, "next_offset"), Num(o, "end_offset"));
    });
  }
  if (cmd == "discard") {
    if (!target_topic.empty() || include_replayed) {
      return UsageError("dlq", "discard takes no --target-topic or --include-replayed");
    }
    return Run("dlq", c, http::verb::post, base + "/discard", json::serialize(range),
               [](const json::object& o) {
                 std::printf("discarded %lld (kept in %s), skipped %lld (already replayed); "
                             "next offset %lld\n",
                             Num(o, "discarded"), Str(o, "kept_in").c_str(),
                             Num(o, "skipped_already_replayed"), Num(o, "next_offset"));
               });
  }
  if (!target_topic.empty()) range["target_topic"] = target_topic;
  if (include_replayed) range["include_replayed"] = true;
  return Run("dlq", c, http::verb::post, base + "/replay", json::serialize(range),
             [](const json::object& o) {
               std::printf(
                   "replayed %lld, deduplicated %lld, skipped %lld (already replayed); "
                   "next offset %lld\n",
                   Num(o, "replayed"), Num(o, "deduplicated"), Num(o, "skipped_already_replayed"),
                   Num(o, "next_offset"));
             });
}

// ---- converge store ----

const char kStoreUsage[] =
    "Usage: converge store <command> COLLECTION KEY [options]\n"
    "\n"
    "Commands:\n"
    "  get COLLECTION KEY   the document and its version\n"
    "  put COLLECTION KEY   write --data JSON (or --file FILE, - for stdin); --if-match V\n"
    "                       only over version V, --if-none-match only if it does not exist\n"
    "\n";

int RunStore(int argc, char** argv) {
  const std::string usage = std::string(kStoreUsage) + kCommonHelp;
  Common c;
  std::string collection, key, data, file, if_match;
  bool if_none_match = false;
  CLI::App app("Documents of the shared store.", "converge store");
  Configure(app);
  AddCommon(app, &c);
  app.add_option("--data", data);
  app.add_option("--file", file);
  app.add_option("--if-match", if_match);
  app.add_flag("--if-none-match", if_none_match);
  for (const char* sub : {"get", "put"}) {
    CLI::App* s = app.add_subcommand(sub)->fallthrough();
    s->add_option("COLLECTION", collection)->required();
    s->add_option("KEY", key)->required();
  }
  app.require_subcommand(1, 1);
  if (int rc = ParseArgs(app, argc, argv, "store", usage); rc >= 0) return rc;
  const std::string cmd = app.get_subcommands().front()->get_name();
  // The key may hold '/': each of its segments is escaped, the slashes kept.
  std::string key_path;
  for (size_t at = 0;;) {
    const size_t slash = key.find('/', at);
    key_path += Seg(key.substr(at, slash == std::string::npos ? std::string::npos : slash - at));
    if (slash == std::string::npos) break;
    key_path += '/';
    at = slash + 1;
  }
  const std::string path = "/v1/collections/" + Seg(collection) + "/docs/" + key_path;
  if (cmd == "get") {
    if (!data.empty() || !file.empty() || !if_match.empty() || if_none_match) {
      return UsageError("store", "get takes no --data, --file or preconditions");
    }
    // The document is any JSON value: printed as is, with its version (the ETag) first.
    HttpEndpoint endpoint = c.endpoint;
    endpoint.timeout = std::chrono::seconds(c.timeout_s);
    Result<HttpCallReply> reply = HttpCall(endpoint, http::verb::get, path, "");
    if (reply.ok() && reply->status == 200) {
      if (!c.json) std::printf("version %s\n", reply->etag.c_str());
      std::printf("%s\n", reply->body.c_str());
      return 0;
    }
    return Run("store", c, http::verb::get, path, "", [](const json::object&) {});
  }
  bool given = false;
  Result<json::value> doc = JsonInput(data, file, &given);
  if (!doc.ok()) return UsageError("store", std::string(doc.status().message()));
  if (!given) return UsageError("store", "put needs --data JSON or --file FILE");
  HttpCallHeaders headers;
  if (!if_match.empty()) {
    headers.push_back({"If-Match", if_match == "*" || if_match.front() == '"'
                                       ? if_match
                                       : "\"" + if_match + "\""});
  }
  if (if_none_match) headers.push_back({"If-None-Match", "*"});
  return Run(
      "store", c, http::verb::put, path, json::serialize(*doc),
      [&](const json::object& o) {
        std::printf("%s/%s: version %lld%s\n", collection.c_str(), key.c_str(), Num(o, "version"),
                    o.contains("merged") && o.at("merged").as_bool() ? " (merged)" : "");
      },
      "application/json", headers);
}

// ---- audit ----

const char kAuditUsage[] =
    "Usage: converge audit [options]\n"
    "The server's last end-to-end audit of the log (docs/formats/audit.md): acknowledged events\n"
    "it could not read (missing), extra copies (duplicates), events at another offset than\n"
    "acknowledged (out of order). Admin token. Exit code 0 when the last run found nothing,\n"
    "3 when it found something, 1 on an error.\n\n";

int RunAudit(int argc, char** argv) {
  const std::string usage = std::string(kAuditUsage) + kCommonHelp;
  Common c;
  CLI::App app("The end-to-end audit of a running converge serve.", "converge audit");
  Configure(app);
  AddCommon(app, &c);
  if (int rc = ParseArgs(app, argc, argv, "audit", usage); rc >= 0) return rc;
  HttpCallReply raw;
  int rc = Run("audit", c, http::verb::get, "/v1/audit", "", [&](const json::object& o) {
    if (o.contains("enabled") && !o.at("enabled").as_bool()) {
      std::printf("audit is not enabled on this server (audit.enabled)\n");
      return;
    }
    std::printf("runs %lld, checked %lld acknowledged events, tracked %lld, untracked %lld\n",
                Num(o, "runs"), Num(o, "checked"), Num(o, "tracked"), Num(o, "untracked"));
    std::printf("missing %lld, duplicates %lld, out of order %lld\n", Num(o, "missing"),
                Num(o, "duplicates"), Num(o, "out_of_order"));
    if (!Arr(o, "findings").empty()) {
      std::printf("%-13s %-32s %5s %22s %12s %12s\n", "KIND", "TOPIC", "PART", "SEQ", "ACKED_AT",
                  "FOUND_AT");
    }
    for (const json::value& v : Arr(o, "findings")) {
      const json::object& f = v.get_object();
      std::printf("%-13s %-32s %5lld %22s %12lld %12lld\n", Str(f, "kind").c_str(),
                  Str(f, "topic").c_str(), Num(f, "partition"), Str(f, "seq").c_str(),
                  Num(f, "acked_offset"), Num(f, "found_offset"));
    }
    for (const json::value& e : Arr(o, "errors")) std::printf("error: %s\n", Str(&e).c_str());
  }, "application/json", {}, &raw);
  if (rc != 0) return rc;
  // The exit code says whether the last run found anything (for scripts), --json or not.
  boost::system::error_code ec;
  json::value v = json::parse(raw.body, ec);
  if (!ec && v.is_object() && Num(v.get_object(), "findings_total") > 0) return 3;
  return 0;
}

CommandRegistration topics_registration({"topics",
                                         "list, describe, create and delete topics (topics --help)",
                                         RunTopics});
CommandRegistration groups_registration(
    {"groups", "list, describe, seek and delete consumer groups (groups --help)", RunGroups});
CommandRegistration publish_registration({"publish", "publish events to a topic (publish --help)",
                                          RunPublish});
CommandRegistration consume_registration(
    {"consume", "consume a topic through a group or by offset (consume --help)", RunConsume});
CommandRegistration dlq_registration(
    {"dlq", "list, replay and discard dead letters of groups and relays (dlq --help)", RunDlq});
CommandRegistration audit_registration(
    {"audit", "the last end-to-end audit of the log: missing and duplicate events (audit --help)",
     RunAudit});
CommandRegistration store_registration(
    {"store", "read and write documents of the shared store (store --help)", RunStore});

}  // namespace
}  // namespace converge::cli
