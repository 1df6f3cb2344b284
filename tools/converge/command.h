// Registry of `converge <command>` subcommands. Each command lives in its own file in this
// folder and registers itself with a static CommandRegistration.
#pragma once

#include <functional>
#include <string>
#include <vector>

namespace converge::cli {

struct Command {
  std::string name;     // "serve", "bench", ...
  std::string summary;  // one line for `converge --help`
  // argv[0] is the command name. Returns the process exit code.
  std::function<int(int argc, char** argv)> run;
};

std::vector<Command>& Commands();

struct CommandRegistration {
  explicit CommandRegistration(Command command) { Commands().push_back(std::move(command)); }
};

}  // namespace converge::cli
