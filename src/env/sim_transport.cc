// SimTransport: a seeded, lossy, reordering network between named endpoints.
#include <map>
#include <set>
#include <utility>

#include "converge/sim_env.h"
#include "env/prng.h"

namespace converge::sim {
namespace {

class SimEndpoint;
using Link = std::pair<std::string, std::string>;  // (from, to)

}  // namespace

struct SimTransport::Impl {
  Impl(SimEnv& env_in, uint64_t seed) : env(env_in), rng(seed) {}

  bool Blocked(const std::string& a, const std::string& b) const {
    if (isolated.count(a) || isolated.count(b)) return true;
    return partitions.count(a < b ? Link(a, b) : Link(b, a)) > 0;
  }

  void TraceMessage(std::string_view what, const Message& m) {
    const uint64_t hash = internal::Fnv1a(internal::kFnvOffset, m.payload.data(), m.payload.size());
    std::string line;
    line.reserve(32 + m.from.size() + m.to.size());
    line.append("net ").append(what).append(" ").append(m.from).append("->").append(m.to);
    line.append(" ").append(std::to_string(m.payload.size())).append(" ");
    line.append(std::to_string(hash));
    env.Trace(line);
  }

  Status Send(const std::string& from, const std::string& to, std::string payload);
  void Deliver(Message message);

  SimEnv& env;
  internal::SeededRandom rng;
  int64_t min_latency_ns = 100'000;
  int64_t max_latency_ns = 1'000'000;
  double drop_probability = 0;
  double duplicate_probability = 0;
  size_t max_in_flight_per_link = 100'000;
  std::set<Link> partitions;  // stored as (min, max)
  std::set<std::string> isolated;
  std::map<std::string, SimEndpoint*> endpoints;
  std::map<Link, size_t> in_flight;
  Stats stats;
};

namespace {

class SimEndpoint : public Endpoint {
 public:
  SimEndpoint(SimTransport::Impl& net, std::string address, Transport::Handler handler)
      : net_(net),
        address_(std::move(address)),
        handler_(std::make_shared<Transport::Handler>(std::move(handler))) {}
  ~SimEndpoint() override { net_.endpoints.erase(address_); }

  const std::string& address() const override { return address_; }
  Status Send(const std::string& to, std::string payload) override {
    return net_.Send(address_, to, std::move(payload));
  }
  // Shared so a handler that destroys its own endpoint does not destroy itself mid-call.
  std::shared_ptr<Transport::Handler> handler() const { return handler_; }

 private:
  SimTransport::Impl& net_;
  const std::string address_;
  const std::shared_ptr<Transport::Handler> handler_;
};

}  // namespace

Status SimTransport::Impl::Send(const std::string& from, const std::string& to,
                                std::string payload) {
  if (payload.size() > Transport::kMaxPayloadBytes) {
    return InvalidArgumentError("send to '" + to + "': payload of " +
                                std::to_string(payload.size()) + " bytes exceeds the limit of " +
                                std::to_string(Transport::kMaxPayloadBytes));
  }
  const Link link(from, to);
  auto flight = in_flight.find(link);
  if (flight != in_flight.end() && flight->second >= max_in_flight_per_link) {
    return ResourceExhaustedError("send to '" + to + "': " + std::to_string(flight->second) +
                                  " messages already in flight from '" + from + "'");
  }
  ++stats.sent;
  Message message{from, to, std::move(payload)};
  // Always draw, so the stream's position does not depend on the partition state.
  const bool lost = rng.Bernoulli(drop_probability);
  if (lost || Blocked(from, to)) {
    ++stats.dropped;
    TraceMessage(lost ? "drop" : "drop-partition", message);
    return Status::Ok();
  }
  const int copies = rng.Bernoulli(duplicate_probability) ? 2 : 1;
  if (copies == 2) ++stats.duplicated;
  size_t& count = in_flight[link];
  for (int i = 0; i < copies; ++i) {
    const int64_t latency = rng.UniformRange(min_latency_ns, max_latency_ns);
    ++count;
    Message copy = i + 1 < copies ? message : std::move(message);
    env.ScheduleInternal(latency, [this, m = std::move(copy)]() mutable { Deliver(std::move(m)); });
  }
  return Status::Ok();
}

void SimTransport::Impl::Deliver(Message message) {
  auto flight = in_flight.find(Link(message.from, message.to));
  if (flight != in_flight.end() && --flight->second == 0) in_flight.erase(flight);
  if (Blocked(message.from, message.to)) {
    ++stats.dropped;
    TraceMessage("drop-partition", message);
    return;
  }
  auto it = endpoints.find(message.to);
  if (it == endpoints.end()) {
    ++stats.dropped;
    TraceMessage("drop-unknown", message);
    return;
  }
  ++stats.delivered;
  TraceMessage("deliver", message);
  std::shared_ptr<Transport::Handler> handler = it->second->handler();
  (*handler)(std::move(message));
}

SimTransport::SimTransport(SimEnv& env, uint64_t seed) : impl_(std::make_unique<Impl>(env, seed)) {}

SimTransport::~SimTransport() = default;

void SimTransport::SetLatency(int64_t min_ns, int64_t max_ns) {
  CONVERGE_CHECK(0 <= min_ns && min_ns <= max_ns);
  impl_->min_latency_ns = min_ns;
  impl_->max_latency_ns = max_ns;
}

void SimTransport::SetDropProbability(double p) {
  CONVERGE_CHECK(p >= 0 && p <= 1);
  impl_->drop_probability = p;
}

void SimTransport::SetDuplicateProbability(double p) {
  CONVERGE_CHECK(p >= 0 && p <= 1);
  impl_->duplicate_probability = p;
}

void SimTransport::SetMaxInFlightPerLink(size_t n) { impl_->max_in_flight_per_link = n; }

void SimTransport::Partition(const std::string& a, const std::string& b) {
  impl_->partitions.insert(a < b ? Link(a, b) : Link(b, a));
  impl_->env.Trace("net partition " + a + " " + b);
}

void SimTransport::Isolate(const std::string& a) {
  impl_->isolated.insert(a);
  impl_->env.Trace("net isolate " + a);
}

void SimTransport::Heal() {
  impl_->partitions.clear();
  impl_->isolated.clear();
  impl_->env.Trace("net heal");
}

SimTransport::Stats SimTransport::stats() const { return impl_->stats; }

Result<std::unique_ptr<Endpoint>> SimTransport::Listen(const std::string& address,
                                                       Handler handler) {
  if (address.empty()) return InvalidArgumentError("listen: empty address");
  if (impl_->endpoints.count(address)) {
    return AlreadyExistsError("listen '" + address + "': address already in use (simulated)");
  }
  auto endpoint = std::make_unique<SimEndpoint>(*impl_, address, std::move(handler));
  impl_->endpoints.emplace(address, endpoint.get());
  impl_->env.Trace("net listen " + address);
  return std::unique_ptr<Endpoint>(std::move(endpoint));
}

}  // namespace converge::sim
