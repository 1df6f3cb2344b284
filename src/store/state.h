// In-memory state of the store: collections, each an ordered map of documents.
// Thread-safety: none; StoreImpl guards it with its mutex.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "converge/store.h"
#include "store/codec.h"

namespace converge::store_internal {

struct StoredDoc {
  std::shared_ptr<const std::string> value;
  uint64_t version = 0;
  int64_t expires_at_ms = 0;  // 0 = never
};

struct CollectionState {
  CollectionConfig config;
  std::map<std::string, StoredDoc, std::less<>> docs;
  uint64_t created_seq = 0;      // the change that created (or last reconfigured) it
  uint64_t last_delete_seq = 0;  // the last change that removed a document
  uint64_t bytes = 0;            // keys + values
  WriteCounts write_counts;      // since Open; not persisted
};

using Collections = std::map<std::string, CollectionState, std::less<>>;

}  // namespace converge::store_internal
