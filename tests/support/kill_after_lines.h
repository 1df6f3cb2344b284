// For crash tests with real processes: runs a child whose stdout reports acknowledgements one
// line each, kills it with SIGKILL once it has printed a given number of lines, and returns the
// complete lines it printed (a last line cut by the kill is dropped).
//
// Thread-safety: none needed; one call at a time per test thread.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "converge/status.h"

namespace converge::testing {

struct KilledRun {
  std::vector<std::string> lines;  // every line the child finished, in order
  bool killed = false;             // false: the child exited before printing enough lines
  int wait_status = 0;             // from waitpid
  // True if the child ended by our SIGKILL (what a crash test wants).
  bool EndedBySigkill() const;
};

// Starts argv[0] with argv (searched as a path, not in $PATH), reads its stdout, and sends
// SIGKILL once `kill_after_lines` lines were read. Returns when the child is reaped. Internal
// if the pipe or fork fails; the child's exec failure shows as exit status 127.
Result<KilledRun> RunAndKillAfterLines(const std::vector<std::string>& argv,
                                       size_t kill_after_lines);

}  // namespace converge::testing
