#include "setup_model_fixture.h"

#include <sys/mount.h>
#include <unistd.h>

#include <fstream>

#include "../support/random_file.h"
#include "vmfest/ssh/shell_quote.h"

namespace vmfest::testing {
namespace fs = std::filesystem;

void sh(const std::string& command) {
  vmfest::detail::run_tool_checked("/bin/sh", {"-ec", command}, "preparing test data");
}

std::string quoted(const fs::path& path) { return vmfest::ssh::shell_quote(path.string()); }

TestData::TestData() {
  const std::string key = vmfest::detail::sha256_file(VMFEST_SETUP_MODEL_TEST_SOURCE).substr(0, 12);
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

void TestData::make() const {
  const std::string qemu_img = vmfest::detail::find_program("qemu-img", "qemu-utils").string();
  const std::string qemu_io = vmfest::detail::find_program("qemu-io", "qemu-utils").string();
  sh(
      fmt::format("cd {0}; {1} create -q -f qcow2 disk.qcow2 8M;"
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

void SetupModelTest::SetUp() {
  root_ = fs::temp_directory_path() /
          fmt::format("vmfest-setup-{}-{}",
                      ::testing::UnitTest::GetInstance()->current_test_info()->name(), ::getpid());
  fs::remove_all(root_);
  fs::create_directories(root_);
}

void SetupModelTest::TearDown() {
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

HttpServer& SetupModelTest::server() {
  if (!server_) {
    fs::create_directories(root_ / "server");
    server_ = std::make_unique<HttpServer>(data().dir(), root_ / "server");
  }
  return *server_;
}

void SetupModelTest::expect_no_leftovers(bool keep_download) const {
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

fs::path SetupModelTest::kept_partial() const {
  const fs::path downloads = home().cache() / "downloads";
  if (!fs::exists(downloads)) return {};
  for (const auto& entry : fs::directory_iterator(downloads)) {
    if (fs::exists(entry.path() / "partial")) return entry.path() / "partial";
  }
  return {};
}

std::unique_ptr<ChildProcess> SetupModelTest::helper(const std::string& source,
                                                     const std::string& name,
                                                     const std::string& output,
                                                     std::vector<std::string> extra_args) {
  std::vector<std::string> argv = {VMFEST_SETUP_MODEL_HELPER, source, name};
  argv.insert(argv.end(), extra_args.begin(), extra_args.end());
  return std::make_unique<ChildProcess>(
      argv, root_ / output, std::vector<std::string>{"VMFEST_HOME=" + home().root().string()});
}

TestData* SetupModelTest::data_ = nullptr;

}  // namespace vmfest::testing
