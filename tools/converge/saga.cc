// `converge saga ls|show|cancel|timers`: sagas of a running `converge serve` (its /v1/sagas
// routes, over HTTP), or, with --dir, read straight from a saga log directory (read-only).
#include "converge/saga.h"

#include <boost/beast/http.hpp>
#include <boost/json.hpp>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <string>
#include <vector>

#include "command.h"
#include "http_call.h"
#include "converge/env.h"
#include "core/command_line.h"

namespace converge::cli {
namespace {

namespace json = boost::json;
namespace http = boost::beast::http;

void PrintUsage(std::FILE* out) {
  std::fputs(
      "Usage: converge saga <command> [options]\n"
      "\n"
      "Commands:\n"
      "  start DEFINITION   start a saga (--data JSON, --id ID, --version N); prints its id\n"
      "  ls                 list sagas (newest first)\n"
      "  show ID            status, steps, timers and history of one saga\n"
      "  cancel ID          abort a saga: it is compensated (refused past its pivot)\n"
      "  timers             durable timers, earliest first\n"
      "  timer-set ID KIND  move a saga's timer (KIND: step-timeout, retry, deadline) to\n"
      "                     --due-ms MS (milliseconds since the epoch; a past time fires now)\n"
      "  timer-cancel ID KIND  cancel a saga's timer\n"
      "\n"
      "Where the sagas are (one of):\n"
      "  --server URL       a running `converge serve`, http:// or https:// (default\n"
      "                     $CONVERGE_SERVER or http://127.0.0.1:8080); --token T or\n"
      "                     $CONVERGE_TOKEN for auth; --cacert FILE (or $CONVERGE_CACERT):\n"
      "                     https, the CA certificate the server's must chain to\n"
      "  --dir DIR          a saga log directory, read-only (ls, show, timers)\n"
      "\n"
      "Options of ls:\n"
      "  --state S          running | compensating | completed | compensated\n"
      "  --definition NAME  only this definition\n"
      "  --stuck            only stuck sagas: retrying past their bounds, or (with --idle-ms)\n"
      "  --idle-ms N        in flight and unchanged for N ms\n"
      "  --limit N          at most N, 1..100000 (default 100; also of timers)\n"
      "Options of start:\n"
      "  --data JSON        the saga's input (a JSON value)\n"
      "  --id ID            idempotency key (default: a new UUIDv7)\n"
      "  --version N        definition version (default: the latest)\n"
      "Options of cancel:\n"
      "  --reason TEXT      recorded in the saga's history\n"
      "Every command:\n"
      "  --json             print the JSON reply as is\n",
      out);
}

struct Args {
  std::string command;
  std::string id;
  std::string server;
  std::string token;
  std::string cacert;
  std::string kind;
  int64_t due_ms = -1;
  std::string dir;
  std::string state;
  std::string definition;
  std::string reason;
  std::string data;
  std::string start_id;
  int64_t version = 0;
  bool stuck = false;
  int64_t idle_ms = 0;
  int64_t limit = 100;
  bool json = false;
};

// Parses the command line; `*help` when --help was asked (then nothing else is checked).
Result<Args> Parse(int argc, char** argv, bool* help) {
  Args a;
  const char* env_server = std::getenv("CONVERGE_SERVER");
  a.server = env_server ? env_server : "http://127.0.0.1:8080";
  const char* env_token = std::getenv("CONVERGE_TOKEN");
  a.token = env_token ? env_token : "";
  const char* env_cacert = std::getenv("CONVERGE_CACERT");
  a.cacert = env_cacert ? env_cacert : "";
  CLI::App app("Sagas of a running converge serve, or of a saga log directory.", "converge saga");
  Configure(app);
  // Every option is the parent's, so it may come before or after the command (fallthrough).
  app.add_option("--server", a.server);
  app.add_option("--token", a.token);
  app.add_option("--cacert", a.cacert);
  app.add_option("--due-ms", a.due_ms)->check(Integer(0, INT64_MAX / 1000));
  app.add_option("--dir", a.dir);
  app.add_option("--state", a.state);
  app.add_option("--definition", a.definition);
  app.add_option("--reason", a.reason);
  app.add_option("--data", a.data);
  app.add_option("--id", a.start_id);
  // The ranges the server accepts (POST /v1/sagas, GET /v1/sagas, /v1/saga-timers).
  app.add_option("--version", a.version)->check(Integer(0, UINT32_MAX));
  app.add_option("--idle-ms", a.idle_ms)
      ->check(Integer(0, static_cast<uint64_t>(SagaLimits::kMaxTimeoutMs) * 100));
  app.add_option("--limit", a.limit)->check(Integer(1, 100'000));
  app.add_flag("--stuck", a.stuck);
  app.add_flag("--json", a.json);
  std::string id;
  for (const char* name : {"ls", "timers"}) app.add_subcommand(name)->fallthrough();
  for (const char* name : {"show", "cancel"}) {
    app.add_subcommand(name)->fallthrough()->add_option("ID", id)->required();
  }
  app.add_subcommand("start")->fallthrough()->add_option("DEFINITION", id)->required();
  std::string kind;
  for (const char* name : {"timer-set", "timer-cancel"}) {
    CLI::App* sub = app.add_subcommand(name)->fallthrough();
    sub->add_option("ID", id)->required();
    sub->add_option("KIND", kind)->required();
  }
  app.require_subcommand(1, 1);
  CONVERGE_RETURN_IF_ERROR(cli::Parse(app, argc, argv, help));
  if (*help) return a;
  a.command = app.get_subcommands().front()->get_name();
  a.id = id;
  a.kind = kind;
  if (a.command == "timer-set" && a.due_ms < 0) {
    return InvalidArgumentError("timer-set needs --due-ms");
  }
  if (!a.dir.empty() &&
      (a.command == "cancel" || a.command == "start" || a.command.rfind("timer-", 0) == 0)) {
    return InvalidArgumentError(a.command + " needs a running server (--server), not --dir");
  }
  return a;
}

using Reply = HttpCallReply;

// One HTTP/1.1 request to the server named by --server.
Result<Reply> Call(const Args& a, http::verb method, const std::string& target,
                   const std::string& body) {
  HttpEndpoint endpoint;
  endpoint.server = a.server;
  endpoint.token = a.token;
  endpoint.cacert = a.cacert;
  return HttpCall(endpoint, method, target, body);
}

std::string Time(int64_t micros) {
  if (micros <= 0) return "-";
  const time_t secs = static_cast<time_t>(micros / 1'000'000);
  struct tm tm;
  gmtime_r(&secs, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string Str(const json::value& v) {
  if (v.is_string()) return std::string(v.as_string());
  if (v.is_null()) return "";
  return json::serialize(v);
}

int64_t Int(const json::object& o, const char* key) {
  auto it = o.find(key);
  if (it == o.end()) return 0;
  if (it->value().is_int64()) return it->value().as_int64();
  if (it->value().is_uint64()) return static_cast<int64_t>(it->value().as_uint64());
  return 0;
}

void PrintList(const json::value& v) {
  std::printf("%-40s %-16s %3s %-13s %4s %-5s %s\n", "ID", "DEFINITION", "VER", "STATE", "STEP",
              "STUCK", "UPDATED");
  for (const json::value& item : v.at("sagas").as_array()) {
    const json::object& s = item.as_object();
    std::printf("%-40s %-16s %3lld %-13s %4lld %-5s %s\n", Str(s.at("id")).c_str(),
                Str(s.at("definition")).c_str(), static_cast<long long>(Int(s, "version")),
                Str(s.at("state")).c_str(), static_cast<long long>(Int(s, "step")),
                s.at("stuck").as_bool() ? "yes" : "no", Time(Int(s, "updated_micros")).c_str());
  }
}

void PrintTimers(const json::value& v) {
  std::printf("%-40s %-13s %4s %s\n", "SAGA", "KIND", "STEP", "DUE");
  for (const json::value& item : v.at("timers").as_array()) {
    const json::object& t = item.as_object();
    std::printf("%-40s %-13s %4lld %s\n", Str(t.at("saga_id")).c_str(), Str(t.at("kind")).c_str(),
                static_cast<long long>(Int(t, "step")), Time(Int(t, "due_micros")).c_str());
  }
}

void PrintSaga(const json::value& v) {
  const json::object& s = v.as_object();
  std::printf("id:          %s\n", Str(s.at("id")).c_str());
  std::printf("definition:  %s v%lld\n", Str(s.at("definition")).c_str(),
              static_cast<long long>(Int(s, "version")));
  std::printf("state:       %s%s\n", Str(s.at("state")).c_str(),
              s.at("stuck").as_bool() ? " (stuck)" : "");
  std::printf("started:     %s\n", Time(Int(s, "started_micros")).c_str());
  std::printf("updated:     %s\n", Time(Int(s, "updated_micros")).c_str());
  if (!Str(s.at("error")).empty()) std::printf("error:       %s\n", Str(s.at("error")).c_str());
  std::printf("data:        %s\n", Str(s.at("data")).c_str());
  std::printf("steps:\n");
  int i = 0;
  for (const json::value& st : s.at("steps").as_array()) {
    const json::object& o = st.as_object();
    std::printf("  %2d %-24s %-13s attempts %lld\n", i++, Str(o.at("name")).c_str(),
                Str(o.at("state")).c_str(), static_cast<long long>(Int(o, "attempts")));
  }
  if (!s.at("timers").as_array().empty()) {
    std::printf("timers:\n");
    for (const json::value& t : s.at("timers").as_array()) {
      const json::object& o = t.as_object();
      std::printf("  %-13s due %s\n", Str(o.at("kind")).c_str(),
                  Time(Int(o, "due_micros")).c_str());
    }
  }
  std::printf("history:%s\n",
              Int(s, "history_dropped") > 0
                  ? (" (" + std::to_string(Int(s, "history_dropped")) + " older not kept)").c_str()
                  : "");
  for (const json::value& h : s.at("history").as_array()) {
    const json::object& o = h.as_object();
    std::string what = Str(o.at("event"));
    if (o.contains("step")) what += " step " + std::to_string(Int(o, "step"));
    if (o.contains("attempt")) what += " attempt " + std::to_string(Int(o, "attempt"));
    if (o.contains("detail")) what += ": " + Str(o.at("detail"));
    std::printf("  %s  %s\n", Time(Int(o, "time_micros")).c_str(), what.c_str());
  }
}

// The same JSON the server would give, from a saga log directory.
Result<Reply> Offline(const Args& a) {
  CONVERGE_ASSIGN_OR_RETURN(std::unique_ptr<SagaLogSnapshot> snap,
                            SagaLogSnapshot::Load(Env::Default(), a.dir));
  std::string out;
  if (a.command == "ls") {
    SagaListFilter f;
    f.definition = a.definition;
    f.stuck_only = a.stuck;
    f.idle_for_ms = a.idle_ms;
    f.limit = static_cast<size_t>(a.limit);
    if (!a.state.empty()) {
      bool found = false;
      for (SagaState s : {SagaState::kRunning, SagaState::kCompensating, SagaState::kCompleted,
                          SagaState::kCompensated}) {
        if (SagaStateName(s) == a.state) {
          f.state = s;
          found = true;
        }
      }
      if (!found) return InvalidArgumentError("--state: unknown state '" + a.state + "'");
    }
    out = "{\"sagas\":[";
    bool first = true;
    for (const SagaSummary& s : snap->List(f, Env::Default().clock().NowWallMicros())) {
      out += (first ? "" : ",") + SagaSummaryToJson(s);
      first = false;
    }
    out += "]}";
  } else if (a.command == "timers") {
    out = "{\"timers\":[";
    bool first = true;
    for (const SagaTimerInfo& t : snap->ListTimers(static_cast<size_t>(a.limit))) {
      out += (first ? "" : ",") + SagaTimerToJson(t);
      first = false;
    }
    out += "]}";
  } else {
    Result<SagaInfo> info = snap->Describe(a.id);
    if (!info.ok()) {
      return Reply{404,
                   "{\"code\":\"NOT_FOUND\",\"message\":" +
                       json::serialize(json::string(info.status().message())) + "}",
                   ""};
    }
    out = SagaInfoToJson(*info);
  }
  return Reply{200, out, ""};
}

int RunSaga(int argc, char** argv) {
  bool help = false;
  Result<Args> parsed = Parse(argc, argv, &help);
  if (help) {
    PrintUsage(stdout);
    return 0;
  }
  if (!parsed.ok()) {
    std::fprintf(stderr, "converge saga: %s\n\n", std::string(parsed.status().message()).c_str());
    PrintUsage(stderr);
    return 2;
  }
  const Args a = std::move(parsed).value();
  Result<Reply> reply = Reply{};
  if (!a.dir.empty()) {
    reply = Offline(a);
  } else if (a.command == "ls") {
    std::string target = "/v1/sagas?limit=" + std::to_string(a.limit);
    if (!a.state.empty()) target += "&state=" + EscapePathSegment(a.state);
    if (!a.definition.empty()) target += "&definition=" + EscapePathSegment(a.definition);
    if (a.stuck) target += "&stuck=true";
    if (a.idle_ms > 0) target += "&idle_ms=" + std::to_string(a.idle_ms);
    reply = Call(a, http::verb::get, target, "");
  } else if (a.command == "timers") {
    reply = Call(a, http::verb::get, "/v1/saga-timers?limit=" + std::to_string(a.limit), "");
  } else if (a.command == "show") {
    reply = Call(a, http::verb::get, "/v1/sagas/" + EscapePathSegment(a.id), "");
  } else if (a.command == "start") {
    json::object body;
    body["definition"] = a.id;
    if (a.version > 0) body["version"] = a.version;
    if (!a.start_id.empty()) body["id"] = a.start_id;
    if (!a.data.empty()) {
      boost::system::error_code ec;
      json::value data = json::parse(a.data, ec);
      if (ec) {
        std::fprintf(stderr, "converge saga: --data must be one JSON value\n");
        return 2;
      }
      body["data"] = std::move(data);
    }
    reply = Call(a, http::verb::post, "/v1/sagas", json::serialize(body));
  } else if (a.command == "timer-set") {
    json::object body;
    body["due_micros"] = a.due_ms * 1000;
    reply = Call(a, http::verb::put,
                 "/v1/sagas/" + EscapePathSegment(a.id) + "/timers/" + EscapePathSegment(a.kind),
                 json::serialize(body));
  } else if (a.command == "timer-cancel") {
    reply =
        Call(a, http::verb::delete_,
             "/v1/sagas/" + EscapePathSegment(a.id) + "/timers/" + EscapePathSegment(a.kind), "");
  } else {
    json::object body;
    body["reason"] = a.reason;
    reply =
        Call(a, http::verb::post, "/v1/sagas/" + EscapePathSegment(a.id) + "/cancel", json::serialize(body));
  }
  if (!reply.ok()) {
    std::fprintf(stderr, "converge saga: %s\n", reply.status().ToString().c_str());
    return 1;
  }
  if (reply->status < 200 || reply->status >= 300) {
    // The server's code and message, as the other commands print them.
    boost::system::error_code ec;
    json::value err = json::parse(reply->body, ec);
    if (!ec && err.is_object() && err.as_object().contains("code")) {
      std::fprintf(stderr, "converge saga: %s: %s (HTTP %d)\n",
                   Str(err.as_object().at("code")).c_str(),
                   err.as_object().contains("message")
                       ? Str(err.as_object().at("message")).c_str()
                       : "",
                   reply->status);
    } else {
      std::fprintf(stderr, "converge saga: HTTP %d: %s\n", reply->status, reply->body.c_str());
    }
    return 1;
  }
  if (a.json) {
    std::printf("%s\n", reply->body.c_str());
    return 0;
  }
  boost::system::error_code ec;
  json::value v = json::parse(reply->body, ec);
  if (ec || !v.is_object()) {
    std::fprintf(stderr, "converge saga: the server's reply is not JSON\n");
    return 1;
  }
  try {
    if (a.command == "ls") {
      PrintList(v);
    } else if (a.command == "timers") {
      PrintTimers(v);
    } else if (a.command == "show") {
      PrintSaga(v);
    } else if (a.command == "start") {
      std::printf("%s\n", Str(v.at("id")).c_str());
    } else if (a.command == "timer-set") {
      std::printf("%s: %s timer due %s\n", a.id.c_str(), a.kind.c_str(),
                  Time(Int(v.as_object(), "due_micros")).c_str());
    } else if (a.command == "timer-cancel") {
      std::printf("%s: %s timer cancelled\n", a.id.c_str(), a.kind.c_str());
    } else {
      std::printf("%s: %s\n", a.id.c_str(),
                  v.as_object().contains("state") ? Str(v.at("state")).c_str() : "cancelled");
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "converge saga: unexpected reply: %s\n", e.what());
    return 1;
  }
  return 0;
}

CommandRegistration registration({"saga", "start, list, show and cancel sagas (saga --help)",
                                  RunSaga});

}  // namespace
}  // namespace converge::cli
