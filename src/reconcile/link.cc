#include "reconcile/link.h"

namespace converge::reconcile {

Result<std::unique_ptr<ResponderService>> ResponderService::Listen(Env& env,
                                                                   const std::string& address,
                                                                   ReconcileSet& set,
                                                                   ResponderOptions options) {
  std::unique_ptr<ResponderService> s(new ResponderService(env, set, std::move(options)));
  ResponderService* self = s.get();
  Result<std::unique_ptr<Endpoint>> ep = env.transport().Listen(address, [self](Message m) {
    Result<std::optional<std::string>> reply = self->responder_.Handle(m.payload);
    if (!reply.ok()) {
      ++self->malformed_;
      return;
    }
    // A reply that cannot be queued is as good as lost: the initiator resends.
    if (reply->has_value()) (void)self->endpoint_->Send(m.from, std::move(**reply));
  });
  if (!ep.ok()) return ep.status();
  s->endpoint_ = std::move(ep).value();
  return s;
}

ReconcileRun::ReconcileRun(Env& env, std::string peer, ReconcileSet& local, RunOptions options,
                           Done done)
    : env_(env),
      peer_(std::move(peer)),
      options_(options),
      done_(std::move(done)),
      initiator_(local, env.random().Next64(), options.initiator) {}

ReconcileRun::~ReconcileRun() {
  *alive_ = false;
  if (timer_ != 0) env_.executor().Cancel(timer_);
}

Result<std::unique_ptr<ReconcileRun>> ReconcileRun::Start(Env& env, const std::string& address,
                                                          const std::string& peer,
                                                          ReconcileSet& local, RunOptions options,
                                                          Done done) {
  std::unique_ptr<ReconcileRun> run(new ReconcileRun(env, peer, local, options, std::move(done)));
  ReconcileRun* self = run.get();
  std::weak_ptr<bool> alive = run->alive_;
  Result<std::unique_ptr<Endpoint>> ep = env.transport().Listen(address, [self, alive](Message m) {
    if (auto a = alive.lock(); a && *a) self->OnMessage(m);
  });
  if (!ep.ok()) return ep.status();
  run->endpoint_ = std::move(ep).value();
  run->deadline_ = env.clock().NowMonotonicNanos() + options.deadline_ns;
  (void)run->endpoint_->Send(peer, run->initiator_.Start());
  run->timer_ = env.executor().Schedule(options.retransmit_ns, [self, alive] {
    if (auto a = alive.lock(); a && *a) self->Tick();
  });
  return run;
}

void ReconcileRun::OnMessage(const Message& m) {
  if (finished_ || m.from != peer_) return;
  Result<Initiator::Step> step = initiator_.OnReply(m.payload);
  if (!step.ok()) {
    Finish(step.status());
    return;
  }
  if (step->kind == Initiator::Step::kSend) {
    (void)endpoint_->Send(peer_, std::move(step->message));
  } else if (step->kind == Initiator::Step::kDone) {
    (void)endpoint_->Send(peer_, initiator_.Finish());
    Finish(Status::Ok());
  }
}

void ReconcileRun::Tick() {
  timer_ = 0;
  if (finished_) return;
  if (env_.clock().NowMonotonicNanos() >= deadline_) {
    Finish(DeadlineExceededError("reconcile: no result from " + peer_ + " before the deadline"));
    return;
  }
  (void)endpoint_->Send(peer_, initiator_.Retransmit());
  std::weak_ptr<bool> alive = alive_;
  timer_ = env_.executor().Schedule(options_.retransmit_ns, [this, alive] {
    if (auto a = alive.lock(); a && *a) Tick();
  });
}

void ReconcileRun::Finish(Status status) {
  finished_ = true;
  if (timer_ != 0) {
    env_.executor().Cancel(timer_);
    timer_ = 0;
  }
  if (done_) done_(status, initiator_.result(), initiator_.stats());
}

}  // namespace converge::reconcile
