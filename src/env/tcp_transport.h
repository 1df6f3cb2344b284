// The production Transport: length-prefixed frames over TCP, on the executor's io_context.
// (Stage 1 placeholder: Listen fails until the TCP implementation lands.)
#pragma once

#include "converge/env.h"
#include "env/asio_executor.h"

namespace converge::internal {

class TcpTransport : public Transport {
 public:
  explicit TcpTransport(AsioExecutor& executor) : executor_(executor) {}
  Result<std::unique_ptr<Endpoint>> Listen(const std::string& address, Handler handler) override {
    (void)executor_;
    return FailedPreconditionError("TCP transport not implemented yet (listen '" + address + "')");
  }

 private:
  AsioExecutor& executor_;
};

}  // namespace converge::internal
