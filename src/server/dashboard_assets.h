// The dashboard's static files (src/server/dashboard/), built into the server by a source
// CMake generates at configure time, served at GET /ui and GET /ui/{asset}. They hold no
// data: the page asks for a token and calls the documented API with it.
#pragma once

#include <string_view>

namespace converge::server {

struct DashboardAsset {
  std::string_view name;          // "index.html", "dashboard.js", ...
  std::string_view content_type;  // the Content-Type it is served with
  std::string_view content;
};

// The asset of that file name, or null.
const DashboardAsset* FindDashboardAsset(std::string_view name);

}  // namespace converge::server
