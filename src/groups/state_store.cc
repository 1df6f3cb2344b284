#include "groups/state_store.h"

#include <charconv>

#include "core/record_log.h"
#include "core/storage_full.h"
#include "groups/codec.h"

namespace converge::internal::groups {

namespace {
constexpr std::string_view kJournalPrefix = "journal-";

bool ParseGeneration(std::string_view name, uint64_t* generation) {
  if (name.substr(0, kJournalPrefix.size()) != kJournalPrefix) return false;
  name.remove_prefix(kJournalPrefix.size());
  if (name.empty()) return false;
  auto [ptr, ec] = std::from_chars(name.data(), name.data() + name.size(), *generation);
  return ec == std::errc() && ptr == name.data() + name.size();
}
}  // namespace

std::string FileStateStore::JournalPath(uint64_t generation) const {
  return dir_ + "/" + std::string(kJournalPrefix) + std::to_string(generation);
}

Result<std::unique_ptr<StateStore>> StateStore::Open(FileSystem& fs, const std::string& dir,
                                                     std::string* recovered_bytes,
                                                     std::vector<std::string_view>* records) {
  CONVERGE_ASSIGN_OR_RETURN(std::unique_ptr<FileStateStore> store,
                            FileStateStore::Open(fs, dir, recovered_bytes, records));
  return std::unique_ptr<StateStore>(std::move(store));
}

Result<std::unique_ptr<FileStateStore>> FileStateStore::Open(
    FileSystem& fs, const std::string& dir, std::string* recovered_bytes,
    std::vector<std::string_view>* records) {
  CONVERGE_RETURN_IF_ERROR(fs.CreateDirs(dir));
  CONVERGE_ASSIGN_OR_RETURN(std::unique_ptr<FileLock> lock, fs.LockFile(dir + "/LOCK"));
  std::unique_ptr<FileStateStore> store(new FileStateStore(fs, dir, std::move(lock)));

  recovered_bytes->clear();
  records->clear();
  const std::string snapshot_path = dir + "/SNAPSHOT";
  std::string snapshot;
  if (fs.FileExists(snapshot_path)) {
    CONVERGE_ASSIGN_OR_RETURN(snapshot, fs.ReadFileToString(snapshot_path));
    // Written atomically: it must read whole, in this format or the one before the record-log
    // header (a data directory of an earlier release).
    record_log::Reader reader =
        record_log::Reader::ForFile(snapshot, record_log::Legacy::kGroupsV0);
    std::string_view first, rest;
    HeaderRecord header;
    const bool have_first = reader.Next(&first);
    while (reader.Next(&rest)) continue;  // every frame must check out
    if (!have_first || reader.stop() != record_log::Stop::kEnd || !DecodeHeader(first, &header)) {
      return DataLossError("consumer-group snapshot " + snapshot_path +
                           " is corrupt (checksum or format); refusing to guess the committed "
                           "offsets");
    }
    store->generation_ = header.generation;
  } else {
    // A journal is only ever created after its SNAPSHOT is durable: journals without one mean
    // the snapshot was lost. Starting over would reset every group and delete the journals at
    // the first compaction; refuse instead.
    CONVERGE_ASSIGN_OR_RETURN(std::vector<std::string> names, fs.ListDir(dir));
    for (const std::string& name : names) {
      uint64_t g = 0;
      if (ParseGeneration(name, &g)) {
        return DataLossError("consumer-group state in " + dir + " has " + name +
                             " but no SNAPSHOT; refusing to start the groups over (restore "
                             "SNAPSHOT, or delete the directory to reset every group)");
      }
    }
  }
  std::string journal;
  const std::string journal_path = store->JournalPath(store->generation_);
  if (!snapshot.empty() && fs.FileExists(journal_path)) {
    CONVERGE_ASSIGN_OR_RETURN(journal, fs.ReadFileToString(journal_path));
  }
  // One buffer owns both so the views stay valid for the caller.
  recovered_bytes->reserve(snapshot.size() + journal.size());
  recovered_bytes->append(snapshot);
  recovered_bytes->append(journal);
  std::string_view all(*recovered_bytes);
  std::string_view payload;
  record_log::Reader snap =
      record_log::Reader::ForFile(all.substr(0, snapshot.size()), record_log::Legacy::kGroupsV0);
  while (snap.Next(&payload)) records->push_back(payload);
  // The journal up to its first bad frame. The owner compacts next, so nothing is appended
  // after a torn tail. A bad frame with whole ones after it is damage to acknowledged
  // changes: the state goes on from the records before it (as it always did), and says so.
  record_log::Reader jr =
      record_log::Reader::ForFile(all.substr(snapshot.size()), record_log::Legacy::kGroupsV0);
  while (jr.Next(&payload)) records->push_back(payload);
  if (jr.stop() == record_log::Stop::kCorrupt) {
    store->damage_ = "consumer-group journal " + journal_path + ": bytes [" +
                     std::to_string(jr.valid_bytes()) + ", " + std::to_string(journal.size()) +
                     ") are damaged (a record that fails its checksum, with whole records after "
                     "it); the group state goes on from the records before it";
  }
  return store;
}

namespace {

// A full disk is retryable (the journal stays broken and the next flush rewrites it from
// memory): Unavailable, answered like every other write the disk refused. Anything else is an
// I/O error.
Status WriteError(std::string_view what, const Status& s) {
  const std::string message = std::string(what) + s.ToString();
  if (IsStorageFull(s)) return UnavailableError(message + "; retry later");
  return InternalError(message);
}

}  // namespace

Status FileStateStore::Append(std::string_view framed) {
  if (broken_ || journal_ == nullptr) {
    return FailedPreconditionError("consumer-group journal needs compaction after an error");
  }
  Status s = journal_->AddFrames(framed);
  if (s.ok()) s = journal_->Sync();
  if (!s.ok()) {
    broken_ = true;
    return WriteError("consumer-group journal write failed: ", s);
  }
  journal_bytes_ += framed.size();
  return Status::Ok();
}

Status FileStateStore::Compact(std::string_view snapshot, uint64_t next_group_id) {
  broken_ = true;
  const uint64_t generation = generation_ + 1;
  std::string data;
  data.reserve(snapshot.size() + 40);
  record_log::AppendFileHeader(&data);
  EncodeHeader(HeaderRecord{generation, next_group_id}, &data);
  data.append(snapshot);
  if (journal_ != nullptr) {
    journal_->Close().IgnoreError();  // the snapshot supersedes it
    journal_.reset();
  }
  Status s = fs_.WriteFileAtomically(dir_ + "/SNAPSHOT", data);
  if (!s.ok()) return WriteError("consumer-group snapshot write failed: ", s);
  generation_ = generation;
  auto file = record_log::Writer::Create(fs_, JournalPath(generation), OpenMode::kTruncate);
  if (!file.ok()) {
    return WriteError("consumer-group journal create failed: ", file.status());
  }
  journal_ = std::move(file).value();
  s = fs_.SyncDir(dir_);
  if (!s.ok()) return WriteError("consumer-group directory sync failed: ", s);
  journal_bytes_ = 0;
  broken_ = false;
  // Stale journals (this one's predecessor, leftovers of crashes) are garbage now.
  auto names = fs_.ListDir(dir_);
  if (names.ok()) {
    for (const std::string& name : *names) {
      uint64_t g = 0;
      if (ParseGeneration(name, &g) && g != generation) {
        fs_.DeleteFile(dir_ + "/" + name).IgnoreError();
      }
    }
  }
  return Status::Ok();
}

}  // namespace converge::internal::groups
