// StoreRoutes: the handlers of the shared store's routes (/v1/collections/...). The server's
// one router (Api::RouteTable) matches the route, authenticates the caller and reads the
// target (names, key and query percent-decoded, router.h); the handlers call the Store and
// answer with the server's one error mapping (ErrorCodeFor). docs/api/openapi.yaml describes
// the routes.
//
// Routes
//   GET    /v1/collections                            names of all collections
//   PUT    /v1/collections/{collection}               create (201) or update (200) its config
//   GET    /v1/collections/{collection}               config and counts
//   DELETE /v1/collections/{collection}               delete with its documents (204)
//   GET    /v1/collections/{collection}/docs          range read: start_key, end_key, prefix,
//                                                     limit, page_token query parameters
//   GET    /v1/collections/{collection}/docs/{key}    the document (body) with ETag
//   PUT    /v1/collections/{collection}/docs/{key}    write; If-Match, If-None-Match: *,
//                                                     Converge-TTL-Ms (or ?ttl_ms=)
//   DELETE /v1/collections/{collection}/docs/{key}    delete (204); If-Match
//   POST   /v1/collections/_transaction               atomic multi-key transaction
// {key} is the rest of the path, percent-decoded (it may contain '/').
//
// Status codes: 200/201/204 success; 400 malformed input (names, keys, JSON, headers, query);
// 403 the caller may not write or administer; 404 no such collection or document; 409 a
// precondition of the system (e.g. a merge function missing); 412 a failed If-Match /
// If-None-Match (also inside transactions); 413 a document or transaction over its bound;
// 415 a body that is not JSON; 503 the change feed is behind (Retry-After); 500 I/O.
// Every error body is {"code": "<CODE>", "message": "..."}.
//
// Thread-safety: Handle, HandleAsync and TryHandleInline may be called from many threads at
// once (the Store is thread-safe).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "converge/store.h"
#include "server/router.h"

namespace converge::server {

// One store request as the router read it.
struct StoreRequest {
  RouteId route = RouteId::kListCollections;  // one of the store's RouteIds
  std::string collection;                     // decoded; empty for the routes without one
  std::string key;                            // decoded; document routes only
  QueryParams query;                          // decoded
  std::optional<std::string_view> if_match;
  std::optional<std::string_view> if_none_match;
  std::optional<std::string_view> ttl_ms;  // Converge-TTL-Ms
  std::optional<std::string_view> content_type;
  std::string_view body;
  Caller caller;
  // A service limited by its topology manifest (Principal::restrict_collections): the
  // collections it may write and read. Null: only the store's own rules apply.
  const std::vector<std::string>* writable = nullptr;
  const std::vector<std::string>* readable = nullptr;
  // Collections that only a replica writes (its copy and bookkeeping), with the refusal's
  // message: writes naming one are refused (FailedPrecondition), admins included.
  const std::map<std::string, std::string>* read_only = nullptr;
};

struct StoreRoutesOptions {
  // Bound on the JSON of collection configs and transactions (documents are bounded by the
  // store's max_document_bytes).
  size_t max_request_json_bytes = 32u << 20;
  uint32_t max_json_depth = 64;
  // The store was opened with StoreOptions::background, so its CommitAsync does not block:
  // TryHandleInline may take writes.
  bool inline_writes = false;
  // The store's change-feed topic: every successful write reply then carries the consistency
  // token of its commit (header Converge-Consistency-Token), which replicas of the written
  // collections understand (docs/formats/replica.md). Empty: no token.
  std::string feed_topic;
};

class StoreRoutes {
 public:
  explicit StoreRoutes(Store& store, StoreRoutesOptions options = {});
  Store& store() { return store_; }

  // True for the routes that write documents (PUT/DELETE of a document, a transaction).
  static bool IsDocumentWrite(RouteId route);
  // A route that changes the named collection or one of its documents (not transactions).
  static bool IsCollectionWrite(RouteId route);

  // Handles a request; blocks until a write is durable.
  HttpResponse Handle(const StoreRequest& request);

  // Handles a request and calls `done` exactly once with the response: reads and refused
  // requests before returning, writes when they are durable, possibly on another thread (see
  // Store::CommitAsync: the calling thread may do group-commit work meanwhile). `request`
  // need only live until HandleAsync returns. `done` must be quick.
  using Done = std::function<void(HttpResponse)>;
  void HandleAsync(const StoreRequest& request, Done done);

  // For a caller on an I/O thread: handles the request like HandleAsync and returns true if
  // that cannot block — a document read whose answer is durable, and, with
  // StoreRoutesOptions::inline_writes, every document read (one of a change still being
  // synced is answered when the sync is done), document writes and transactions (their sync
  // runs on the store's background executor). Otherwise returns false without touching
  // `done`: call HandleAsync from a thread that may block.
  bool TryHandleInline(const StoreRequest& request, Done& done);

  // The document read part of TryHandleInline, returning the reply: for GET of a document
  // whose answer is durable (found or not). nullopt for any other request, and for a read
  // that would have to wait for a sync (Handle/HandleAsync answer those).
  std::optional<HttpResponse> TryRead(const StoreRequest& request);

 private:
  HttpResponse ListCollections(const std::vector<std::string>* readable);
  HttpResponse PutCollection(const StoreRequest& r);
  HttpResponse GetCollection(const StoreRequest& r);
  HttpResponse DeleteCollection(const StoreRequest& r);
  HttpResponse ListDocuments(const StoreRequest& r);
  static HttpResponse DocumentResponse(Result<Document> doc);
  void PutDocument(const StoreRequest& r, Done& done);
  void DeleteDocument(const StoreRequest& r, Done& done);
  void Transaction(const StoreRequest& r, Done& done);
  void Route(const StoreRequest& r, Done& done);

  Store& store_;
  StoreRoutesOptions options_;
};

}  // namespace converge::server
