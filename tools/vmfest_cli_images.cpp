// `vmfest images`, `vmfest prune`: the warm images and provisioned layers instances resume.
#include <chrono>
#include <memory>
#include <string>

#include <fmt/chrono.h>
#include <fmt/format.h>

#include "vmfest/error.h"
#include "vmfest/images.h"
#include "vmfest_cli.h"
#include "vmfest_cli_table.h"

namespace vmfest::cli {
namespace {

std::string size_text(std::uintmax_t bytes) {
  return fmt::format("{:.1f} MiB", static_cast<double>(bytes) / (1024.0 * 1024.0));
}

std::string age_text(std::chrono::system_clock::time_point when) {
  const auto seconds =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now() - when)
          .count();
  if (seconds < 120) return fmt::format("{} s ago", seconds);
  if (seconds < 7200) return fmt::format("{} min ago", seconds / 60);
  if (seconds < 172800) return fmt::format("{} h ago", seconds / 3600);
  return fmt::format("{} days ago", seconds / 86400);
}

// "90s", "30m", "12h", "7d" (a bare number is seconds).
std::chrono::seconds parse_age(const std::string& text) {
  std::size_t used = 0;
  long long value = -1;
  try {
    value = std::stoll(text, &used);
  } catch (const std::exception&) {
  }
  const std::string unit = text.substr(used);
  const long long scale = unit.empty() || unit == "s" ? 1
                          : unit == "m"               ? 60
                          : unit == "h"               ? 3600
                          : unit == "d"               ? 86400
                                                      : 0;
  if (value < 0 || scale == 0) {
    throw InvalidArgument(
        fmt::format("--older-than {}: give a whole number with s, m, h or d (e.g. 7d, 12h)", text));
  }
  return std::chrono::seconds(value * scale);
}

void add_images_command(CLI::App& app, Command& command) {
  CLI::App* sub = app.add_subcommand(
      "images", "List the warm images and provisioned layers, with their size and last use");
  sub->callback([&command] {
    command.run = [] {
      Table table({"MODEL", "IMAGE", "ON", "STATUS", "SIZE", "LAST USED", "INSTANCES", "STEPS"});
      for (const WarmImageInfo& image : list_warm_images()) {
        std::string steps;
        for (const std::string& step : image.steps) steps += (steps.empty() ? "" : "; ") + step;
        table.add({image.model, image.name, image.parent.empty() ? "-" : image.parent, image.status,
                   size_text(image.size_bytes), age_text(image.last_used),
                   std::to_string(image.instances), steps.empty() ? "-" : steps});
      }
      table.print();
      return 0;
    };
  });
}

void add_prune_command(CLI::App& app, Command& command) {
  auto older_than = std::make_shared<std::string>();
  CLI::App* sub = app.add_subcommand(
      "prune",
      "Remove the warm images and layers not used for a while (never one an instance runs on, "
      "one a kept layer builds on, or one being built)");
  sub->add_option("--older-than", *older_than, "unused for this long: 90s, 30m, 12h, 7d")
      ->required();
  sub->callback([&command, older_than] {
    command.run = [older_than] {
      std::uintmax_t freed = 0;
      const auto removed = prune_warm_images(parse_age(*older_than));  // a bad age: usage error
      for (const WarmImageInfo& image : removed) {
        fmt::print("removed {} {} ({})\n", image.model, image.name, size_text(image.size_bytes));
        freed += image.size_bytes;
      }
      fmt::print("{} images removed, {} freed\n", removed.size(), size_text(freed));
      return 0;
    };
  });
}

}  // namespace

void add_image_commands(CLI::App& app, Command& command) {
  add_images_command(app, command);
  add_prune_command(app, command);
}

}  // namespace vmfest::cli
