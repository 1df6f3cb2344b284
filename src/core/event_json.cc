// Event <-> JSON structured mode and JSON batch mode.
//
// Decoding runs Boost.JSON's SAX parser (basic_parser) with a handler that writes straight
// into the Event being built: attribute strings are appended to their final std::string,
// the "data" value is re-emitted as compact JSON into the event's data buffer, and no DOM is
// ever built. Numbers inside data are copied as the exact text the producer wrote, so
// big integers and decimal fractions survive unchanged. A batch is framed here ('[', ',',
// ']') and each element parsed on its own, which gives per-element sizes for the limit and
// an index for error messages.
#include <algorithm>
#include <boost/json/basic_parser_impl.hpp>
#include <exception>
#include <new>

#include "converge/event.h"
#include "core/event_internal.h"

namespace converge {
namespace internal {
namespace {

namespace json = boost::json;
using json::error_code;
using json::string_view;

std::string_view Sv(string_view s) { return std::string_view(s.data(), s.size()); }

// Writes a stream of SAX events as compact JSON: no whitespace, strings re-escaped
// minimally, numbers verbatim.
class CompactWriter {
 public:
  void Reset(std::string* out) {
    out_ = out;
    need_comma_ = false;
    in_token_ = false;
  }
  void BeginContainer(char open) {
    Separate();
    out_->push_back(open);
    need_comma_ = false;
  }
  void EndContainer(char close) {
    out_->push_back(close);
    need_comma_ = true;
  }
  void StringPart(string_view s) {
    if (!in_token_) {
      Separate();
      out_->push_back('"');
      in_token_ = true;
    }
    AppendJsonEscaped(Sv(s), out_);
  }
  void KeyEnd(string_view s) {
    StringPart(s);
    out_->append("\":", 2);
    in_token_ = false;
    need_comma_ = false;
  }
  void StringEnd(string_view s) {
    StringPart(s);
    out_->push_back('"');
    in_token_ = false;
    need_comma_ = true;
  }
  void NumberPart(string_view s) {
    if (!in_token_) {
      Separate();
      in_token_ = true;
    }
    out_->append(s.data(), s.size());
  }
  void NumberEnd(string_view s) {
    NumberPart(s);
    in_token_ = false;
    need_comma_ = true;
  }
  void Literal(std::string_view s) {
    Separate();
    out_->append(s);
    need_comma_ = true;
  }

 private:
  void Separate() {
    if (need_comma_) out_->push_back(',');
  }
  std::string* out_ = nullptr;
  bool need_comma_ = false;
  bool in_token_ = false;  // inside a string or number delivered in parts
};

// The members of every Boost.JSON handler that only bound sizes.
struct HandlerLimits {
  static constexpr std::size_t max_object_size = std::size_t(-1);
  static constexpr std::size_t max_array_size = std::size_t(-1);
  static constexpr std::size_t max_key_size = std::size_t(-1);
  static constexpr std::size_t max_string_size = std::size_t(-1);
};

// Re-emits a whole document through a CompactWriter (SetJsonData), or only validates it
// when `out` is null (DecodeBinary).
class CompactHandler : public HandlerLimits {
 public:
  explicit CompactHandler(std::string* out) : enabled_(out != nullptr) {
    if (out) w_.Reset(out);
  }
  bool on_document_begin(error_code&) { return true; }
  bool on_document_end(error_code&) { return true; }
  bool on_object_begin(error_code&) {
    return Do([&] { w_.BeginContainer('{'); });
  }
  bool on_object_end(std::size_t, error_code&) {
    return Do([&] { w_.EndContainer('}'); });
  }
  bool on_array_begin(error_code&) {
    return Do([&] { w_.BeginContainer('['); });
  }
  bool on_array_end(std::size_t, error_code&) {
    return Do([&] { w_.EndContainer(']'); });
  }
  bool on_key_part(string_view s, std::size_t, error_code&) {
    return Do([&] { w_.StringPart(s); });
  }
  bool on_key(string_view s, std::size_t, error_code&) {
    return Do([&] { w_.KeyEnd(s); });
  }
  bool on_string_part(string_view s, std::size_t, error_code&) {
    return Do([&] { w_.StringPart(s); });
  }
  bool on_string(string_view s, std::size_t, error_code&) {
    return Do([&] { w_.StringEnd(s); });
  }
  bool on_number_part(string_view s, error_code&) {
    return Do([&] { w_.NumberPart(s); });
  }
  bool on_int64(int64_t, string_view s, error_code&) {
    return Do([&] { w_.NumberEnd(s); });
  }
  bool on_uint64(uint64_t, string_view s, error_code&) {
    return Do([&] { w_.NumberEnd(s); });
  }
  bool on_double(double, string_view s, error_code&) {
    return Do([&] { w_.NumberEnd(s); });
  }
  bool on_bool(bool b, error_code&) {
    return Do([&] { w_.Literal(b ? "true" : "false"); });
  }
  bool on_null(error_code&) {
    return Do([&] { w_.Literal("null"); });
  }
  bool on_comment_part(string_view, error_code&) { return true; }
  bool on_comment(string_view, error_code&) { return true; }

