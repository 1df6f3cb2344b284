// `converge reconcile NAME [--dry-run]`: asks a running `converge serve` to compare a replica's
// table with its source collection and repair the differences (POST
// /v1/replicas/{name}/reconcile; docs/formats/replica.md, "Reconciliation in converge serve"),
// and prints the result.
#include <boost/beast/http.hpp>
#include <boost/json.hpp>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "command.h"
#include "http_call.h"
#include "converge/status.h"
#include "core/command_line.h"

namespace converge::cli {
namespace {

namespace json = boost::json;
namespace http = boost::beast::http;

constexpr const char* kUsage =
    "Usage: converge reconcile NAME [--dry-run] [--server URL] [--token T] [--json]\n"
    "\n"
    "Compares replica NAME's table with its source store collection and, unless --dry-run,\n"
    "repairs the differences to the source's state; prints what was found and repaired.\n"
    "  --server URL, --url URL  a running `converge serve` (default $CONVERGE_SERVER or\n"
    "                           http://127.0.0.1:8080)\n"
    "  --token T                bearer token (default $CONVERGE_TOKEN)\n"
    "  --dry-run                report only, change nothing\n"
    "  --json                   print the server's JSON reply as is\n";

// One POST to the server. A run reads both copies in full: a long timeout.
Result<HttpCallReply> Post(const std::string& server, const std::string& token,
                           const std::string& target) {
  return HttpCall(server, token, http::verb::post, target, "", std::chrono::minutes(10));
}

void PrintKeys(const json::object& o, const char* kind, const char* label) {
  const std::string count = std::string(kind) + "_count";
  std::printf("%-19s %lld", label, static_cast<long long>(o.at(count).to_number<int64_t>()));
  const json::array& keys = o.at(kind).as_array();
  for (const json::value& k : keys) std::printf(" %s", std::string(k.as_string()).c_str());
  if (static_cast<int64_t>(keys.size()) < o.at(count).to_number<int64_t>()) std::printf(" ...");
  std::printf("\n");
}

int RunReconcile(int argc, char** argv) {
  const char* env_server = std::getenv("CONVERGE_SERVER");
  std::string server = env_server ? env_server : "http://127.0.0.1:8080";
  const char* env_token = std::getenv("CONVERGE_TOKEN");
  std::string token = env_token ? env_token : "";
  std::string name;
  bool dry_run = false;
  bool raw = false;
  CLI::App app("Reconcile a replica with its source collection.", "converge reconcile");
  Configure(app);
  app.add_option("NAME", name)->required();
  app.add_option("--server,--url", server);
  app.add_option("--token", token);
  app.add_flag("--dry-run", dry_run);
  app.add_flag("--json", raw);
  bool help = false;
  Status parsed = cli::Parse(app, argc, argv, &help);
  if (help) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  if (!parsed.ok()) {
    std::fprintf(stderr, "converge reconcile: %s\n\n%s", std::string(parsed.message()).c_str(),
                 kUsage);
    return 2;
  }
  Result<HttpCallReply> reply = Post(
      server, token,
      "/v1/replicas/" + EscapePathSegment(name) + "/reconcile?dry_run=" + (dry_run ? "true" : "false"));
  if (!reply.ok()) {
    std::fprintf(stderr, "converge reconcile: %s\n", reply.status().ToString().c_str());
    return 1;
  }
  if (reply->status < 200 || reply->status >= 300) {
    std::fprintf(stderr, "converge reconcile: %s (HTTP %d)\n", reply->body.c_str(), reply->status);
    return 1;
  }
  if (raw) {
    std::printf("%s\n", reply->body.c_str());
    return 0;
  }
  try {
    const json::object o = json::parse(reply->body).as_object();
    std::printf("replica %s (collection %s)%s: %s\n",
                std::string(o.at("replica").as_string()).c_str(),
                std::string(o.at("collection").as_string()).c_str(),
                o.at("dry_run").as_bool() ? ", dry run" : "",
                o.at("in_sync").as_bool() ? "in sync" : "differences found");
    PrintKeys(o, "missing", "missing:");
    PrintKeys(o, "extra", "extra:");
    PrintKeys(o, "divergent", "divergent:");
    PrintKeys(o, "changed_during_run", "changed during run:");
    std::printf("%-19s %lld\n",
                "repaired:", static_cast<long long>(o.at("repaired").to_number<int64_t>()));
    std::printf("exchange: %lld bytes sent, %lld received, %lld round trips, %.3f s\n",
                static_cast<long long>(o.at("bytes_sent").to_number<int64_t>()),
                static_cast<long long>(o.at("bytes_received").to_number<int64_t>()),
                static_cast<long long>(o.at("round_trips").to_number<int64_t>()),
                o.at("seconds").to_number<double>());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "converge reconcile: unexpected reply: %s\n", e.what());
    return 1;
  }
  return 0;
}

CommandRegistration registration({"reconcile",
                                  "compare a replica with its source and repair it "
                                  "(reconcile --help)",
                                  RunReconcile});

}  // namespace
}  // namespace converge::cli
