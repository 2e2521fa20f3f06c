#include "http_attempt.h"

#include <algorithm>
#include <cctype>
#include <mutex>
#include <optional>
#include <string_view>
#include <utility>

#include <fmt/format.h>

namespace vmfest::detail {
namespace fs = std::filesystem;

namespace {
constexpr long kLowSpeedBytes = 1024;  // per second, for TransferLimits::stall_timeout
}  // namespace

void ensure_curl_initialised() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
      throw SetupError("libcurl could not be initialised");
    }
  });
}

HttpAttempt::HttpAttempt(const std::string& url, OutputFile& kept, const DownloadCache& cache,
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
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, static_cast<long>(limits.connect_timeout.count()));
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

HttpAttempt::Outcome HttpAttempt::run() {
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

bool HttpAttempt::accept_response() {
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

std::size_t HttpAttempt::on_data(char* data, std::size_t size, std::size_t count, void* user) {
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

std::size_t HttpAttempt::on_header(char* data, std::size_t size, std::size_t count, void* user) {
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

int HttpAttempt::on_progress(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  auto& self = *static_cast<HttpAttempt*>(user);
  try {
    self.progress_.update(self.offset_ + self.received_, self.total_);
    return 0;
  } catch (...) {
    self.error_ = std::current_exception();  // the caller's progress callback threw
    return 1;
  }
}

}  // namespace vmfest::detail