 private:
  template <typename F>
  bool Do(F&& f) {
    if (enabled_) f();
    return true;
  }
  bool enabled_;
  CompactWriter w_;
};

json::parse_options ParseOptions(uint32_t max_depth) {
  json::parse_options opt;
  opt.max_depth = max_depth;
  return opt;
}

Status ParseError(const error_code& ec, uint32_t max_depth, std::string_view what) {
  if (ec == json::error::too_deep) {
    return ResourceExhaustedError(std::string(what) + " nests deeper than " +
                                  std::to_string(max_depth) + " levels");
  }
  return InvalidArgumentError("malformed JSON: " + ec.message());
}

Status RunCompact(std::string_view json, uint32_t max_depth, std::string* out) {
  json::basic_parser<CompactHandler> parser(ParseOptions(max_depth), out);
  error_code ec;
  const size_t n = parser.write_some(false, json.data(), json.size(), ec);
  if (ec) return ParseError(ec, max_depth, "JSON data");
  if (n != json.size()) return InvalidArgumentError("malformed JSON: extra data after the value");
  return Status::Ok();
}

// Validates a document and finds member names repeated within one object.
class UniqueKeysHandler : public HandlerLimits {
 public:
  bool on_document_begin(error_code&) { return true; }
  bool on_document_end(error_code&) { return true; }
  bool on_object_begin(error_code&) {
    keys_.BeginObject();
    return true;
  }
  bool on_object_end(std::size_t, error_code&) {
    keys_.EndObject();
    return true;
  }
  bool on_array_begin(error_code&) { return true; }
  bool on_array_end(std::size_t, error_code&) { return true; }
  bool on_key_part(string_view s, std::size_t, error_code&) {
    keys_.KeyPart(std::string_view(s.data(), s.size()));
    return true;
  }
  bool on_key(string_view s, std::size_t, error_code& ec) {
    if (keys_.Key(std::string_view(s.data(), s.size()))) return true;
    ec = json::error::exception;
    return false;
  }
  bool on_string_part(string_view, std::size_t, error_code&) { return true; }
  bool on_string(string_view, std::size_t, error_code&) { return true; }
  bool on_number_part(string_view, error_code&) { return true; }
  bool on_int64(int64_t, string_view, error_code&) { return true; }
  bool on_uint64(uint64_t, string_view, error_code&) { return true; }
  bool on_double(double, string_view, error_code&) { return true; }
  bool on_bool(bool, error_code&) { return true; }
  bool on_null(error_code&) { return true; }
  bool on_comment_part(string_view, error_code&) { return true; }
  bool on_comment(string_view, error_code&) { return true; }

