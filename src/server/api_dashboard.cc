// GET /ui and GET /ui/{asset}: the dashboard's static files (src/server/dashboard/), built into
// the binary. They hold no data, so they need no token; the page asks for one and sends it as
// `Authorization: Bearer` on every API call it makes (docs/server.md, "Dashboard").
#include "server/api.h"
#include "server/api_internal.h"
#include "server/dashboard_assets.h"

namespace converge::server {

asio::awaitable<HttpReply> Api::Dashboard(Call& call) {
  if (Status s = CheckQuery(call.query, {}); !s.ok()) co_return Error(s);
  const std::string name =
      call.route.id == RouteId::kDashboard ? std::string("index.html") : call.Param("asset");
  const DashboardAsset* asset = FindDashboardAsset(name);
  if (asset == nullptr) {
    co_return Error(http::status::not_found, "NOT_FOUND",
                    "no such dashboard file: " + name.substr(0, 200));
  }
  HttpResponse res{http::status::ok, 11};
  res.set(http::field::content_type, asset->content_type);
  // The files change only with the binary; a browser revalidates on every load.
  res.set(http::field::cache_control, "no-cache");
  // Only this origin's scripts, styles and API; nothing inline and nothing elsewhere.
  res.set("Content-Security-Policy",
          "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'");
  res.set("X-Content-Type-Options", "nosniff");
  res.body() = std::string(asset->content);
  res.prepare_payload();
  co_return Reply(std::move(res));
}

}  // namespace converge::server
