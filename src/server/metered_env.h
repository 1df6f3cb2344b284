// An Env that forwards everything to another Env and times every file sync, so the server
// can export an fsync latency histogram without the storage engine knowing about metrics.
//
// Thread-safety: as the wrapped Env; the histograms are thread-safe.
#pragma once

#include <memory>

#include "converge/env.h"
#include "server/metrics.h"

namespace converge::server {

class MeteredEnv : public Env {
 public:
  // `base` and `metrics` must outlive this object.
  MeteredEnv(Env& base, MetricsRegistry& metrics);
  ~MeteredEnv() override;

  Clock& clock() override { return base_.clock(); }
  Random& random() override { return base_.random(); }
  Executor& executor() override { return base_.executor(); }
  FileSystem& fs() override;
  Transport& transport() override { return base_.transport(); }

 private:
  class MeteredFileSystem;
  Env& base_;
  std::unique_ptr<MeteredFileSystem> fs_;
};

}  // namespace converge::server
