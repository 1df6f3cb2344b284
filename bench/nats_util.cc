#include "bench/nats_util.h"

namespace converge::bench {

Status NatsError(std::string_view system, const std::string& what, natsStatus s,
                 jsErrCode jerr) {
  std::string msg = std::string(system) + ": " + what + ": " + natsStatus_GetText(s);
  if (jerr != 0) msg += " (JetStream error " + std::to_string(static_cast<int>(jerr)) + ")";
  const char* last = nats_GetLastError(nullptr);
  if (last != nullptr && *last != '\0') msg += std::string(" [") + last + "]";
  return UnavailableError(msg);
}

Status NatsConnect(std::string_view system, const NatsConnectOptions& options,
                   natsConnection** nc) {
  natsOptions* opts = nullptr;
  natsStatus s = natsOptions_Create(&opts);
  if (s == NATS_OK) s = natsOptions_SetURL(opts, options.url.c_str());
  if (s == NATS_OK) s = natsOptions_SetTimeout(opts, options.timeout_ms);
  if (s == NATS_OK) s = natsOptions_SetSendAsap(opts, options.send_asap);
  if (s == NATS_OK) s = natsConnection_Connect(nc, opts);
  natsOptions_Destroy(opts);
  if (s != NATS_OK) return NatsError(system, "connect to " + options.url, s);
  return Status::Ok();
}

Status AddFileStream(std::string_view system, jsCtx* js, const char* stream, const char* subject,
                     int64_t replicas) {
  jsStreamConfig cfg;
  jsStreamConfig_Init(&cfg);
  cfg.Name = stream;
  const char* subjects[] = {subject};
  cfg.Subjects = subjects;
  cfg.SubjectsLen = 1;
  cfg.Storage = js_FileStorage;
  cfg.Replicas = replicas;
  jsStreamInfo* info = nullptr;
  jsErrCode jerr = static_cast<jsErrCode>(0);
  const natsStatus s = js_AddStream(&info, js, &cfg, nullptr, &jerr);
  if (info != nullptr) jsStreamInfo_Destroy(info);
  if (s != NATS_OK) return NatsError(system, std::string("js_AddStream ") + stream, s, jerr);
  return Status::Ok();
}

}  // namespace converge::bench
