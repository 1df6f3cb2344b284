// The in-process wake-up registry.
#include "outbox/wakeup.h"

namespace converge::outbox_internal {

WakeupRegistry& WakeupRegistry::Global() {
  static WakeupRegistry* registry = new WakeupRegistry();
  return *registry;
}

std::unique_ptr<WakeupRegistry::Subscription> WakeupRegistry::Subscribe(
    const std::string& key, std::shared_ptr<Waker> waker) {
  std::lock_guard<std::mutex> lock(mu_);
  uint64_t id = next_id_++;
  map_[key].emplace_back(id, waker);
  return std::make_unique<Subscription>(this, key, id);
}

void WakeupRegistry::Notify(const std::string& key) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = map_.find(key);
  if (it == map_.end()) return;
  for (auto& [id, weak] : it->second) {
    if (auto w = weak.lock()) w->Signal();
  }
}

void WakeupRegistry::Unsubscribe(const std::string& key, uint64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = map_.find(key);
  if (it == map_.end()) return;
  auto& subs = it->second;
  for (size_t i = 0; i < subs.size(); ++i) {
    if (subs[i].first == id) {
      subs.erase(subs.begin() + static_cast<std::ptrdiff_t>(i));
      break;
    }
  }
  if (subs.empty()) map_.erase(it);
}

WakeupRegistry::Subscription::~Subscription() { registry_->Unsubscribe(key_, id_); }

}  // namespace converge::outbox_internal
