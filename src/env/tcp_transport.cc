#include "env/tcp_transport.h"

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <utility>
#include <vector>

namespace converge::internal {
namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using boost::system::error_code;

constexpr size_t kFixedHeaderBytes = 3;  // version + u16 address length
constexpr size_t kMaxFrameBytes =
    kFixedHeaderBytes + TcpTransport::kMaxAddressBytes + Transport::kMaxPayloadBytes;
constexpr int64_t kAcceptRetryNs = 50'000'000;

struct HostPort {
  std::string host;  // without brackets
  std::string port;
};

Result<HostPort> ParseAddress(std::string_view address) {
  const size_t colon = address.rfind(':');
  auto invalid = [&] {
    return InvalidArgumentError("address '" + std::string(address) + "' is not host:port");
  };
  if (colon == std::string_view::npos || colon == 0 || colon + 1 == address.size()) {
    return invalid();
  }
  std::string_view host = address.substr(0, colon);
  std::string_view port = address.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  if (host.empty() || port.size() > 5) return invalid();
  uint32_t value = 0;
  for (char c : port) {
    if (c < '0' || c > '9') return invalid();
    value = value * 10 + static_cast<uint32_t>(c - '0');
  }
  if (value > 65535) return invalid();
  return HostPort{std::string(host), std::string(port)};
}

void PutBe32(uint32_t v, char* out) {
  out[0] = static_cast<char>(v >> 24);
  out[1] = static_cast<char>(v >> 16);
  out[2] = static_cast<char>(v >> 8);
  out[3] = static_cast<char>(v);
}
uint32_t GetBe32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}

// An outbound connection to one peer. Executor thread only.
struct Peer {
  Peer(asio::io_context& io, std::string address_in)
      : address(std::move(address_in)), socket(io), resolver(io), timer(io) {}
  enum class State { kIdle, kConnecting, kConnected, kBackoff };

  const std::string address;
  tcp::socket socket;
  tcp::resolver resolver;
  asio::steady_timer timer;  // connect timeout while kConnecting, backoff while kBackoff
  State state = State::kIdle;
  uint64_t generation = 0;  // bumped per connection attempt; stale completions compare it
  int64_t backoff_ns = 0;
  bool writing = false;
  std::vector<std::string> batch;  // payloads being written
  std::string scratch;             // coalesced headers and small payloads
  struct Segment {
    size_t offset;
    size_t size;
    const std::string* external;  // null: a range of scratch
  };
  std::vector<Segment> segments;
  std::vector<asio::const_buffer> buffers;
  uint8_t probe = 0;  // one-byte read that notices the peer closing
};

// An accepted connection. Executor thread only.
struct Inbound {
  explicit Inbound(tcp::socket s) : socket(std::move(s)) {}
  tcp::socket socket;
  std::vector<uint8_t> buf;
  size_t begin = 0;  // unparsed bytes are buf[begin, end)
  size_t end = 0;
  size_t need = 4;  // bytes from begin required to parse the next frame
};

class EndpointState : public std::enable_shared_from_this<EndpointState> {
 public:
  EndpointState(AsioExecutor& executor, const TcpTransportOptions& options,
                Transport::Handler handler)
      : io_(executor.io_context()),
        options_(options),
        acceptor_(io_),
        accept_timer_(io_),
        handler_(std::move(handler)) {}