  JsonKeyTracker keys_;
};

// ---------------------------------------------------------------------------------------
// The event handler

enum class Attr : uint8_t {
  kId,
  kSource,
  kSpecVersion,
  kType,
  kSubject,
  kTime,
  kDataContentType,
  kDataSchema,
  kData,
  kDataBase64,
  kExtension,
};
constexpr std::string_view kAttrNames[] = {"id",      "source",     "specversion",     "type",
                                           "subject", "time",       "datacontenttype", "dataschema",
                                           "data",    "data_base64"};

std::optional<Attr> CoreAttribute(std::string_view key) {
  // Dispatch on length first: one comparison for most keys.
  switch (key.size()) {
    case 2:
      if (key == "id") return Attr::kId;
      break;
    case 4:
      if (key == "type") return Attr::kType;
      if (key == "time") return Attr::kTime;
      if (key == "data") return Attr::kData;
      break;
    case 6:
      if (key == "source") return Attr::kSource;
      break;
    case 7:
      if (key == "subject") return Attr::kSubject;
      break;
    case 10:
      if (key == "dataschema") return Attr::kDataSchema;
      break;
    case 11:
      if (key == "specversion") return Attr::kSpecVersion;
      if (key == "data_base64") return Attr::kDataBase64;
      break;
    case 15:
      if (key == "datacontenttype") return Attr::kDataContentType;
      break;
    default:
      break;
  }
  return std::nullopt;
}

constexpr uint32_t Bit(Attr a) { return 1u << static_cast<unsigned>(a); }

class EventHandler : public HandlerLimits {
 public:
  // Prepares to decode one event into `*event` (a default-constructed Event).
  void Start(Event* event) {
    event_ = event;
    depth_ = 0;
    capture_depth_ = 0;
    seen_ = 0;
    seen_extensions_.clear();
    present_ = 0;
    in_string_ = false;
    data_is_string_ = false;
    key_.clear();
    number_.clear();
    status_ = Status::Ok();
  }

  // The error a callback reported, if any.
  Status& status() { return status_; }

  // After a successful parse: required attributes, data resolution, full validation.
  Status Finish() {
    for (Attr a : {Attr::kId, Attr::kSource, Attr::kSpecVersion, Attr::kType}) {
      if (!(present_ & Bit(a))) return AttrError(a, "is required");
    }
    Event& e = *event_;
    const bool has_data = seen_ & Bit(Attr::kData);
    if (has_data && (present_ & Bit(Attr::kDataBase64))) {
      return InvalidArgumentError("attributes 'data' and 'data_base64' are mutually exclusive");
    }
    if (has_data) {
      const auto& ct = EventAccess::datacontenttype(e);
      const bool json_type = !ct || IsJsonContentType(*ct);
      std::string& data = EventAccess::data(e);
      if (data_is_string_ && json_type) {
        // A JSON string value: keep its JSON text.
        scratch_.clear();
        scratch_.reserve(data.size() + 2);
        scratch_.push_back('"');
        AppendJsonEscaped(data, &scratch_);
        scratch_.push_back('"');
        data.swap(scratch_);
        EventAccess::data_kind(e) = DataKind::kJson;
      } else if (data_is_string_) {
        EventAccess::data_kind(e) = DataKind::kText;
      } else if (!json_type) {
        return AttrError(Attr::kData, "must be a string when datacontenttype " +
                                          QuoteForMessage(*ct) + " is not a JSON media type");
      } else {
        EventAccess::data_kind(e) = DataKind::kJson;
      }
    }
    CONVERGE_RETURN_IF_ERROR(SortExtensions(EventAccess::extensions(e)));
    return e.Validate();
  }

  bool on_document_begin(error_code&) { return true; }
  bool on_document_end(error_code&) { return true; }

