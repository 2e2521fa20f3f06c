#include "boot_times.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include "../base/files.h"
#include "../base/json_file.h"
#include "vmfest/error.h"

namespace vmfest::detail {
namespace fs = std::filesystem;
namespace {

constexpr std::size_t kKept = 5;  // boots kept per model and accelerator

fs::path history_file(const Home& home) { return home.cache() / "boot-times.json"; }

// A model replaced under the same name is another image: its times start afresh.
std::string model_key(const Model& model) {
  return fmt::format("{}@{}", model.name, model.sha256.substr(0, 16));
}

// The history, or an empty one when it cannot be read: it only tunes timeouts.
nlohmann::json read_history(const Home& home) {
  const fs::path file = history_file(home);
  try {
    const std::string text = read_text_if_exists(file);
    if (text.empty()) return nlohmann::json::object();
    nlohmann::json history = nlohmann::json::parse(text);
    if (history.is_object()) return history;
    spdlog::warn("vmfest: ignoring the boot times in {}: not a JSON object", file.string());
  } catch (const nlohmann::json::exception& error) {
    spdlog::warn("vmfest: ignoring the boot times in {}: {}", file.string(), json_problem(error));
  } catch (const Error& error) {
    spdlog::warn("vmfest: ignoring the boot times in {}: {}", file.string(), error.what());
  }
  return nlohmann::json::object();
}

}  // namespace

void record_cold_boot(const Home& home, const Model& model, const std::string& accelerator,
                      double seconds) {
  try {
    fs::create_directories(home.cache());
    FileLock lock(home.cache() / "boot-times.lock");
    nlohmann::json history = read_history(home);
    nlohmann::json& times = history[model_key(model)][accelerator];
    if (!times.is_array()) times = nlohmann::json::array();
    times.push_back(std::round(seconds * 100) / 100);
    while (times.size() > kKept) times.erase(times.begin());
    write_text_atomically(history_file(home), history.dump(1));
  } catch (const std::exception& error) {
    spdlog::warn("vmfest: could not record the boot time of model '{}' in {}: {}", model.name,
                 history_file(home).string(), error.what());
  }
}

std::optional<double> usual_cold_boot(const Home& home, const Model& model,
                                      const std::string& accelerator) {
  const nlohmann::json history = read_history(home);
  const auto entry = history.find(model_key(model));
  if (entry == history.end() || !entry->is_object()) return std::nullopt;
  const auto times = entry->find(accelerator);
  if (times == entry->end() || !times->is_array()) return std::nullopt;
  std::vector<double> seconds;
  for (const auto& time : *times) {
    if (time.is_number() && time.get<double>() > 0) seconds.push_back(time.get<double>());
  }
  if (seconds.empty()) return std::nullopt;
  std::sort(seconds.begin(), seconds.end());
  return seconds[seconds.size() / 2];
}

}  // namespace vmfest::detail
