// setup_model's downloads, against a real HTTP server on 127.0.0.1 (tests/support/http_server.py):
// plain and gzip images, checksums, HTTP failures, resumed and restarted downloads, two processes
// setting up one model, progress.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <thread>

#include <fmt/format.h>

#include "../support/child_process.h"
#include "../support/error_message.h"
#include "setup_model_fixture.h"
#include "vmfest/error.h"
#include "vmfest/model.h"

namespace {
namespace fs = std::filesystem;
using vmfest::testing::ChildProcess;
using vmfest::testing::HttpServer;
using vmfest::testing::kNoiseBytes;
using vmfest::testing::message_of;
using vmfest::testing::SetupModelTest;
using namespace std::chrono_literals;

// ---- downloads -------------------------------------------------------------------------------

TEST_F(SetupModelTest, PlainImageOverHttpIsRegisteredUnderTheUrlsName) {
  const std::string url = server().url("-", "disk.qcow2");
  vmfest::Model model = setup(url);
  EXPECT_EQ(model.name, "disk");
  EXPECT_EQ(model.format, "qcow2");
  EXPECT_EQ(model.source, url);
  EXPECT_EQ(model.sha256, data().sha256("disk.qcow2"));
  EXPECT_EQ(vmfest::detail::sha256_file(model.disk), data().sha256("disk.qcow2"));
  EXPECT_EQ(model.disk, home().models() / "disk" / "disk.qcow2");
  EXPECT_EQ(vmfest::ModelRegistry(home()).get("disk").disk, model.disk);
  EXPECT_FALSE(fs::exists(home().cache() / "downloads" / "partial"));
  expect_no_leftovers();  // the name's lock file included
}

TEST_F(SetupModelTest, GzipImagesAreDecompressedWhileDownloading) {
  vmfest::Model qcow2 = setup(server().url("-", "disk.qcow2.gz"));
  EXPECT_EQ(qcow2.name, "disk");
  EXPECT_EQ(qcow2.format, "qcow2");
  EXPECT_EQ(qcow2.sha256, data().sha256("disk.qcow2"));
  vmfest::Model raw = setup(server().url("-", "disk.raw.gz"), "raw");
  EXPECT_EQ(raw.format, "raw");
  EXPECT_EQ(raw.sha256, data().sha256("disk.raw"));
  EXPECT_EQ(vmfest::detail::sha256_file(raw.disk), data().sha256("disk.raw"));
}

TEST_F(SetupModelTest, MultiMemberGzipIsDecompressedWhole) {
  vmfest::Model model = setup(server().url("-", "noise-multi.raw.gz"));
  EXPECT_EQ(model.name, "noise-multi");
  EXPECT_EQ(fs::file_size(model.disk), kNoiseBytes);
  EXPECT_EQ(model.sha256, data().sha256("noise.raw"));
}

TEST_F(SetupModelTest, GzipIsRecognisedByItsBytesNotItsName) {
  // gzip data named .img is decompressed; plain data named .gz is taken as it is.
  EXPECT_EQ(setup(server().url("-", "disguised.img")).sha256, data().sha256("disk.raw"));
  EXPECT_EQ(setup(server().url("-", "plain-named.gz")).sha256, data().sha256("disk.raw"));
}

TEST_F(SetupModelTest, ChunkedResponseWithoutLengthWorksAndReportsNoTotal) {
  std::vector<vmfest::Progress> seen;
  vmfest::SetupOptions options;
  options.on_progress = [&](const vmfest::Progress& progress) { seen.push_back(progress); };
  vmfest::Model model = setup(server().url("chunked", "disk.qcow2.gz"), "chunked", options);
  EXPECT_EQ(model.sha256, data().sha256("disk.qcow2"));
  ASSERT_FALSE(seen.empty());
  EXPECT_FALSE(seen.back().total.has_value());
  EXPECT_EQ(seen.back().bytes, fs::file_size(data() / "disk.qcow2.gz"));
}

TEST_F(SetupModelTest, LocalGzipPathAndFileUrlAreDecompressedWithoutACache) {
  vmfest::Model from_path = setup((data() / "disk.qcow2.gz").string(), "from-path");
  EXPECT_EQ(from_path.sha256, data().sha256("disk.qcow2"));
  EXPECT_EQ(from_path.source, (data() / "disk.qcow2.gz").string());
  vmfest::Model from_url = setup("file://" + (data() / "disk.raw.gz").string(), "from-url");
  EXPECT_EQ(from_url.sha256, data().sha256("disk.raw"));
  EXPECT_EQ(from_url.source, (data() / "disk.raw.gz").string());
  EXPECT_FALSE(fs::exists(home().cache() / "downloads"));
}

// ---- checksums ---------------------------------------------------------------------------------

TEST_F(SetupModelTest, Sha256OfTheServedBytesIsVerified) {
  vmfest::SetupOptions options;
  options.sha256 = data().sha256("disk.qcow2.gz");  // of the .gz, as SHA256SUMS files list it
  for (auto& c : options.sha256) c = static_cast<char>(std::toupper(c));  // any case
  EXPECT_EQ(setup(server().url("-", "disk.qcow2.gz"), "checked", options).sha256,
            data().sha256("disk.qcow2"));
}

TEST_F(SetupModelTest, ChecksumMismatchSaysExpectedAndActualAndChangesNothing) {
  vmfest::SetupOptions options;
  options.sha256 = data().sha256("disk.qcow2");  // of the decompressed image: not what is served
  std::string message =
      message_of([&] { setup(server().url("ranges", "disk.qcow2.gz"), "bad", options); });
  EXPECT_NE(message.find("checksum mismatch"), std::string::npos) << message;
  EXPECT_NE(message.find("expected sha256 " + data().sha256("disk.qcow2")), std::string::npos)
      << message;
  EXPECT_NE(message.find("got " + data().sha256("disk.qcow2.gz")), std::string::npos) << message;
  EXPECT_THROW(setup(server().url("ranges", "disk.qcow2.gz"), "bad", options), vmfest::SetupError);
  expect_nothing_left();
}

// ---- HTTP failures ---------------------------------------------------------------------------

TEST_F(SetupModelTest, NotFoundSaysTheUrlAndTheStatus) {
  const std::string url = server().url("ranges", "missing.qcow2");
  std::string message = message_of([&] { setup(url); });
  EXPECT_NE(message.find(url), std::string::npos) << message;
  EXPECT_NE(message.find("HTTP 404"), std::string::npos) << message;
  EXPECT_THROW(setup(url), vmfest::SetupError);
  expect_nothing_left();
}

TEST_F(SetupModelTest, UnreachableHostIsAClearErrorAndChangesNothing) {
  // A port that was free a moment ago: nothing listens there.
  const int port =
      HttpServer(data().dir(), (fs::create_directories(root_ / "gone"), root_ / "gone")).port();
  const std::string url = fmt::format("http://127.0.0.1:{}/-/disk.qcow2", port);
  const auto started = std::chrono::steady_clock::now();
  std::string message = message_of([&] { setup(url); });
  EXPECT_LT(std::chrono::steady_clock::now() - started, 5s);
  EXPECT_NE(message.find(url), std::string::npos) << message;
  EXPECT_NE(message.find("onnect"), std::string::npos) << message;  // curl: "Failed to connect ..."
  EXPECT_THROW(setup(url), vmfest::SetupError);
  expect_nothing_left();
}

TEST_F(SetupModelTest, TruncatedGzipIsRefusedAndNotKept) {
  const std::string url = server().url("ranges,truncate=1000000", "noise.raw.gz");
  std::string message = message_of([&] { setup(url, "cut"); });
  EXPECT_NE(message.find("ends early"), std::string::npos) << message;
  EXPECT_THROW(setup(url, "cut"), vmfest::SetupError);
  expect_nothing_left();  // a complete-but-corrupt download is not kept for a resume
}

TEST_F(SetupModelTest, StalledServerIsAbandonedAfterTheStallTimeout) {
  vmfest::SetupOptions options;
  options.stall_timeout = 2s;
  const auto started = std::chrono::steady_clock::now();
  std::string message = message_of(
      [&] { setup(server().url("ranges,stall=0", "noise.raw.gz"), "stalled", options); });
  const auto took = std::chrono::steady_clock::now() - started;
  EXPECT_GE(took, 2s);
  EXPECT_LT(took, 10s);
  EXPECT_NE(message.find("too slow"), std::string::npos) << message;
  expect_nothing_left();
}

// ---- resume ----------------------------------------------------------------------------------

TEST_F(SetupModelTest, DroppedConnectionResumesWithARangeRequest) {
  vmfest::Model model = setup(server().url("ranges,drop-once=1000000", "noise.raw.gz"), "resumed");
  EXPECT_EQ(model.sha256, data().sha256("noise.raw"));
  auto requests = server().requests_for("ranges,drop-once=1000000", "noise.raw.gz");
  ASSERT_EQ(requests.size(), 2u);
  EXPECT_TRUE(requests[0]["range"].is_null());
  EXPECT_EQ(requests[1]["range"], "bytes=1000000-");
  EXPECT_FALSE(requests[1]["if_range"].is_null());  // the ETag: never splice two versions
  expect_no_leftovers();
}

TEST_F(SetupModelTest, ServerWithoutRangesMakesTheDownloadStartOver) {
  vmfest::Model model = setup(server().url("drop-once=1000000", "noise.raw.gz"), "again");
  EXPECT_EQ(model.sha256, data().sha256("noise.raw"));
  auto requests = server().requests_for("drop-once=1000000", "noise.raw.gz");
  ASSERT_EQ(requests.size(), 3u);  // dropped, refused to resume (200), whole file again
  EXPECT_EQ(requests[1]["range"], "bytes=1000000-");
  EXPECT_TRUE(requests[2]["range"].is_null());
}

TEST_F(SetupModelTest, InterruptedDownloadIsKeptAndTheNextCallResumes) {
  // Each request breaks off after 500 kB: one call's attempts get 2 MB, the third call finishes.
  const std::string url = server().url("ranges,drop=500000", "noise.raw.gz");
  std::string message = message_of([&] { setup(url, "patient"); });
  EXPECT_NE(message.find("resumes"), std::string::npos) << message;
  expect_nothing_left(true);
  ASSERT_FALSE(kept_partial().empty());
  EXPECT_EQ(fs::file_size(kept_partial()), 2000000u);
  EXPECT_THROW(setup(url, "patient"), vmfest::SetupError);
  EXPECT_EQ(fs::file_size(kept_partial()), 4000000u);
  vmfest::Model model = setup(url, "patient");
  EXPECT_EQ(model.sha256, data().sha256("noise.raw"));
  auto requests = server().requests_for("ranges,drop=500000", "noise.raw.gz");
  ASSERT_EQ(requests.size(), 9u);
  EXPECT_EQ(requests[4]["range"], "bytes=2000000-");  // the second call went on from the first
  EXPECT_EQ(requests[8]["range"], "bytes=4000000-");
  EXPECT_FALSE(fs::exists(kept_partial()));
}

TEST_F(SetupModelTest, KilledProcessLeavesNoModelAndALaterCallResumes) {
  const std::string url = server().url("ranges,rate=2000000", "noise.raw.gz");
  auto killed = helper(url, "killed", "helper.out");
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (kept_partial().empty() || fs::file_size(kept_partial()) < 1500000) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << killed->output();
    ASSERT_TRUE(killed->running()) << killed->output();
    std::this_thread::sleep_for(20ms);
  }
  killed->kill();
  const std::uint64_t kept = fs::file_size(kept_partial());
  EXPECT_FALSE(vmfest::ModelRegistry(home()).find("killed").has_value());

