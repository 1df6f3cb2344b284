#include "wire/cloudevents_binary.h"

namespace converge::internal::wire {

std::string PercentEncodeHeaderValue(std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size());
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c <= 0x20 || c >= 0x7f || c == '"' || c == '%') {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    } else {
      out += ch;
    }
  }
  return out;
}

void AppendBinaryModeHeaders(const Event& e,
                             std::vector<std::pair<std::string, std::string>>* headers) {
  auto add = [headers](std::string name, std::string value) {
    headers->emplace_back(std::move(name), std::move(value));
  };
  add("ce-specversion", "1.0");
  add("ce-id", PercentEncodeHeaderValue(e.id()));
  add("ce-source", PercentEncodeHeaderValue(e.source()));
  add("ce-type", PercentEncodeHeaderValue(e.type()));
  if (e.subject()) add("ce-subject", PercentEncodeHeaderValue(*e.subject()));
  if (e.time()) add("ce-time", PercentEncodeHeaderValue(*e.time()));
  if (e.dataschema()) add("ce-dataschema", PercentEncodeHeaderValue(*e.dataschema()));
  for (const Extension& x : e.extensions()) {
    add("ce-" + x.name, PercentEncodeHeaderValue(x.value));
  }
  if (e.datacontenttype()) {
    add("Content-Type", *e.datacontenttype());
  } else if (e.data_kind() == DataKind::kJson) {
    add("Content-Type", "application/json");
  } else if (e.data_kind() != DataKind::kNone) {
    add("Content-Type", "application/octet-stream");
  }
}

}  // namespace converge::internal::wire
