#include "download.h"

#include <algorithm>
#include <cctype>
#include <cstring>
#include <exception>
#include <fstream>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include <curl/curl.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "../base/sha256.h"
#include "output_file.h"

namespace vmfest::detail {
namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

constexpr std::size_t kChunk = 1 << 20;
constexpr long kLowSpeedBytes = 1024;  // per second, for TransferLimits::stall_timeout

}  // namespace

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

// ---- http ------------------------------------------------------------------------------------

namespace {

void ensure_curl_initialised() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
      throw SetupError("libcurl could not be initialised");
    }
  });
}

using CurlHandle = std::unique_ptr<CURL, decltype(&curl_easy_cleanup)>;
using CurlHeaders = std::unique_ptr<curl_slist, decltype(&curl_slist_free_all)>;

// What one HTTP request achieved.
enum class Outcome { Done, StartOver, Broken };

// One GET of the URL from `kept.size()` on; the bytes go to `kept` (for a later resume) and on to
// the sink. Lives for one request.
class HttpAttempt {
 public:
  HttpAttempt(const std::string& url, OutputFile& kept, const DownloadCache& cache,
              std::string validator, ByteSink& sink, ProgressReporter& progress,
              const TransferLimits& limits)
      : url_(url),
        kept_(kept),
        cache_(cache),
        validator_(std::move(validator)),
        sink_(sink),
        progress_(progress),
        offset_(kept.size()) {
    CURL* curl = handle_.get();
    if (curl == nullptr) throw SetupError("libcurl could not create a transfer handle");
    curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(curl, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(curl, CURLOPT_MAXREDIRS, 10L);
    curl_easy_setopt(curl, CURLOPT_FAILONERROR, 1L);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);  // no SIGALRM games in a threaded test runner
    curl_easy_setopt(curl, CURLOPT_USERAGENT, "vmfest");
    curl_easy_setopt(curl, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(curl, CURLOPT_BUFFERSIZE, 512L * 1024);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT,
                     static_cast<long>(limits.connect_timeout.count()));
    curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, kLowSpeedBytes);
    curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME, static_cast<long>(limits.stall_timeout.count()));
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, curl_error_);
    // No CURLOPT_ACCEPT_ENCODING: the bytes must arrive as served, so the sha256 is theirs.
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, &HttpAttempt::on_data);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, this);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, &HttpAttempt::on_header);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, this);
    curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, &HttpAttempt::on_progress);
    curl_easy_setopt(curl, CURLOPT_XFERINFODATA, this);
    curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
    if (offset_ > 0)
      curl_easy_setopt(curl, CURLOPT_RESUME_FROM_LARGE, static_cast<curl_off_t>(offset_));
    if (offset_ > 0 && !validator_.empty()) {
      // The server sends the whole (new) file instead of the rest when the file has changed.
      headers_.reset(curl_slist_append(nullptr, ("If-Range: " + validator_).c_str()));
      curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers_.get());
    }
  }

  Outcome run() {
    const CURLcode result = curl_easy_perform(handle_.get());
    if (error_) std::rethrow_exception(error_);
    long status = 0;
    curl_easy_getinfo(handle_.get(), CURLINFO_RESPONSE_CODE, &status);
    if (result == CURLE_OK && !range_refused_) return Outcome::Done;
    if (offset_ > 0 && (range_refused_ || result == CURLE_RANGE_ERROR || status == 416)) {
      return Outcome::StartOver;
    }
    if (result == CURLE_HTTP_RETURNED_ERROR) {
      throw SetupError(
          fmt::format("downloading {} failed: the server answered HTTP {}; check "
                      "the URL",
                      url_, status));
    }
    message_ = fmt::format("downloading {} failed: {}", url_,
                           *curl_error_ != '\0' ? curl_error_ : curl_easy_strerror(result));
    const bool transient = result == CURLE_PARTIAL_FILE || result == CURLE_RECV_ERROR ||
                           result == CURLE_SEND_ERROR || result == CURLE_GOT_NOTHING ||
                           result == CURLE_OPERATION_TIMEDOUT || result == CURLE_HTTP2 ||
                           result == CURLE_HTTP2_STREAM;
    if (transient && received_ > 0) return Outcome::Broken;
    if (kept_.size() > 0) return Outcome::Broken;  // the caller keeps the bytes for a later call
    throw SetupError(message_ + "; check the URL and that the server is reachable");
  }

  [[nodiscard]] const std::string& message() const noexcept { return message_; }
  [[nodiscard]] bool made_progress() const noexcept { return received_ > 0; }

 private:
  // Decides, at the first body byte, whether this response is the one we asked for.
  bool accept_response() {
    long status = 0;
    curl_easy_getinfo(handle_.get(), CURLINFO_RESPONSE_CODE, &status);
    if (status >= 400) return false;  // FAILONERROR reports it
    if (offset_ > 0 && status != 206) {
      range_refused_ = true;
      return false;
    }
    curl_off_t length = -1;
    curl_easy_getinfo(handle_.get(), CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &length);
    if (length >= 0) total_ = offset_ + static_cast<std::uint64_t>(length);
    if (offset_ == 0) {
      // Remember the file's version for a later resume (strong validators only, RFC 9110 13.1.5).
      const std::string validator =
          !etag_.empty() && !etag_.starts_with("W/") ? etag_ : last_modified_;
      if (validator.empty()) {
        fs::remove(cache_.validator());
      } else {
        write_text_atomically(cache_.validator(), validator);
      }
    }
    return true;
  }

  static std::size_t on_data(char* data, std::size_t size, std::size_t count, void* user) {
    auto& self = *static_cast<HttpAttempt*>(user);
    const std::size_t length = size * count;
    try {
      if (!self.checked_response_) {
        self.checked_response_ = true;
        if (!self.accept_response()) return CURL_WRITEFUNC_ERROR;
      }
      const std::span<const unsigned char> bytes(reinterpret_cast<const unsigned char*>(data),
                                                 length);
      self.kept_.append(bytes);
      self.received_ += length;
      self.sink_.write(bytes);
      return length;
    } catch (...) {
      self.error_ = std::current_exception();
      return CURL_WRITEFUNC_ERROR;
    }
  }

  static std::size_t on_header(char* data, std::size_t size, std::size_t count, void* user) {
    auto& self = *static_cast<HttpAttempt*>(user);
    const std::string_view line(data, size * count);
    auto value_of = [&](std::string_view name) -> std::optional<std::string> {
      if (line.size() <= name.size() ||
          !std::equal(name.begin(), name.end(), line.begin(),
                      [](char a, char b) { return std::tolower(a) == std::tolower(b); })) {
        return std::nullopt;
      }
      std::string value(line.substr(name.size()));
      const auto first = value.find_first_not_of(" \t");
      const auto last = value.find_last_not_of(" \t\r\n");
      return first == std::string::npos ? std::string() : value.substr(first, last - first + 1);
    };
    if (line.starts_with("HTTP/")) {  // a new response (after a redirect): forget the last one's
      self.etag_.clear();
      self.last_modified_.clear();
    } else if (auto etag = value_of("etag:")) {
      self.etag_ = *etag;
    } else if (auto modified = value_of("last-modified:")) {
      self.last_modified_ = *modified;
    }
    return size * count;
  }

  static int on_progress(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
    auto& self = *static_cast<HttpAttempt*>(user);
    try {
      self.progress_.update(self.offset_ + self.received_, self.total_);
      return 0;
    } catch (...) {
      self.error_ = std::current_exception();  // the caller's progress callback threw
      return 1;
    }
  }

  const std::string& url_;
  OutputFile& kept_;
  const DownloadCache& cache_;
  std::string validator_;
  ByteSink& sink_;
  ProgressReporter& progress_;
  const std::uint64_t offset_;
  CurlHandle handle_{curl_easy_init(), curl_easy_cleanup};
  CurlHeaders headers_{nullptr, curl_slist_free_all};
  char curl_error_[CURL_ERROR_SIZE] = {};
  std::exception_ptr error_;
  std::string etag_;
  std::string last_modified_;
  std::optional<std::uint64_t> total_;
  std::uint64_t received_ = 0;
  bool checked_response_ = false;
  bool range_refused_ = false;
  std::string message_;
};

}  // namespace

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
    const Outcome outcome = request.run();
    if (outcome == Outcome::Done) break;
    if (outcome == Outcome::StartOver) {
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