  vmfest::Model model = setup(url, "killed");
  EXPECT_EQ(model.sha256, data().sha256("noise.raw"));
  auto requests = server().requests_for("ranges,rate=2000000", "noise.raw.gz");
  ASSERT_EQ(requests.size(), 2u);
  EXPECT_EQ(requests[1]["range"], fmt::format("bytes={}-", kept));
  expect_no_leftovers();  // the dead process's staging folder was cleaned up too
  EXPECT_EQ(vmfest::ModelRegistry(home()).list().size(), 1u);
}

TEST_F(SetupModelTest, FileChangedOnTheServerIsFetchedAgainNotSpliced) {
  const std::string file = fmt::format("changing-{}.gz", ::getpid());
  fs::copy_file(data() / "noise.raw.gz", data() / file, fs::copy_options::overwrite_existing);
  const std::string url = server().url("ranges,rate=2000000", file);
  {
    auto killed = helper(url, "changing", "helper.out");
    while (kept_partial().empty() || fs::file_size(kept_partial()) < 500000) {
      ASSERT_TRUE(killed->running()) << killed->output();
      std::this_thread::sleep_for(20ms);
    }
  }
  fs::copy_file(data() / "disk.raw.gz", data() / file, fs::copy_options::overwrite_existing);
  vmfest::Model model = setup(url, "changing");
  fs::remove(data() / file);
  EXPECT_EQ(model.sha256, data().sha256("disk.raw"));
  auto requests = server().requests_for("ranges,rate=2000000", file);
  ASSERT_EQ(requests.size(), 3u);  // interrupted, If-Range no longer matches (200), whole again
  EXPECT_FALSE(requests[1]["if_range"].is_null());
  EXPECT_TRUE(requests[2]["range"].is_null());
}

