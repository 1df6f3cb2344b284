#include "server/cloudevents_http.h"

#include <algorithm>
#include <boost/beast/core/string.hpp>
#include <cctype>
#include <charconv>

#include "server/router.h"
#include "wire/wire_format.h"

namespace converge::server {

namespace wire = ::converge::internal::wire;

std::string_view PublishModeName(PublishMode mode) {
  switch (mode) {
    case PublishMode::kStructured:
      return "structured";
    case PublishMode::kBatch:
      return "batch";
    case PublishMode::kBinary:
      return "binary";
    case PublishMode::kNative:
      return "native";
  }
  return "unknown";
}

std::string MediaType(std::string_view content_type) {
  std::string_view t = content_type.substr(0, content_type.find(';'));
  while (!t.empty() && (t.front() == ' ' || t.front() == '\t')) t.remove_prefix(1);
  while (!t.empty() && (t.back() == ' ' || t.back() == '\t')) t.remove_suffix(1);
  std::string out(t);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

namespace {

bool IsTextMediaType(std::string_view media_type) {
  return media_type.substr(0, 5) == "text/" || media_type == "application/xml" ||
         (media_type.size() > 4 && media_type.substr(media_type.size() - 4) == "+xml");
}

Result<Event> DecodeBinaryMode(const HttpRequest& request, const DecodeOptions& options) {
  Event event;
  bool have_specversion = false;
  // A repeated ce- header would otherwise leave one of its values silently unused (which
  // one depends on the reader): refused, like a repeated member of a structured event.
  std::vector<std::string> seen;
  for (const auto& field : request) {
    std::string_view name(field.name_string().data(), field.name_string().size());
    if (name.size() <= 3 || !boost::beast::iequals(name.substr(0, 3), "ce-")) continue;
    std::string attribute(name.substr(3));
    for (char& c : attribute) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (std::find(seen.begin(), seen.end(), attribute) != seen.end()) {
      return InvalidArgumentError("header 'ce-" + attribute +
                                  "' appears more than once (send each attribute once)");
    }
    seen.push_back(attribute);
    Result<std::string> value =
        PercentDecode(std::string_view(field.value().data(), field.value().size()));
    if (!value.ok()) {
      return InvalidArgumentError("header 'ce-" + attribute +
                                  "': " + std::string(value.status().message()));
    }
    std::string v = std::move(value).value();
    if (attribute == "specversion") {
      if (v != Event::kSpecVersion) {
        return InvalidArgumentError("header 'ce-specversion' must be \"1.0\", got '" + v + "'");
      }
      have_specversion = true;
    } else if (attribute == "id") {
      event.set_id(std::move(v));
    } else if (attribute == "source") {
      event.set_source(std::move(v));
    } else if (attribute == "type") {
      event.set_type(std::move(v));
    } else if (attribute == "subject") {
      event.set_subject(std::move(v));
    } else if (attribute == "time") {
      event.set_time(std::move(v));
    } else if (attribute == "dataschema") {
      event.set_dataschema(std::move(v));
    } else if (attribute == "datacontenttype") {
      return InvalidArgumentError(
          "header 'ce-datacontenttype' is not used in binary mode: send the media type as "
          "Content-Type");
    } else if (attribute == "data" || attribute == "data_base64") {
      return InvalidArgumentError("header 'ce-" + attribute +
                                  "' is not allowed: in binary mode the body is the data");
    } else {
      event.SetExtension(std::move(attribute), std::move(v));
    }
  }
  if (!have_specversion) {
    return InvalidArgumentError(
        "binary-mode event needs the headers ce-specversion, ce-id, ce-source and ce-type "
        "(or send Content-Type: application/cloudevents+json or "
        "application/cloudevents-batch+json)");
  }
  for (std::string_view required : {"id", "source", "type"}) {
    bool missing = (required == "id" && event.id().empty()) ||
                   (required == "source" && event.source().empty()) ||
                   (required == "type" && event.type().empty());
    if (missing) {
      return InvalidArgumentError("header 'ce-" + std::string(required) +
                                  "' is required and must not be empty");
    }
  }
  auto content_type = request.find(boost::beast::http::field::content_type);
  const std::string& body = request.body();
  if (content_type != request.end()) {
    std::string_view ct(content_type->value().data(), content_type->value().size());
    event.set_datacontenttype(std::string(ct));
    std::string media = MediaType(ct);
    if (!body.empty()) {
      if (IsJsonContentType(ct)) {
        Status s = event.SetJsonData(body, options.max_data_depth);
        if (!s.ok()) return s.WithContext("body (data of media type " + media + ")");
      } else if (IsTextMediaType(media)) {
        if (!event.SetTextData(body).ok()) event.SetBinaryData(body);
      } else {
        event.SetBinaryData(body);
      }
    }
  } else if (!body.empty()) {
    event.SetBinaryData(body);
  }
  CONVERGE_RETURN_IF_ERROR(event.Validate());
  return event;
}

}  // namespace

void AppendRecordId(const Event& event, std::string* out) { AppendEventIdentity(event, out); }

std::string RecordIdFor(const Event& event) { return EventIdentity(event); }

std::string_view PartitionKeyFor(const Event& event) {
  if (auto key = event.partitionkey()) return *key;
  if (event.subject()) return *event.subject();
  return {};
}

Result<DecodedPublish> DecodePublishRequest(const HttpRequest& request,
                                            const DecodeOptions& options) {
  DecodedPublish out;
  // Content-Type picks the mode and, in binary mode, is the datacontenttype: two of them
  // would make the event depend on which one a reader takes.
  if (request.count(boost::beast::http::field::content_type) > 1) {
    return InvalidArgumentError("header 'Content-Type' appears more than once");
  }
  std::string media = MediaType(request[boost::beast::http::field::content_type]);
  const bool binary_mode = media != kCloudEventsJsonMediaType &&
                           media != kCloudEventsBatchMediaType &&
                           media != wire::kEventBatchMediaType;
  if (!binary_mode) {
    // The attributes are in the body: a ce- header beside them would be a second, possibly
    // different, value that one reader takes and another ignores.
    for (const auto& field : request) {
      std::string_view name = field.name_string();
      if (name.size() > 3 && boost::beast::iequals(name.substr(0, 3), "ce-")) {
        return InvalidArgumentError("header '" + std::string(name) +
                                    "' is for binary mode; with Content-Type " + media +
                                    " the attributes are in the body");
      }
    }
  }
  if (media == kCloudEventsJsonMediaType) {
    out.mode = PublishMode::kStructured;
    CONVERGE_ASSIGN_OR_RETURN(Event e, DecodeJson(request.body(), options));
    out.events.push_back(std::move(e));
  } else if (media == kCloudEventsBatchMediaType) {
    out.mode = PublishMode::kBatch;
    CONVERGE_ASSIGN_OR_RETURN(out.events, DecodeJsonBatch(request.body(), options));
  } else if (media == wire::kEventBatchMediaType) {
    out.mode = PublishMode::kNative;
    CONVERGE_RETURN_IF_ERROR(wire::SplitEventBatch(request.body(), options.max_batch_events,
                                                   options.max_event_bytes, &out.records));
    out.events.reserve(out.records.size());
    for (size_t i = 0; i < out.records.size(); ++i) {
      Result<Event> e = DecodeBinary(out.records[i], options);
      if (!e.ok()) {
        // A record that is not well-formed is bad input here, not stored-data loss.
        Status s = e.status().code() == StatusCode::kDataLoss
                       ? InvalidArgumentError(e.status().message())
                       : e.status();
        return s.WithContext("event[" + std::to_string(i) + "]");
      }
      out.events.push_back(std::move(e).value());
    }
  } else if (media.substr(0, 23) == "application/cloudevents") {
    return FailedPreconditionError("unsupported CloudEvents format '" + media +
                                   "': use application/cloudevents+json or "
                                   "application/cloudevents-batch+json");
  } else {
    out.mode = PublishMode::kBinary;
    CONVERGE_ASSIGN_OR_RETURN(Event e, DecodeBinaryMode(request, options));
    out.events.push_back(std::move(e));
  }
  // The same attribute limits in every mode (the binary event batch carries records that
  // DecodeBinary accepts as stored data, so they are checked here too).
  for (size_t i = 0; i < out.events.size(); ++i) {
    Status s = CheckAttributeLimits(out.events[i]);
    if (s.ok()) continue;
    const bool many = out.mode == PublishMode::kBatch || out.mode == PublishMode::kNative;
    return many ? s.WithContext("event[" + std::to_string(i) + "]") : s;
  }
  return out;
}

}  // namespace converge::server
