// setup_model against a real HTTP server on 127.0.0.1 (tests/support/http_server.py) and real
// images made with qemu-img: downloads, gzip, resume, bundles, formats, failures, concurrency.
#include <gtest/gtest.h>
#include <spdlog/sinks/ringbuffer_sink.h>
#include <spdlog/spdlog.h>

#include <sys/mount.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include <fmt/format.h>

#include "../support/child_process.h"
#include "../support/error_message.h"
#include "../support/http_server.h"
#include "../support/random_file.h"
#include "vmfest/error.h"
#include "vmfest/internal/base.h"
#include "vmfest/model.h"
#include "vmfest/ssh/shell_quote.h"

namespace {
namespace fs = std::filesystem;
using vmfest::testing::ChildProcess;
using vmfest::testing::HttpServer;
using namespace std::chrono_literals;

constexpr std::size_t kNoiseBytes = 4 << 20;  // incompressible: the gzip is as big as the data

void sh(const std::string& command) {
  vmfest::detail::run_tool_checked("/bin/sh", {"-ec", command}, "preparing test data");
}

std::string quoted(const fs::path& path) { return vmfest::ssh::shell_quote(path.string()); }

using vmfest::testing::message_of;

// Images, gzip files and bundles every test serves. ctest runs each test in its own process, so
// they are made once for all of them: in a folder named after this file's hash (a change of the
// recipe below makes a new one), built aside and renamed into place under a lock.
class TestData {
 public:
  TestData() {
    const std::string key =
        vmfest::detail::sha256_file(VMFEST_SETUP_MODEL_TEST_SOURCE).substr(0, 12);
    dir_ = fs::temp_directory_path() / fmt::format("vmfest-setup-data-{}", key);
    vmfest::detail::FileLock lock(fs::temp_directory_path() / "vmfest-setup-data.lock");
    if (fs::exists(dir_ / ".complete")) return;
    const fs::path final_dir = dir_;
    dir_ += fmt::format(".building-{}", ::getpid());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    make();
    std::ofstream(dir_ / ".complete").close();
    fs::remove_all(final_dir);
    fs::rename(dir_, final_dir);
    dir_ = final_dir;
  }

  [[nodiscard]] const fs::path& dir() const noexcept { return dir_; }
  [[nodiscard]] fs::path operator/(const std::string& file) const { return dir_ / file; }
  [[nodiscard]] std::string sha256(const std::string& file) const {
    return vmfest::detail::sha256_file(dir_ / file);
  }
  // Where evil-absolute.tar tries to write.
  [[nodiscard]] static fs::path absolute_escape() {
    return fs::temp_directory_path() / "vmfest-setup-data-escaped.txt";
  }

