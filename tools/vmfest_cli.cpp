// `vmfest`: models and instances from the shell. Instances made here are detached: no process owns
// them, they live until `vmfest destroy`, and `vmfest reap` leaves them alone.
#include "vmfest_cli.h"

#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "vmfest/error.h"
#include "vmfest/instance.h"
#include "vmfest_cli_progress.h"

namespace vmfest::cli {
namespace {

constexpr const char* kFooter =
    R"(Exit status: 0 on success, 1 when vmfest could not do it, 2 for a malformed command line
or an unusable argument (name, profile, ...). `vmfest ssh NAME -- CMD` exits with CMD's status,
and 255 when vmfest itself fails (usage errors included), as ssh(1) does. `vmfest run MODEL --
CMD` exits with CMD's status, 255 when vmfest fails, 2 for a usage error, 128+N after signal N.
Models and instances live in $VMFEST_HOME (default ~/.local/share/vmfest).)";

// A subcommand that takes an instance name and does one thing to it.
CLI::App* add_instance_action(CLI::App& app, Command& command, const std::string& verb,
                              const std::string& help,
                              std::function<void(Instance&, const std::string&)> act) {
  auto name = std::make_shared<std::string>();
  CLI::App* sub = app.add_subcommand(verb, help);
  sub->add_option("name", *name, "the instance")->required();
  sub->callback([&command, name, act = std::move(act)] {
    command.run = [name, act] {
      Instance instance = Instance::open(*name);
      act(instance, *name);
      return 0;
    };
  });
  return sub;
}

// Profile::named(), with the command line's way to a custom profile in its error.
Profile command_line_profile(const std::string& name) {
  try {
    return Profile::named(name);
  } catch (const InvalidArgument& error) {
    throw InvalidArgument(
        fmt::format("{}; on the command line: --memory MIB [--cpus N]", error.what()));
  }
}

struct CreateArguments {
  InstanceRequest request;
  std::string profile = "micro";
  int memory_mib = 0;
  int cpus = 0;
  bool cold = false;
};

void add_create_command(CLI::App& app, Command& command) {
  auto args = std::make_shared<CreateArguments>();
  CLI::App* sub = app.add_subcommand(
      "create",
      "Clone a model into a new, stopped instance and print its name. It is detached: it "
      "lives until `vmfest destroy`");
  sub->add_option("name", args->request.name,
                  "1-64 characters of [A-Za-z0-9._-] (default: MODEL-<random>)");
  sub->add_option("-m,--model", args->request.model, "the model to clone (`vmfest models`)")
      ->required();
  CLI::Option* profile = sub->add_option("-p,--profile", args->profile,
                                         "micro (256 MiB, 1 CPU), small (512 MiB, 1), "
                                         "medium (1024 MiB, 2) or large (2048 MiB, 2)")
                             ->capture_default_str();
  CLI::Option* memory =
      sub->add_option("--memory", args->memory_mib, "custom profile: memory in MiB (64-65536)")
          ->excludes(profile);
  sub->add_option("--cpus", args->cpus, "custom profile: CPUs (1-64)")
      ->excludes(profile)
      ->needs(memory);
  sub->add_flag("--permanent", args->request.permanent,
                "own full copy of the disk, kept across power cycles (default: copy-on-write "
                "clone)");
  sub->add_flag("--cold", args->cold,
                "boot from scratch on start, instead of resuming the model's warm image (a booted "
                "guest saved once; VMFEST_WARM=0 turns warm starts off everywhere)");
  sub->callback([&command, args] {
    command.run = [args] {
      InstanceRequest request = args->request;
      request.profile = args->memory_mib != 0
                            ? Profile::custom(args->memory_mib, args->cpus != 0 ? args->cpus : 1)
                            : command_line_profile(args->profile);
      request.detached = true;
      request.warm = !args->cold;
      Instance instance = Instance::create(request);
      fmt::print("{}\n", instance.name());
      return 0;
    };
  });
}

void add_power_down_command(CLI::App& app, Command& command) {
  auto grace_seconds = std::make_shared<int>(30);
  CLI::App* sub = add_instance_action(
      app, command, "power-down",
      "Press the ACPI power button and wait for the guest to power off; stop it hard after "
      "--grace seconds",
      [grace_seconds](Instance& instance, const std::string& name) {
        instance.power_down(std::chrono::seconds(*grace_seconds));
        fmt::print("instance '{}' is powered down\n", name);
      });
  sub->add_option("--grace", *grace_seconds, "seconds to wait before a hard stop")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
}

void add_destroy_command(CLI::App& app, Command& command) {
  auto name = std::make_shared<std::string>();
  auto force = std::make_shared<bool>(false);
  CLI::App* sub = app.add_subcommand(
      "destroy", "Stop an instance if it runs and remove all its files (permanent ones too)");
  sub->add_option("name", *name, "the instance")->required();
  sub->add_flag("--force", *force,
                "remove its files even when its record cannot be read or its hypervisor cannot be "
                "reached (a VM that hypervisor still runs is left to it)");
  sub->callback([&command, name, force] {
    command.run = [name, force] {
      if (*force) {
        force_destroy_instance(*name);
      } else {
        Instance::open(*name).destroy();
      }
      fmt::print("instance '{}' is destroyed\n", *name);
      return 0;
    };
  });
}

void add_reap_command(CLI::App& app, Command& command) {
  auto options = std::make_shared<ReapOptions>();
  CLI::App* sub = app.add_subcommand(
      "reap",
      "Kill and remove instances whose owner process died (detached and permanent ones "
      "are left alone)");
  sub->add_flag(
      "--force", options->force,
      "every instance no living process owns, detached and permanent ones too, also "
      "when its record cannot be read or its hypervisor cannot be reached: a clean slate");
  sub->callback([&command, options] {
    command.run = [options] {
      auto reaped = reap_leaked_instances(Home::from_environment(), *options);
      if (reaped.empty()) fmt::print("no instance to reap\n");
      for (const auto& name : reaped) fmt::print("reaped instance '{}'\n", name);
      return 0;
    };
  });
}

void add_commit_command(CLI::App& app, Command& command) {
  auto instance_name = std::make_shared<std::string>();
  auto model_name = std::make_shared<std::string>();
  CLI::App* sub = app.add_subcommand(
      "commit",
      "Register an instance's disk as it is now as a new model (a running guest is synced and "
      "paused for the copy)");
  sub->add_option("instance", *instance_name, "the instance")->required();
  sub->add_option("model", *model_name, "the new model's name")->required();
  sub->callback([&command, instance_name, model_name] {
    command.run = [instance_name, model_name] {
      Instance instance = Instance::open(*instance_name);
      const Model model = instance.save_as_model(*model_name);
      fmt::print("instance '{}' is saved as model '{}': {}\n", *instance_name, model.name,
                 model.directory.string());
      return 0;
    };
  });
}

}  // namespace

