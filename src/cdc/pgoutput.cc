#include "cdc/pgoutput.h"

#include <cstdio>

namespace converge::cdc {
namespace {

// A bounds-checked big-endian reader (the replication protocol is in network byte order).
// Every Get* returns false, and leaves the reader failed, when the input is too short.
class Reader {
 public:
  explicit Reader(std::string_view in) : in_(in) {}

  bool GetU8(uint8_t* v) {
    if (in_.size() < 1) return false;
    *v = static_cast<uint8_t>(in_[0]);
    in_.remove_prefix(1);
    return true;
  }
  bool GetU16(uint16_t* v) {
    uint64_t x = 0;
    if (!GetBig(2, &x)) return false;
    *v = static_cast<uint16_t>(x);
    return true;
  }
  bool GetU32(uint32_t* v) {
    uint64_t x = 0;
    if (!GetBig(4, &x)) return false;
    *v = static_cast<uint32_t>(x);
    return true;
  }
  bool GetU64(uint64_t* v) { return GetBig(8, v); }
  bool GetI64(int64_t* v) {
    uint64_t x = 0;
    if (!GetBig(8, &x)) return false;
    *v = static_cast<int64_t>(x);
    return true;
  }
  // A NUL-terminated string.
  bool GetCString(std::string_view* v) {
    const size_t nul = in_.find('\0');
    if (nul == std::string_view::npos) return false;
    *v = in_.substr(0, nul);
    in_.remove_prefix(nul + 1);
    return true;
  }
  bool GetBytes(size_t n, std::string_view* v) {
    if (in_.size() < n) return false;
    *v = in_.substr(0, n);
    in_.remove_prefix(n);
    return true;
  }
  size_t remaining() const { return in_.size(); }
  std::string_view rest() const { return in_; }