// ---- concurrency -------------------------------------------------------------------------------

TEST_F(SetupModelTest, TwoProcessesSettingUpOneModelDownloadItOnce) {
  const std::string url = server().url("ranges,rate=8000000", "noise.raw.gz");  // ~0.5 s
  auto first = helper(url, "shared", "first.out");
  auto second = helper(url, "shared", "second.out");
  ASSERT_EQ(first->wait(), 0) << first->output();
  ASSERT_EQ(second->wait(), 0) << second->output();
  EXPECT_EQ(server().requests_for("ranges,rate=8000000", "noise.raw.gz").size(), 1u);
  vmfest::Model model = vmfest::ModelRegistry(home()).get("shared");
  const std::string expected =
      fmt::format("disk={} sha256={}", model.disk.string(), data().sha256("noise.raw"));
  EXPECT_NE(first->output().find(expected), std::string::npos) << first->output();
  EXPECT_NE(second->output().find(expected), std::string::npos) << second->output();
  EXPECT_EQ(vmfest::detail::sha256_file(model.disk), data().sha256("noise.raw"));
}

// ---- progress ----------------------------------------------------------------------------------

TEST_F(SetupModelTest, ProgressCallbackSeesBytesGrowToTheTotal) {
  std::vector<vmfest::Progress> seen;
  vmfest::SetupOptions options;
  options.on_progress = [&](const vmfest::Progress& progress) { seen.push_back(progress); };
  setup(server().url("ranges,rate=8000000", "noise.raw.gz"), "watched", options);
  const std::uint64_t size = fs::file_size(data() / "noise.raw.gz");
  ASSERT_GE(seen.size(), 3u);
  for (std::size_t i = 1; i < seen.size(); ++i) EXPECT_GE(seen[i].bytes, seen[i - 1].bytes);
  EXPECT_EQ(seen.back().bytes, size);
  EXPECT_EQ(seen.back().total, size);
}

