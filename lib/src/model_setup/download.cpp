#include "download.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <optional>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "../base/sha256.h"
#include "http_attempt.h"
#include "output_file.h"

namespace vmfest::detail {
namespace fs = std::filesystem;

// ---- cache -----------------------------------------------------------------------------------

namespace {

std::string cache_key(const std::string& url) {
  Sha256 hash;
  hash.update({reinterpret_cast<const unsigned char*>(url.data()), url.size()});
  return hash.hex_digest().substr(0, 16);
}

// The lock file sits beside the folder, which discard() removes: a lock file removed while held
// would let the next process lock a new file while the holder still works.
FileLock lock_downloads_of(const fs::path& cache_root, const std::string& url) {
  fs::create_directories(cache_root);
  return FileLock(cache_root / (cache_key(url) + ".lock"));
}

}  // namespace

DownloadCache::DownloadCache(const fs::path& cache_root, const std::string& url)
    : lock_(lock_downloads_of(cache_root, url)), directory_(cache_root / cache_key(url)) {
  fs::create_directories(directory_);
  if (!fs::exists(directory_ / "url")) write_text_atomically(directory_ / "url", url + "\n");
}

void DownloadCache::discard() noexcept {
  std::error_code ignored;
  fs::remove_all(directory_, ignored);
}

// ---- reading files ---------------------------------------------------------------------------

namespace {

constexpr std::size_t kChunk = 1 << 20;

// Sends the first `limit` bytes of `file` to `sink`; returns how many there were.
std::uint64_t pump_file(const fs::path& file, std::uint64_t limit, ByteSink& sink,
                        ProgressReporter& progress, std::optional<std::uint64_t> total) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw SetupError(fmt::format("cannot read {}: {}", file.string(), std::strerror(errno)));
  std::vector<unsigned char> buffer(kChunk);
  std::uint64_t done = 0;
  while (done < limit) {
    const auto wanted = static_cast<std::streamsize>(std::min<std::uint64_t>(kChunk, limit - done));
    in.read(reinterpret_cast<char*>(buffer.data()), wanted);
    const auto got = static_cast<std::size_t>(in.gcount());
    if (got == 0) break;
    sink.write({buffer.data(), got});
    done += got;
    progress.update(done, total);
  }
  if (in.bad()) {
    throw SetupError(fmt::format("reading {} failed: {}", file.string(), std::strerror(errno)));
  }
  return done;
}

}  // namespace

void read_local(const fs::path& file, ByteSink& sink, ProgressReporter& progress) {
  std::error_code error;
  const std::uint64_t size = fs::file_size(file, error);
  if (error) {
    throw SetupError(
        fmt::format("model source {} cannot be read: {}", file.string(), error.message()));
  }
  progress.start(0);
  pump_file(file, size, sink, progress, size);
  progress.finish();
}

void download(const std::string& url, DownloadCache& cache, ByteSink& sink,
              const TransferLimits& limits, ProgressReporter& progress) {
  ensure_curl_initialised();
  if (fs::exists(cache.complete())) {  // downloaded by an earlier call that did not finish setup
    read_local(cache.complete(), sink, progress);
    return;
  }
  OutputFile kept(cache.partial(), OutputFile::Mode::Append);
  std::string validator = read_text_if_exists(cache.validator());
  if (kept.size() > 0 && validator.empty()) kept.resize(0);  // cannot tell if the file changed
  if (kept.size() > 0) {
    spdlog::info("vmfest: resuming the download of {} after the {} kept in {}", url,
                 human_bytes(kept.size()), cache.directory().string());
    pump_file(cache.partial(), kept.size(), sink, progress, std::nullopt);
  }
  progress.start(kept.size());
  for (int attempt = 1;; ++attempt) {
    HttpAttempt request(url, kept, cache, validator, sink, progress, limits);
    const HttpAttempt::Outcome outcome = request.run();
    if (outcome == HttpAttempt::Outcome::Done) break;
    if (outcome == HttpAttempt::Outcome::StartOver) {
      kept.resize(0);
      sink.restart();
      validator.clear();
      progress.start(0);
      continue;
    }
    if (!request.made_progress() || attempt >= limits.attempts) {
      throw DownloadInterrupted(fmt::format(
          "{}; the {} received so far are kept in {} and the next setup_model call resumes "
          "from there",
          request.message(), human_bytes(kept.size()), cache.directory().string()));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(250 * attempt));
    validator = read_text_if_exists(cache.validator());
  }
  // Not fsynced: a cache. After a power cut the file is at worst short, and gzip's CRC, the sha256
  // and qemu-img stand between it and the registry; the registered disk itself is fsynced.
  fs::rename(cache.partial(), cache.complete());
  progress.finish();
}

}  // namespace vmfest::detail
