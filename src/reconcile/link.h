// Reconciliation over an Env Transport (the simulator's links or TCP): the responder served at
// an address, and one run of the initiator with retransmission and a deadline, in the Env's
// time. The sidecar HTTP channel will carry the same messages; these drivers are what the
// simulator and in-process peers use.
//
// Thread-safety: the set, the service and the run are used on the Env's executor only (the
// transport calls the handlers there); the set's writers must run there too.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "converge/env.h"
#include "converge/status.h"
#include "reconcile/session.h"

namespace converge::reconcile {

class ResponderService {
 public:
  // Answers reconciliation requests sent to `address` from `set`. `env` and `set` outlive it.
  static Result<std::unique_ptr<ResponderService>> Listen(Env& env, const std::string& address,
                                                          ReconcileSet& set,
                                                          ResponderOptions options = {});
  // Requests that could not be parsed (dropped; nothing changed).
  uint64_t malformed() const { return malformed_; }
  Responder& responder() { return responder_; }

 private:
  ResponderService(Env& env, ReconcileSet& set, ResponderOptions options)
      : responder_(set, env, std::move(options)) {}
  Responder responder_;
  std::unique_ptr<Endpoint> endpoint_;
  uint64_t malformed_ = 0;
};

struct RunOptions {
  InitiatorOptions initiator;
  int64_t retransmit_ns = 200'000'000;   // resend the request in flight after this long
  int64_t deadline_ns = 60'000'000'000;  // then give up: DeadlineExceeded
};

class ReconcileRun {
 public:
  using Done = std::function<void(Status, const ReconcileResult&, const SessionStats&)>;
  // Listens at `address` and reconciles `local` with the ResponderService at `peer`; `done` is
  // called once, on the executor. `env` and `local` outlive the run; destroying the run stops
  // it (done is not called then).
  static Result<std::unique_ptr<ReconcileRun>> Start(Env& env, const std::string& address,
                                                     const std::string& peer, ReconcileSet& local,
                                                     RunOptions options, Done done);
  ~ReconcileRun();
  bool finished() const { return finished_; }
  const Initiator& initiator() const { return initiator_; }

 private:
  ReconcileRun(Env& env, std::string peer, ReconcileSet& local, RunOptions options, Done done);
  void OnMessage(const Message& m);
  void Tick();
  void Finish(Status status);

  Env& env_;
  std::string peer_;
  RunOptions options_;
  Done done_;
  Initiator initiator_;
  std::unique_ptr<Endpoint> endpoint_;
  int64_t deadline_ = 0;
  TimerId timer_ = 0;
  bool finished_ = false;
  // Cleared on destruction: callbacks already queued see it and do nothing.
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace converge::reconcile
