#include "byte_sink.h"

#include <utility>

namespace vmfest::detail {

namespace {
constexpr std::size_t kMaxQueued = 8 << 20;
}  // namespace

BackgroundSink::BackgroundSink(ByteSink& inner) : inner_(inner), worker_([this] { run(); }) {}

BackgroundSink::~BackgroundSink() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    queue_.clear();
  }
  changed_.notify_all();
  worker_.join();
}

void BackgroundSink::write(std::span<const unsigned char> bytes) {
  std::unique_lock lock(mutex_);
  changed_.wait(lock, [&] { return queued_bytes_ < kMaxQueued || error_; });
  if (error_) std::rethrow_exception(error_);
  queue_.emplace_back(bytes.begin(), bytes.end());
  queued_bytes_ += bytes.size();
  changed_.notify_all();
}

void BackgroundSink::restart() {
  drain();
  inner_.restart();  // the worker is idle until the next write
}

void BackgroundSink::drain() {
  std::unique_lock lock(mutex_);
  changed_.wait(lock, [&] { return (queue_.empty() && !busy_) || error_; });
  if (error_) std::rethrow_exception(error_);
}

void BackgroundSink::run() {
  std::unique_lock lock(mutex_);
  for (;;) {
    changed_.wait(lock, [&] { return !queue_.empty() || stopping_; });
    if (stopping_) return;
    std::vector<unsigned char> chunk = std::move(queue_.front());
    queue_.pop_front();
    queued_bytes_ -= chunk.size();
    busy_ = true;
    lock.unlock();
    std::exception_ptr failure;
    try {
      inner_.write(chunk);
    } catch (...) {
      failure = std::current_exception();
    }
    lock.lock();
    busy_ = false;
    if (failure) {
      error_ = failure;
      queue_.clear();
      queued_bytes_ = 0;
    }
    changed_.notify_all();
  }
}

}  // namespace vmfest::detail
