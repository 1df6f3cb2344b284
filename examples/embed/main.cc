// The smallest service embedding libconverge: uses the production Env, a hybrid logical
// clock and the Status vocabulary.
#include <cstdio>

#include "converge/env.h"
#include "converge/hlc.h"
#include "converge/status.h"

int main() {
  converge::Env& env = converge::Env::Default();
  converge::HybridClock clock(env.clock());
  converge::HlcTimestamp a = clock.Now();
  converge::HlcTimestamp b = clock.Now();
  if (!(a < b)) {
    std::fprintf(stderr, "hlc went backwards: %s then %s\n", a.ToString().c_str(),
                 b.ToString().c_str());
    return 1;
  }
  converge::Result<converge::HlcTimestamp> parsed = converge::HlcTimestamp::Parse(b.ToString());
  if (!parsed.ok() || *parsed != b) return 1;
  std::puts("embedded converge ok");
  return 0;
}
