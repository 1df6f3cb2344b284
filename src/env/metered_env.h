// An Env that forwards everything to another Env and times every file and directory sync, so
// the server can export an fsync latency histogram (and a test can count syncs) without the
// storage engine knowing about it. What to do with a timing is the caller's: the observer.
//
// Thread-safety: as the wrapped Env; the observer is called on the syncing thread, possibly
// from several threads at once, so it must be thread-safe.
#pragma once

#include <functional>
#include <memory>

#include "converge/env.h"

namespace converge::internal {

enum class SyncKind { kFile, kDirectory };

// Called after every WritableFile::Sync (kFile) and FileSystem::SyncDir (kDirectory), failed
// ones included, with how long it took in seconds.
using SyncObserver = std::function<void(SyncKind kind, double seconds)>;

class MeteredEnv : public Env {
 public:
  // `base` must outlive this object.
  MeteredEnv(Env& base, SyncObserver observer);
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

}  // namespace converge::internal
