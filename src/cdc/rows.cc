#include "cdc/rows.h"

#include "core/event_internal.h"

namespace converge::cdc {
namespace {

constexpr uint32_t kBool = 16, kInt8 = 20, kInt2 = 21, kInt4 = 23, kOid = 26, kJson = 114,
                   kFloat4 = 700, kFloat8 = 701, kNumeric = 1700, kJsonb = 3802;

// A JSON string: the quotes around core's escaping (the one JSON escaper of the codebase).
void AppendJsonString(std::string_view s, std::string* out) {
  out->push_back('"');
  internal::AppendJsonEscaped(s, out);
  out->push_back('"');
}

bool IsJsonNumber(std::string_view s) {
  // PostgreSQL's numeric text is a JSON number except NaN / Infinity / -Infinity; a leading
  // '.' or '+' never occurs in its output, but check the shape anyway.
  if (s.empty()) return false;
  size_t i = 0;
  if (s[i] == '-') ++i;
  if (i >= s.size() || s[i] < '0' || s[i] > '9') return false;
  if (s[i] == '0' && i + 1 < s.size() && s[i + 1] >= '0' && s[i + 1] <= '9') return false;
  for (; i < s.size(); ++i) {
    const char c = s[i];
    if (!((c >= '0' && c <= '9') || c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-')) {
      return false;
    }
  }
  return s.back() >= '0' && s.back() <= '9';
}

Status Unusable(const Relation& relation, size_t column, std::string_view why) {
  return FailedPreconditionError("table " + QualifiedName(relation) + " column '" +
                                 relation.columns[column].name + "': " + std::string(why));
}

}  // namespace

std::string QualifiedName(const Relation& relation) {
  return (relation.schema.empty() ? std::string("pg_catalog") : relation.schema) + "." +
         relation.name;
}

Result<std::string> RowJson(const Relation& relation, const std::vector<TupleValue>& tuple) {
  if (tuple.size() != relation.columns.size()) {
    return DataLossError("table " + QualifiedName(relation) + ": a row of " +
                         std::to_string(tuple.size()) + " columns, the relation has " +
                         std::to_string(relation.columns.size()));
  }
  std::string out = "{";
  for (size_t i = 0; i < tuple.size(); ++i) {
    const RelationColumn& col = relation.columns[i];
    const TupleValue& v = tuple[i];
    if (i > 0) out.push_back(',');
    AppendJsonString(col.name, &out);
    out.push_back(':');
    if (v.kind == 'n') {
      out += "null";
      continue;
    }
    if (v.kind == 'u') {
      return Unusable(relation, i,
                      "an unchanged TOASTed value the server did not send (give the table "
                      "REPLICA IDENTITY FULL to capture it)");
    }
    if (v.kind != 't') return Unusable(relation, i, "a binary value (text format expected)");
    switch (col.type_oid) {
      case kBool:
        out += v.data == "t" ? "true" : "false";
        break;
      case kInt2:
      case kInt4:
      case kInt8:
      case kOid:
      case kFloat4:
      case kFloat8:
      case kNumeric:
        if (IsJsonNumber(v.data)) {
          out.append(v.data);
        } else {
          AppendJsonString(v.data, &out);  // NaN, Infinity
        }
        break;
      case kJson:
      case kJsonb:
        out.append(v.data);  // PostgreSQL validated it
        break;
      default:
        AppendJsonString(v.data, &out);
    }
  }
  out.push_back('}');
  return out;
}

Result<std::string> RowKey(const Relation& relation, const std::vector<TupleValue>& tuple) {
  if (tuple.size() != relation.columns.size()) {
    return DataLossError("table " + QualifiedName(relation) + ": a key tuple of " +
                         std::to_string(tuple.size()) + " columns, the relation has " +
                         std::to_string(relation.columns.size()));
  }
  std::vector<size_t> keys;
  for (size_t i = 0; i < relation.columns.size(); ++i) {
    if (relation.columns[i].key) keys.push_back(i);
  }
  if (keys.empty()) {
    return FailedPreconditionError("table " + QualifiedName(relation) +
                                   " has no replica identity columns (give it a primary key)");
  }
  for (size_t i : keys) {
    if (tuple[i].kind != 't') return Unusable(relation, i, "key value missing or NULL");
  }
  if (keys.size() == 1) return std::string(tuple[keys[0]].data);
  std::string out = "[";
  for (size_t k = 0; k < keys.size(); ++k) {
    if (k > 0) out.push_back(',');
    AppendJsonString(tuple[keys[k]].data, &out);
  }
  out.push_back(']');
  return out;
}

}  // namespace converge::cdc
