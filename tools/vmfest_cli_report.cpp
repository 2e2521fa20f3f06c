// `vmfest report DIR [-o FILE]`: the page of where a test run's time went, from the records the
// GoogleTest plugin wrote (tools/report/).
#include <iostream>
#include <memory>
#include <string>

#include <fmt/format.h>

#include "report/html_report.h"
#include "report/run_records.h"
#include "vmfest/internal/base.h"
#include "vmfest_cli.h"

namespace vmfest::cli {

void add_report_command(CLI::App& app, Command& command) {
  struct Args {
    std::string folder;
    std::string output = "vmfest-report.html";
  };
  auto args = std::make_shared<Args>();
  CLI::App* sub = app.add_subcommand(
      "report",
      "Write one HTML page of where a test run's time went: a timeline bar per instance, coloured "
      "by phase (VM slot wait, boot or resume, test, destroy), and each phase's share");
  sub->add_option("dir", args->folder,
                  "the run's records: $VMFEST_ARTIFACTS/records (<build>/vmfest-artifacts/records "
                  "under ctest), searched recursively for *.jsonl")
      ->required();
  sub->add_option("-o,--output", args->output, "the page to write")->capture_default_str();
  sub->callback([&command, args] {
    command.run = [args] {
      const report::RunRecords records = report::read_run_records(args->folder);
      for (const std::string& warning : records.warnings) {
        std::cerr << "vmfest: warning: " << warning << "\n";
      }
      detail::write_text_atomically(args->output, report::html_report(records, args->folder));
      std::cout << fmt::format("vmfest: wrote the report of {} instance(s) to {}\n",
                               records.instances.size(), args->output);
      return 0;
    };
  });
}

}  // namespace vmfest::cli