 private:
  void make() const {
    const std::string qemu_img = vmfest::detail::find_program("qemu-img", "qemu-utils").string();
    const std::string qemu_io = vmfest::detail::find_program("qemu-io", "qemu-utils").string();
    sh(fmt::format(
        "cd {0}; {1} create -q -f qcow2 disk.qcow2 8M;"
        "{2} -f qcow2 -c 'write -P 0xab 0 1M' -c 'write -P 0xcd 4M 512k' disk.qcow2 "
        ">/dev/null;"
        "{1} convert -O raw disk.qcow2 disk.raw; {1} convert -O vdi disk.qcow2 disk.vdi;"
        "{1} convert -O vmdk disk.qcow2 disk.vmdk; {1} convert -O vpc disk.qcow2 "
        "disk.vpc;"
        "{1} create -q -f qcow2 -b disk.qcow2 -F qcow2 overlay.qcow2;"
        "for f in disk.qcow2 disk.raw disk.vdi; do gzip -c $f > $f.gz; done;"
        "cp disk.raw.gz disguised.img; cp disk.raw plain-named.gz;"
        "printf 'not a disk, just some text\\n' > junk.bin",
        quoted(dir_), qemu_img, qemu_io));
    // Incompressible content, so a download takes long enough to interrupt and resume.
    vmfest::testing::write_random_file(dir_ / "noise.raw", kNoiseBytes);
    sh(
        fmt::format("cd {}; gzip -c noise.raw > noise.raw.gz;"
                    "head -c 1500000 noise.raw | gzip -c > noise-multi.raw.gz;"
                    "tail -c +1500001 noise.raw | gzip -c >> noise-multi.raw.gz;"
                    // 32 MiB of zeros in a few dozen KiB: a decompression bomb, in small
                    "head -c 33554432 /dev/zero | gzip -c > bomb.raw.gz",
                    quoted(dir_)));
    // Bundles: a kernel-booted model as a tar.gz, with and without a top-level folder.
    sh(fmt::format(
        "cd {}; mkdir bundle; cp disk.qcow2 bundle/; printf kernel > bundle/vmlinuz;"
        "printf initrd > bundle/initrd.img;"
        "printf '%s' '{{\"name\":\"tiny\",\"disk\":\"disk.qcow2\",\"boot\":{{\"kind\":\"kernel\","
        "\"kernel\":\"vmlinuz\",\"initrd\":\"initrd.img\",\"cmdline\":\"console=ttyS0\"}},"
        "\"ssh\":{{\"user\":\"tester\",\"port\":2222}},\"ready_marker\":\"READY\"}}'"
        " > bundle/vmfest-model.json;"
        "tar -czf bundle.tar.gz -C bundle .; tar -czf bundle-folder.tgz bundle;"
        // A terabyte disk that packs into a few KiB: a sparse member (GNU tar --sparse).
        "mkdir sparse; printf '{{\"disk\":\"huge.raw\"}}' > sparse/vmfest-model.json;"
        "truncate -s 1T sparse/huge.raw; tar --sparse -cf sparse-bomb.tar -C sparse .;"
        "rm -r sparse",
        quoted(dir_)));
    // Hostile tars, written entry by entry (GNU tar would clean the names up).
    const std::string make_tars = R"(
import io, sys, tarfile
def tar(name, entries, manifest=None):
    with tarfile.open(name, "w") as out:
        for entry in entries:
            out.addfile(entry, io.BytesIO(b"x" * entry.size) if entry.isfile() else None)
def file(name, size=1):
    info = tarfile.TarInfo(name); info.size = size; return info
def link(name, target):
    info = tarfile.TarInfo(name); info.type = tarfile.SYMTYPE; info.linkname = target; return info
def manifest(disk):
    data = ('{"disk":"%s"}' % disk).encode()
    info = tarfile.TarInfo("vmfest-model.json"); info.size = len(data); return info, data
tar("evil-dotdot.tar", [file("vmfest-model.json"), file("../escaped.txt")])
tar("evil-absolute.tar", [file(sys.argv[1])])
tar("evil-symlink.tar", [link("etc", "/etc"), file("etc/escaped.txt")])
with tarfile.open("evil-manifest.tar", "w") as out:
    info, data = manifest("../disk.qcow2")
    out.addfile(info, io.BytesIO(data))
)";
    std::ofstream(dir_ / "make_tars.py") << make_tars;
    sh(fmt::format("cd {}; {} make_tars.py {}", quoted(dir_), HttpServer::python(),
                   quoted(absolute_escape())));
  }

  fs::path dir_;
};

class SetupModelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { data_ = new TestData(); }
  static void TearDownTestSuite() {
    delete data_;
    data_ = nullptr;
  }

  void SetUp() override {
    root_ =
        fs::temp_directory_path() /
        fmt::format("vmfest-setup-{}-{}",
                    ::testing::UnitTest::GetInstance()->current_test_info()->name(), ::getpid());
    fs::remove_all(root_);
    fs::create_directories(root_);
  }
  void TearDown() override {
    server_.reset();
    if (mounted_) ::umount2(mounted_->c_str(), MNT_DETACH);
    std::error_code ignored;
    if (fs::exists(root_)) {
      for (auto& entry : fs::recursive_directory_iterator(root_, ignored)) {
        fs::permissions(entry.path(), fs::perms::owner_all, fs::perm_options::add, ignored);
      }
    }
    fs::remove_all(root_, ignored);
  }

  const TestData& data() const { return *data_; }
  vmfest::Home home() const { return vmfest::Home(root_ / "home"); }
  HttpServer& server() {
    if (!server_) {
      fs::create_directories(root_ / "server");
      server_ = std::make_unique<HttpServer>(data().dir(), root_ / "server");
    }
    return *server_;
  }

  vmfest::Model setup(const std::string& source, const std::string& name = "",
                      vmfest::SetupOptions options = {}) {
    if (!name.empty()) options.name = name;
    return vmfest::setup_model(source, options, home());
  }

  // No staging folder, and (unless `keep_download`) no kept download.
  void expect_no_leftovers(bool keep_download = false) const {
    if (fs::exists(home().models())) {
      for (const auto& entry : fs::directory_iterator(home().models())) {
        const std::string name = entry.path().filename().string();
        const bool hidden = name.starts_with(".");
        EXPECT_FALSE(hidden && entry.is_directory()) << "left behind: " << entry.path();
        EXPECT_FALSE(hidden && name.ends_with(".lock")) << "lock file left: " << entry.path();
      }
    }
    if (!keep_download && fs::exists(home().cache() / "downloads")) {
      for (const auto& entry : fs::directory_iterator(home().cache() / "downloads")) {
        EXPECT_FALSE(entry.is_directory()) << "download kept: " << entry.path();
      }
    }
  }
  // No model either.
  void expect_nothing_left(bool keep_download = false) const {
    EXPECT_TRUE(vmfest::ModelRegistry(home()).list().empty());
    expect_no_leftovers(keep_download);
  }

  // The partial download of the one URL this test fetched (empty path when there is none).
  fs::path kept_partial() const {
    const fs::path downloads = home().cache() / "downloads";
    if (!fs::exists(downloads)) return {};
    for (const auto& entry : fs::directory_iterator(downloads)) {
      if (fs::exists(entry.path() / "partial")) return entry.path() / "partial";
    }
    return {};
  }

  std::unique_ptr<ChildProcess> helper(const std::string& source, const std::string& name,
                                       const std::string& output,
                                       std::vector<std::string> extra_args = {}) {
    std::vector<std::string> argv = {VMFEST_SETUP_MODEL_HELPER, source, name};
    argv.insert(argv.end(), extra_args.begin(), extra_args.end());
    return std::make_unique<ChildProcess>(
        argv, root_ / output, std::vector<std::string>{"VMFEST_HOME=" + home().root().string()});
  }

  static vmfest::SetupOptions replacing() {
    vmfest::SetupOptions options;
    options.replace = true;
    return options;
  }

  static TestData* data_;
  fs::path root_;
  std::unique_ptr<HttpServer> server_;
  std::optional<fs::path> mounted_;
};

TestData* SetupModelTest::data_ = nullptr;

// ---- downloads and formats -------------------------------------------------------------------

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

TEST_F(SetupModelTest, VdiAndVmdkAreKeptAsTheyAreOtherFormatsBecomeQcow2) {
  vmfest::Model vdi = setup(server().url("-", "disk.vdi.gz"), "vdi");
  EXPECT_EQ(vdi.format, "vdi");
  EXPECT_EQ(vdi.disk.filename(), "disk.vdi");
  EXPECT_EQ(vdi.sha256, data().sha256("disk.vdi"));
  vmfest::Model vmdk = setup(server().url("-", "disk.vmdk"), "vmdk");
  EXPECT_EQ(vmdk.format, "vmdk");
  EXPECT_EQ(vmdk.sha256, data().sha256("disk.vmdk"));
  vmfest::Model vpc = setup(server().url("-", "disk.vpc"), "vpc");
  EXPECT_EQ(vpc.format, "qcow2");
  EXPECT_EQ(vpc.disk.filename(), "disk.qcow2");
  EXPECT_EQ(vpc.sha256, vmfest::detail::sha256_file(vpc.disk));
  // The conversion keeps the content (VPC rounds the size up to its geometry: zeros).
  sh(fmt::format("qemu-img compare -q {} {}", quoted(data() / "disk.qcow2"), quoted(vpc.disk)));
}