  bool on_object_begin(error_code& ec) {
    if (capture_depth_ > 0) {
      ++capture_depth_;
      writer_.BeginContainer('{');
      return true;
    }
    if (depth_ == 0) {
      depth_ = 1;
      return true;
    }
    return BeginCapture('{', ec);
  }
  bool on_object_end(std::size_t, error_code&) {
    if (capture_depth_ > 0) {
      writer_.EndContainer('}');
      --capture_depth_;
      return true;
    }
    depth_ = 0;
    return true;
  }
  bool on_array_begin(error_code& ec) {
    if (capture_depth_ > 0) {
      ++capture_depth_;
      writer_.BeginContainer('[');
      return true;
    }
    if (depth_ == 0) return NotAnObject(ec);
    return BeginCapture('[', ec);
  }
  bool on_array_end(std::size_t, error_code&) {
    writer_.EndContainer(']');
    --capture_depth_;
    return true;
  }

  bool on_key_part(string_view s, std::size_t, error_code&) {
    if (capture_depth_ > 0) {
      writer_.StringPart(s);
    } else {
      key_.append(s.data(), s.size());
    }
    return true;
  }
  bool on_key(string_view s, std::size_t, error_code& ec) {
    if (capture_depth_ > 0) {
      writer_.KeyEnd(s);
      return true;
    }
    key_.append(s.data(), s.size());
    const bool ok = SelectAttribute(ec);
    key_.clear();
    return ok;
  }

  bool on_string_part(string_view s, std::size_t, error_code& ec) {
    if (capture_depth_ > 0) {
      writer_.StringPart(s);
      return true;
    }
    if (depth_ == 0) return NotAnObject(ec);
    if (!in_string_ && !BeginString(ec)) return false;
    target_->append(s.data(), s.size());
    return true;
  }
  bool on_string(string_view s, std::size_t, error_code& ec) {
    if (capture_depth_ > 0) {
      writer_.StringEnd(s);
      return true;
    }
    if (depth_ == 0) return NotAnObject(ec);
    if (!in_string_ && !BeginString(ec)) return false;
    target_->append(s.data(), s.size());
    in_string_ = false;
    return EndString(ec);
  }

  bool on_number_part(string_view s, error_code& ec) {
    if (capture_depth_ > 0) {
      writer_.NumberPart(s);
      return true;
    }
    if (depth_ == 0) return NotAnObject(ec);
    number_.append(s.data(), s.size());
    return true;
  }
  bool on_int64(int64_t v, string_view s, error_code& ec) {
    if (capture_depth_ > 0) {
      writer_.NumberEnd(s);
      return true;
    }
    if (attr_ == Attr::kExtension && depth_ == 1 && v >= INT32_MIN && v <= INT32_MAX) {
      number_.clear();
      return PushExtension(std::to_string(v), ExtensionKind::kInteger);
    }
    return ScalarNumber(s, ec);
  }
  bool on_uint64(uint64_t, string_view s, error_code& ec) {
    if (capture_depth_ > 0) {
      writer_.NumberEnd(s);
      return true;
    }
    return ScalarNumber(s, ec);
  }
  bool on_double(double, string_view s, error_code& ec) {
    if (capture_depth_ > 0) {
      writer_.NumberEnd(s);
      return true;
    }
    return ScalarNumber(s, ec);
  }
  bool on_bool(bool b, error_code& ec) {
    const std::string_view text = b ? "true" : "false";
    if (capture_depth_ > 0) {
      writer_.Literal(text);
      return true;
    }
    if (depth_ == 0) return NotAnObject(ec);
    if (attr_ == Attr::kData) return ScalarData(text);
    if (attr_ == Attr::kExtension) return PushExtension(std::string(text), ExtensionKind::kBoolean);
    return WrongType(ec);
  }
  bool on_null(error_code& ec) {
    if (capture_depth_ > 0) {
      writer_.Literal("null");
      return true;
    }
    if (depth_ == 0) return NotAnObject(ec);
    // An explicit null payload is data; a null attribute is an absent one.
    if (attr_ == Attr::kData) return ScalarData("null");
    return true;
  }
  bool on_comment_part(string_view, error_code&) { return true; }
  bool on_comment(string_view, error_code&) { return true; }

