// StoreHttpHandler: the store's HTTP API (/v1/collections/...), independent of the HTTP
// server that carries it. The server authenticates the caller, reads the request, and hands
// the handler a StoreHttpRequest; the handler calls the Store (blocking: run it off the I/O
// threads) and returns status, headers and body. docs/api/openapi.yaml describes the routes.
//
// Routes
//   GET    /v1/collections                            names of all collections
//   PUT    /v1/collections/{c}                        create (201) or update (200) its config
//   GET    /v1/collections/{c}                        config and counts
//   DELETE /v1/collections/{c}                        delete with its documents (204)
//   GET    /v1/collections/{c}/docs                   range read: start_key, end_key, prefix,
//                                                     limit, page_token query parameters
//   GET    /v1/collections/{c}/docs/{key}             the document (body) with ETag
//   PUT    /v1/collections/{c}/docs/{key}             write; If-Match, If-None-Match: *,
//                                                     Converge-TTL-Ms (or ?ttl_ms=)
//   DELETE /v1/collections/{c}/docs/{key}             delete (204); If-Match
//   POST   /v1/collections/_transaction               atomic multi-key transaction
// {key} is the rest of the path, percent-decoded (it may contain '/').
//
// Status codes: 200/201/204 success; 400 malformed input (names, keys, JSON, headers, query);
// 403 the caller may not write or administer; 404 no such collection or document; 405 wrong
// method; 409 a precondition of the system (e.g. a merge function missing); 412 a failed
// If-Match / If-None-Match (also inside transactions); 413 a document or transaction over its
// bound; 415 a body that is not JSON; 503 the change feed is behind (Retry-After); 500 I/O.
// Every error body is {"code": "<STATUS_CODE_NAME>", "message": "..."}.
//
// Thread-safety: Handle, HandleAsync and TryHandleInline may be called from many threads at
// once (the Store is thread-safe).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "converge/store.h"

namespace converge::store_internal {

struct StoreHttpRequest {
  std::string_view method;  // "GET", "PUT", ...
  std::string_view target;  // path and query, as received (percent-encoded)
  std::optional<std::string_view> if_match;
  std::optional<std::string_view> if_none_match;
  std::optional<std::string_view> ttl_ms;  // Converge-TTL-Ms
  std::optional<std::string_view> content_type;
  std::string_view body;
  Caller caller;
};

struct StoreHttpResponse {
  int status = 200;
  // Header names are string literals (static storage).
  std::vector<std::pair<std::string_view, std::string>> headers;
  std::string body;
};

struct StoreHttpOptions {
  // Bound on the JSON of collection configs and transactions (documents are bounded by the
  // store's max_document_bytes).
  size_t max_request_json_bytes = 32u << 20;
  uint32_t max_json_depth = 64;
  // The store was opened with StoreOptions::background, so its CommitAsync does not block:
  // TryHandleInline may take writes.
  bool inline_writes = false;
};

class StoreHttpHandler {
 public:
  explicit StoreHttpHandler(Store& store, StoreHttpOptions options = {});
  Store& store() { return store_; }

  // True if `target` is one of the store's paths (/v1/collections or below).
  static bool Matches(std::string_view target);
  // True for a document write: PUT or DELETE /v1/collections/{c}/docs/{key}, or POST
  // /v1/collections/_transaction (well-formed or not).
  static bool IsDocumentWrite(std::string_view method, std::string_view target);

  // The routes, as (method, path template) pairs for API listings and the OpenAPI check.
  struct RouteInfo {
    std::string method;
    std::string path;
  };
  static std::vector<RouteInfo> Routes();

  // Handles a request; blocks until a write is durable.
  StoreHttpResponse Handle(const StoreHttpRequest& request);

  // Handles a request and calls `done` exactly once with the response: reads and refused
  // requests before returning, writes when they are durable, possibly on another thread (see
  // Store::CommitAsync: the calling thread may do group-commit work meanwhile). `request` and
  // its views need only live until HandleAsync returns. `done` must be quick.
  using Done = std::function<void(StoreHttpResponse)>;
  void HandleAsync(const StoreHttpRequest& request, Done done);

  // For a caller on an I/O thread: handles the request like HandleAsync and returns true if
  // that cannot block — a document read whose answer is durable, and, with
  // StoreHttpOptions::inline_writes, every document read (one of a change still being synced
  // is answered when the sync is done), document writes and transactions (their sync runs on
  // the store's background executor). Otherwise returns false without touching `done`: call
  // HandleAsync from a thread that may block.
  bool TryHandleInline(const StoreHttpRequest& request, Done& done);

  // The document read part of TryHandleInline, returning the reply: for GET
  // /v1/collections/{c}/docs/{key} whose answer is durable (found or not). nullopt for any
  // other request, and for a read that would have to wait for a sync or that is malformed
  // (Handle/HandleAsync answer those).
  std::optional<StoreHttpResponse> TryRead(const StoreHttpRequest& request);

 private:
  struct Call;
  StoreHttpResponse ListCollections();
  StoreHttpResponse PutCollection(const StoreHttpRequest& r, const std::string& name);
  StoreHttpResponse GetCollection(const std::string& name);
  StoreHttpResponse DeleteCollection(const StoreHttpRequest& r, const std::string& name);
  StoreHttpResponse ListDocuments(const std::string& collection, std::string_view query);
  StoreHttpResponse GetDocument(const std::string& collection, const std::string& key);
  static StoreHttpResponse DocumentResponse(Result<Document> doc);
  void PutDocument(const StoreHttpRequest& r, const std::string& collection, const std::string& key,
                   std::string_view query, Done& done);
  void DeleteDocument(const StoreHttpRequest& r, const std::string& collection,
                      const std::string& key, Done& done);
  void Transaction(const StoreHttpRequest& r, Done& done);
  void Route(const StoreHttpRequest& r, Done& done);

  Store& store_;
  StoreHttpOptions options_;
};

// The error reply for a non-OK status. `precondition_route`: AlreadyExists is a failed
// If-None-Match (412) rather than a conflict (409).
StoreHttpResponse StoreErrorResponse(const Status& status, bool precondition_route = false);

// Decodes %XX escapes ('+' stays '+'). InvalidArgument for a malformed escape.
Result<std::string> PercentDecode(std::string_view in);

}  // namespace converge::store_internal
