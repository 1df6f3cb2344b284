// Bearer-token authentication and per-topic authorization for the HTTP API.
//
// Contract
// - With no tokens configured, auth is disabled: every request is the anonymous principal,
//   which may do everything (the server then listens on loopback only, see config.h).
// - With tokens, a request must carry `Authorization: Bearer <token>` naming a configured
//   token (the scheme name in any case, RFC 9110), or it is Unauthenticated (HTTP 401). A
//   known token lacking the permission gets PermissionDenied (HTTP 403). Tokens are compared
//   by SHA-256 digest, never logged.
// - Topic patterns: '*' matches any run of characters (including none); everything else
//   matches itself. "*" alone matches every topic.
// Thread-safety: immutable after construction; safe from any thread.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "converge/status.h"
#include "server/config.h"

namespace converge::server {

// True if `topic` matches the glob `pattern` ('*' = any run of characters).
bool TopicMatches(std::string_view pattern, std::string_view topic);

struct Principal {
  std::string service;  // "anonymous" when auth is disabled
  std::vector<std::string> publish;
  std::vector<std::string> subscribe;
  bool admin = false;
  bool anonymous = false;

  // From a topology manifest (TokenConfig): the store collections this service may write
  // and read; without it (and for admins) the store's own owner/writers rules alone decide.
  bool restrict_collections = false;
  std::vector<std::string> write_collections;
  std::vector<std::string> read_collections;

  bool CanPublish(std::string_view topic) const;
  bool CanWriteCollection(std::string_view collection) const;
  bool CanReadCollection(std::string_view collection) const;
  bool CanSubscribe(std::string_view topic) const;
  // Publish or subscribe, or an admin token (an operator sees every topic): may see the
  // topic's metadata.
  bool CanSee(std::string_view topic) const {
    return admin || CanPublish(topic) || CanSubscribe(topic);
  }
  // Subscribe, or an admin token: may read the topic's events by offset, describe, seek and
  // delete its groups, list, replay and discard its groups' dead letters.
  bool CanAdminister(std::string_view topic) const { return admin || CanSubscribe(topic); }
};

class Authorizer {
 public:
  explicit Authorizer(const std::vector<TokenConfig>& tokens);

  bool enabled() const { return !by_digest_.empty(); }

  // Resolves the value of the Authorization header (possibly empty). Returns the principal,
  // or Unauthenticated (missing header, not a Bearer token, unknown token).
  Result<const Principal*> Authenticate(std::string_view authorization_header) const;

 private:
  using Digest = std::array<uint8_t, 32>;
  static Digest Sha256(std::string_view data);
  std::map<Digest, Principal> by_digest_;
  Principal anonymous_;
};

// Status helpers with the messages the API returns.
Status NotAllowed(const Principal& p, std::string_view action, std::string_view topic);

}  // namespace converge::server