 private:
  std::string_view AttrName() const {
    return attr_ == Attr::kExtension ? std::string_view(ext_name_)
                                     : kAttrNames[static_cast<unsigned>(attr_)];
  }
  static Status AttrError(Attr a, std::string_view what) {
    return InvalidArgumentError("attribute '" + std::string(kAttrNames[static_cast<unsigned>(a)]) +
                                "' " + std::string(what));
  }
  bool Fail(Status s, error_code& ec) {
    status_ = std::move(s);
    ec = json::error::exception;
    return false;
  }
  bool NotAnObject(error_code& ec) {
    return Fail(InvalidArgumentError("an event must be a JSON object"), ec);
  }
  bool WrongType(error_code& ec) {
    std::string msg = "attribute '" + std::string(AttrName()) + "' must be ";
    msg += attr_ == Attr::kExtension ? "a string, a boolean or an integer" : "a string";
    return Fail(InvalidArgumentError(msg), ec);
  }

  bool SelectAttribute(error_code& ec) {
    if (std::optional<Attr> a = CoreAttribute(key_)) {
      attr_ = *a;
      if (seen_ & Bit(attr_)) {
        return Fail(AttrError(attr_, "appears more than once"), ec);
      }
      seen_ |= Bit(attr_);
      return true;
    }
    if (!IsValidExtensionName(key_)) {
      return Fail(
          InvalidArgumentError("attribute " + QuoteForMessage(key_) +
                               ": attribute names must be 1-20 characters 'a'-'z' or '0'-'9'"),
          ec);
    }
    // A null value leaves no extension behind, so SortExtensions alone would not see
    // {"x":null,"x":"a"} (which readers taking the first member read as absent).
    if (std::find(seen_extensions_.begin(), seen_extensions_.end(), key_) !=
        seen_extensions_.end()) {
      return Fail(
          InvalidArgumentError("attribute " + QuoteForMessage(key_) + " appears more than once"),
          ec);
    }
    seen_extensions_.push_back(key_);
    attr_ = Attr::kExtension;
    ext_name_.swap(key_);
    return true;
  }

  // The string a JSON string value of the current attribute is appended to.
  bool BeginString(error_code& ec) {
    Event& e = *event_;
    in_string_ = true;
    switch (attr_) {
      case Attr::kId:
        target_ = &EventAccess::id(e);
        break;
      case Attr::kSource:
        target_ = &EventAccess::source(e);
        break;
      case Attr::kType:
        target_ = &EventAccess::type(e);
        break;
      case Attr::kSubject:
        target_ = &EventAccess::subject(e).emplace();
        break;
      case Attr::kTime:
        target_ = &EventAccess::time(e).emplace();
        break;
      case Attr::kDataContentType:
        target_ = &EventAccess::datacontenttype(e).emplace();
        break;
      case Attr::kDataSchema:
        target_ = &EventAccess::dataschema(e).emplace();
        break;
      case Attr::kData:
        target_ = &EventAccess::data(e);
        data_is_string_ = true;
        break;
      case Attr::kSpecVersion:
      case Attr::kDataBase64:
        scratch_.clear();
        target_ = &scratch_;
        break;
      case Attr::kExtension: {
        auto& exts = EventAccess::extensions(e);
        if (exts.empty()) exts.reserve(4);
        exts.push_back(Extension{ext_name_, std::string(), ExtensionKind::kString});
        target_ = &exts.back().value;
        break;
      }
    }
    target_->clear();
    (void)ec;
    return true;
  }

