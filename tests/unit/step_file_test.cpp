// Step files (`vmfest run --step-file`): each verb becomes the step the library's own
// ProvisionStep functions make, and every malformed line is refused naming FILE:LINE.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "vmfest/error.h"
#include "vmfest/internal/image_store.h"
#include "vmfest/provision.h"

namespace {
namespace fs = std::filesystem;
using vmfest::ProvisionStep;
using vmfest::read_step_file;

class StepFile : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("vmfest-step-file-test-" + std::to_string(::getpid()));
    fs::remove_all(root_);
    fs::create_directories(root_ / "site");
    std::ofstream(root_ / "site" / "index.html") << "hello";
  }
  void TearDown() override { fs::remove_all(root_); }

  fs::path write_steps(const std::string& text) {
    const fs::path file = root_ / "steps.txt";
    std::ofstream(file) << text;
    return file;
  }

  // The message read_step_file throws for `text`; empty when it throws nothing.
  std::string refusal(const std::string& text) {
    try {
      read_step_file(write_steps(text));
    } catch (const vmfest::InvalidArgument& error) {
      return error.what();
    }
    return {};
  }

  fs::path root_;
};

TEST_F(StepFile, EachVerbIsTheLibrarysStepWithTheSameLayerKey) {
  const fs::path file = write_steps(
      "# set up a web site\n"
      "\n"
      "run   mkdir -p /srv && echo 'a # b' > /srv/note  \n"
      "  upload site /srv/www\n"
      "\t# indented comment\n"
      "reboot\n");
  const vmfest::ProvisionSteps steps = read_step_file(file);
  const vmfest::ProvisionSteps expected = {
      ProvisionStep::run("mkdir -p /srv && echo 'a # b' > /srv/note"),
      ProvisionStep::upload(root_ / "site", "/srv/www"),
      ProvisionStep::reboot(),
  };
  ASSERT_EQ(steps.size(), expected.size());
  for (std::size_t i = 0; i < steps.size(); ++i) {
    EXPECT_EQ(steps[i].describe(), expected[i].describe());
    // What decides which layer is built and reused.
    EXPECT_EQ(vmfest::detail::provision_step_key(steps[i], i + 1),
              vmfest::detail::provision_step_key(expected[i], i + 1));
  }
}

TEST_F(StepFile, AnEmptyFileIsNoSteps) {
  EXPECT_TRUE(read_step_file(write_steps("# nothing yet\n\n")).empty());
}

TEST_F(StepFile, MalformedLinesNameFileLineAndTheAllowedVerbs) {
  const std::string where = (root_ / "steps.txt").string();
  const std::string allowed = "`run CMD...`, `upload SRC DST` or `reboot`";
  for (const auto& [text, line, problem] : std::vector<std::tuple<std::string, int, std::string>>{
           {"run true\ncopy a b\n", 2, "unknown step 'copy'"},
           {"run\n", 1, "`run` needs a command"},
           {"\n\nupload site\n", 3, "got 1 word"},
           {"upload site /a /b\n", 1, "got 3 words"},
           {"reboot now\n", 1, "`reboot` takes no argument, got 'now'"},
           {"RUN true\n", 1, "unknown step 'RUN'"},
       }) {
    const std::string message = refusal(text);
    EXPECT_EQ(message.rfind(where + ":" + std::to_string(line) + ": ", 0), 0U)
        << text << " -> " << message;
    EXPECT_NE(message.find(problem), std::string::npos) << text << " -> " << message;
    EXPECT_NE(message.find(allowed), std::string::npos) << message;
  }
}

TEST_F(StepFile, AMissingUploadSourceIsNamed) {
  const std::string message = refusal("run true\nupload missing.txt /tmp/x\n");
  EXPECT_NE(message.find(":2: the upload source 'missing.txt' (" +
                         (root_ / "missing.txt").string() + ") does not exist"),
            std::string::npos)
      << message;
}

TEST_F(StepFile, AMissingFileIsNamed) {
  try {
    read_step_file(root_ / "nowhere.txt");
    FAIL() << "no error for a missing step file";
  } catch (const vmfest::InvalidArgument& error) {
    EXPECT_NE(std::string(error.what())
                  .find("cannot read the step file " + (root_ / "nowhere.txt").string()),
              std::string::npos)
        << error.what();
  }
}

}  // namespace
