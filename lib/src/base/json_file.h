// Reading the JSON files vmfest keeps (model.json, instance.json, manifests, caches), private:
// whatever is wrong with one (not JSON, not an object, a field missing or of the wrong type)
// becomes a vmfest error naming the file, never nlohmann's own text.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "files.h"

namespace vmfest::detail {

// nlohmann's message without its "[json.exception.out_of_range.403] " prefix.
inline std::string json_problem(const nlohmann::json::exception& error) {
  std::string_view text = error.what();
  if (const auto end = text.find("] "); text.starts_with("[json.") && end != text.npos) {
    text.remove_prefix(end + 2);
  }
  return std::string(text);
}

// Parses `file` as a JSON object and returns read(object). Invalid JSON, another kind of value, or
// a field `read` finds missing or of the wrong type (nlohmann's exceptions) throw invalid(why):
// the caller's error, which names the file and says what to do.
template <class Read, class Invalid>
auto read_json_file(const std::filesystem::path& file, Read read, Invalid invalid) {
  const nlohmann::json json = nlohmann::json::parse(read_text(file), nullptr, false);
  if (json.is_discarded()) throw invalid("it is not JSON");
  if (!json.is_object()) throw invalid("it is not a JSON object");
  try {
    return read(json);
  } catch (const nlohmann::json::exception& error) {
    throw invalid(json_problem(error));
  }
}

}  // namespace vmfest::detail
