#include "log/topic_meta.h"

#include <boost/json.hpp>
#include <exception>

namespace converge {

// Public (converge/log.h): Log::CreateTopic and configuration checks share these.
Status ValidateTopicName(std::string_view name, bool internal) {
  if (name.empty() || name.size() > 200) {
    return InvalidArgumentError("topic name must be 1..200 characters");
  }
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) {
      return InvalidArgumentError("topic name '" + std::string(name) +
                                  "' may only contain [A-Za-z0-9._-]");
    }
  }
  if (name == "." || name == ".." || name.front() == '.') {
    return InvalidArgumentError("topic name '" + std::string(name) + "' may not start with '.'");
  }
  if (name.front() == '_' && !internal) {
    return InvalidArgumentError("topic name '" + std::string(name) +
                                "' starts with '_', which is reserved for internal topics");
  }
  if (name.front() != '_' && internal) {
    return InvalidArgumentError("internal topic name '" + std::string(name) +
                                "' must start with '_'");
  }
  return Status::Ok();
}

Status ValidateTopicOptions(const TopicOptions& o) {
  using namespace internal;  // the limits (topic_meta.h)
  if (o.partitions < 1 || o.partitions > kMaxPartitions) {
    return InvalidArgumentError("partitions must be 1..1024");
  }
  if (o.durability != Durability::kFsync && o.durability != Durability::kInterval &&
      o.durability != Durability::kNone) {
    return InvalidArgumentError("unknown durability");
  }
  if (o.sync_interval_ms < 1 || o.sync_interval_ms > kMaxSyncIntervalMs) {
    return InvalidArgumentError("sync_interval_ms must be 1..3600000");
  }
  if (o.segment_max_bytes < kMinSegmentBytes || o.segment_max_bytes > kMaxSegmentBytes) {
    return InvalidArgumentError("segment_max_bytes must be 1024..2147483648");
  }
  if (o.retention_max_age_ms < 0) return InvalidArgumentError("retention_max_age_ms must be >= 0");
  if (o.dedup_window_ms < 0) return InvalidArgumentError("dedup_window_ms must be >= 0");
  if (o.dedup_window_ms > INT64_MAX / 1000)
    return InvalidArgumentError("dedup_window_ms too large");
  if (o.retention_max_age_ms > INT64_MAX / 1000) {
    return InvalidArgumentError("retention_max_age_ms too large");
  }
  if (o.dedup_max_ids > kMaxDedupIds) {
    return InvalidArgumentError("dedup_max_ids must be <= 100000000");
  }
  if (o.max_record_bytes < 1 || o.max_record_bytes > kMaxRecordBytesLimit) {
    return InvalidArgumentError("max_record_bytes must be 1..67108864");
  }
  return Status::Ok();
}

namespace internal {

std::string EncodeTopicMeta(const std::string& name, const TopicOptions& o) {
  boost::json::object obj;
  obj["format"] = "converge.topic";
  obj["version"] = 1;
  obj["name"] = name;
  obj["partitions"] = o.partitions;
  obj["durability"] = std::string(DurabilityName(o.durability));
  obj["sync_interval_ms"] = o.sync_interval_ms;
  obj["segment_max_bytes"] = o.segment_max_bytes;
  obj["retention_max_bytes"] = o.retention_max_bytes;
  obj["retention_max_age_ms"] = o.retention_max_age_ms;
  obj["dedup_window_ms"] = o.dedup_window_ms;
  obj["dedup_max_ids"] = o.dedup_max_ids;
  obj["max_record_bytes"] = o.max_record_bytes;
  obj["internal"] = o.internal;
  return boost::json::serialize(obj) + "\n";
}

Status DecodeTopicMeta(std::string_view json, std::string* name, TopicOptions* options) {
  try {
    boost::json::error_code ec;
    boost::json::value v = boost::json::parse(json, ec);
    if (ec) return DataLossError("topic.json is not valid JSON: " + ec.message());
    const boost::json::object& obj = v.as_object();
    if (obj.at("format").as_string() != "converge.topic" ||
        obj.at("version").to_number<int>() != 1) {
      return DataLossError("topic.json has an unknown format or version");
    }
    TopicOptions o;
    *name = std::string(obj.at("name").as_string());
    o.partitions = obj.at("partitions").to_number<uint32_t>();
    Result<Durability> d = ParseDurability(std::string(obj.at("durability").as_string()));
    if (!d.ok()) return DataLossError("topic.json: " + std::string(d.status().message()));
    o.durability = *d;
    o.sync_interval_ms = obj.at("sync_interval_ms").to_number<int64_t>();
    o.segment_max_bytes = obj.at("segment_max_bytes").to_number<uint64_t>();
    o.retention_max_bytes = obj.at("retention_max_bytes").to_number<uint64_t>();
    o.retention_max_age_ms = obj.at("retention_max_age_ms").to_number<int64_t>();
    o.dedup_window_ms = obj.at("dedup_window_ms").to_number<int64_t>();
    o.dedup_max_ids = obj.at("dedup_max_ids").to_number<uint64_t>();
    o.max_record_bytes = obj.at("max_record_bytes").to_number<uint32_t>();
    o.internal = obj.at("internal").as_bool();
    Status valid = ValidateTopicOptions(o);
    if (!valid.ok()) return DataLossError("topic.json: " + std::string(valid.message()));
    *options = o;
    return Status::Ok();
  } catch (const std::exception& e) {
    return DataLossError(std::string("topic.json is malformed: ") + e.what());
  }
}

}  // namespace internal
}  // namespace converge