TEST_F(SetupModelTest, ImagesQemuCannotUseAreRefusedAndChangeNothing) {
  std::string junk = message_of([&] { setup(server().url("-", "junk.bin"), "junk"); });
  EXPECT_NE(junk.find("512-byte sectors"), std::string::npos) << junk;
  std::string overlay = message_of([&] { setup((data() / "overlay.qcow2").string(), "overlay"); });
  EXPECT_NE(overlay.find("must stand alone"), std::string::npos) << overlay;
  EXPECT_THROW(setup(server().url("-", "junk.bin"), "junk"), vmfest::SetupError);
  expect_nothing_left();
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

// ---- bundles ---------------------------------------------------------------------------------

TEST_F(SetupModelTest, GzippedTarBundleIsUnpackedAndRegistered) {
  for (const char* file : {"bundle.tar.gz", "bundle-folder.tgz"}) {
    SCOPED_TRACE(file);
    // The name comes from the URL or the options (a bundle folder's manifest name is not read
    // before the download).
    const std::string name = file == std::string("bundle.tar.gz") ? "" : "bundle";
    vmfest::Model model = setup(server().url("-", file), name, replacing());
    EXPECT_EQ(model.name, "bundle");
    EXPECT_EQ(model.format, "qcow2");
    EXPECT_EQ(model.sha256, data().sha256("disk.qcow2"));
    EXPECT_EQ(model.boot.kind, vmfest::BootSpec::Kind::Kernel);
    EXPECT_EQ(vmfest::detail::read_text(model.boot.kernel), "kernel");
    EXPECT_EQ(vmfest::detail::read_text(model.boot.initrd), "initrd");
    EXPECT_EQ(model.boot.cmdline, "console=ttyS0");
    EXPECT_EQ(model.ssh_user, "tester");
    EXPECT_EQ(model.ssh_port, 2222);
    EXPECT_EQ(model.ready_marker, "READY");
    EXPECT_EQ(model.boot.kernel.parent_path(), model.directory);
  }
  EXPECT_EQ(vmfest::ModelRegistry(home()).list().size(), 1u);
  expect_no_leftovers();
}

TEST_F(SetupModelTest, TarEntriesOutsideTheBundleAreRefused) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"evil-dotdot.tar", "climbs out"},
      {"evil-absolute.tar", "absolute path"},
      {"evil-symlink.tar", "symbolic link"},
      {"evil-manifest.tar", "relative names inside the bundle"}};
  for (const auto& [file, why] : cases) {
    SCOPED_TRACE(file);
    std::string message = message_of([&] { setup(server().url("-", file), "evil"); });
    EXPECT_NE(message.find(why), std::string::npos) << message;
    EXPECT_THROW(setup(server().url("-", file), "evil"), vmfest::SetupError);
  }
  EXPECT_FALSE(fs::exists(home().models() / "escaped.txt"));
  EXPECT_FALSE(fs::exists(data().absolute_escape()));
  EXPECT_FALSE(fs::exists("/etc/escaped.txt"));
  expect_nothing_left();
}

TEST_F(SetupModelTest, ASparseTarMemberCountsAtItsDeclaredSizeAndLeavesNothing) {
  ASSERT_LT(fs::file_size(data() / "sparse-bomb.tar"), 1U << 20);
  const std::string message =
      message_of([&] { setup(server().url("-", "sparse-bomb.tar"), "sparse"); });
  EXPECT_NE(message.find("unpacks to more than VMFEST_MAX_MODEL_SIZE (64.00 GiB)"),
            std::string::npos)
      << message;
  EXPECT_NE(message.find("'huge.raw' alone declares 1024.00 GiB"), std::string::npos) << message;
  EXPECT_NE(message.find("nothing was registered"), std::string::npos) << message;
  expect_nothing_left();
}

TEST_F(SetupModelTest, FolderBundleManifestCannotNameFilesOutsideIt) {
  const fs::path bundle = root_ / "sneaky";
  fs::create_directories(bundle);
  std::ofstream(bundle / "vmfest-model.json") << R"({"disk":"../../outside.qcow2"})";
  fs::copy_file(data() / "disk.qcow2", root_ / "outside.qcow2");
  std::string message = message_of([&] { setup(bundle.string()); });
  EXPECT_NE(message.find("relative names inside the bundle"), std::string::npos) << message;
  expect_nothing_left();
}

