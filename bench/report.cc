#include "bench/report.h"

#include <algorithm>
#include <cmath>

namespace converge::bench {

std::string JsonString(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 2);
  out.push_back('"');
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (u < 0x20 || u == 0x7f) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", u);
          out += buf;
        } else {
          out.push_back(c);
        }
    }
  }
  out.push_back('"');
  return out;
}

namespace {

std::string JsonNumber(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.3f", v);
  // Trim trailing zeros (and a trailing dot) so 12.000 prints as 12.
  std::string s(buf);
  if (s.find('.') != std::string::npos) {
    while (!s.empty() && s.back() == '0') s.pop_back();
    if (!s.empty() && s.back() == '.') s.pop_back();
  }
  if (s == "-0") s = "0";
  return s;
}

std::string JsonOptional(const std::optional<double>& v) { return v ? JsonNumber(*v) : "null"; }

std::string Latency(const std::optional<double>& v) {
  if (!v) return "-";
  char buf[32];
  std::snprintf(buf, sizeof(buf), *v < 100 ? "%.1f" : "%.0f", *v);
  return buf;
}

}  // namespace

std::string ToJsonLine(const Measurement& m) {
  std::string out = "{";
  out += "\"workload\":" + JsonString(m.workload);
  out += ",\"system\":" + JsonString(m.system);
  out += ",\"durability\":" + JsonString(m.durability);
  // Every benchmark's lines share `converge bench log`'s format, so "events_per_s" is always
  // there; a benchmark counting other units (sagas, transactions, operations) names the rate
  // after them as well.
  out += ",\"events_per_s\":" + JsonNumber(m.events_per_s);
  if (m.rate_name != "events_per_s") {
    out += "," + JsonString(m.rate_name) + ":" + JsonNumber(m.events_per_s);
  }
  out += ",\"p50_us\":" + JsonOptional(m.p50_us);
  out += ",\"p99_us\":" + JsonOptional(m.p99_us);
  out += ",\"p999_us\":" + JsonOptional(m.p999_us);
  out += ",\"events\":" + std::to_string(m.events);
  out += ",\"seconds\":" + JsonNumber(m.seconds);
  out += ",\"note\":" + JsonString(m.note);
  if (m.clients) out += ",\"clients\":" + std::to_string(*m.clients);
  if (m.mean_us) out += ",\"mean_us\":" + JsonNumber(*m.mean_us);
  if (m.errors) out += ",\"errors\":" + std::to_string(*m.errors);
  out += "}";
  return out;
}

std::string FormatThousands(double value) {
  if (!std::isfinite(value)) return "-";
  const bool negative = value < 0;
  auto n = static_cast<uint64_t>(std::llround(std::fabs(value)));
  std::string digits = std::to_string(n);
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out.push_back(',');
    out.push_back(digits[i]);
  }
  return negative ? "-" + out : out;
}

std::string FormatTable(const std::vector<Measurement>& rows) {
  // "sagas_per_s" -> "sagas/s" (rows of one table share their unit).
  std::string rate = rows.empty() ? "events_per_s" : rows[0].rate_name;
  if (rate.size() > 6 && rate.compare(rate.size() - 6, 6, "_per_s") == 0) {
    rate = rate.substr(0, rate.size() - 6) + "/s";
  }
  const std::vector<std::string> header = {"workload", "system", "durability", rate,
                                           "p50 us",   "p99 us", "p999 us",    "note"};
  std::vector<std::vector<std::string>> cells;
  cells.push_back(header);
  for (const Measurement& m : rows) {
    cells.push_back({m.workload, m.system, m.durability, FormatThousands(m.events_per_s),
                     Latency(m.p50_us), Latency(m.p99_us), Latency(m.p999_us), m.note});
  }
  std::vector<size_t> width(header.size(), 0);
  for (const auto& row : cells) {
    for (size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
  }
  // Numbers right-aligned, text left-aligned; the last column (note) is not padded.
  const std::vector<bool> right = {false, false, false, true, true, true, true, false};
  std::string out;
  for (size_t r = 0; r < cells.size(); ++r) {
    const auto& row = cells[r];
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      if (i > 0) line += "  ";
      const size_t pad = width[i] - row[i].size();
      if (i + 1 == row.size()) {
        line += row[i];
      } else if (right[i]) {
        line += std::string(pad, ' ') + row[i];
      } else {
        line += row[i] + std::string(pad, ' ');
      }
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line + "\n";
    if (r == 0) {
      size_t total = 0;
      for (size_t i = 0; i < width.size(); ++i) total += width[i] + (i > 0 ? 2 : 0);
      out += std::string(std::min<size_t>(total, 120), '-') + "\n";
    }
  }
  return out;
}

}  // namespace converge::bench
