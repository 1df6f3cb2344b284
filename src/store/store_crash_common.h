// Shared by store_crash_writer and store_crash_test: the layout of the writer's data.
//
// Each writer thread t owns the documents "t<t>/0" .. "t<t>/<kCrashKeysPerThread - 1>" of
// collection kCrashCollection. Its transaction number i writes every one of them to
// {"n":i,...} in one transaction guarded by If-Match on the versions it last wrote (create-only
// for i = 0), then prints "<t> <i> <commit seq>" once Commit returned OK.
#pragma once

#include <string>

namespace converge::store_crash {

inline constexpr char kCollection[] = "crash";
inline constexpr char kTopic[] = "store-changes";
inline constexpr int kThreads = 4;
inline constexpr int kKeysPerThread = 3;

inline std::string KeyFor(int thread, int k) {
  std::string key = "t";
  key += std::to_string(thread);
  key += "/";
  key += std::to_string(k);
  return key;
}

inline std::string ValueFor(long n, int k) {
  std::string v = "{\"n\":";
  v += std::to_string(n);
  v += ",\"k\":";
  v += std::to_string(k);
  v += ",\"pad\":\"";
  v.append(static_cast<size_t>(40 + (n * 7 + k) % 90), 'p');
  v += "\"}";
  return v;
}

}  // namespace converge::store_crash