void add_instance_commands(CLI::App& app, Command& command) {
  add_commit_command(app, command);
  add_create_command(app, command);
  add_instance_action(app, command, "start", "Boot an instance and wait until SSH works",
                      [](Instance& instance, const std::string& name) {
                        {
                          TerminalProgress progress(instance);
                          instance.start();
                        }
                        InstanceInfo info = instance.info();
                        fmt::print("instance '{}' is running (ssh {}:{}, ready in {:.1f} s)\n",
                                   name, info.ssh.host, info.ssh.port, instance.boot_seconds());
                      });
  add_instance_action(app, command, "pause", "Freeze a running instance",
                      [](Instance& instance, const std::string& name) {
                        instance.pause();
                        fmt::print("instance '{}' is paused\n", name);
                      });
  add_instance_action(app, command, "resume", "Continue a paused instance",
                      [](Instance& instance, const std::string& name) {
                        instance.resume();
                        fmt::print("instance '{}' is running\n", name);
                      });
  add_power_down_command(app, command);
  add_destroy_command(app, command);
  add_reap_command(app, command);
}

namespace {

void configure_logging(bool verbose) {
  // Standard output is for results (names, listings, a remote command's output), logs go to stderr.
  auto logger = spdlog::stderr_color_mt("vmfest");
  logger->set_pattern("%^%l%$: %v");
  // Without -v: the level every vmfest program has, info or VMFEST_LOG's (set before main).
  logger->set_level(verbose ? spdlog::level::debug : spdlog::get_level());
  spdlog::set_default_logger(logger);
}

bool command_given(const CLI::App& app, const std::string& name) {
  const auto parsed = app.get_subcommands();
  return !parsed.empty() && parsed.front()->get_name() == name;
}

// The commands that take the guest's command after `--`.
bool takes_guest_command(const CLI::App& app) {
  return command_given(app, "ssh") || command_given(app, "run");
}

// CLI11's message, made specific where it would mislead.
std::string usage_problem(const CLI::App& app, const CLI::ParseError& error) {
  // CLI11 says "A subcommand is required" for a misspelt one.
  if (app.get_subcommands().empty() && !app.remaining().empty()) {
    return fmt::format("unknown command '{}'", app.remaining().front());
  }
  if (dynamic_cast<const CLI::ExtrasError*>(&error) != nullptr && takes_guest_command(app)) {
    return fmt::format("{}; put the guest's command after --: vmfest {} -- CMD...", error.what(),
                       command_given(app, "ssh") ? "ssh NAME" : "run MODEL");
  }
  return error.what();
}

void print_error(const std::string& message) {
  std::fflush(stdout);
  fmt::print(stderr, "vmfest: error: {}\n", message);
}

}  // namespace
}  // namespace vmfest::cli

