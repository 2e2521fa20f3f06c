#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "vmfest/error.h"
#include "vmfest/home.h"
#include "vmfest/instance.h"

namespace {

// A VM's working folder shows in /proc by its real path; the home's paths must match it.
TEST(Home, ResolvesSymbolicLinksAlsoOfAHomeNotMadeYet) {
  namespace fs = std::filesystem;
  const fs::path root =
      fs::temp_directory_path() / ("vmfest-home-link-" + std::to_string(::getpid()));
  fs::create_directories(root / "real");
  fs::create_directory_symlink(root / "real", root / "link");
  const fs::path real = fs::canonical(root / "real");
  EXPECT_EQ(vmfest::Home(root / "link").root(), real);
  EXPECT_EQ(vmfest::Home(root / "link" / "not-yet" / ".." / "home").instances(),
            real / "home" / "instances");
  fs::remove_all(root);
}

TEST(Names, AcceptsOrdinaryNames) {
  for (const char* name : {"a", "debian-12", "vmfest_tiny.v2", "X9"}) {
    EXPECT_NO_THROW(vmfest::validate_name(name, "instance")) << name;
  }
}

TEST(Names, RejectsTraversalAndOddNames) {
  const std::vector<std::string> names = {"",
                                          "..",
                                          "../x",
                                          "/",
                                          "a/b",
                                          ".hidden",
                                          "-flag",
                                          "sp ace",
                                          std::string(65, 'a'),
                                          std::string("nul\0x", 5)};
  for (const auto& name : names) {
    EXPECT_THROW(vmfest::validate_name(name, "instance"), vmfest::InvalidArgument) << name;
  }
}

TEST(Names, ErrorSaysWhatIsWrongAndWhatIsAllowed) {
  try {
    vmfest::validate_name("../etc", "model");
    FAIL() << "expected InvalidArgument";
  } catch (const vmfest::InvalidArgument& error) {
    std::string message = error.what();
    EXPECT_NE(message.find("invalid model name \"../etc\""), std::string::npos) << message;
    EXPECT_NE(message.find("letters, digits"), std::string::npos) << message;
  }
}

TEST(Profiles, NamedProfilesHaveTheSeedsSizes) {
  EXPECT_EQ(vmfest::Profile::named("micro").memory_mib, 256);
  EXPECT_EQ(vmfest::Profile::named("small").memory_mib, 512);
  EXPECT_EQ(vmfest::Profile::named("medium").cpus, 2);
  EXPECT_EQ(vmfest::Profile::named("large").memory_mib, 2048);
  EXPECT_THROW(vmfest::Profile::named("huge"), vmfest::InvalidArgument);
}

TEST(Profiles, CustomProfilesAreBounded) {
  EXPECT_EQ(vmfest::Profile::custom(384, 2).memory_mib, 384);
  EXPECT_THROW(vmfest::Profile::custom(16, 1), vmfest::InvalidArgument);
  EXPECT_THROW(vmfest::Profile::custom(512, 0), vmfest::InvalidArgument);
}

}  // namespace