  bool EndString(error_code& ec) {
    present_ |= attr_ == Attr::kExtension ? 0 : Bit(attr_);
    if (attr_ == Attr::kSpecVersion && scratch_ != Event::kSpecVersion) {
      return Fail(AttrError(attr_, "must be \"1.0\", got " + QuoteForMessage(scratch_)), ec);
    }
    if (attr_ == Attr::kDataBase64) {
      std::string& data = EventAccess::data(*event_);
      data.clear();
      if (!DecodeBase64(scratch_, &data)) {
        return Fail(AttrError(attr_, "must be valid padded base64 (RFC 4648)"), ec);
      }
      EventAccess::data_kind(*event_) = DataKind::kBinary;
    }
    return true;
  }

  bool BeginCapture(char open, error_code& ec) {
    if (attr_ != Attr::kData) return WrongType(ec);
    std::string& data = EventAccess::data(*event_);
    data.clear();
    writer_.Reset(&data);
    writer_.BeginContainer(open);
    capture_depth_ = 1;
    return true;
  }

  bool ScalarData(std::string_view text) {
    std::string& data = EventAccess::data(*event_);
    data.assign(text);
    return true;
  }

  bool ScalarNumber(string_view last_part, error_code& ec) {
    if (depth_ == 0) return NotAnObject(ec);
    number_.append(last_part.data(), last_part.size());
    if (attr_ == Attr::kData) {
      EventAccess::data(*event_).swap(number_);
      number_.clear();
      return true;
    }
    if (attr_ == Attr::kExtension) {
      return Fail(InvalidArgumentError("attribute '" + ext_name_ +
                                       "' must be an integer in [-2147483648, 2147483647], got " +
                                       QuoteForMessage(number_)),
                  ec);
    }
    return WrongType(ec);
  }

  bool PushExtension(std::string value, ExtensionKind kind) {
    auto& exts = EventAccess::extensions(*event_);
    if (exts.empty()) exts.reserve(4);
    exts.push_back(Extension{ext_name_, std::move(value), kind});
    return true;
  }

