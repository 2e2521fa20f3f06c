// `vmfest report`'s page: one self-contained HTML file (inline SVG and CSS, nothing fetched) with
// a timeline bar per instance, coloured by phase, and each phase's share of the run's time.
#pragma once

#include <string>

#include "run_records.h"

namespace vmfest::report {

// The page for `records` (at least one instance); `title` heads it (e.g. the records' folder).
std::string html_report(const RunRecords& records, const std::string& title);

}  // namespace vmfest::report
