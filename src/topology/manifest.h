// Service manifests: one AsyncAPI 3.0 document per service (YAML or JSON), plus converge's
// `x-converge-*` extensions for what AsyncAPI cannot say (owned topics and collections,
// collections written, replicas kept, synchronous calls, saga participation). The supported
// subset is docs/topology.md.
//
// Contract
// - ParseManifest never throws and never asserts on input: a document outside the supported
//   subset gives InvalidArgument "FILE:LINE: /json/pointer: what is wrong".
// - Every declaration keeps where it was written (file and JSON pointer), so each finding of
//   the checks can name it.
// - Payload schemas are converted to JSON with every `$ref` within the document inlined (a
//   recursive reference is refused); references to other documents are refused.
// Thread-safety: plain values; the functions are reentrant.
#pragma once

#include <boost/json.hpp>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "converge/env.h"
#include "converge/status.h"

namespace converge::topology {

// Where a declaration is: the manifest file and the JSON pointer of the node in it.
struct Where {
  std::string file;
  std::string pointer;  // "/operations/onOrder"
  // "orders.yaml#/operations/onOrder"
  std::string ToString() const { return file + "#" + pointer; }
};

struct Message {
  std::string name;  // its key in the channel's `messages`
  // The JSON Schema, references inlined; null when the message declares no payload. Shared:
  // a message object referenced from many channels is converted once.
  std::shared_ptr<const boost::json::value> payload;
  Where where;
};

// One AsyncAPI operation: a service sends to, or receives from, one channel.
struct Operation {
  std::string id;       // the operation's key
  std::string channel;  // the channel's key
  std::string topic;    // the channel's address: the converge topic
  std::vector<Message> messages;
  // Receive operations only: the topics this operation's handler publishes to
  // (`x-converge-publishes`), each a send operation of the same service.
  std::vector<std::string> publishes;
  Where where;
};

struct Name {
  std::string name;
  Where where;
};

// A copy of another service's collection kept by this service.
struct Replica {
  std::string collection;  // the source collection
  std::string source;      // the service owning it
  Where where;
};

struct SagaRole {
  std::string saga;
  bool orchestrator = false;
  std::vector<Name> participants;  // orchestrator only: the participant services
  Where where;
};

struct Service {
  std::string name;
  std::string file;
  std::vector<Operation> sends;
  std::vector<Operation> receives;
  std::vector<Name> owned_topics;
  std::vector<Name> owned_collections;
  std::vector<Name> written_collections;  // x-converge-writes (the owned ones are implied)
  std::vector<Replica> replicas;
  std::vector<Name> calls;  // services this one calls synchronously (HTTP)
  std::vector<SagaRole> sagas;
};

// Parses one manifest; `file` names it in errors and findings.
Result<Service> ParseManifest(std::string_view text, const std::string& file);

// Runs task(i) for every i in [0, n), each once, and returns when all have run: one after
// another, or on threads of the caller's (env/parallel_for.h), since the tasks are independent.
using RunAll = std::function<void(size_t n, const std::function<void(size_t)>& task)>;

// Every *.yaml, *.yml and *.json file directly in `dir`, in name order, read through `fs` (the
// Env's file system). InvalidArgument for an unreadable or empty directory, a bad manifest (the
// first in name order), or two manifests of one service. Files are read and parsed by the
// tasks of `run_all` (serially when empty); the result does not depend on how they ran.
Result<std::vector<Service>> LoadManifests(FileSystem& fs, const std::string& dir,
                                           const RunAll& run_all = {});

}  // namespace converge::topology
