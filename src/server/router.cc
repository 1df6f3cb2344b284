#include "server/router.h"

#include <algorithm>
#include <boost/url/parse.hpp>
#include <boost/url/pct_string_view.hpp>
#include <boost/url/url_view.hpp>

#include "core/storage_full.h"

namespace converge::server {
namespace {

namespace urls = boost::urls;

// The text of `target` cut to a length an error message may quote. (Built by appending: GCC
// 12 warns falsely on "'" + std::string(...).)
std::string Quote(std::string_view target) {
  std::string out = "'";
  out += target.substr(0, 200);
  out += "'";
  return out;
}

}  // namespace

SplitPath::SplitPath(std::string_view path) : text(path) {
  size_t i = 0;
  while (i < path.size()) {
    if (path[i] == '/') {
      ++i;
      continue;
    }
    size_t j = path.find('/', i);
    if (j == std::string_view::npos) j = path.size();
    segments.emplace_back(i, path.substr(i, j - i));
    i = j;
  }
}

int MatchPathTemplate(std::string_view tmpl, std::string_view path, RawParams* params) {
  return MatchPathTemplate(SplitPath(tmpl), SplitPath(path), params);
}

int MatchPathTemplate(const SplitPath& tmpl, const SplitPath& path, RawParams* params) {
  const auto& parts = tmpl.segments;
  const auto& segments = path.segments;
  if (params != nullptr) params->clear();
  int literals = 0;
  for (size_t i = 0; i < parts.size(); ++i) {
    const std::string_view part = parts[i].second;
    const bool param = part.size() > 2 && part.front() == '{' && part.back() == '}';
    if (param && part.size() > 5 && part.substr(part.size() - 4) == "...}") {
      // The rest of the path, raw: "a//b/" stays as it came.
      if (i + 1 != parts.size() || i >= segments.size()) return -1;
      if (params != nullptr) {
        params->emplace_back(part.substr(1, part.size() - 5),
                             path.text.substr(segments[i].first));
      }
      return literals;
    }
    if (i >= segments.size()) return -1;
    if (param) {
      if (params != nullptr) params->emplace_back(part.substr(1, part.size() - 2), segments[i].second);
    } else if (part == segments[i].second) {
      ++literals;
    } else {
      return -1;
    }
  }
  return parts.size() == segments.size() ? literals : -1;
}

Result<std::string> PercentDecode(std::string_view text) {
  urls::result<urls::pct_string_view> pct =
      urls::make_pct_string_view(urls::string_view(text.data(), text.size()));
  if (!pct) {
    std::string m = "malformed percent-escape in ";
    m += Quote(text);
    m += " (a '%' must be followed by two hex digits)";
    return InvalidArgumentError(m);
  }
  // Default options: '+' is not a space.
  return pct->decode();
}

Result<QueryParams> ParseTargetQuery(std::string_view target) {
  urls::result<urls::url_view> url =
      urls::parse_origin_form(urls::string_view(target.data(), target.size()));
  if (!url) {
    // Say which part is wrong where that is easy to tell: a bad escape is the usual case.
    const size_t pct = target.find('%');
    const bool bad_escape = pct != std::string_view::npos &&
                            !urls::make_pct_string_view(
                                 urls::string_view(target.data(), target.size()));
    std::string m = bad_escape ? "malformed percent-escape in the request target "
                               : "malformed request target ";
    m += Quote(target);
    m += bad_escape ? " (a '%' must be followed by two hex digits)"
                    : " (RFC 3986: a path and an optional query)";
    return InvalidArgumentError(m);
  }
  QueryParams out;
  for (const urls::param_pct_view p : url->encoded_params()) {
    if (p.key.empty() && !p.has_value) continue;  // "a=1&&b=2"
    std::string key = p.key.decode();
    std::string value = p.has_value ? p.value.decode() : std::string();
    for (const std::string* s : {&key, &value}) {
      for (char c : *s) {
        const auto u = static_cast<unsigned char>(c);
        if (u < 0x20 || u == 0x7f) {
          std::string m = "query string has a control character: ";
          m += Quote(url->encoded_query());
          return InvalidArgumentError(m);
        }
      }
    }
    out.emplace_back(std::move(key), std::move(value));
  }
  return out;
}

Status CheckQuery(const QueryParams& query, std::initializer_list<std::string_view> allowed) {
  for (size_t i = 0; i < query.size(); ++i) {
    const std::string& name = query[i].first;
    if (std::find(allowed.begin(), allowed.end(), name) == allowed.end()) {
      std::string list;
      for (std::string_view a : allowed) {
        if (!list.empty()) list += ", ";
        list += a;
      }
      std::string m = "unknown query parameter '";
      m += std::string_view(name).substr(0, 100);
      m += "' (";
      m += list.empty() ? std::string("this route takes none") : "allowed: " + list;
      m += ")";
      return InvalidArgumentError(m);
    }
    for (size_t j = 0; j < i; ++j) {
      if (query[j].first == name) {
        std::string m = "query parameter '";
        m += name;
        m += "' is given more than once";
        return InvalidArgumentError(m);
      }
    }
  }
  return Status::Ok();
}

Result<DecodedTarget> DecodeTarget(std::string_view target, const RawParams& params) {
  DecodedTarget out;
  CONVERGE_ASSIGN_OR_RETURN(out.query, ParseTargetQuery(target));
  for (const auto& [name, raw] : params) {
    CONVERGE_ASSIGN_OR_RETURN(std::string value, PercentDecode(raw));
    out.params.emplace_back(std::string(name), std::move(value));
  }
  return out;
}

ApiError ErrorCodeFor(const Status& status, bool conditional_write) {
  // The disk refused a write (and the writer undid it): one answer on every route, retryable.
  if (IsStorageFull(status)) return {http::status::service_unavailable, "UNAVAILABLE"};
  switch (status.code()) {
    case StatusCode::kOk:
      return {http::status::ok, "OK"};
    case StatusCode::kInvalidArgument:
      return {http::status::bad_request, "INVALID_ARGUMENT"};
    case StatusCode::kOutOfRange:
      return {http::status::bad_request, "OUT_OF_RANGE"};
    case StatusCode::kUnauthenticated:
      return {http::status::unauthorized, "UNAUTHENTICATED"};
    case StatusCode::kPermissionDenied:
      return {http::status::forbidden, "PERMISSION_DENIED"};
    case StatusCode::kNotFound:
      return {http::status::not_found, "NOT_FOUND"};
    case StatusCode::kAlreadyExists:
      return {conditional_write ? http::status::precondition_failed : http::status::conflict,
              "ALREADY_EXISTS"};
    case StatusCode::kFailedPrecondition:
      return {http::status::conflict, "FAILED_PRECONDITION"};
    case StatusCode::kAborted:
      // An optimistic-concurrency check failed (a stale If-Match or version): the client's
      // precondition, not the server's state, is what did not hold.
      return {http::status::precondition_failed, "ABORTED"};
    case StatusCode::kResourceExhausted:
      // A capacity or a queue (in-flight requests, groups, queued saga inputs, a write
      // buffer): retry later. A bound on the request itself is 413 (InputErrorReply).
      return {http::status::too_many_requests, "RESOURCE_EXHAUSTED"};
    case StatusCode::kCancelled:
    case StatusCode::kUnavailable:
      // Cancelled: the component is closing (the server is stopping); retry later or
      // elsewhere, like any unavailability.
      return {http::status::service_unavailable, "UNAVAILABLE"};
    case StatusCode::kDeadlineExceeded:
      return {http::status::gateway_timeout, "DEADLINE_EXCEEDED"};
    case StatusCode::kDataLoss:
      return {http::status::internal_server_error, "DATA_LOSS"};
    case StatusCode::kInternal:
      return {http::status::internal_server_error, "INTERNAL"};
  }
  return {http::status::internal_server_error, "INTERNAL"};
}

HttpResponse ErrorReply(const Status& status, unsigned version, bool conditional_write) {
  ApiError e = ErrorCodeFor(status, conditional_write);
  HttpResponse res = JsonError(e.status, e.code, status.message(), version);
  if (e.status == http::status::too_many_requests ||
      e.status == http::status::service_unavailable) {
    res.set(http::field::retry_after, "1");
  }
  return res;
}

HttpResponse InputErrorReply(const Status& status, unsigned version, bool conditional_write) {
  if (status.code() == StatusCode::kResourceExhausted && !IsStorageFull(status)) {
    return JsonError(http::status::payload_too_large, "PAYLOAD_TOO_LARGE", status.message(),
                     version);
  }
  return ErrorReply(status, version, conditional_write);
}

}  // namespace converge::server
