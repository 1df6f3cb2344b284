#include "server/auth.h"

#include <openssl/evp.h>

#include <algorithm>

namespace converge::server {

bool TopicMatches(std::string_view pattern, std::string_view topic) {
  // Iterative glob with backtracking to the last '*': linear in practice, no recursion.
  size_t p = 0, t = 0, star = std::string_view::npos, mark = 0;
  while (t < topic.size()) {
    if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      mark = t;
    } else if (p < pattern.size() && pattern[p] == topic[t]) {
      ++p;
      ++t;
    } else if (star != std::string_view::npos) {
      p = star + 1;
      t = ++mark;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

namespace {
bool AnyMatches(const std::vector<std::string>& patterns, std::string_view topic) {
  for (const std::string& p : patterns) {
    if (TopicMatches(p, topic)) return true;
  }
  return false;
}
}  // namespace

bool Principal::CanPublish(std::string_view topic) const {
  return anonymous || AnyMatches(publish, topic);
}

bool Principal::CanSubscribe(std::string_view topic) const {
  return anonymous || AnyMatches(subscribe, topic);
}

namespace {
bool Listed(const std::vector<std::string>& names, std::string_view name) {
  return std::find(names.begin(), names.end(), name) != names.end();
}
}  // namespace

bool Principal::CanWriteCollection(std::string_view collection) const {
  return anonymous || admin || !restrict_collections || Listed(write_collections, collection);
}

bool Principal::CanReadCollection(std::string_view collection) const {
  return anonymous || admin || !restrict_collections || Listed(read_collections, collection);
}

Authorizer::Authorizer(const std::vector<TokenConfig>& tokens) {
  anonymous_.service = "anonymous";
  anonymous_.anonymous = true;
  anonymous_.admin = true;
  for (const TokenConfig& t : tokens) {
    Principal p;
    p.service = t.service;
    p.publish = t.publish;
    p.subscribe = t.subscribe;
    p.admin = t.admin;
    p.restrict_collections = t.restrict_collections;
    p.write_collections = t.write_collections;
    p.read_collections = t.read_collections;
    by_digest_.emplace(Sha256(t.token), std::move(p));
  }
}

Authorizer::Digest Authorizer::Sha256(std::string_view data) {
  Digest out{};
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), out.data(), &len, EVP_sha256(), nullptr);
  return out;
}

Result<const Principal*> Authorizer::Authenticate(std::string_view header) const {
  if (!enabled()) return &anonymous_;
  if (header.empty()) return UnauthenticatedError("missing Authorization: Bearer token");
  // credentials = auth-scheme 1*SP token68, and the scheme is case-insensitive (RFC 9110
  // section 11.1): "bearer", "BEARER" and "Bearer" are one scheme.
  constexpr std::string_view kBearer = "bearer";
  auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; };
  bool is_bearer = header.size() > kBearer.size() && header[kBearer.size()] == ' ';
  for (size_t i = 0; is_bearer && i < kBearer.size(); ++i) {
    is_bearer = lower(header[i]) == kBearer[i];
  }
  if (!is_bearer) return UnauthenticatedError("Authorization header is not a Bearer token");
  std::string_view token = header.substr(kBearer.size());
  while (!token.empty() && (token.front() == ' ' || token.front() == '\t')) token.remove_prefix(1);
  while (!token.empty() && (token.back() == ' ' || token.back() == '\t')) token.remove_suffix(1);
  if (token.empty()) return UnauthenticatedError("Authorization header has no Bearer token");
  auto it = by_digest_.find(Sha256(token));
  if (it == by_digest_.end()) return UnauthenticatedError("unknown bearer token");
  return &it->second;
}

Status NotAllowed(const Principal& p, std::string_view action, std::string_view topic) {
  std::string msg = "service '" + p.service + "' may not " + std::string(action);
  if (!topic.empty()) msg += " topic '" + std::string(topic) + "'";
  return PermissionDeniedError(msg);
}

}  // namespace converge::server
