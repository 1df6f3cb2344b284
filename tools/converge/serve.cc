// `converge serve`: the sidecar broker with the HTTP API (see docs/api/openapi.yaml).
#include <signal.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>

#include "command.h"
#include "core/command_line.h"
#include "server/config.h"
#include "server/server.h"
#include "server/topology_config.h"

namespace converge::cli {
namespace {

constexpr char kUsage[] =
    "Usage: converge serve [--config converge.yaml] [--listen HOST:PORT] [--data-dir DIR]\n"
    "\n"
    "Runs the converge sidecar: CloudEvents publish, topics, consumer groups and dead letters\n"
    "over HTTP (API v1, docs/api/openapi.yaml), on embedded storage in the data directory.\n"
    "Without a config file it listens on 127.0.0.1:8080 with auth disabled (loopback only)\n"
    "and keeps its data in ./var/data. Flags override the config file.\n"
    "SIGTERM or Ctrl-C: stop accepting, drain in-flight requests, sync, exit 0.\n"
    "\n"
    "  --config PATH      YAML configuration (every key: docs/configuration.md)\n"
    "  --listen HOST:PORT address to listen on (port 0 picks a free port)\n"
    "  --data-dir DIR     where the log and consumer-group state live\n"
    "  --topology DIR     service manifests (docs/topology.md): each service's token gets its\n"
    "                     permissions from its manifest\n";

int RunServe(int argc, char** argv) {
  std::string config_path, listen, data_dir, topology_dir;
  CLI::App app("Runs the converge sidecar.", "converge serve");
  Configure(app);
  app.add_option("--config", config_path, "YAML configuration");
  app.add_option("--listen", listen, "address to listen on");
  app.add_option("--data-dir", data_dir, "where the log and consumer-group state live");
  app.add_option("--topology", topology_dir, "service manifests: token permissions from them");
  if (int rc = ParseOrExit(app, argc, argv, kUsage); rc >= 0) return rc;

  server::ServerConfig config;
  if (!config_path.empty()) {
    Result<server::ServerConfig> loaded = server::LoadConfigFile(config_path);
    if (!loaded.ok()) {
      std::fprintf(stderr, "converge serve: %s\n", loaded.status().ToString().c_str());
      return 2;
    }
    config = std::move(loaded).value();
  }
  if (!listen.empty()) {
    Status s = server::ParseListen(listen, &config.listen_address, &config.listen_port);
    if (!s.ok()) {
      std::fprintf(stderr, "converge serve: --listen: %s\n", s.ToString().c_str());
      return 2;
    }
  }
  if (!data_dir.empty()) config.data_dir = data_dir;
  if (Status s = server::ValidateConfig(config); !s.ok()) {
    std::fprintf(stderr, "converge serve: %s\n", s.ToString().c_str());
    return 2;
  }
  if (!topology_dir.empty()) config.topology_dir = topology_dir;
  std::vector<std::string> notes;
  if (Status s = server::ApplyTopology(&config, &notes); !s.ok()) {
    std::fprintf(stderr, "converge serve: %s\n", s.ToString().c_str());
    return 2;
  }
  for (const std::string& note : notes) {
    std::fprintf(stderr, "converge serve: topology: %s\n", note.c_str());
  }

  // SIGTERM and SIGINT wait (blocked, in every thread started from here on) until Run is
  // ready to drain on them: one arriving while storage opens or just after the port is
  // announced must not kill the process the default way, without the final sync.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  Result<std::unique_ptr<server::Server>> server = server::Server::Open(config);
  if (!server.ok()) {
    std::fprintf(stderr, "converge serve: cannot open storage in %s: %s\n", config.data_dir.c_str(),
                 server.status().ToString().c_str());
    return 1;
  }
  if (Status s = (*server)->Listen(); !s.ok()) {
    std::fprintf(stderr, "converge serve: %s\n", s.ToString().c_str());
    return 1;
  }
  if (!config.auth_enabled()) {
    std::fprintf(stderr,
                 "converge serve: WARNING: auth disabled: loopback only (configure "
                 "auth.tokens to require bearer tokens)\n");
  }
  // Tests and scripts read this line to find the port (--listen 127.0.0.1:0).
  std::printf("converge serve: listening on %s (data_dir %s)\n", (*server)->url().c_str(),
              config.data_dir.c_str());
  std::fflush(stdout);
  Status s = (*server)->Run(/*handle_signals=*/true);
  if (!s.ok()) {
    std::fprintf(stderr, "converge serve: shutdown: %s\n", s.ToString().c_str());
    return 1;
  }
  std::fprintf(stderr, "converge serve: drained and synced, bye\n");
  return 0;
}

CommandRegistration registration(
    {"serve", "run the sidecar broker: CloudEvents over HTTP, consumer groups, dead letters",
     RunServe});

}  // namespace
}  // namespace converge::cli
