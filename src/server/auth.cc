#include "server/auth.h"

#include <openssl/evp.h>

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
  constexpr std::string_view kBearer = "Bearer ";
  if (header.size() <= kBearer.size() || header.substr(0, kBearer.size()) != kBearer) {
    return UnauthenticatedError("Authorization header is not a Bearer token");
  }
  std::string_view token = header.substr(kBearer.size());
  while (!token.empty() && token.front() == ' ') token.remove_prefix(1);
  while (!token.empty() && token.back() == ' ') token.remove_suffix(1);
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