TEST_F(SetupModelTest, FolderBundleLinksThatLeaveTheBundleAreRefused) {
  const fs::path bundle = root_ / "linking";
  fs::create_directories(bundle);
  const fs::path secret = root_ / "host-secret.qcow2";  // a host file the guest must never see
  fs::copy_file(data() / "disk.qcow2", secret);
  fs::permissions(secret, fs::perms::owner_read | fs::perms::owner_write);
  std::ofstream(bundle / "vmfest-model.json") << R"({"disk":"disk.qcow2"})";
  fs::create_symlink(secret, bundle / "disk.qcow2");
  std::string message = message_of([&] { setup(bundle.string(), "linking"); });
  EXPECT_NE(
      message.find("a symbolic link to " + fs::canonical(secret).string() + ", outside the bundle"),
      std::string::npos)
      << message;
  expect_nothing_left();

  // A link that stays inside the bundle is only another name for its file.
  fs::remove(bundle / "disk.qcow2");
  fs::copy_file(data() / "disk.qcow2", bundle / "real.qcow2");
  fs::create_symlink("real.qcow2", bundle / "disk.qcow2");
  EXPECT_EQ(setup(bundle.string(), "linking").format, "qcow2");
}

TEST_F(SetupModelTest, AModelIsNeverMoreReadableThanItsSource) {
  const fs::path bundle = root_ / "private";
  fs::create_directories(bundle);
  std::ofstream(bundle / "vmfest-model.json") << R"({"disk":"disk.qcow2"})";
  fs::copy_file(data() / "disk.qcow2", bundle / "disk.qcow2");
  fs::permissions(bundle / "disk.qcow2", fs::perms::owner_read | fs::perms::owner_write);
  const vmfest::Model model = setup(bundle.string(), "private");
  EXPECT_EQ(fs::status(model.disk).permissions(), fs::perms::owner_read)
      << "a 0600 source became readable by others, or stayed writable";
}

// ---- names, no-ops, replace
// ----------------------------------------------------------------------

TEST_F(SetupModelTest, BadNamesSchemesAndChecksumsAreInvalidArguments) {
  EXPECT_THROW(setup(server().url("-", "disk.qcow2"), "../escape"), vmfest::InvalidArgument);
  std::string no_name =
      message_of([&] { setup(fmt::format("http://127.0.0.1:{}/", server().port())); });
  EXPECT_NE(no_name.find("SetupOptions::name"), std::string::npos) << no_name;
  EXPECT_THROW(setup("ftp://127.0.0.1/disk.qcow2"), vmfest::InvalidArgument);
  EXPECT_THROW(setup("http://[not a url/x.qcow2"), vmfest::InvalidArgument);
  vmfest::SetupOptions options;
  options.sha256 = "abc";
  EXPECT_THROW(setup(server().url("-", "disk.qcow2"), "x", options), vmfest::InvalidArgument);
  EXPECT_TRUE(server().requests().empty());  // refused before any download
  expect_nothing_left();
}

TEST_F(SetupModelTest, SameUrlAgainIsANoOpAndReplaceDownloadsAgain) {
  const std::string url = server().url("ranges", "disk.qcow2.gz");
  vmfest::Model first = setup(url);
  vmfest::Model second = setup(url);
  EXPECT_EQ(first.disk, second.disk);
  EXPECT_EQ(server().requests_for("ranges", "disk.qcow2.gz").size(), 1u);
  vmfest::Model replaced = setup(url, "", replacing());
  EXPECT_EQ(replaced.sha256, first.sha256);
  EXPECT_EQ(server().requests_for("ranges", "disk.qcow2.gz").size(), 2u);
  // Another source under the same name replaces the model.
  vmfest::Model other = setup(server().url("-", "disk.raw.gz"), "disk");
  EXPECT_EQ(other.format, "raw");
  EXPECT_EQ(vmfest::ModelRegistry(home()).list().size(), 1u);
}

