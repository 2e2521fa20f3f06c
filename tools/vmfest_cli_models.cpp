// `vmfest setup-model`, `vmfest models`, `vmfest rm-model`.
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "vmfest/model.h"
#include "vmfest_cli.h"
#include "vmfest_cli_table.h"

namespace vmfest::cli {
namespace {

std::string mebibytes(std::uint64_t bytes) {
  return fmt::format("{:.1f} MiB", static_cast<double>(bytes) / (1024.0 * 1024.0));
}

struct SetupArguments {
  std::string source;
  SetupOptions options;
};

void add_setup_command(CLI::App& app, Command& command) {
  auto args = std::make_shared<SetupArguments>();
  CLI::App* sub = app.add_subcommand(
      "setup-model",
      "Install a model from a URL (http, https, file) or a local path: a qcow2, raw, vdi or vmdk "
      "disk image (optionally gzip-compressed) or a model bundle (folder or tar holding "
      "vmfest-model.json) or a Vagrant box (libvirt provider or virtualbox provider). Interrupted "
      "downloads resume");
  sub->add_option("source", args->source, "URL or path of the image or bundle")->required();
  sub->add_option("-n,--name", args->options.name,
                  "register it under this name (default: from the bundle or the file name)");
  sub->add_option("--sha256", args->options.sha256,
                  "expected SHA-256 of the file as served (64 hex digits; of the compressed bytes "
                  "for a .gz)");
  sub->add_flag("--replace", args->options.replace,
                "install again even when a model of that name exists");
  sub->add_option("--ssh-user", args->options.ssh_user,
                  "the login vmfest uses (default: what a bundle states, else 'vmfest', which each "
                  "instance's cloud-init seed creates with passwordless sudo)");
  auto* key = sub->add_option("--ssh-key", args->options.ssh_key,
                              "the image's published private key (an image without cloud-init, "
                              "such as a Vagrant box): vmfest logs in with it once per instance, "
                              "then with the instance's own key");
  sub->add_option("--ssh-password-file", args->options.ssh_password_file,
                  "a file whose first line is the image's published password, used like "
                  "--ssh-key")
      ->excludes(key);
  sub->callback([&command, args] {
    command.run = [args] {
      Model model = setup_model(args->source, args->options);
      fmt::print("model '{}' is ready ({}, {}, SSH user {}{}): {}\n", model.name, model.format,
                 mebibytes(model.size_bytes), model.ssh_user,
                 model.published_login.empty() ? ""
                 : model.published_login.password_file.empty()
                     ? ", first login by published key"
                     : ", first login by published password",
                 model.directory.string());
      return 0;
    };
  });
}

void add_list_models_command(CLI::App& app, Command& command) {
  CLI::App* sub = app.add_subcommand("models", "List the installed models");
  sub->callback([&command] {
    command.run = [] {
      Table table({"NAME", "FORMAT", "SIZE", "BOOT", "USER", "SOURCE"});
      for (const Model& model : ModelRegistry().list()) {
        table.add({model.name, model.format, mebibytes(model.size_bytes),
                   model.boot.kind == BootSpec::Kind::Kernel ? "kernel" : "disk", model.ssh_user,
                   model.source});
      }
      table.print();
      return 0;
    };
  });
}

void add_remove_model_command(CLI::App& app, Command& command) {
  auto name = std::make_shared<std::string>();
  auto force = std::make_shared<bool>(false);
  CLI::App* sub = app.add_subcommand(
      "rm-model", "Remove an installed model (refused while instances of it exist)");
  sub->add_option("name", *name, "the model")->required();
  sub->add_flag("--force", *force, "remove it even when its model.json cannot be read");
  sub->callback([&command, name, force] {
    command.run = [name, force] {
      if (*force) {
        ModelRegistry().force_remove(*name);
      } else {
        ModelRegistry().remove(*name);
      }
      fmt::print("model '{}' is removed\n", *name);
      return 0;
    };
  });
}

}  // namespace

void add_model_commands(CLI::App& app, Command& command) {
  add_setup_command(app, command);
  add_list_models_command(app, command);
  add_remove_model_command(app, command);
}

}  // namespace vmfest::cli