  Status Open(const std::string& requested) {
    CONVERGE_ASSIGN_OR_RETURN(HostPort hp, ParseAddress(requested));
    error_code ec;
    tcp::endpoint local;
    asio::ip::address ip = asio::ip::make_address(hp.host, ec);
    if (!ec) {
      local = tcp::endpoint(ip, static_cast<uint16_t>(std::stoi(hp.port)));
    } else {
      tcp::resolver resolver(io_);
      auto results = resolver.resolve(hp.host, hp.port, ec);
      if (ec || results.empty()) {
        return UnavailableError("listen '" + requested + "': cannot resolve: " + ec.message());
      }
      local = *results.begin();
    }
    auto fail = [&](std::string_view what) {
      const std::string message =
          "listen '" + requested + "': " + std::string(what) + ": " + ec.message();
      if (ec == asio::error::address_in_use) return AlreadyExistsError(message);
      return UnavailableError(message);
    };
    acceptor_.open(local.protocol(), ec);
    if (ec) return fail("open");
    acceptor_.set_option(tcp::acceptor::reuse_address(true), ec);
    if (ec) return fail("setsockopt");
    acceptor_.bind(local, ec);
    if (ec) return fail("bind");
    acceptor_.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) return fail("listen");
    const tcp::endpoint bound = acceptor_.local_endpoint(ec);
    if (ec) return fail("getsockname");
    const std::string host = bound.address().is_v6() ? "[" + hp.host + "]" : hp.host;
    address_ = host + ":" + std::to_string(bound.port());
    header_prefix_.push_back(static_cast<char>(TcpTransport::kFrameVersion));
    header_prefix_.push_back(static_cast<char>(address_.size() >> 8));
    header_prefix_.push_back(static_cast<char>(address_.size() & 0xff));
    header_prefix_ += address_;
    return Status::Ok();
  }

  void Start() {
    asio::post(io_, [self = shared_from_this()] { self->Accept(); });
  }

  const std::string& address() const { return address_; }

  Status Send(const std::string& to, std::string payload) {
    if (payload.size() > Transport::kMaxPayloadBytes) {
      return InvalidArgumentError("send to '" + to + "': payload of " +
                                  std::to_string(payload.size()) + " bytes exceeds the limit of " +
                                  std::to_string(Transport::kMaxPayloadBytes));
    }
    CONVERGE_RETURN_IF_ERROR(ParseAddress(to).status());
    bool kick = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (closed_) return FailedPreconditionError("send to '" + to + "': endpoint is closed");
      auto it = queues_.find(to);
      if (it == queues_.end()) {
        if (queues_.size() >= options_.max_peers) {
          return ResourceExhaustedError("send to '" + to + "': already talking to " +
                                        std::to_string(queues_.size()) + " peers");
        }
        it = queues_.emplace(to, SendQueue{}).first;
      }
      SendQueue& q = it->second;
      if (q.frames.size() >= options_.max_queued_frames_per_peer ||
          q.bytes + payload.size() > options_.max_queued_bytes_per_peer) {
        return ResourceExhaustedError("send to '" + to + "': send queue full (" +
                                      std::to_string(q.frames.size()) + " frames, " +
                                      std::to_string(q.bytes) + " bytes)");
      }
      q.bytes += payload.size();
      q.frames.push_back(std::move(payload));
      kick = !q.kicked;
      q.kicked = true;
    }
    if (kick) asio::post(io_, [self = shared_from_this(), to] { self->Drain(to); });
    return Status::Ok();
  }

  // From the Endpoint's destructor, on any thread.
  void Close() {
    {
      std::lock_guard<std::recursive_mutex> lock(handler_mu_);  // waits for a running handler
      handler_closed_ = true;
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      closed_ = true;
    }
    asio::post(io_, [self = shared_from_this()] { self->CloseAll(); });
  }

  TcpEndpointStats stats() const {
    TcpEndpointStats s;
    s.frames_sent = frames_sent_.load(std::memory_order_relaxed);
    s.frames_received = frames_received_.load(std::memory_order_relaxed);
    s.frames_dropped = frames_dropped_.load(std::memory_order_relaxed);
    s.protocol_errors = protocol_errors_.load(std::memory_order_relaxed);
    return s;
  }

 private:
  struct SendQueue {
    std::vector<std::string> frames;  // payloads
    size_t bytes = 0;
    bool kicked = false;  // the executor thread will look at this queue again
  };
  using PeerPtr = std::shared_ptr<Peer>;

  // ---- inbound (executor thread) ----
  void Accept() {
    if (shut_down_) return;
    acceptor_.async_accept([self = shared_from_this()](error_code ec, tcp::socket socket) {
      if (self->shut_down_) return;
      if (ec) {
        // Out of descriptors or similar: retry later rather than spin.
        self->accept_timer_.expires_after(std::chrono::nanoseconds(kAcceptRetryNs));
        self->accept_timer_.async_wait([self](error_code wait_ec) {
          if (!wait_ec) self->Accept();
        });
        return;
      }
      if (self->inbound_.size() >= self->options_.max_inbound_connections) {
        error_code ignored;
        socket.close(ignored);
      } else {
        auto in = std::make_shared<Inbound>(std::move(socket));
        in->buf.resize(self->options_.read_chunk_bytes);
        self->inbound_.insert(in);
        self->ReadMore(in);
      }
      self->Accept();
    });
  }

  void ReadMore(const std::shared_ptr<Inbound>& in) {
    if (in->begin == in->end) in->begin = in->end = 0;
    // Room for the next frame and a useful read: compact, then grow if one frame needs it.
    if (in->begin > 0 && (in->buf.size() - in->begin < in->need ||
                          in->buf.size() - in->end < options_.read_chunk_bytes / 2)) {
      std::memmove(in->buf.data(), in->buf.data() + in->begin, in->end - in->begin);
      in->end -= in->begin;
      in->begin = 0;
    }
    if (in->buf.size() < in->need) in->buf.resize(in->need);
    if (in->buf.size() == in->end) in->buf.resize(in->buf.size() + options_.read_chunk_bytes);
    in->socket.async_read_some(
        asio::buffer(in->buf.data() + in->end, in->buf.size() - in->end),
        [self = shared_from_this(), in](error_code ec, size_t n) {
          if (self->shut_down_) return;
          if (ec) {
            self->DropInbound(in);
            return;
          }
          in->end += n;
          if (!self->ParseFrames(*in)) {
            self->protocol_errors_.fetch_add(1, std::memory_order_relaxed);
            self->DropInbound(in);
            return;
          }
          // A big frame was parsed: give its memory back rather than keep 16 MiB per peer.
          if (in->begin == in->end && in->buf.size() > 4 * self->options_.read_chunk_bytes) {
            in->buf.resize(self->options_.read_chunk_bytes);
            in->buf.shrink_to_fit();
          }
          self->ReadMore(in);
        });
  }

  // Parses and dispatches every complete frame; false on a malformed one.
  bool ParseFrames(Inbound& in) {
    for (;;) {
      const size_t avail = in.end - in.begin;
      if (avail < 4) {
        in.need = 4;
        return true;
      }
      const uint8_t* p = in.buf.data() + in.begin;
      const uint32_t length = GetBe32(p);
      if (length < kFixedHeaderBytes || length > kMaxFrameBytes) return false;
      if (avail < 4 + size_t{length}) {
        in.need = 4 + size_t{length};
        return true;
      }
      const uint8_t* body = p + 4;
      if (body[0] != TcpTransport::kFrameVersion) return false;
      const size_t address_size = (size_t{body[1]} << 8) | body[2];
      if (address_size > TcpTransport::kMaxAddressBytes ||
          kFixedHeaderBytes + address_size > length) {
        return false;
      }
      const size_t payload_size = length - kFixedHeaderBytes - address_size;
      if (payload_size > Transport::kMaxPayloadBytes) return false;
      const char* from = reinterpret_cast<const char*>(body + kFixedHeaderBytes);
      Message message{std::string(from, address_size), address_,
                      std::string(from + address_size, payload_size)};
      in.begin += 4 + size_t{length};
      Dispatch(std::move(message));
    }
  }

  void Dispatch(Message message) {
    std::lock_guard<std::recursive_mutex> lock(handler_mu_);
    if (handler_closed_) return;
    frames_received_.fetch_add(1, std::memory_order_relaxed);
    handler_(std::move(message));
  }

  void DropInbound(const std::shared_ptr<Inbound>& in) {
    error_code ignored;
    in->socket.close(ignored);
    inbound_.erase(in);
  }

  // ---- outbound (executor thread) ----
  void Drain(const std::string& to) {
    if (shut_down_) return;
    PeerPtr& slot = peers_[to];
    if (!slot) slot = std::make_shared<Peer>(io_, to);
    PeerPtr peer = slot;
    switch (peer->state) {
      case Peer::State::kIdle:
        Connect(peer);
        return;
      case Peer::State::kConnecting:
      case Peer::State::kBackoff:
        return;  // the connect or backoff completion looks at the queue
      case Peer::State::kConnected:
        if (!peer->writing) WriteBatch(peer);
        return;
    }
  }

  void Connect(const PeerPtr& peer) {
    auto hp = ParseAddress(peer->address);  // validated by Send
    if (!hp.ok()) return;
    peer->state = Peer::State::kConnecting;
    const uint64_t gen = ++peer->generation;
    peer->socket = tcp::socket(io_);
    auto self = shared_from_this();
    peer->timer.expires_after(std::chrono::nanoseconds(options_.connect_timeout_ns));
    peer->timer.async_wait([self, peer, gen](error_code ec) {
      if (ec || self->shut_down_ || gen != peer->generation ||
          peer->state != Peer::State::kConnecting) {
        return;
      }
      peer->resolver.cancel();  // the pending resolve or connect fails with operation_aborted
      error_code ignored;
      peer->socket.close(ignored);
    });
    peer->resolver.async_resolve(
        hp->host, hp->port, [self, peer, gen](error_code ec, tcp::resolver::results_type results) {
          if (self->shut_down_ || gen != peer->generation) return;
          if (ec) {
            self->ConnectFailed(peer);
            return;
          }
          asio::async_connect(peer->socket, results,
                              [self, peer, gen](error_code connect_ec, const tcp::endpoint&) {
                                self->OnConnect(peer, gen, connect_ec);
                              });
        });
  }

  void OnConnect(const PeerPtr& peer, uint64_t gen, error_code ec) {
    if (shut_down_ || gen != peer->generation) return;
    peer->timer.cancel();
    if (ec || peer->state != Peer::State::kConnecting) {
      ConnectFailed(peer);
      return;
    }
    error_code ignored;
    peer->socket.set_option(tcp::no_delay(true), ignored);
    peer->state = Peer::State::kConnected;
    peer->backoff_ns = 0;
    // The peer never sends on this connection: any read completion means it closed (or
    // misbehaved), which we notice here rather than on a later write.
    peer->socket.async_read_some(asio::buffer(&peer->probe, 1),
                                 [self = shared_from_this(), peer, gen](error_code, size_t) {
                                   if (self->shut_down_ || gen != peer->generation) return;
                                   self->Broken(peer);
                                 });
    WriteBatch(peer);
  }

  void ConnectFailed(const PeerPtr& peer) {
    // Nobody to deliver to: what is queued is lost (datagram semantics) rather than left to
    // fill the queue while the peer is down.
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = queues_.find(peer->address);
      if (it != queues_.end()) {
        frames_dropped_.fetch_add(it->second.frames.size(), std::memory_order_relaxed);
        it->second.frames.clear();
        it->second.bytes = 0;
      }
    }
    StartBackoff(peer);
  }

  // An established connection failed: the batch being written is lost, queued frames wait for
  // the next connection.
  void Broken(const PeerPtr& peer) {
    if (peer->state != Peer::State::kConnected) return;
    if (peer->writing) {
      frames_dropped_.fetch_add(peer->batch.size(), std::memory_order_relaxed);
      peer->writing = false;
    }
    error_code ignored;
    peer->socket.close(ignored);
    StartBackoff(peer);
  }

  void StartBackoff(const PeerPtr& peer) {
    error_code ignored;
    peer->socket.close(ignored);
    peer->state = Peer::State::kBackoff;
    peer->backoff_ns = peer->backoff_ns == 0
                           ? options_.reconnect_backoff_min_ns
                           : std::min(peer->backoff_ns * 2, options_.reconnect_backoff_max_ns);
    const uint64_t gen = peer->generation;
    peer->timer.expires_after(std::chrono::nanoseconds(peer->backoff_ns));
    peer->timer.async_wait([self = shared_from_this(), peer, gen](error_code ec) {
      if (ec || self->shut_down_ || gen != peer->generation ||
          peer->state != Peer::State::kBackoff) {
        return;
      }
      peer->state = Peer::State::kIdle;
      self->AfterBackoff(peer);
    });
  }

  void AfterBackoff(const PeerPtr& peer) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = queues_.find(peer->address);
      if (it != queues_.end() && !it->second.frames.empty()) {
        // Fall through to reconnect, outside the lock.
      } else {
        // Nothing to send: forget the peer so dead peers do not pile up.
        if (it != queues_.end()) queues_.erase(it);
        peers_.erase(peer->address);
        return;
      }
    }
    Connect(peer);
  }

  void WriteBatch(const PeerPtr& peer) {
    peer->batch.clear();
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = queues_.find(peer->address);
      if (it == queues_.end()) return;
      if (it->second.frames.empty()) {
        it->second.kicked = false;
        return;
      }
      peer->batch.swap(it->second.frames);
      it->second.bytes = 0;
    }
    BuildBuffers(*peer);
    peer->writing = true;
    const uint64_t gen = peer->generation;
    asio::async_write(
        peer->socket, peer->buffers, [self = shared_from_this(), peer, gen](error_code ec, size_t) {
          if (self->shut_down_ || gen != peer->generation ||
              peer->state != Peer::State::kConnected || !peer->writing) {
            return;
          }
          peer->writing = false;
          if (ec) {
            self->frames_dropped_.fetch_add(peer->batch.size(), std::memory_order_relaxed);
            self->Broken(peer);
            return;
          }
          self->frames_sent_.fetch_add(peer->batch.size(), std::memory_order_relaxed);
          self->WriteBatch(peer);
        });
  }

  // Frames of the batch as few contiguous buffers: headers and small payloads are copied into
  // `scratch`, large payloads are referenced where they are.
  void BuildBuffers(Peer& peer) {
    peer.scratch.clear();
    peer.segments.clear();
    peer.buffers.clear();
    size_t run_start = 0;
    for (const std::string& payload : peer.batch) {
      char length[4];
      PutBe32(static_cast<uint32_t>(header_prefix_.size() + payload.size()), length);
      peer.scratch.append(length, sizeof(length));
      peer.scratch.append(header_prefix_);
      if (payload.size() <= options_.coalesce_max_bytes) {
        peer.scratch.append(payload);
      } else {
        peer.segments.push_back({run_start, peer.scratch.size() - run_start, nullptr});
        peer.segments.push_back({0, payload.size(), &payload});
        run_start = peer.scratch.size();
      }
    }
    if (peer.scratch.size() > run_start) {
      peer.segments.push_back({run_start, peer.scratch.size() - run_start, nullptr});
    }
    peer.buffers.reserve(peer.segments.size());
    for (const Peer::Segment& s : peer.segments) {
      const char* base = s.external ? s.external->data() : peer.scratch.data() + s.offset;
      peer.buffers.emplace_back(base, s.size);
    }
  }

  void CloseAll() {
    shut_down_ = true;
    error_code ignored;
    acceptor_.close(ignored);
    accept_timer_.cancel();
    for (auto& [address, peer] : peers_) {
      peer->timer.cancel();
      peer->resolver.cancel();
      peer->socket.close(ignored);
    }
    peers_.clear();
    for (const auto& in : inbound_) in->socket.close(ignored);
    inbound_.clear();
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [address, q] : queues_) {
      frames_dropped_.fetch_add(q.frames.size(), std::memory_order_relaxed);
    }
    queues_.clear();
  }

  asio::io_context& io_;
  const TcpTransportOptions options_;
  std::string address_;        // set by Open, then read-only
  std::string header_prefix_;  // version, address length, address: identical in every frame

  // Executor thread only.
  tcp::acceptor acceptor_;
  asio::steady_timer accept_timer_;
  std::map<std::string, PeerPtr> peers_;
  std::set<std::shared_ptr<Inbound>> inbound_;
  bool shut_down_ = false;

  std::recursive_mutex handler_mu_;  // held while the handler runs
  bool handler_closed_ = false;      // guarded by handler_mu_
  Transport::Handler handler_;

  std::mutex mu_;
  bool closed_ = false;                      // guarded by mu_
  std::map<std::string, SendQueue> queues_;  // guarded by mu_

  std::atomic<uint64_t> frames_sent_{0};
  std::atomic<uint64_t> frames_received_{0};
  std::atomic<uint64_t> frames_dropped_{0};
  std::atomic<uint64_t> protocol_errors_{0};
};

class TcpEndpoint : public Endpoint {
 public:
  explicit TcpEndpoint(std::shared_ptr<EndpointState> state) : state_(std::move(state)) {}
  ~TcpEndpoint() override { state_->Close(); }
  const std::string& address() const override { return state_->address(); }
  Status Send(const std::string& to, std::string payload) override {
    return state_->Send(to, std::move(payload));
  }
  TcpEndpointStats stats() const { return state_->stats(); }

 private:
  const std::shared_ptr<EndpointState> state_;
};

}  // namespace

TcpTransport::TcpTransport(AsioExecutor& executor, TcpTransportOptions options)
    : executor_(executor), options_(options) {}

Result<std::unique_ptr<Endpoint>> TcpTransport::Listen(const std::string& address,
                                                       Handler handler) {
  auto state = std::make_shared<EndpointState>(executor_, options_, std::move(handler));
  CONVERGE_RETURN_IF_ERROR(state->Open(address));
  state->Start();
  return std::unique_ptr<Endpoint>(std::make_unique<TcpEndpoint>(std::move(state)));
}

TcpEndpointStats GetTcpEndpointStats(const Endpoint& endpoint) {
  return dynamic_cast<const TcpEndpoint&>(endpoint).stats();
}

}  // namespace converge::internal
