// `vmfest setup-model --ssh-key FILE | --ssh-password-file FILE`: a model's published login from
// the command line, one of the two, and never its secret in the output.
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "cli_runner.h"
#include "vmfest/gtest/fixture.h"
#include "vmfest/model.h"
#include "vmfest/ssh/keys.h"

namespace {
namespace fs = std::filesystem;
using vmfest::testing::contains;
using vmfest::testing::kDefaultModel;
using vmfest::testing::kExitUsage;
using vmfest::testing::run_cli;

TEST(CliPublishedLogin, SetupModelTakesAKeyOrAPasswordFileNotBoth) {
  const std::string source = vmfest::ModelRegistry().get(kDefaultModel).source;
  const std::string model = "cli-published-" + std::to_string(::getpid());
  const fs::path scratch = fs::temp_directory_path() / model;
  fs::create_directories(scratch);
  const vmfest::ssh::KeyPair key = vmfest::ssh::KeyPair::generate("published@cli");
  std::ofstream(scratch / "key") << key.private_openssh;
  std::ofstream(scratch / "password") << "Sesame-4711\n";

  const auto by_key = run_cli({"setup-model", source, "--name", model, "--ssh-user", "admin",
                               "--ssh-key", (scratch / "key").string()});
  ASSERT_EQ(by_key.exit_code, 0) << by_key.describe();
  EXPECT_TRUE(contains(by_key.out, "SSH user admin, first login by published key"))
      << by_key.describe();
  // The same source again with a password: the login changes, nothing is set up again.
  const auto by_password = run_cli({"setup-model", source, "--name", model, "--ssh-password-file",
                                    (scratch / "password").string()});
  ASSERT_EQ(by_password.exit_code, 0) << by_password.describe();
  EXPECT_TRUE(contains(by_password.out, "first login by published password"))
      << by_password.describe();
  EXPECT_FALSE(contains(by_password.out + by_password.err, "Sesame")) << "the password leaked";
  const vmfest::Model registered = vmfest::ModelRegistry().get(model);
  EXPECT_TRUE(registered.published_login.private_key.empty());
  EXPECT_FALSE(registered.published_login.password_file.empty());

  const auto both =
      run_cli({"setup-model", source, "--name", model, "--ssh-key", (scratch / "key").string(),
               "--ssh-password-file", (scratch / "password").string()});
  EXPECT_EQ(both.exit_code, kExitUsage) << both.describe();
  EXPECT_TRUE(contains(both.err, "excludes")) << both.describe();

  EXPECT_EQ(run_cli({"rm-model", model}).exit_code, 0);
  fs::remove_all(scratch);
}

}  // namespace
