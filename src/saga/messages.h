// Saga commands and replies as CloudEvents binary records (docs/formats/event-binary.md), written
// and read directly for speed; the records are exactly what EncodeBinary writes for the
// equivalent Event (saga_test checks it), so any CloudEvents consumer can read them.
//
// Command event: id "<saga>/<step>/<kind>/<attempt>", source = the orchestrator's source,
// type = the step's action or compensation type ("converge.saga.cancel" for a pivot fence),
// extensions sagaattempt (int), sagadef, sagaid, sagakind, sagareplyto, sagaretriable (bool),
// sagastep (int), sagastepname, sagatoken, sagaversion (int); data = the saga's input as JSON
// (none if empty).
// Reply event: id "<saga>/<step>/<kind>/<attempt>/reply", source "/converge/saga/participant",
// type "converge.saga.reply", extensions sagaapplied (bool), sagaattempt (int), sagacode (status
// code name), sagaid, sagakind, sagaoutcome ("ok" | "failed" | "retry"), sagastep (int),
// sagatoken (copied from the command); data = the handler's result (ok) or the error message
// (failed, retry) as raw bytes.
// Decoding also takes the CloudEvents binary-mode spelling of the Integer and Boolean
// attributes (strings: decimal digits; "true"/"false"), strictly.
//
// Thread-safety: pure functions.
#pragma once

#include <array>
#include <optional>
#include <string>
#include <string_view>

#include "converge/env.h"
#include "converge/event.h"
#include "converge/saga.h"
#include "saga/machine.h"

namespace converge::saga_internal {

inline constexpr std::string_view kCancelType = "converge.saga.cancel";
inline constexpr std::string_view kReplyType = "converge.saga.reply";

// A decoded command; views point into the record.
struct CommandView {
  SagaCommand command;
  std::string_view reply_to;
  std::string_view event_id;
};

// Appends the command event of `c` to *out.
void EncodeCommand(const OutCommand& c, std::string_view source, std::string_view reply_topic,
                   std::string* out);
// DataLoss/InvalidArgument for a record that is not a saga command.
Result<CommandView> DecodeCommand(std::string_view record);

// Appends the reply event to *out.
void EncodeReply(const SagaReply& reply, std::string* out);
// The reply in a record; DataLoss/InvalidArgument if it is not a saga reply. `traceparent` is
// read only `with_trace`.
Result<SagaReply> DecodeReply(std::string_view record, bool with_trace = false);

// The reply token of a command: HMAC-SHA256(key, command event id), 128 bits in hex. Only
// readers of the participant's topic see it; a reply must carry it back (docs/formats/saga.md).
std::string ReplyToken(std::string_view key, std::string_view command_id);
// Constant-time comparison of two tokens.
bool ReplyTokenMatches(std::string_view expected, std::string_view got);
// The sagaid of a record that is a saga reply by its type, even if its other attributes do not
// decode (to record the rejection in that saga's history); nullopt otherwise.
std::optional<std::string> ReplySagaId(std::string_view record);

// W3C Trace Context. The saga's traceparent from the start request's: the same trace id, parent
// id and flags in version 00 form; for an empty or malformed one (W3C: ignored, a new trace) a
// new trace id and parent id, flags 00: a hash of the saga id keyed by `key` (the reply-token
// key: unique per saga, not guessable, and no draw from `random`, so simulator seeds replay as
// before), or drawn from `random` without a key.
std::string StartTrace(std::string_view requested, std::string_view key, std::string_view saga_id,
                       Random& random);
// A child of `parent`: the same trace id and flags, version 00, a span id hashed from `id` (the
// command's event id, so a command sent again keeps its span id; "reply" for a reply) and the
// parent's trace and span ids. Empty
// if `parent` is not a valid traceparent. (Text to text, without TraceParent::Parse: it runs
// for every command and every reply.)
std::string ChildTraceparent(std::string_view parent, std::string_view id);
// The same into `child` (false, and `child` unchanged, if `parent` is not valid).
bool ChildTraceparentInto(std::string_view parent, std::string_view id,
                          std::array<char, 55>* child);
// Whether `text` is a valid traceparent: exactly what TraceParent::Parse accepts.
bool ValidTraceparent(std::string_view text);

// The command's event id, also the reply's id without "/reply".
std::string CommandEventId(std::string_view saga_id, uint32_t step, SagaCommandKind kind,
                           uint32_t attempt);

}  // namespace converge::saga_internal
