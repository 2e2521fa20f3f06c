// setup_model and what a download holds: the disk formats kept or converted, images QEMU cannot
// use, a full disk, decompression bombs, raw bytes without a disk signature.
#include <gtest/gtest.h>
#include <sys/mount.h>

#include <filesystem>
#include <memory>
#include <string>

#include <fmt/format.h>
#include <spdlog/sinks/ringbuffer_sink.h>
#include <spdlog/spdlog.h>

#include "../support/error_message.h"
#include "setup_model_fixture.h"
#include "vmfest/error.h"
#include "vmfest/model.h"

namespace {
namespace fs = std::filesystem;
using vmfest::testing::message_of;
using vmfest::testing::quoted;
using vmfest::testing::SetupModelTest;
using vmfest::testing::sh;

// ---- formats -------------------------------------------------------------------------------

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

}  // namespace
