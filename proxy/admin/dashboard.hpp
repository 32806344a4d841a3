// The dashboard page served at /dashboard: static HTML and script, no build step; it reads
// /api/status every 2 s.
#pragma once

namespace pgshard::admin {
extern const char* const kDashboardHtml;
}