int main(int argc, char** argv) {
  using namespace vmfest::cli;
  CLI::App app("vmfest: disposable VMs for integration tests (models, instances, SSH)", "vmfest");
  app.require_subcommand(1);
  app.fallthrough();  // -v also after the subcommand
  app.footer(kFooter);
  bool verbose = false;
  app.add_flag("-v,--verbose", verbose, "debug logging on stderr");
  app.set_version_flag("--version", "vmfest " VMFEST_VERSION);

  // Everything after the first `--` is the command `vmfest ssh`/`run` runs in the guest, kept away
  // from CLI11 (which would take "-l" for an option of ours and "[a,b]" for a list).
  char** const end = argv + argc;
  char** const separator =
      std::find_if(argv + 1, end, [](const char* word) { return std::string_view(word) == "--"; });
  const std::vector<std::string> remote_command(separator == end ? end : separator + 1, end);

  Command command;
  add_model_commands(app, command);
  add_instance_commands(app, command);
  add_list_command(app, command);
  add_image_commands(app, command);
  add_report_command(app, command);
  add_ssh_command(app, command, remote_command);
  add_run_command(app, command, remote_command);
  add_copy_command(app, command);
  add_console_commands(app, command);
  add_doctor_command(app, command);

  try {
    app.parse(static_cast<int>(separator - argv), argv);
    if (separator != end && !takes_guest_command(app)) {
      throw CLI::ExtrasError(
          "only `vmfest ssh NAME -- CMD...` and `vmfest run MODEL -- CMD...` take arguments "
          "after --",
          CLI::ExitCodes::ExtrasError);
    }
  } catch (const CLI::ParseError& error) {
    if (error.get_exit_code() == 0) return app.exit(error);  // --help
    print_error(fmt::format("{}\nRun `vmfest --help` or `vmfest COMMAND --help` for usage.",
                            usage_problem(app, error)));
    return command_given(app, "ssh") ? kExitSshFailure : kExitUsage;
  }
  configure_logging(verbose);
  try {
    return command.run();
  } catch (const vmfest::InvalidArgument& error) {
    print_error(error.what());
    return command.usage_status;
  } catch (const std::exception& error) {
    print_error(error.what());
    return command.failure_status;
  }
}