  Event* event_ = nullptr;
  int depth_ = 0;          // 1 inside the event object
  int capture_depth_ = 0;  // > 0 while inside an object/array "data" value
  uint32_t seen_ = 0;      // core attributes whose key appeared
  std::vector<std::string> seen_extensions_;  // extension names that appeared (null ones too)
  uint32_t present_ = 0;   // core attributes with a non-null string value
  bool in_string_ = false;
  bool data_is_string_ = false;
  Attr attr_ = Attr::kId;
  std::string* target_ = nullptr;
  std::string key_;
  std::string ext_name_;
  std::string number_;
  std::string scratch_;
  CompactWriter writer_;
  Status status_;
};

using EventParser = json::basic_parser<EventHandler>;

// Parses one event starting at `p` into `*event` (default-constructed) and returns how many
// bytes it took, including trailing whitespace. The caller checks what follows, then calls
// parser.handler().Finish().
Result<size_t> ParseOneEvent(EventParser& parser, const char* p, size_t size, uint32_t max_depth,
                             Event* event) {
  parser.reset();
  EventHandler& h = parser.handler();
  h.Start(event);
  error_code ec;
  const size_t n = parser.write_some(false, p, size, ec);
  if (!h.status().ok()) return std::move(h.status());
  if (ec) return ParseError(ec, max_depth, "attribute 'data'");
  return n;
}

const char* SkipWhitespace(const char* p, const char* end) {
  while (p != end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')) ++p;
  return p;
}

Status TooBig(size_t bytes, size_t max) {
  return ResourceExhaustedError("event is " + std::to_string(bytes) +
                                " bytes of JSON, more than max_event_bytes (" +
                                std::to_string(max) + ")");
}

void AppendString(std::string_view name, std::string_view value, std::string* out) {
  out->push_back('"');
  out->append(name);
  out->append("\":\"");
  AppendJsonEscaped(value, out);
  out->push_back('"');
}

// Appends a valid event.
void AppendValidEvent(const Event& e, std::string* out) {
  out->append("{\"specversion\":\"1.0\",");
  AppendString("id", e.id(), out);
  out->push_back(',');
  AppendString("source", e.source(), out);
  out->push_back(',');
  AppendString("type", e.type(), out);
  auto optional = [&](std::string_view name, const std::optional<std::string>& v) {
    if (!v) return;
    out->push_back(',');
    AppendString(name, *v, out);
  };
  optional("subject", e.subject());
  optional("time", e.time());
  optional("datacontenttype", e.datacontenttype());
  optional("dataschema", e.dataschema());
  for (const Extension& ext : e.extensions()) {
    out->push_back(',');
    if (ext.kind == ExtensionKind::kString) {
      AppendString(ext.name, ext.value, out);
    } else {
      out->push_back('"');
      out->append(ext.name);
      out->append("\":");
      out->append(ext.value);
    }
  }
  switch (e.data_kind()) {
    case DataKind::kNone:
      break;
    case DataKind::kJson:
      out->append(",\"data\":");
      out->append(e.data());
      break;
    case DataKind::kText:
      out->push_back(',');
      AppendString("data", e.data(), out);
      break;
    case DataKind::kBinary:
      out->append(",\"data_base64\":\"");
      AppendBase64(e.data(), out);
      out->push_back('"');
      break;
  }
  out->push_back('}');
}

}  // namespace

Status CanonicalizeJson(std::string_view json, uint32_t max_depth, std::string* out) {
  out->clear();
  try {
    return RunCompact(json, max_depth, out);
  } catch (const std::bad_alloc&) {
    return ResourceExhaustedError("out of memory parsing JSON data");
  } catch (const std::exception& e) {
    return InternalError(std::string("parsing JSON data: ") + e.what());
  }
}

Status CheckUniqueJsonKeys(std::string_view json, uint32_t max_depth) {
  try {
    json::basic_parser<UniqueKeysHandler> parser(ParseOptions(max_depth));
    error_code ec;
    const size_t n = parser.write_some(false, json.data(), json.size(), ec);
    if (ec == json::error::exception) {
      return InvalidArgumentError("duplicate key " +
                                  QuoteForMessage(parser.handler().keys_.duplicate()));
    }
    if (ec) return ParseError(ec, max_depth, "JSON");
    if (n != json.size()) return InvalidArgumentError("malformed JSON: extra data after the value");
    return Status::Ok();
  } catch (const std::bad_alloc&) {
    return ResourceExhaustedError("out of memory parsing JSON");
  } catch (const std::exception& e) {
    return InternalError(std::string("parsing JSON: ") + e.what());
  }
}

Status ValidateJson(std::string_view json, uint32_t max_depth) {
  try {
    return RunCompact(json, max_depth, nullptr);
  } catch (const std::bad_alloc&) {
    return ResourceExhaustedError("out of memory parsing JSON data");
  } catch (const std::exception& e) {
    return InternalError(std::string("parsing JSON data: ") + e.what());
  }
}

}  // namespace internal

Status Event::SetJsonData(std::string_view json, uint32_t max_depth) {
  std::string compact;
  compact.reserve(json.size());
  CONVERGE_RETURN_IF_ERROR(internal::CanonicalizeJson(json, max_depth, &compact));
  data_ = std::move(compact);
  data_kind_ = DataKind::kJson;
  return Status::Ok();
}

Result<Event> DecodeJson(std::string_view json, const DecodeOptions& options) {
  if (json.size() > options.max_event_bytes) {
    return internal::TooBig(json.size(), options.max_event_bytes);
  }
  try {
    internal::EventParser parser(internal::ParseOptions(options.max_data_depth + 1));
    Event event;
    CONVERGE_ASSIGN_OR_RETURN(size_t n, internal::ParseOneEvent(parser, json.data(), json.size(),
                                                                options.max_data_depth, &event));
    if (n != json.size()) {
      return InvalidArgumentError("malformed JSON: extra data after the event");
    }
    CONVERGE_RETURN_IF_ERROR(parser.handler().Finish());
    return event;
  } catch (const std::bad_alloc&) {
    return ResourceExhaustedError("out of memory decoding an event");
  } catch (const std::exception& e) {
    return InternalError(std::string("decoding an event: ") + e.what());
  }
}

Result<std::vector<Event>> DecodeJsonBatch(std::string_view json, const DecodeOptions& options) {
  const char* p = json.data();
  const char* const end = p + json.size();
  auto indexed = [](size_t i, const Status& s) {
    return s.WithContext("event[" + std::to_string(i) + "]");
  };
  try {
    p = internal::SkipWhitespace(p, end);
    if (p == end || *p != '[') return InvalidArgumentError("a batch must be a JSON array");
    p = internal::SkipWhitespace(p + 1, end);
    std::vector<Event> events;
    if (p != end && *p == ']') {
      p = internal::SkipWhitespace(p + 1, end);
      if (p != end) return InvalidArgumentError("malformed JSON: extra data after the batch");
      return events;
    }
    // Events in real batches run a few hundred bytes each; reserving for one per 512 input
    // bytes saves most of the regrowth while staying well below the input's own size.
    events.reserve(std::min(options.max_batch_events, json.size() / 512));
    internal::EventParser parser(internal::ParseOptions(options.max_data_depth + 1));
    for (size_t i = 0;; ++i) {
      if (events.size() >= options.max_batch_events) {
        return ResourceExhaustedError("batch has more than max_batch_events (" +
                                      std::to_string(options.max_batch_events) + ") events");
      }
      Result<size_t> n = internal::ParseOneEvent(parser, p, static_cast<size_t>(end - p),
                                                 options.max_data_depth, &events.emplace_back());
      if (!n.ok()) return indexed(i, n.status());
      if (*n > options.max_event_bytes) {
        return indexed(i, internal::TooBig(*n, options.max_event_bytes));
      }
      Status valid = parser.handler().Finish();
      if (!valid.ok()) return indexed(i, valid);
      p = internal::SkipWhitespace(p + *n, end);
      if (p == end) return InvalidArgumentError("malformed JSON: the batch array is not closed");
      if (*p == ']') break;
      if (*p != ',') {
        return InvalidArgumentError("malformed JSON: expected ',' or ']' after event[" +
                                    std::to_string(i) + "]");
      }
      p = internal::SkipWhitespace(p + 1, end);
    }
    p = internal::SkipWhitespace(p + 1, end);
    if (p != end) return InvalidArgumentError("malformed JSON: extra data after the batch");
    return events;
  } catch (const std::bad_alloc&) {
    return ResourceExhaustedError("out of memory decoding a batch");
  } catch (const std::exception& e) {
    return InternalError(std::string("decoding a batch: ") + e.what());
  }
}

Status AppendJson(const Event& event, std::string* out) {
  CONVERGE_RETURN_IF_ERROR(event.Validate());
  internal::AppendValidEvent(event, out);
  return Status::Ok();
}

Result<std::string> EncodeJson(const Event& event) {
  std::string out;
  CONVERGE_RETURN_IF_ERROR(AppendJson(event, &out));
  return out;
}

Status AppendJsonBatch(std::span<const Event> events, std::string* out) {
  for (size_t i = 0; i < events.size(); ++i) {
    Status s = events[i].Validate();
    if (!s.ok()) return s.WithContext("event[" + std::to_string(i) + "]");
  }
  out->push_back('[');
  for (size_t i = 0; i < events.size(); ++i) {
    if (i > 0) out->push_back(',');
    internal::AppendValidEvent(events[i], out);
  }
  out->push_back(']');
  return Status::Ok();
}

Result<std::string> EncodeJsonBatch(std::span<const Event> events) {
  std::string out;
  CONVERGE_RETURN_IF_ERROR(AppendJsonBatch(events, &out));
  return out;
}

}  // namespace converge
