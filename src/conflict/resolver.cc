#include "converge/conflict/resolver.h"

#include <type_traits>

#include "converge/conflict/counters.h"
#include "converge/conflict/lww_map.h"
#include "converge/conflict/or_map.h"
#include "converge/conflict/sets.h"

namespace converge::conflict {

std::string_view StrategyName(Strategy strategy) {
  switch (strategy) {
    case Strategy::kRejectOnConflict:
      return "reject-on-conflict";
    case Strategy::kLastWriterWins:
      return "last-writer-wins";
    case Strategy::kMultiValue:
      return "multi-value";
    case Strategy::kCrdtMerge:
      return "crdt-merge";
    case Strategy::kCustomMerge:
      return "custom-merge";
  }
  return "unknown";
}

ResolverSpec ResolverSpec::RejectOnConflict(bool require_if_match) {
  ResolverSpec spec;
  spec.strategy = Strategy::kRejectOnConflict;
  spec.require_if_match = require_if_match;
  return spec;
}

ResolverSpec ResolverSpec::LastWriterWins() {
  ResolverSpec spec;
  spec.strategy = Strategy::kLastWriterWins;
  return spec;
}

ResolverSpec ResolverSpec::MultiValue(size_t max_siblings) {
  ResolverSpec spec;
  spec.strategy = Strategy::kMultiValue;
  spec.max_siblings = max_siblings;
  return spec;
}

ResolverSpec ResolverSpec::CrdtMerge(CrdtKind kind) {
  ResolverSpec spec;
  spec.strategy = Strategy::kCrdtMerge;
  spec.crdt_kind = kind;
  return spec;
}

ResolverSpec ResolverSpec::CustomMerge(std::string name, MergeFunction merge, size_t max_siblings) {
  ResolverSpec spec;
  spec.strategy = Strategy::kCustomMerge;
  spec.merge_name = std::move(name);
  spec.merge = std::move(merge);
  spec.max_siblings = max_siblings;
  return spec;
}

namespace {

constexpr char kSeparator = '\0';

bool IsMergeableCrdt(CrdtKind kind) {
  switch (kind) {
    case CrdtKind::kGCounter:
    case CrdtKind::kPnCounter:
    case CrdtKind::kBoundedCounter:
    case CrdtKind::kGSet:
    case CrdtKind::kOrSet:
    case CrdtKind::kFlag:
    case CrdtKind::kLwwMap:
    case CrdtKind::kOrMap:
      return true;
    case CrdtKind::kLwwRegister:
    case CrdtKind::kMvRegister:
    case CrdtKind::kVersionedValue:
      return false;
  }
  return false;
}

Status ValidateSpec(const ResolverSpec& spec) {
  switch (spec.strategy) {
    case Strategy::kRejectOnConflict:
    case Strategy::kLastWriterWins:
      return Status::Ok();
    case Strategy::kMultiValue:
      if (spec.max_siblings == 0) return InvalidArgumentError("max_siblings must be >= 1");
      return Status::Ok();
    case Strategy::kCrdtMerge:
      if (!IsMergeableCrdt(spec.crdt_kind)) {
        return InvalidArgumentError(
            "crdt-merge needs a CRDT kind; use the dedicated strategy for " +
            std::string(CrdtKindName(spec.crdt_kind)));
      }
      return Status::Ok();
    case Strategy::kCustomMerge:
      if (!spec.merge) return InvalidArgumentError("custom-merge needs a merge function");
      if (spec.max_siblings == 0) return InvalidArgumentError("max_siblings must be >= 1");
      return Status::Ok();
  }
  return InvalidArgumentError("unknown strategy");
}

// A stored state that does not decode is corrupt data, not a bad request.
template <typename T>
Result<T> DecodeLocal(std::string_view state) {
  if (state.empty()) return T();
  Result<T> r = T::FromBinary(state);
  if (!r.ok()) return DataLossError("stored state: " + std::string(r.status().message()));
  return r;
}

template <typename T>
Result<T> DecodeRemote(std::string_view bytes, std::string_view what) {
  if (bytes.empty()) return T();
  Result<T> r = T::FromBinary(bytes);
  if (!r.ok()) return r.status().WithContext(what);
  return r;
}

template <typename T>
Status Join(T& a, const T& b) {
  if constexpr (std::is_same_v<decltype(a.Merge(b)), Status>) {
    return a.Merge(b);
  } else {
    a.Merge(b);
    return Status::Ok();
  }
}

template <typename T>
Result<std::string> MergeTyped(std::string_view local, std::string_view remote,
                               std::string_view what) {
  CONVERGE_ASSIGN_OR_RETURN(T theirs, DecodeRemote<T>(remote, what));
  if (local.empty()) return theirs.ToBinary();
  CONVERGE_ASSIGN_OR_RETURN(T mine, DecodeLocal<T>(local));
  CONVERGE_RETURN_IF_ERROR(Join(mine, theirs));
  return mine.ToBinary();
}

Result<std::string> MergeCrdt(CrdtKind kind, std::string_view local, std::string_view remote,
                              std::string_view what) {
  switch (kind) {
    case CrdtKind::kGCounter:
      return MergeTyped<GCounter>(local, remote, what);
    case CrdtKind::kPnCounter:
      return MergeTyped<PnCounter>(local, remote, what);
    case CrdtKind::kBoundedCounter:
      return MergeTyped<BoundedCounter>(local, remote, what);
    case CrdtKind::kGSet:
      return MergeTyped<GSet>(local, remote, what);
    case CrdtKind::kOrSet:
      return MergeTyped<OrSet>(local, remote, what);
    case CrdtKind::kFlag:
      return MergeTyped<EwFlag>(local, remote, what);
    case CrdtKind::kLwwMap:
      return MergeTyped<LwwMap>(local, remote, what);
    case CrdtKind::kOrMap:
      return MergeTyped<OrMap>(local, remote, what);
    case CrdtKind::kLwwRegister:
      return MergeTyped<LwwRegister>(local, remote, what);
    case CrdtKind::kMvRegister:
      return MergeTyped<MvRegister>(local, remote, what);
    case CrdtKind::kVersionedValue:
      return MergeTyped<VersionedValue>(local, remote, what);
  }
  return InternalError("unknown crdt kind");
}

template <typename T>
Result<std::string> JsonTyped(std::string_view state) {
  CONVERGE_ASSIGN_OR_RETURN(T v, DecodeLocal<T>(state));
  return v.ToJson();
}

Result<std::string> CrdtJson(CrdtKind kind, std::string_view state) {
  switch (kind) {
    case CrdtKind::kGCounter:
      return JsonTyped<GCounter>(state);
    case CrdtKind::kPnCounter:
      return JsonTyped<PnCounter>(state);
    case CrdtKind::kBoundedCounter:
      return JsonTyped<BoundedCounter>(state);
    case CrdtKind::kGSet:
      return JsonTyped<GSet>(state);
    case CrdtKind::kOrSet:
      return JsonTyped<OrSet>(state);
    case CrdtKind::kFlag:
      return JsonTyped<EwFlag>(state);
    case CrdtKind::kLwwMap:
      return JsonTyped<LwwMap>(state);
    case CrdtKind::kOrMap:
      return JsonTyped<OrMap>(state);
    case CrdtKind::kLwwRegister:
      return JsonTyped<LwwRegister>(state);
    case CrdtKind::kMvRegister:
      return JsonTyped<MvRegister>(state);
    case CrdtKind::kVersionedValue:
      return JsonTyped<VersionedValue>(state);
  }
  return InternalError("unknown crdt kind");
}

Status CheckReplica(const WriteRequest& request) {
  if (!request.replica.valid()) return InvalidArgumentError("write: replica id 0 is reserved");
  return Status::Ok();
}

std::string Describe(std::string_view entity_type, std::string_view field) {
  std::string out(entity_type);
  if (!field.empty()) {
    out += ".";
    out += field;
  }
  return out;
}

}  // namespace

Status ResolverRegistry::Add(std::string key, ResolverSpec spec) {
  CONVERGE_RETURN_IF_ERROR(ValidateSpec(spec));
  if (specs_.size() >= kMaxRegistrations) {
    return ResourceExhaustedError("resolver registry holds " + std::to_string(kMaxRegistrations) +
                                  " registrations already");
  }
  const auto [it, inserted] = specs_.emplace(std::move(key), std::move(spec));
  if (!inserted) {
    const size_t sep = it->first.find(kSeparator);
    return AlreadyExistsError("a strategy is already registered for " +
                              Describe(std::string_view(it->first).substr(0, sep),
                                       std::string_view(it->first).substr(sep + 1)));
  }
  return Status::Ok();
}

Status ResolverRegistry::Register(std::string_view entity_type, ResolverSpec spec) {
  if (entity_type.empty() || entity_type.find(kSeparator) != std::string_view::npos) {
    return InvalidArgumentError("entity type must be non-empty and free of NUL bytes");
  }
  return Add(std::string(entity_type) + kSeparator, std::move(spec));
}

Status ResolverRegistry::RegisterField(std::string_view entity_type, std::string_view field,
                                       ResolverSpec spec) {
  if (entity_type.empty() || entity_type.find(kSeparator) != std::string_view::npos ||
      field.empty() || field.find(kSeparator) != std::string_view::npos) {
    return InvalidArgumentError("entity type and field must be non-empty and free of NUL bytes");
  }
  return Add(std::string(entity_type) + kSeparator + std::string(field), std::move(spec));
}

Result<const ResolverSpec*> ResolverRegistry::Lookup(std::string_view entity_type,
                                                     std::string_view field) const {
  std::string key(entity_type);
  key += kSeparator;
  if (!field.empty()) {
    auto it = specs_.find(key + std::string(field));
    if (it != specs_.end()) return &it->second;
  }
  auto it = specs_.find(key);
  if (it != specs_.end()) return &it->second;
  return NotFoundError("no conflict strategy registered for " + Describe(entity_type, field) +
                       " (there is no default; register one explicitly)");
}

Result<std::string> ResolverRegistry::ApplyWrite(std::string_view entity_type,
                                                 std::string_view field, std::string_view state,
                                                 const WriteRequest& request) const {
  CONVERGE_ASSIGN_OR_RETURN(const ResolverSpec* spec, Lookup(entity_type, field));
  CONVERGE_RETURN_IF_ERROR(CheckReplica(request));
  const WritePrecondition& pre = request.precondition;
  switch (spec->strategy) {
    case Strategy::kRejectOnConflict: {
      CONVERGE_ASSIGN_OR_RETURN(VersionedValue v, DecodeLocal<VersionedValue>(state));
      if (spec->require_if_match && v.exists() && !pre.if_match.has_value()) {
        return FailedPreconditionError(Describe(entity_type, field) +
                                       " is reject-on-conflict: a write to an existing value "
                                       "must carry If-Match");
      }
      CONVERGE_RETURN_IF_ERROR(v.Write(request.replica, request.value, pre).status());
      return v.ToBinary();
    }
    case Strategy::kLastWriterWins: {
      CONVERGE_ASSIGN_OR_RETURN(LwwRegister reg, DecodeLocal<LwwRegister>(state));
      CONVERGE_RETURN_IF_ERROR(CheckPrecondition(pre, ETag::ForContent(state), reg.has_value()));
      if (request.timestamp == HlcTimestamp{}) {
        return InvalidArgumentError("last-writer-wins write needs an HLC timestamp");
      }
      CONVERGE_RETURN_IF_ERROR(reg.Set(request.replica, request.timestamp, request.value).status());
      return reg.ToBinary();
    }
    case Strategy::kMultiValue:
    case Strategy::kCustomMerge: {
      CONVERGE_ASSIGN_OR_RETURN(MvRegister reg, DecodeLocal<MvRegister>(state));
      CONVERGE_RETURN_IF_ERROR(CheckPrecondition(pre, ETag::ForContent(state), !reg.empty()));
      const CausalContext observed = request.context.value_or(CausalContext());
      MvRegister next = reg;
      CONVERGE_RETURN_IF_ERROR(next.Write(request.replica, request.value, observed).status());
      if (next.siblings().size() > spec->max_siblings) {
        return ResourceExhaustedError(
            Describe(entity_type, field) + " would hold " + std::to_string(next.siblings().size()) +
            " siblings (limit " + std::to_string(spec->max_siblings) +
            "); read it and write with the returned context to resolve them");
      }
      return next.ToBinary();
    }
    case Strategy::kCrdtMerge: {
      CONVERGE_RETURN_IF_ERROR(CheckPrecondition(pre, ETag::ForContent(state), !state.empty()));
      return MergeCrdt(spec->crdt_kind, state, request.value, "write delta");
    }
  }
  return InternalError("unknown strategy");
}

Result<std::string> ResolverRegistry::Merge(std::string_view entity_type, std::string_view field,
                                            std::string_view local, std::string_view remote) const {
  CONVERGE_ASSIGN_OR_RETURN(const ResolverSpec* spec, Lookup(entity_type, field));
  switch (spec->strategy) {
    case Strategy::kRejectOnConflict:
      return MergeCrdt(CrdtKind::kVersionedValue, local, remote, "remote state");
    case Strategy::kLastWriterWins:
      return MergeCrdt(CrdtKind::kLwwRegister, local, remote, "remote state");
    case Strategy::kMultiValue:
    case Strategy::kCustomMerge:
      return MergeCrdt(CrdtKind::kMvRegister, local, remote, "remote state");
    case Strategy::kCrdtMerge:
      return MergeCrdt(spec->crdt_kind, local, remote, "remote state");
  }
  return InternalError("unknown strategy");
}

Result<ReadResult> ResolverRegistry::Read(std::string_view entity_type, std::string_view field,
                                          std::string_view state) const {
  CONVERGE_ASSIGN_OR_RETURN(const ResolverSpec* spec, Lookup(entity_type, field));
  ReadResult out;
  out.etag = ETag::ForContent(state);
  switch (spec->strategy) {
    case Strategy::kRejectOnConflict: {
      CONVERGE_ASSIGN_OR_RETURN(VersionedValue v, DecodeLocal<VersionedValue>(state));
      out.exists = v.exists();
      out.value = v.value();
      return out;
    }
    case Strategy::kLastWriterWins: {
      CONVERGE_ASSIGN_OR_RETURN(LwwRegister reg, DecodeLocal<LwwRegister>(state));
      out.exists = reg.has_value();
      out.value = reg.value();
      return out;
    }
    case Strategy::kMultiValue:
    case Strategy::kCustomMerge: {
      CONVERGE_ASSIGN_OR_RETURN(MvRegister reg, DecodeLocal<MvRegister>(state));
      out.exists = !reg.empty();
      out.context = reg.context();
      for (const auto& s : reg.siblings()) out.siblings.push_back(s.value);
      if (spec->strategy == Strategy::kMultiValue) {
        out.conflict = out.siblings.size() > 1;
        if (out.siblings.size() == 1) out.value = out.siblings[0];
      } else if (!out.siblings.empty()) {
        std::string acc = out.siblings[0];
        for (size_t i = 1; i < out.siblings.size(); ++i) {
          Result<std::string> merged = spec->merge(acc, out.siblings[i]);
          if (!merged.ok()) {
            return merged.status().WithContext("merge function '" + spec->merge_name + "'");
          }
          acc = std::move(merged).value();
        }
        out.value = std::move(acc);
      }
      return out;
    }
    case Strategy::kCrdtMerge: {
      out.exists = !state.empty();
      CONVERGE_ASSIGN_OR_RETURN(out.value, CrdtJson(spec->crdt_kind, state));
      return out;
    }
  }
  return InternalError("unknown strategy");
}

Result<ResolverRegistry::EntityState> ResolverRegistry::MergeEntity(
    std::string_view entity_type, const EntityState& local, const EntityState& remote) const {
  EntityState merged = local;
  for (const auto& [field, remote_state] : remote) {
    auto it = merged.find(field);
    std::string_view local_state = it == merged.end() ? std::string_view() : it->second;
    Result<std::string> m = Merge(entity_type, field, local_state, remote_state);
    if (!m.ok()) return m.status().WithContext("field '" + field + "'");
    merged[field] = std::move(m).value();
  }
  return merged;
}

}  // namespace converge::conflict
