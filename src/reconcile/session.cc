#include "reconcile/session.h"

#include <algorithm>
#include <cmath>

#include "core/coding.h"

namespace converge::reconcile {
namespace {

using internal::GetFixed32;
using internal::GetFixed64;
using internal::GetLengthPrefixed;
using internal::GetVarint64;
using internal::PutFixed32;
using internal::PutFixed64;
using internal::PutLengthPrefixed;
using internal::PutVarint64;
using internal::ZigZagDecode;
using internal::ZigZagEncode;

constexpr uint8_t kFormat = 1;

enum Type : uint8_t {
  kHello = 1,     // I -> R: digest, first symbols wanted, probes wanted
  kInSync = 2,    // R -> I
  kSketch = 3,    // R -> I: digest, first symbols, probe symbols
  kMore = 4,      // I -> R: symbols [begin, end)
  kSymbols = 5,   // R -> I: begin, symbols
  kFetch = 6,     // I -> R: entry hashes
  kEntries = 7,   // R -> I: entries, keys written since the snapshot
  kFull = 8,      // I -> R: every hash from offset
  kHashes = 9,    // R -> I: total, offset, hashes
  kDone = 10,     // I -> R: drop the session
  kUnknown = 11,  // R -> I: no such session
};

// Symbols past this index are never asked for (a difference needing them is reconciled by the
// full exchange instead).
constexpr uint64_t kMaxSymbolIndex = uint64_t{1} << 40;

// Probes a HELLO may ask for.
constexpr uint64_t kMaxProbes = 4096;

struct Header {
  uint8_t type = 0;
  uint64_t session = 0;
  uint64_t seq = 0;
  uint64_t snapshot = 0;
};

std::string NewMessage(Type type, uint64_t session, uint64_t seq, uint64_t snapshot) {
  std::string m;
  m.push_back(static_cast<char>(kFormat));
  m.push_back(static_cast<char>(type));
  PutFixed64(&m, session);
  PutVarint64(&m, seq);
  PutFixed64(&m, snapshot);
  return m;
}

bool GetHeader(std::string_view* in, Header* h) {
  if (in->size() < 2 || static_cast<uint8_t>((*in)[0]) != kFormat) return false;
  h->type = static_cast<uint8_t>((*in)[1]);
  in->remove_prefix(2);
  return GetFixed64(in, &h->session) && GetVarint64(in, &h->seq) && GetFixed64(in, &h->snapshot);
}

void PutDigest(std::string* m, const SetDigest& d) {
  PutVarint64(m, d.count);
  PutFixed64(m, d.sum);
  PutFixed64(m, d.mix_sum);
}

bool GetDigest(std::string_view* in, SetDigest* d) {
  return GetVarint64(in, &d->count) && GetFixed64(in, &d->sum) && GetFixed64(in, &d->mix_sum);
}

void PutSymbols(std::string* m, const std::vector<Symbol>& symbols) {
  PutVarint64(m, symbols.size());
  for (const Symbol& s : symbols) {
    PutVarint64(m, ZigZagEncode(s.count));
    PutFixed64(m, s.sum);
    PutFixed32(m, s.check);
  }
}

// At least 13 bytes per symbol, so a count is checked against what is left before reserving.
bool GetSymbols(std::string_view* in, std::vector<Symbol>* out) {
  uint64_t n = 0;
  if (!GetVarint64(in, &n) || n > in->size() / 13) return false;
  out->resize(n);
  for (Symbol& s : *out) {
    uint64_t z = 0;
    if (!GetVarint64(in, &z) || !GetFixed64(in, &s.sum) || !GetFixed32(in, &s.check)) {
      return false;
    }
    s.count = ZigZagDecode(z);
  }
  return true;
}

// A probe travels as a 16-bit fingerprint of the symbol: the estimate only asks whether the two
// sides' symbols at an index are equal (a false "equal" has probability 2^-16).
uint16_t Fingerprint(const Symbol& s) {
  return static_cast<uint16_t>(
      MixOf(s.sum ^ (uint64_t{s.check} << 32) ^ static_cast<uint64_t>(s.count)));
}

void PutFingerprints(std::string* m, const std::vector<Symbol>& symbols) {
  PutVarint64(m, symbols.size());
  for (const Symbol& s : symbols) {
    const uint16_t f = Fingerprint(s);
    m->push_back(static_cast<char>(f & 0xff));
    m->push_back(static_cast<char>(f >> 8));
  }
}

bool GetFingerprints(std::string_view* in, std::vector<uint16_t>* out) {
  uint64_t n = 0;
  if (!GetVarint64(in, &n) || n > in->size() / 2) return false;
  out->resize(n);
  for (uint16_t& f : *out) {
    f = static_cast<uint16_t>(static_cast<uint8_t>((*in)[0]) |
                              (static_cast<uint8_t>((*in)[1]) << 8));
    in->remove_prefix(2);
  }
  return true;
}

void PutHashes(std::string* m, const uint64_t* h, size_t n) {
  PutVarint64(m, n);
  for (size_t i = 0; i < n; ++i) PutFixed64(m, h[i]);
}

bool GetHashes(std::string_view* in, std::vector<uint64_t>* out) {
  uint64_t n = 0;
  if (!GetVarint64(in, &n) || n > in->size() / 8) return false;
  out->resize(n);
  for (uint64_t& h : *out) {
    if (!GetFixed64(in, &h)) return false;
  }
  return true;
}

uint64_t NextSession(uint64_t s) {
  uint64_t z = s + 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  return z ^ (z >> 27);
}

Status Malformed(std::string_view what) {
  return InvalidArgumentError("reconcile: malformed " + std::string(what));
}

}  // namespace

std::vector<uint64_t> ProbeIndices(uint64_t first, uint64_t count, uint64_t last) {
  std::vector<uint64_t> out;
  first = std::max<uint64_t>(first, 1);
  last = std::min(last, kMaxSymbolIndex);
  if (count == 0 || last <= first + 1) return out;
  // Geometric in (first, last): the density 2/(i+2) halves per doubling of the index, so each
  // octave of difference sizes gets the same number of probes.
  const double ratio = std::pow(static_cast<double>(last) / static_cast<double>(first),
                                1.0 / static_cast<double>(count));
  double x = static_cast<double>(first);
  uint64_t prev = first - 1;
  for (uint64_t i = 0; i < count; ++i) {
    x *= ratio;
    uint64_t p = std::max(prev + 1, static_cast<uint64_t>(x));
    if (p < first) p = first;
    if (p >= last) break;
    out.push_back(p);
    prev = p;
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// Initiator

Initiator::Initiator(ReconcileSet& local, uint64_t session_id, InitiatorOptions options)
    : local_(local), options_(options), session_(session_id) {}

Initiator::~Initiator() = default;

std::string Initiator::Send(std::string message) {
  stats_.bytes_sent += message.size();
  in_flight_ = message;
  return message;
}

std::string Initiator::Retransmit() {
  ++stats_.retransmits;
  stats_.bytes_sent += in_flight_.size();
  return in_flight_;
}

std::string Initiator::Finish() const {
  return NewMessage(kDone, session_, seq_ + 1, remote_snapshot_);
}

std::string Initiator::Hello() {
  phase_ = Phase::kHello;
  decoder_ = std::make_unique<PeelingDecoder>();
  remote_snapshot_ = 0;
  remote_only_.clear();
  local_only_.clear();
  full_hashes_.clear();
  remote_entries_.clear();
  remote_touched_.clear();
  fetched_ = 0;
  std::string m = NewMessage(kHello, session_, ++seq_, 0);
  PutDigest(&m, local_digest_);
  // The probes stay inside the local set's maintained symbols, so they cost no scan here.
  probe_last_ = std::max<uint64_t>(local_.maintained_symbols(), options_.first_symbols);
  PutVarint64(&m, options_.first_symbols);
  PutVarint64(&m, options_.probes);
  PutVarint64(&m, probe_last_);
  return Send(std::move(m));
}

std::string Initiator::Start() {
  snapshot_ = local_.OpenSnapshot();
  local_digest_ = snapshot_->digest();
  return Hello();
}

bool Initiator::Verified() const {
  SetDigest d = local_digest_;
  for (uint64_t h : local_only_) d.Remove(h);
  for (uint64_t h : remote_only_) d.Add(h);
  return d == remote_digest_;
}

Result<Initiator::Step> Initiator::AfterSymbols() {
  decoder_->Peel();
  if (decoder_->Decoded()) {
    remote_only_ = decoder_->remote_only();
    local_only_ = decoder_->local_only();
    if (Verified()) return NextFetch();
  }
  // Not yet: more symbols, as many as the estimate says (at least a third again as many), unless
  // the difference is so large that exchanging every hash is cheaper.
  const uint64_t have = decoder_->size();
  uint64_t want = static_cast<uint64_t>(std::ceil(options_.symbols_per_difference *
                                                  static_cast<double>(stats_.estimate))) +
                  32;
  want = std::max(want, have + have / 3 + 16);
  const uint64_t full_cost = (local_digest_.count + remote_digest_.count) * 8 / 13 + 64;
  if (decoder_->Decoded() || want > kMaxSymbolIndex || want > full_cost) {
    // Decoded but not verified (a false peel), or too large: the full exchange is exact.
    stats_.full_exchange = true;
    phase_ = Phase::kFull;
    std::string m = NewMessage(kFull, session_, ++seq_, remote_snapshot_);
    PutVarint64(&m, 0);
    return Step{Step::kSend, Send(std::move(m))};
  }
  phase_ = Phase::kSymbols;
  std::string m = NewMessage(kMore, session_, ++seq_, remote_snapshot_);
  PutVarint64(&m, have);
  PutVarint64(&m, want);
  return Step{Step::kSend, Send(std::move(m))};
}

Result<Initiator::Step> Initiator::NextFetch() {
  phase_ = Phase::kFetch;
  // The first FETCH goes out even when nothing is missing locally: its reply carries the keys
  // the responder saw written during the run.
  const size_t n = std::min<size_t>(remote_only_.size() - fetched_, options_.fetch_batch);
  std::string m = NewMessage(kFetch, session_, ++seq_, remote_snapshot_);
  PutHashes(&m, remote_only_.data() + fetched_, n);
  fetched_ += n;
  return Step{Step::kSend, Send(std::move(m))};
}

Status Initiator::Finalize() {
  std::vector<Entry> local_entries;
  {
    std::unordered_set<uint64_t> wanted(local_only_.begin(), local_only_.end());
    snapshot_->Lookup(wanted, &local_entries);
    if (local_entries.size() != wanted.size()) {
      return InternalError("reconcile: a recovered local hash matches no local entry");
    }
  }
  std::map<std::string, Difference> by_key;
  for (const Entry& e : local_entries) {
    by_key[e.key].key = e.key;
    by_key[e.key].local_version = e.version;
  }
  for (const Entry& e : remote_entries_) {
    by_key[e.key].key = e.key;
    by_key[e.key].remote_version = e.version;
  }
  const auto& touched = snapshot_->touched();
  for (auto& [key, d] : by_key) {
    if (touched.count(key) || remote_touched_.count(KeyHash(key))) {
      result_.changed_during_run.push_back(std::move(d));
    } else if (!d.local_version) {
      result_.missing_local.push_back(std::move(d));
    } else if (!d.remote_version) {
      result_.missing_remote.push_back(std::move(d));
    } else {
      result_.divergent.push_back(std::move(d));
    }
  }
  done_ = true;
  phase_ = Phase::kDone;
  snapshot_.reset();
  decoder_.reset();
  return Status::Ok();
}

Result<Initiator::Step> Initiator::OnReply(std::string_view reply) {
  stats_.bytes_received += reply.size();
  std::string_view in = reply;
  Header h;
  if (!GetHeader(&in, &h)) return Malformed("reply header");
  if (done_ || h.session != session_ || h.seq != seq_) return Step{};
  // After the SKETCH, every reply must come from the snapshot the SKETCH came from.
  if (phase_ != Phase::kHello && h.type != kUnknown && h.snapshot != remote_snapshot_) {
    return Step{};
  }
  ++stats_.round_trips;
  if (h.type == kUnknown) {
    // The responder lost the session (restart, timeout): start over against a new snapshot
    // of it; ours stays, with the keys written since it was opened.
    ++stats_.restarts;
    session_ = NextSession(session_);
    return Step{Step::kSend, Hello()};
  }
  switch (phase_) {
    case Phase::kHello: {
      if (h.type == kInSync) {
        CONVERGE_RETURN_IF_ERROR(Finalize());
        return Step{Step::kDone, {}};
      }
      if (h.type != kSketch || h.snapshot == 0) return Malformed("reply to HELLO");
      remote_snapshot_ = h.snapshot;
      std::vector<Symbol> first;
      std::vector<uint16_t> probes;
      if (!GetDigest(&in, &remote_digest_) || !GetSymbols(&in, &first) ||
          !GetFingerprints(&in, &probes) || !in.empty()) {
        return Malformed("SKETCH");
      }
      std::vector<uint64_t> probe_index =
          ProbeIndices(options_.first_symbols, options_.probes, probe_last_);
      if (probe_index.size() != probes.size() || first.size() != options_.first_symbols) {
        return Malformed("SKETCH");
      }
      stats_.symbols += first.size();
      std::vector<Symbol> mine;
      snapshot_->Symbols(0, first.size(), &mine);
      std::vector<uint64_t> sample;
      std::vector<bool> empty;
      for (size_t i = 0; i < first.size(); ++i) {
        first[i].Subtract(mine[i]);
        sample.push_back(i);
        empty.push_back(first[i].IsZero());
        decoder_->Add(first[i]);
      }
      if (!probes.empty()) {
        snapshot_->SymbolsAt(probe_index, &mine);
        for (size_t i = 0; i < probes.size(); ++i) {
          sample.push_back(probe_index[i]);
          empty.push_back(probes[i] == Fingerprint(mine[i]));
        }
      }
      stats_.estimate = EstimateDifference(sample, empty);
      return AfterSymbols();
    }
    case Phase::kSymbols: {
      uint64_t begin = 0;
      std::vector<Symbol> more;
      if (h.type != kSymbols || !GetVarint64(&in, &begin) || !GetSymbols(&in, &more) ||
          !in.empty() || begin != decoder_->size() || more.empty()) {
        return Malformed("SYMBOLS");
      }
      stats_.symbols += more.size();
      std::vector<Symbol> mine;
      snapshot_->Symbols(begin, begin + more.size(), &mine);
      for (size_t i = 0; i < more.size(); ++i) {
        more[i].Subtract(mine[i]);
        decoder_->Add(more[i]);
      }
      return AfterSymbols();
    }
    case Phase::kFull: {
      uint64_t total = 0, offset = 0;
      std::vector<uint64_t> hashes;
      if (h.type != kHashes || !GetVarint64(&in, &total) || !GetVarint64(&in, &offset) ||
          !GetHashes(&in, &hashes) || !in.empty() || offset != full_hashes_.size() ||
          offset + hashes.size() > total || (hashes.empty() && offset < total)) {
        return Malformed("HASHES");
      }
      full_hashes_.insert(full_hashes_.end(), hashes.begin(), hashes.end());
      if (full_hashes_.size() < total) {
        std::string m = NewMessage(kFull, session_, ++seq_, remote_snapshot_);
        PutVarint64(&m, full_hashes_.size());
        return Step{Step::kSend, Send(std::move(m))};
      }
      std::unordered_set<uint64_t> remote(full_hashes_.begin(), full_hashes_.end());
      std::unordered_set<uint64_t> local;
      snapshot_->ForEach(
          [&](std::string_view key, uint64_t version) { local.insert(EntryHash(key, version)); });
      remote_only_.clear();
      local_only_.clear();
      for (uint64_t x : remote) {
        if (!local.count(x)) remote_only_.push_back(x);
      }
      for (uint64_t x : local) {
        if (!remote.count(x)) local_only_.push_back(x);
      }
      full_hashes_.clear();
      return NextFetch();
    }
    case Phase::kFetch: {
      uint64_t n = 0;
      if (h.type != kEntries || !GetVarint64(&in, &n) || n > in.size()) {
        return Malformed("ENTRIES");
      }
      for (uint64_t i = 0; i < n; ++i) {
        std::string_view key;
        uint64_t version = 0;
        if (!GetLengthPrefixed(&in, &key) || !GetVarint64(&in, &version)) {
          return Malformed("ENTRIES");
        }
        remote_entries_.push_back(Entry{std::string(key), version});
      }
      std::vector<uint64_t> touched;
      if (!GetHashes(&in, &touched) || !in.empty()) return Malformed("ENTRIES");
      remote_touched_.insert(touched.begin(), touched.end());
      if (fetched_ < remote_only_.size()) return NextFetch();
      // Every entry asked for must have come back, each once: the responder answers from the
      // same snapshot the symbols came from.
      std::unordered_set<uint64_t> wanted(remote_only_.begin(), remote_only_.end());
      size_t matched = 0;
      for (const Entry& e : remote_entries_) matched += wanted.erase(EntryHash(e.key, e.version));
      if (matched != remote_only_.size() || remote_entries_.size() != remote_only_.size()) {
        return InternalError("reconcile: the responder's entries do not match its sketch");
      }
      CONVERGE_RETURN_IF_ERROR(Finalize());
      return Step{Step::kDone, {}};
    }
    case Phase::kDone:
      break;
  }
  return Step{};
}

// ---------------------------------------------------------------------------------------
// Responder

Responder::Responder(ReconcileSet& set, Env& env, ResponderOptions options)
    : set_(set), env_(env), options_(std::move(options)) {}

Responder::~Responder() = default;

void Responder::Expire(int64_t now) {
  for (auto it = sessions_.begin(); it != sessions_.end();) {
    if (now - it->second.last_used > options_.session_timeout_ns) {
      it = sessions_.erase(it);
    } else {
      ++it;
    }
  }
}

Result<std::optional<std::string>> Responder::Handle(std::string_view request) {
  std::string_view in = request;
  Header h;
  if (!GetHeader(&in, &h)) return Malformed("request header");
  const int64_t now = env_.clock().NowMonotonicNanos();
  Expire(now);
  auto it = sessions_.find(h.session);
  if (h.type == kHello) {
    SetDigest theirs;
    uint64_t first = 0, probes = 0, last = 0;
    if (!GetDigest(&in, &theirs) || !GetVarint64(&in, &first) || !GetVarint64(&in, &probes) ||
        !GetVarint64(&in, &last) || !in.empty() || first > options_.max_symbols_per_reply ||
        probes > kMaxProbes || last > kMaxSymbolIndex) {
      return Malformed("HELLO");
    }
    if (it == sessions_.end()) {
      if (theirs == set_.digest()) return NewMessage(kInSync, h.session, h.seq, 0);
      if (sessions_.size() >= options_.max_sessions) {
        auto oldest = sessions_.begin();
        for (auto s = sessions_.begin(); s != sessions_.end(); ++s) {
          if (s->second.last_used < oldest->second.last_used) oldest = s;
        }
        sessions_.erase(oldest);
      }
      // A snapshot id no other open (of this or a restarted responder) shares: a request of
      // an earlier life of the session cannot be answered from this snapshot.
      uint64_t id = 0;
      while (id == 0) id = env_.random().Next64();
      it = sessions_.emplace(h.session, Session{set_.OpenSnapshot(), id, now, {}}).first;
      if (options_.on_open) options_.on_open(h.session, id);
    }
    // A repeated HELLO (retransmission, duplicate) is answered from the same snapshot.
    Session& s = it->second;
    s.last_used = now;
    if (theirs == s.snapshot->digest()) return NewMessage(kInSync, h.session, h.seq, 0);
    std::string m = NewMessage(kSketch, h.session, h.seq, s.id);
    PutDigest(&m, s.snapshot->digest());
    std::vector<Symbol> symbols;
    s.snapshot->Symbols(0, first, &symbols);
    PutSymbols(&m, symbols);
    const std::vector<uint64_t> index = ProbeIndices(first, probes, last);
    std::vector<Symbol> probe_symbols;
    s.snapshot->SymbolsAt(index, &probe_symbols);
    PutFingerprints(&m, probe_symbols);
    return m;
  }
  if (h.type == kDone) {
    if (it != sessions_.end()) sessions_.erase(it);
    return std::optional<std::string>();
  }
  if (h.type != kMore && h.type != kFetch && h.type != kFull) return Malformed("request type");
  if (it == sessions_.end() || it->second.id != h.snapshot) {
    return NewMessage(kUnknown, h.session, h.seq, 0);
  }
  Session& s = it->second;
  s.last_used = now;
  switch (h.type) {
    case kMore: {
      uint64_t begin = 0, end = 0;
      if (!GetVarint64(&in, &begin) || !GetVarint64(&in, &end) || !in.empty() || end <= begin ||
          end > kMaxSymbolIndex) {
        return Malformed("MORE");
      }
      end = std::min(end, begin + options_.max_symbols_per_reply);
      std::string m = NewMessage(kSymbols, h.session, h.seq, s.id);
      PutVarint64(&m, begin);
      std::vector<Symbol> symbols;
      s.snapshot->Symbols(begin, end, &symbols);
      PutSymbols(&m, symbols);
      return m;
    }
    case kFetch: {
      std::vector<uint64_t> hashes;
      if (!GetHashes(&in, &hashes) || !in.empty()) return Malformed("FETCH");
      std::vector<Entry> entries;
      s.snapshot->Lookup(std::unordered_set<uint64_t>(hashes.begin(), hashes.end()), &entries);
      std::string m = NewMessage(kEntries, h.session, h.seq, s.id);
      PutVarint64(&m, entries.size());
      for (const Entry& e : entries) {
        PutLengthPrefixed(&m, e.key);
        PutVarint64(&m, e.version);
      }
      std::vector<uint64_t> touched;
      for (const auto& [key, before] : s.snapshot->touched()) touched.push_back(KeyHash(key));
      PutHashes(&m, touched.data(), touched.size());
      return m;
    }
    case kFull: {
      uint64_t offset = 0;
      if (!GetVarint64(&in, &offset) || !in.empty()) return Malformed("FULL");
      if (s.sorted_hashes.empty()) {
        s.snapshot->ForEach([&](std::string_view key, uint64_t version) {
          s.sorted_hashes.push_back(EntryHash(key, version));
        });
        std::sort(s.sorted_hashes.begin(), s.sorted_hashes.end());
      }
      if (offset > s.sorted_hashes.size()) return Malformed("FULL");
      const size_t n =
          std::min<size_t>(s.sorted_hashes.size() - offset, options_.max_hashes_per_reply);
      std::string m = NewMessage(kHashes, h.session, h.seq, s.id);
      PutVarint64(&m, s.sorted_hashes.size());
      PutVarint64(&m, offset);
      PutHashes(&m, s.sorted_hashes.data() + offset, n);
      return m;
    }
    default:
      break;
  }
  return Malformed("request type");
}

}  // namespace converge::reconcile
