// StateStore: the durable state behind consumer groups; FileStateStore: its files on the
// Env's FileSystem.
//
// Layout in `dir`:
//   LOCK             held while open (one instance per directory)
//   SNAPSHOT         the full state at some point: a header record (generation g) then the
//                    group, partition and replayed records. Replaced atomically.
//   journal-<g>      records appended since SNAPSHOT generation g; each Append is synced.
// Both are record-log files (core/record_log.h); files of earlier releases, without the
// record-log header, are read in their old framing (Legacy::kGroupsV0) and replaced by the
// compaction that follows every Open.
//
// Recovery reads SNAPSHOT, then journal-<g> up to its first torn or corrupt frame (a corrupt
// one, with whole frames after it, is reported through damage()). The owner then
// calls Compact with the recovered state, so a fresh journal is started and nothing is ever
// appended after a torn tail. Compaction order: SNAPSHOT(g+1) written atomically, journal-<g+1>
// created and its directory entry synced, journal-<g> deleted; a crash at any point leaves a
// SNAPSHOT and (optionally) its own journal, and stale journals are deleted at open.
//
// After any failed write or sync the store is "broken": Append refuses (FailedPrecondition)
// until a Compact succeeds, because what reached the journal is unknown.
//
// Not thread-safe: the owner serializes calls.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "converge/consumer_group.h"
#include "converge/env.h"
#include "converge/log.h"
#include "converge/status.h"
#include "core/record_log.h"

namespace converge::internal::groups {

// The seam under the group state: where the snapshot and the journal live. The files below
// (FileStateStore, the default) are one implementation; a server with several sidecars puts
// one group's state in PostgreSQL instead (src/server/group_state_pg.h). ConsumerGroups sees
// only this interface:
//   - opening a store recovers the record payloads in order: a header record
//     (EncodeHeader) first, then the snapshot's records, then the journal's;
//   - Append adds framed records (record_log frames) to the journal durably;
//   - Compact replaces snapshot and journal by `snapshot` (header excluded) atomically;
//   - after a failed write the store is broken: Append refuses until a Compact succeeds.
class StateStore {
 public:
  virtual ~StateStore() = default;

  // The file implementation: opens `dir` (created if missing) and returns the store plus the
  // recovered record payloads in order: the snapshot's (header first), then the journal's.
  // DataLoss if the snapshot is corrupt or missing while journals exist, FailedPrecondition if
  // the directory is locked, Internal on I/O errors.
  static Result<std::unique_ptr<StateStore>> Open(FileSystem& fs, const std::string& dir,
                                                  std::string* recovered_bytes,
                                                  std::vector<std::string_view>* records);

  // Appends framed records to the journal durably. FailedPrecondition if broken.
  virtual Status Append(std::string_view framed) = 0;
  // Writes `snapshot` (framed records of the full state, header excluded: the store writes the
  // header with the next generation and `next_group_id`) and starts a new journal.
  virtual Status Compact(std::string_view snapshot, uint64_t next_group_id) = 0;

  virtual bool broken() const = 0;
  // Non-empty if Open found damage (not a torn tail) in the journal: one line for the operator.
  virtual const std::string& damage() const = 0;
  virtual uint64_t journal_bytes() const = 0;
  virtual uint64_t generation() const = 0;
};

// Opens consumer groups whose state is `store` (already opened, `records` recovered from it;
// the views must stay valid until this returns). options.dir is not used for files then (it
// must still be non-empty: it names the state in messages).
Result<std::unique_ptr<ConsumerGroups>> OpenConsumerGroupsOn(Env& env, Log& log,
                                                             const ConsumerGroupsOptions& options,
                                                             std::unique_ptr<StateStore> store,
                                                             std::vector<std::string_view> records);

// The snapshot and journal files on the Env's FileSystem (the layout above).
class FileStateStore final : public StateStore {
 public:
  static Result<std::unique_ptr<FileStateStore>> Open(FileSystem& fs, const std::string& dir,
                                                      std::string* recovered_bytes,
                                                      std::vector<std::string_view>* records);

  Status Append(std::string_view framed) override;
  Status Compact(std::string_view snapshot, uint64_t next_group_id) override;

  bool broken() const override { return broken_; }
  const std::string& damage() const override { return damage_; }
  uint64_t journal_bytes() const override { return journal_bytes_; }
  uint64_t generation() const override { return generation_; }

 private:
  FileStateStore(FileSystem& fs, std::string dir, std::unique_ptr<FileLock> lock)
      : fs_(fs), dir_(std::move(dir)), lock_(std::move(lock)) {}
  std::string JournalPath(uint64_t generation) const;

  FileSystem& fs_;
  std::string dir_;
  std::unique_ptr<FileLock> lock_;
  std::unique_ptr<record_log::Writer> journal_;
  std::string damage_;
  uint64_t generation_ = 0;
  uint64_t journal_bytes_ = 0;
  bool broken_ = true;  // until the first Compact
};

}  // namespace converge::internal::groups
