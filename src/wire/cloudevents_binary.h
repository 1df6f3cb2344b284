// The CloudEvents HTTP binding's binary content mode, writing side: an event's attributes as
// ce-* headers and its data as the body. One rendering for every sender: the C++ client's
// binary-mode publish and the server's push delivery. (The server's reading side is
// server/cloudevents_http.h.)
// Thread-safety: stateless functions.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "converge/event.h"

namespace converge::internal::wire {

// Percent-encodes what the binding requires in a header value: space, '"', '%', and bytes
// outside printable ASCII.
std::string PercentEncodeHeaderValue(std::string_view s);

// Appends ce-specversion, ce-id, ce-source, ce-type and every optional attribute and
// extension present as ce-* headers (values percent-encoded), then Content-Type: the event's
// datacontenttype, application/json for JSON data without one, application/octet-stream for
// other data, none without data. The body is e.data().
void AppendBinaryModeHeaders(const Event& e,
                             std::vector<std::pair<std::string, std::string>>* headers);

}  // namespace converge::internal::wire
