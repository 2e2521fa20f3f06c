// Fetching a model's source: http(s) downloads with libcurl that resume after an interruption,
// and local files, both handed on byte by byte to a sink (the decompressor), with progress shown.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>

#include "../base/files.h"
#include "byte_sink.h"
#include "progress.h"
#include "vmfest/error.h"

namespace vmfest::detail {

// A transfer that broke off part-way; what arrived is kept and the next call resumes from there.
class DownloadInterrupted : public SetupError {
 public:
  using SetupError::SetupError;
};

struct TransferLimits {
  std::chrono::seconds connect_timeout{30};
  // Give up on a connection that delivers under 1 KiB/s for this long (a stalled server).
  std::chrono::seconds stall_timeout{60};
  int attempts = 4;  // within one call, when each broken attempt still made progress
};

// The bytes of one URL kept under `cache_root` between calls: `partial` while it downloads,
// renamed `complete` at the end (so a crash after the download does not fetch it again), with the
// server's validator (ETag or Last-Modified) so a resume never splices two versions of a file.
// Holds a lock: one process downloads a URL at a time.
class DownloadCache {
 public:
  DownloadCache(const std::filesystem::path& cache_root, const std::string& url);
  [[nodiscard]] const std::filesystem::path& directory() const noexcept { return directory_; }
  [[nodiscard]] std::filesystem::path partial() const { return directory_ / "partial"; }
  [[nodiscard]] std::filesystem::path complete() const { return directory_ / "complete"; }
  [[nodiscard]] std::filesystem::path validator() const { return directory_ / "validator"; }
  // Removes the kept bytes (after a successful setup, or when they are useless).
  void discard() noexcept;

 private:
  FileLock lock_;
  std::filesystem::path directory_;
};

// Sends every byte of the http(s) `url` to `sink`, in order from the first: those kept in `cache`
// by an earlier interrupted call, then the rest with a Range request. Throws SetupError (HTTP
// status, unreachable host, ...) or DownloadInterrupted (bytes kept for the next call).
void download(const std::string& url, DownloadCache& cache, ByteSink& sink,
              const TransferLimits& limits, ProgressReporter& progress);

// Sends every byte of a local file to `sink`.
void read_local(const std::filesystem::path& file, ByteSink& sink, ProgressReporter& progress);

}  // namespace vmfest::detail