 private:
  bool GetBig(size_t n, uint64_t* v) {
    if (in_.size() < n) return false;
    uint64_t x = 0;
    for (size_t i = 0; i < n; ++i) x = (x << 8) | static_cast<uint8_t>(in_[i]);
    in_.remove_prefix(n);
    *v = x;
    return true;
  }
  std::string_view in_;
};

Status Malformed(std::string_view what, std::string_view detail) {
  return DataLossError("pgoutput: malformed " + std::string(what) + ": " + std::string(detail));
}

Status Truncated(std::string_view what) { return Malformed(what, "truncated"); }

Status NoTrailing(const Reader& r, std::string_view what) {
  if (r.remaining() != 0) {
    return Malformed(what, std::to_string(r.remaining()) + " trailing byte(s)");
  }
  return Status::Ok();
}

void PutBig(std::string* out, uint64_t v, int bytes) {
  for (int i = bytes - 1; i >= 0; --i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

Status ReadTuple(Reader& r, std::string_view what, std::vector<TupleValue>* out) {
  uint16_t n = 0;
  if (!r.GetU16(&n)) return Truncated(what);
  out->clear();
  out->reserve(n);
  for (uint16_t i = 0; i < n; ++i) {
    uint8_t kind = 0;
    if (!r.GetU8(&kind)) return Truncated(what);
    TupleValue v;
    v.kind = static_cast<char>(kind);
    switch (v.kind) {
      case 'n':
      case 'u':
        break;
      case 't':
      case 'b': {
        uint32_t len = 0;
        if (!r.GetU32(&len)) return Truncated(what);
        if (!r.GetBytes(len, &v.data)) return Truncated(what);
        break;
      }
      default:
        return Malformed(what, "column " + std::to_string(i) + " has unknown kind " +
                                   std::to_string(static_cast<int>(kind)));
    }
    out->push_back(v);
  }
  return Status::Ok();
}

}  // namespace

std::string FormatLsn(Lsn lsn) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%X/%X", static_cast<unsigned>(lsn >> 32),
                static_cast<unsigned>(lsn & 0xffffffffu));
  return buf;
}

Result<Lsn> ParseLsn(std::string_view text) {
  const size_t slash = text.find('/');
  auto hex = [](std::string_view s, uint64_t* v) {
    if (s.empty() || s.size() > 8) return false;
    uint64_t x = 0;
    for (char c : s) {
      int d = -1;
      if (c >= '0' && c <= '9') d = c - '0';
      if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
      if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
      if (d < 0) return false;
      x = (x << 4) | static_cast<uint64_t>(d);
    }
    *v = x;
    return true;
  };
  uint64_t hi = 0, lo = 0;
  if (slash == std::string_view::npos || !hex(text.substr(0, slash), &hi) ||
      !hex(text.substr(slash + 1), &lo)) {
    return InvalidArgumentError("not a WAL position (X/Y in hex): '" + std::string(text) + "'");
  }
  return (hi << 32) | lo;
}

Result<StreamMessage> DecodeStreamMessage(std::string_view copy_data) {
  Reader r(copy_data);
  uint8_t tag = 0;
  if (!r.GetU8(&tag)) return Malformed("replication message", "empty");
  StreamMessage m;
  if (tag == 'w') {
    m.kind = StreamMessage::Kind::kXLogData;
    if (!r.GetU64(&m.start) || !r.GetU64(&m.wal_end) || !r.GetI64(&m.send_time_pg)) {
      return Truncated("XLogData header");
    }
    m.payload = r.rest();
    return m;
  }
  if (tag == 'k') {
    m.kind = StreamMessage::Kind::kKeepalive;
    uint8_t reply = 0;
    if (!r.GetU64(&m.wal_end) || !r.GetI64(&m.send_time_pg) || !r.GetU8(&reply)) {
      return Truncated("keepalive");
    }
    CONVERGE_RETURN_IF_ERROR(NoTrailing(r, "keepalive"));
    m.reply_requested = reply != 0;
    return m;
  }
  return Malformed("replication message", "unknown tag " + std::to_string(static_cast<int>(tag)));
}

std::string EncodeStandbyStatus(Lsn write, Lsn flush, Lsn apply, int64_t now_pg,
                                bool reply_requested) {
  std::string out;
  out.reserve(34);
  out.push_back('r');
  PutBig(&out, write, 8);
  PutBig(&out, flush, 8);
  PutBig(&out, apply, 8);
  PutBig(&out, static_cast<uint64_t>(now_pg), 8);
  out.push_back(reply_requested ? 1 : 0);
  return out;
}

Result<PgOutputMessage> DecodePgOutput(std::string_view payload) {
  Reader r(payload);
  PgOutputMessage m;
  uint8_t tag = 0;
  if (!r.GetU8(&tag)) return Malformed("pgoutput message", "empty");
  m.tag = static_cast<char>(tag);
  switch (m.tag) {
    case 'B': {
      if (!r.GetU64(&m.begin.final_lsn) || !r.GetI64(&m.begin.commit_time_pg) ||
          !r.GetU32(&m.begin.xid)) {
        return Truncated("Begin");
      }
      CONVERGE_RETURN_IF_ERROR(NoTrailing(r, "Begin"));
      return m;
    }
    case 'C': {
      if (!r.GetU8(&m.commit.flags) || !r.GetU64(&m.commit.commit_lsn) ||
          !r.GetU64(&m.commit.end_lsn) || !r.GetI64(&m.commit.commit_time_pg)) {
        return Truncated("Commit");
      }
      CONVERGE_RETURN_IF_ERROR(NoTrailing(r, "Commit"));
      if (m.commit.end_lsn < m.commit.commit_lsn) {
        return Malformed("Commit", "end LSN before commit LSN");
      }
      return m;
    }
    case 'M': {
      uint8_t flags = 0;
      uint32_t len = 0;
      if (!r.GetU8(&flags) || !r.GetU64(&m.message.lsn) || !r.GetCString(&m.message.prefix) ||
          !r.GetU32(&len) || !r.GetBytes(len, &m.message.content)) {
        return Truncated("Message");
      }
      CONVERGE_RETURN_IF_ERROR(NoTrailing(r, "Message"));
      m.message.transactional = (flags & 1) != 0;
      return m;
    }
    case 'R': {
      std::string_view schema, name;
      uint8_t identity = 0;
      uint16_t ncols = 0;
      if (!r.GetU32(&m.relation.id) || !r.GetCString(&schema) || !r.GetCString(&name) ||
          !r.GetU8(&identity) || !r.GetU16(&ncols)) {
        return Truncated("Relation");
      }
      m.relation.schema.assign(schema);
      m.relation.name.assign(name);
      m.relation.replica_identity = static_cast<char>(identity);
      m.relation.columns.reserve(ncols);
      for (uint16_t i = 0; i < ncols; ++i) {
        uint8_t flags = 0;
        std::string_view col;
        uint32_t modifier = 0;
        RelationColumn c;
        if (!r.GetU8(&flags) || !r.GetCString(&col) || !r.GetU32(&c.type_oid) ||
            !r.GetU32(&modifier)) {
          return Truncated("Relation");
        }
        c.key = (flags & 1) != 0;
        c.name.assign(col);
        c.type_modifier = static_cast<int32_t>(modifier);
        m.relation.columns.push_back(std::move(c));
      }
      CONVERGE_RETURN_IF_ERROR(NoTrailing(r, "Relation"));
      return m;
    }
    case 'I':
    case 'U':
    case 'D': {
      const std::string_view what = m.tag == 'I' ? "Insert" : (m.tag == 'U' ? "Update" : "Delete");
      m.change.op = m.tag;
      uint8_t sub = 0;
      if (!r.GetU32(&m.change.relation_id) || !r.GetU8(&sub)) return Truncated(what);
      if (sub == 'K' || sub == 'O') {
        if (m.tag == 'I') return Malformed(what, "old tuple in an insert");
        m.change.old_kind = static_cast<char>(sub);
        CONVERGE_RETURN_IF_ERROR(ReadTuple(r, what, &m.change.old_tuple));
        if (m.tag == 'U' && !r.GetU8(&sub)) return Truncated(what);
      }
      if (m.tag == 'D') {
        if (m.change.old_kind == 0) return Malformed(what, "no old key or row");
      } else {
        if (sub != 'N') return Malformed(what, "no new tuple");
        CONVERGE_RETURN_IF_ERROR(ReadTuple(r, what, &m.change.new_tuple));
      }
      CONVERGE_RETURN_IF_ERROR(NoTrailing(r, what));
      return m;
    }
    case 'O': {
      uint64_t lsn = 0;
      std::string_view name;
      if (!r.GetU64(&lsn) || !r.GetCString(&name)) return Truncated("Origin");
      CONVERGE_RETURN_IF_ERROR(NoTrailing(r, "Origin"));
      return m;
    }
    case 'Y': {
      uint32_t oid = 0;
      std::string_view schema, name;
      if (!r.GetU32(&oid) || !r.GetCString(&schema) || !r.GetCString(&name)) {
        return Truncated("Type");
      }
      CONVERGE_RETURN_IF_ERROR(NoTrailing(r, "Type"));
      return m;
    }
    case 'T': {
      uint32_t n = 0;
      uint8_t options = 0;
      if (!r.GetU32(&n) || !r.GetU8(&options)) return Truncated("Truncate");
      if (r.remaining() != static_cast<size_t>(n) * 4) {
        return Malformed("Truncate", "relation count does not match the length");
      }
      m.truncate.cascade = (options & 1) != 0;
      m.truncate.restart_identity = (options & 2) != 0;
      m.truncate.relation_ids.resize(n);
      for (uint32_t i = 0; i < n; ++i) {
        if (!r.GetU32(&m.truncate.relation_ids[i])) return Truncated("Truncate");
      }
      return m;
    }
    default:
      return Malformed("pgoutput message",
                       "unknown tag " + std::to_string(static_cast<int>(tag)) +
                           " (streaming of in-progress transactions is not requested)");
  }
}

}  // namespace converge::cdc
