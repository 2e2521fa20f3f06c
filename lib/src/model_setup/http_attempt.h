// One HTTP(S) request of a download, with libcurl: the bytes from where the kept ones end, checked
// to be the rest of the same file, on to the cache and the sink.
#pragma once

#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <optional>
#include <string>

#include <curl/curl.h>

#include "byte_sink.h"
#include "download.h"
#include "output_file.h"
#include "progress.h"

namespace vmfest::detail {

// libcurl's process-wide set-up, done once; before the first HttpAttempt.
void ensure_curl_initialised();

// One GET of the URL from `kept.size()` on; the bytes go to `kept` (for a later resume) and on to
// the sink. Lives for one request.
class HttpAttempt {
 public:
  // What the request achieved.
  enum class Outcome { Done, StartOver, Broken };

  HttpAttempt(const std::string& url, OutputFile& kept, const DownloadCache& cache,
              std::string validator, ByteSink& sink, ProgressReporter& progress,
              const TransferLimits& limits);
  HttpAttempt(const HttpAttempt&) = delete;
  HttpAttempt& operator=(const HttpAttempt&) = delete;

  Outcome run();

  [[nodiscard]] const std::string& message() const noexcept { return message_; }
  [[nodiscard]] bool made_progress() const noexcept { return received_ > 0; }

 private:
  using CurlHandle = std::unique_ptr<CURL, decltype(&curl_easy_cleanup)>;
  using CurlHeaders = std::unique_ptr<curl_slist, decltype(&curl_slist_free_all)>;

  // Decides, at the first body byte, whether this response is the one we asked for.
  bool accept_response();
  static std::size_t on_data(char* data, std::size_t size, std::size_t count, void* user);
  static std::size_t on_header(char* data, std::size_t size, std::size_t count, void* user);
  static int on_progress(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t);

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

}  // namespace vmfest::detail