TEST_F(SetupModelTest, TheSshUserIsVmfestUnlessStatedAndCanBeChangedWithoutADownload) {
  const std::string url = server().url("-", "disk.qcow2");
  EXPECT_EQ(setup(url).ssh_user, "vmfest");  // the login every instance's seed creates
  vmfest::SetupOptions options;
  options.ssh_user = "debian";
  vmfest::Model changed = setup(url, "", options);
  EXPECT_EQ(changed.ssh_user, "debian");
  EXPECT_EQ(vmfest::ModelRegistry(home()).get("disk").ssh_user, "debian");
  EXPECT_EQ(server().requests_for("-", "disk.qcow2").size(), 1u);  // only the login changed
  for (const char* invalid : {"Root", "a b", "-x", "x:y", "a$(id)", ""}) {
    options.ssh_user = invalid;
    if (options.ssh_user.empty()) continue;  // empty: not stated
    const std::string message = message_of([&] { setup(url, "", options); });
    EXPECT_NE(message.find("is not a valid SSH user"), std::string::npos) << message;
  }
  EXPECT_EQ(vmfest::ModelRegistry(home()).get("disk").ssh_user, "debian");
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

// ---- full disks --------------------------------------------------------------------------------

TEST_F(SetupModelTest, FullDiskIsAClearErrorAndChangesNothing) {
  const fs::path tiny = root_ / "home";
  fs::create_directories(tiny);
  if (::mount("tmpfs", tiny.c_str(), "tmpfs", 0, "size=1m") != 0) {
    GTEST_SKIP() << "cannot mount a 1 MiB tmpfs here (" << std::strerror(errno)
                 << "); FileSizeLimitIsAClearErrorAndChangesNothing covers the write errors";
  }
  mounted_ = tiny;
  std::string message = message_of([&] { setup(server().url("ranges", "noise.raw.gz"), "big"); });
  // Whichever notices first: the content writer, which keeps free space for the VMs, or the
  // download cache running out of it (the two write side by side).
  EXPECT_TRUE(message.find("is left free on the disk of") != std::string::npos ||
              message.find("No space left on device") != std::string::npos)
      << message;
  EXPECT_NE(message.find("nothing was registered"), std::string::npos) << message;
  expect_nothing_left();
}

TEST_F(SetupModelTest, FileSizeLimitIsAClearErrorAndChangesNothing) {
  auto limited = helper(server().url("ranges", "noise.raw.gz"), "big", "limited.out", {"1000000"});
  EXPECT_EQ(limited->wait(), 1) << limited->output();
  EXPECT_NE(limited->output().find("File too large"), std::string::npos) << limited->output();
  expect_nothing_left();
}

// ---- decompression bombs and raw bytes
// -----------------------------------------------------------

TEST_F(SetupModelTest, ADecompressionBombStopsAtTheSizeLimitAndLeavesNothing) {
  ::setenv("VMFEST_MAX_MODEL_SIZE", "8M", 1);
  const std::string message =
      message_of([&] { setup(server().url("ranges", "bomb.raw.gz"), "bomb"); });
  ::unsetenv("VMFEST_MAX_MODEL_SIZE");
  EXPECT_NE(message.find("grew past VMFEST_MAX_MODEL_SIZE (8.0 MiB) once decompressed"),
            std::string::npos)
      << message;
  EXPECT_NE(message.find("decompression bomb"), std::string::npos) << message;
  expect_nothing_left();
}

TEST_F(SetupModelTest, AMaxModelSizeThatIsNoSizeIsRefused) {
  ::setenv("VMFEST_MAX_MODEL_SIZE", "lots", 1);
  EXPECT_THROW(setup((data() / "disk.qcow2").string(), "sized"), vmfest::InvalidArgument);
  ::unsetenv("VMFEST_MAX_MODEL_SIZE");
  expect_nothing_left();
}

TEST_F(SetupModelTest, RawBytesWithoutADiskSignatureAreRegisteredWithAWarning) {
  auto warnings = std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(32);
  warnings->set_level(spdlog::level::warn);
  spdlog::default_logger()->sinks().push_back(warnings);
  sh(fmt::format("head -c 1048576 /dev/urandom > {}", quoted(root_ / "random.raw")));
  sh(
      fmt::format("head -c 1048576 /dev/zero > {0}; printf '\\125\\252' | "
                  "dd of={0} bs=1 seek=510 conv=notrunc status=none",
                  quoted(root_ / "mbr.raw")));
  EXPECT_EQ(setup((root_ / "random.raw").string(), "random").format, "raw");
  EXPECT_EQ(setup((root_ / "mbr.raw").string(), "mbr").format, "raw");
  spdlog::default_logger()->sinks().pop_back();
  const std::vector<std::string> seen = warnings->last_formatted();
  ASSERT_EQ(seen.size(), 1U) << "one warning, for the random bytes only";
  EXPECT_NE(seen[0].find("random.raw reads as a raw disk image, but it has no partition table"),
            std::string::npos)
      << seen[0];
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
