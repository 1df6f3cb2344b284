// Command-line parsing shared by every program of the project (the converge binary, its
// benchmarks and the test helper programs), on CLI11. Numbers are checked strictly here
// because CLI11's own conversion is lenient: it reads "-1" as 2^64-1 for a 64-bit unsigned
// option, accepts "010" as octal and "0x10" as hex, and saturates on overflow.
// Thread-safety: parsing is single-threaded setup code.
#pragma once

#include <CLI/CLI.hpp>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "converge/status.h"

namespace converge::cli {

// A decimal integer in [lo, hi]: digits only (no sign, no base prefix, no spaces, nothing
// after), no overflow. Rewrites the accepted text in canonical form, so CLI11's conversion
// reads exactly the value checked here.
inline CLI::Validator Integer(uint64_t lo, uint64_t hi) {
  const std::string range = "[" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
  return CLI::Validator(
      [lo, hi, range](std::string& text) -> std::string {
        uint64_t v = 0;
        const char* end = text.data() + text.size();
        const auto [ptr, ec] = std::from_chars(text.data(), end, v);
        if (text.empty() || ec != std::errc() || ptr != end || v < lo || v > hi) {
          return "wants an integer in " + range + ", got '" + text + "'";
        }
        text = std::to_string(v);
        return std::string();
      },
      "INT in " + range);
}

// A new parser: `name` as usage shows it ("converge serve"). Unknown options and extra
// arguments are errors; an option given twice keeps its last value (as the hand-written
// parsers did); options may be given as "--opt value" or "--opt=value".
inline void Configure(CLI::App& app) {
  app.allow_extras(false);
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
}

// Parses `args` (args[0] is the program or command name, skipped). Ok, or: `*help` set when
// --help/-h was given (nothing else is checked then), InvalidArgument with CLI11's message
// (naming the option) for anything wrong.
inline Status Parse(CLI::App& app, const std::vector<std::string>& args, bool* help) {
  *help = false;
  std::vector<std::string> rest(args.rbegin(), args.rend() - (args.empty() ? 0 : 1));
  try {
    app.parse(rest);  // takes the arguments in reverse order
  } catch (const CLI::CallForHelp&) {
    *help = true;
  } catch (const CLI::CallForAllHelp&) {
    *help = true;
  } catch (const CLI::ParseError& e) {
    return InvalidArgumentError(e.what());
  }
  return Status::Ok();
}

inline Status Parse(CLI::App& app, int argc, char** argv, bool* help) {
  return Parse(app, std::vector<std::string>(argv, argv + argc), help);
}

// For a main or a command: parses, and on --help prints app.help() (or `usage`, when given)
// to stdout and returns 0; on an error prints "<name>: <message>" and a pointer to --help to
// stderr and returns 2 (nothing was done). -1: parsed, go on.
inline int ParseOrExit(CLI::App& app, int argc, char** argv, const char* usage = nullptr) {
  bool help = false;
  Status s = Parse(app, argc, argv, &help);
  if (help) {
    std::fputs(usage != nullptr ? usage : app.help().c_str(), stdout);
    return 0;
  }
  if (!s.ok()) {
    std::fprintf(stderr, "%s: %s\n(see %s --help)\n", app.get_name().c_str(),
                 std::string(s.message()).c_str(), app.get_name().c_str());
    return 2;
  }
  return -1;
}

}  // namespace converge::cli
