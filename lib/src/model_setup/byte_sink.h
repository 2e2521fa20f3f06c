// Where a model source's bytes go as they arrive, and a sink that does its work on a thread of
// its own.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <exception>
#include <mutex>
#include <span>
#include <thread>
#include <vector>

namespace vmfest::detail {

// Receives a source's bytes in order.
class ByteSink {
 public:
  virtual ~ByteSink() = default;
  virtual void write(std::span<const unsigned char> bytes) = 0;
  // Forget everything written: the source is sent again from its first byte (a server that
  // could not resume, or whose file changed since the bytes we kept).
  virtual void restart() = 0;
};

// Runs another sink's work on a thread of its own, so that decompressing, hashing and writing
// overlap receiving. At most a few MiB wait in between.
class BackgroundSink final : public ByteSink {
 public:
  explicit BackgroundSink(ByteSink& inner);
  BackgroundSink(const BackgroundSink&) = delete;
  BackgroundSink& operator=(const BackgroundSink&) = delete;
  ~BackgroundSink() override;  // drops what is still queued

  // Queues a copy; throws the inner sink's error, if it failed on an earlier chunk.
  void write(std::span<const unsigned char> bytes) override;
  void restart() override;
  // Waits until the inner sink has taken everything; throws its error, if any.
  void drain();

 private:
  void run();

  ByteSink& inner_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<std::vector<unsigned char>> queue_;
  std::size_t queued_bytes_ = 0;
  bool busy_ = false;  // the worker is inside inner_.write()
  bool stopping_ = false;
  std::exception_ptr error_;
  std::thread worker_;  // last: it starts once the members above exist
};

}  // namespace vmfest::detail