TEST_F(SetupModelTest, WithoutATerminalProgressIsPlainLines) {
  ::testing::internal::CaptureStderr();
  setup(server().url("ranges,rate=3000000", "noise.raw.gz"), "logged");  // ~1.4 s
  const std::string output = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(output.find("vmfest: model 'logged': "), std::string::npos) << output;
  EXPECT_NE(output.find(" MiB of 4.0 MiB ("), std::string::npos) << output;
  EXPECT_NE(output.find("done, 4.0 MiB in"), std::string::npos) << output;
  EXPECT_EQ(output.find('\r'), std::string::npos) << output;
}

TEST_F(SetupModelTest, OnATerminalProgressIsABar) {
  const std::string command = fmt::format("{} {} bar", VMFEST_SETUP_MODEL_HELPER,
                                          server().url("ranges,rate=3000000", "noise.raw.gz"));
  ChildProcess terminal({"/usr/bin/script", "-qec", command, "/dev/null"}, root_ / "tty.out",
                        {"VMFEST_HOME=" + home().root().string(), "CI=false", "TERM=xterm"});
  ASSERT_EQ(terminal.wait(), 0) << terminal.output();
  const std::string output = terminal.output();
  EXPECT_NE(output.find("\rvmfest: model 'bar' ["), std::string::npos) << output;
  EXPECT_NE(output.find("MiB/s  ETA "), std::string::npos) << output;
  EXPECT_NE(output.find("[########################] 100%"), std::string::npos) << output;
}

}  // namespace
