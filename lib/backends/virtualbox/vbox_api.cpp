#include "vbox_api.h"

#include <algorithm>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "result_codes.h"

namespace vmfest::detail::virtualbox {
using P = vboxBindingProxy;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

namespace {

constexpr milliseconds kProgressPoll{1000};

bool has_code(const RuntimeFaultError& error, std::int32_t code) {
  return error.result_code() == code;
}

}  // namespace

std::optional<std::string> VirtualBoxApi::find_machine(const std::string& name_or_id) {
  _vbox__IVirtualBox_USCOREfindMachine request;
  request._USCOREthis = session_.virtualbox();
  request.nameOrId = name_or_id;
  try {
    return session_.call("IVirtualBox_findMachine", &P::IVirtualBox_USCOREfindMachine, request)
        .returnval;
  } catch (const RuntimeFaultError& error) {
    if (has_code(error, result::kObjectNotFound)) return std::nullopt;
    throw;
  }
}

std::string VirtualBoxApi::create_machine(const std::string& settings_file, const std::string& name,
                                          const std::string& group) {
  const ApiVersion version = session_.version();
  _vbox__IVirtualBox_USCOREcreateMachine request;
  request._USCOREthis = session_.virtualbox();
  request.settingsFile = settings_file;
  request.name = name;
  request.groups = {group};
  // 7.1 named the x86 guest types after their architecture; the old names are 6.1's and 7.0's.
  request.osTypeId = version == ApiVersion::V7_1 ? "Linux_x64" : "Linux_64";
  // 7.0 added disk encryption (empty: none), 7.1 the platform architecture.
  std::string no_encryption;
  vbox__PlatformArchitecture x86 = vbox__PlatformArchitecture::x86;
  if (version != ApiVersion::V6_1) {
    request.cipher = &no_encryption;
    request.passwordId = &no_encryption;
    request.password = &no_encryption;
  }
  if (version == ApiVersion::V7_1) request.platform = &x86;
  return session_.call("IVirtualBox_createMachine", &P::IVirtualBox_USCOREcreateMachine, request)
      .returnval;
}

void VirtualBoxApi::register_machine(const std::string& machine) {
  _vbox__IVirtualBox_USCOREregisterMachine request;
  request._USCOREthis = session_.virtualbox();
  request.machine = machine;
  session_.call("IVirtualBox_registerMachine", &P::IVirtualBox_USCOREregisterMachine, request);
}

std::string VirtualBoxApi::open_medium(const std::string& location, vbox__DeviceType type,
                                       vbox__AccessMode access) {
  _vbox__IVirtualBox_USCOREopenMedium request;
  request._USCOREthis = session_.virtualbox();
  request.location = location;
  request.deviceType = type;
  request.accessMode = access;
  request.forceNewUuid = false;
  return session_.call("IVirtualBox_openMedium", &P::IVirtualBox_USCOREopenMedium, request)
      .returnval;
}

vbox__MediumType VirtualBoxApi::medium_type(const std::string& medium) {
  return session_.call_on(medium, "IMedium_getType", &P::IMedium_USCOREgetType).returnval;
}

void VirtualBoxApi::set_medium_type(const std::string& medium, vbox__MediumType type) {
  _vbox__IMedium_USCOREsetType request;
  request._USCOREthis = medium;
  request.type = type;
  session_.call("IMedium_setType", &P::IMedium_USCOREsetType, request);
}

void VirtualBoxApi::set_medium_description(const std::string& medium,
                                           const std::string& description) {
  _vbox__IMedium_USCOREsetDescription request;
  request._USCOREthis = medium;
  request.description = description;
  session_.call("IMedium_setDescription", &P::IMedium_USCOREsetDescription, request);
}

void VirtualBoxApi::close_medium(const std::string& medium) {
  session_.call_on(medium, "IMedium_close", &P::IMedium_USCOREclose);
}

std::string VirtualBoxApi::machine_id(const std::string& machine) {
  return session_.call_on(machine, "IMachine_getId", &P::IMachine_USCOREgetId).returnval;
}

vbox__MachineState VirtualBoxApi::machine_state(const std::string& machine) {
  return session_.call_on(machine, "IMachine_getState", &P::IMachine_USCOREgetState).returnval;
}

void VirtualBoxApi::set_memory_mib(const std::string& machine, int memory_mib) {
  _vbox__IMachine_USCOREsetMemorySize request;
  request._USCOREthis = machine;
  request.memorySize = static_cast<unsigned>(memory_mib);
  session_.call("IMachine_setMemorySize", &P::IMachine_USCOREsetMemorySize, request);
}

void VirtualBoxApi::set_cpus(const std::string& machine, int cpus) {
  _vbox__IMachine_USCOREsetCPUCount request;
  request._USCOREthis = machine;
  request.CPUCount = static_cast<unsigned>(cpus);
  session_.call("IMachine_setCPUCount", &P::IMachine_USCOREsetCPUCount, request);
}

void VirtualBoxApi::save_settings(const std::string& machine) {
  session_.call_on(machine, "IMachine_saveSettings", &P::IMachine_USCOREsaveSettings);
}

void VirtualBoxApi::add_storage_controller(const std::string& machine, const std::string& name,
                                           vbox__StorageBus bus) {
  _vbox__IMachine_USCOREaddStorageController request;
  request._USCOREthis = machine;
  request.name = name;
  request.connectionType = bus;
  session_.call("IMachine_addStorageController", &P::IMachine_USCOREaddStorageController, request);
}

void VirtualBoxApi::attach_device(const std::string& machine, const std::string& controller,
                                  int port, vbox__DeviceType type, const std::string& medium) {
  _vbox__IMachine_USCOREattachDevice request;
  request._USCOREthis = machine;
  request.name = controller;
  request.controllerPort = port;
  request.device = 0;
  request.type = type;
  request.medium = medium;
  session_.call("IMachine_attachDevice", &P::IMachine_USCOREattachDevice, request);
}

std::string VirtualBoxApi::network_adapter(const std::string& machine, unsigned slot) {
  _vbox__IMachine_USCOREgetNetworkAdapter request;
  request._USCOREthis = machine;
  request.slot = slot;
  return session_.call("IMachine_getNetworkAdapter", &P::IMachine_USCOREgetNetworkAdapter, request)
      .returnval;
}

std::string VirtualBoxApi::serial_port(const std::string& machine, unsigned slot) {
  _vbox__IMachine_USCOREgetSerialPort request;
  request._USCOREthis = machine;
  request.slot = slot;
  return session_.call("IMachine_getSerialPort", &P::IMachine_USCOREgetSerialPort, request)
      .returnval;
}

void VirtualBoxApi::launch_headless(const std::string& machine, const std::string& session,
                                    milliseconds timeout) {
  _vbox__IMachine_USCORElaunchVMProcess request;
  request._USCOREthis = machine;
  request.session = session;
  request.name = "headless";
  std::string progress =
      session_.call("IMachine_launchVMProcess", &P::IMachine_USCORElaunchVMProcess, request)
          .returnval;
  wait_for(progress, "starting the VM", timeout);
}

std::vector<std::string> VirtualBoxApi::unregister(const std::string& machine) {
  _vbox__IMachine_USCOREunregister request;
  request._USCOREthis = machine;
  request.cleanupMode = vbox__CleanupMode::DetachAllReturnHardDisksOnly;
  return session_.call("IMachine_unregister", &P::IMachine_USCOREunregister, request).returnval;
}

void VirtualBoxApi::delete_config(const std::string& machine, const std::vector<std::string>& media,
                                  milliseconds timeout) {
  _vbox__IMachine_USCOREdeleteConfig request;
  request._USCOREthis = machine;
  request.media = media;
  std::string progress =
      session_.call("IMachine_deleteConfig", &P::IMachine_USCOREdeleteConfig, request).returnval;
  wait_for(progress, "deleting the VM's files", timeout);
}

void VirtualBoxApi::use_nat(const std::string& adapter, vbox__NetworkAdapterType type) {
  _vbox__INetworkAdapter_USCOREsetAttachmentType attachment;
  attachment._USCOREthis = adapter;
  attachment.attachmentType = vbox__NetworkAttachmentType::NAT;
  session_.call("INetworkAdapter_setAttachmentType", &P::INetworkAdapter_USCOREsetAttachmentType,
                attachment);
  _vbox__INetworkAdapter_USCOREsetAdapterType model;
  model._USCOREthis = adapter;
  model.adapterType = type;
  session_.call("INetworkAdapter_setAdapterType", &P::INetworkAdapter_USCOREsetAdapterType, model);
  _vbox__INetworkAdapter_USCOREsetEnabled enabled;
  enabled._USCOREthis = adapter;
  enabled.enabled = true;
  session_.call("INetworkAdapter_setEnabled", &P::INetworkAdapter_USCOREsetEnabled, enabled);
}

void VirtualBoxApi::forward_tcp(const std::string& adapter, const std::string& name,
                                const std::string& host_ip, int host_port, int guest_port) {
  std::string nat =
      session_
          .call_on(adapter, "INetworkAdapter_getNATEngine", &P::INetworkAdapter_USCOREgetNATEngine)
          .returnval;
  // Rules read "name,protocol,host ip,host port,guest ip,guest port".
  auto rules =
      session_.call_on(nat, "INATEngine_getRedirects", &P::INATEngine_USCOREgetRedirects).returnval;
  if (std::any_of(rules.begin(), rules.end(), [&](const std::string& rule) {
        return rule.substr(0, rule.find(',')) == name;
      })) {
    _vbox__INATEngine_USCOREremoveRedirect remove;
    remove._USCOREthis = nat;
    remove.name = name;
    session_.call("INATEngine_removeRedirect", &P::INATEngine_USCOREremoveRedirect, remove);
  }
  _vbox__INATEngine_USCOREaddRedirect add;
  add._USCOREthis = nat;
  add.name = name;
  add.proto = vbox__NATProtocol::TCP;
  add.hostIP = host_ip;
  add.hostPort = static_cast<unsigned short>(host_port);
  add.guestPort = static_cast<unsigned short>(guest_port);
  session_.call("INATEngine_addRedirect", &P::INATEngine_USCOREaddRedirect, add);
}

void VirtualBoxApi::log_serial_to_file(const std::string& port, const std::string& path) {
  // The raw-file mode needs its path first.
  _vbox__ISerialPort_USCOREsetPath file;
  file._USCOREthis = port;
  file.path = path;
  session_.call("ISerialPort_setPath", &P::ISerialPort_USCOREsetPath, file);
  _vbox__ISerialPort_USCOREsetHostMode mode;
  mode._USCOREthis = port;
  mode.hostMode = vbox__PortMode::RawFile;
  session_.call("ISerialPort_setHostMode", &P::ISerialPort_USCOREsetHostMode, mode);
  _vbox__ISerialPort_USCOREsetEnabled enabled;
  enabled._USCOREthis = port;
  enabled.enabled = true;
  session_.call("ISerialPort_setEnabled", &P::ISerialPort_USCOREsetEnabled, enabled);
}

std::string VirtualBoxApi::new_session() {
  _vbox__IWebsessionManager_USCOREgetSessionObject request;
  request.refIVirtualBox = session_.virtualbox();
  return session_
      .call("IWebsessionManager_getSessionObject", &P::IWebsessionManager_USCOREgetSessionObject,
            request)
      .returnval;
}

void VirtualBoxApi::lock(const std::string& machine, const std::string& session,
                         vbox__LockType type) {
  _vbox__IMachine_USCORElockMachine request;
  request._USCOREthis = machine;
  request.session = session;
  request.lockType = type;
  session_.call("IMachine_lockMachine", &P::IMachine_USCORElockMachine, request);
}

void VirtualBoxApi::unlock(const std::string& session) {
  session_.call_on(session, "ISession_unlockMachine", &P::ISession_USCOREunlockMachine);
}

std::string VirtualBoxApi::session_machine(const std::string& session) {
  return session_.call_on(session, "ISession_getMachine", &P::ISession_USCOREgetMachine).returnval;
}

std::string VirtualBoxApi::session_console(const std::string& session) {
  return session_.call_on(session, "ISession_getConsole", &P::ISession_USCOREgetConsole).returnval;
}

void VirtualBoxApi::pause(const std::string& console) {
  session_.call_on(console, "IConsole_pause", &P::IConsole_USCOREpause);
}

void VirtualBoxApi::resume(const std::string& console) {
  session_.call_on(console, "IConsole_resume", &P::IConsole_USCOREresume);
}

void VirtualBoxApi::press_power_button(const std::string& console) {
  session_.call_on(console, "IConsole_powerButton", &P::IConsole_USCOREpowerButton);
}

void VirtualBoxApi::power_off(const std::string& console, milliseconds timeout) {
  std::string progress =
      session_.call_on(console, "IConsole_powerDown", &P::IConsole_USCOREpowerDown).returnval;
  wait_for(progress, "powering the VM off", timeout);
}

void VirtualBoxApi::wait_for(const std::string& progress, const char* what, milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (!session_.call_on(progress, "IProgress_getCompleted", &P::IProgress_USCOREgetCompleted)
              .returnval) {
    const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) {
      throw BackendError(
          session_.in_context(fmt::format("VirtualBox at {}: {} did not finish within {} s",
                                          session_.url(), what, timeout.count() / 1000)));
    }
    _vbox__IProgress_USCOREwaitForCompletion wait;
    wait._USCOREthis = progress;
    wait.timeout = static_cast<int>(std::min(left, kProgressPoll).count());
    session_.call("IProgress_waitForCompletion", &P::IProgress_USCOREwaitForCompletion, wait);
  }
  const int code =
      session_.call_on(progress, "IProgress_getResultCode", &P::IProgress_USCOREgetResultCode)
          .returnval;
  if (code == 0) return;
  std::string info =
      session_.call_on(progress, "IProgress_getErrorInfo", &P::IProgress_USCOREgetErrorInfo)
          .returnval;
  std::string text = info.empty() ? std::string("no details")
                                  : session_
                                        .call_on(info, "IVirtualBoxErrorInfo_getText",
                                                 &P::IVirtualBoxErrorInfo_USCOREgetText)
                                        .returnval;
  throw RuntimeFaultError(
      session_.in_context(fmt::format("VirtualBox at {}: {} failed: {} [{}]", session_.url(), what,
                                      text, result_code_name(code))),
      what, code, text);
}

MachineLock::MachineLock(VirtualBoxApi& api, const std::string& machine, vbox__LockType type,
                         const std::string& instance)
    : api_(api), session_(api.new_session()), instance_(instance) {
  try {
    api_.lock(machine, session_, type);
  } catch (const RuntimeFaultError& error) {
    if (error.result_code() != result::kInvalidObjectState) throw;
    throw MachineLockedError(fmt::format(
        "instance '{}': its VirtualBox machine is locked by another session ({}); close the "
        "VirtualBox Manager window, VBoxManage command or other process that holds it and retry",
        instance, error.text()));
  }
}

MachineLock::~MachineLock() {
  try {
    api_.unlock(session_);
  } catch (const std::exception& error) {
    // Logoff, which follows, ends the session and with it the lock.
    spdlog::debug("vmfest: unlocking the VirtualBox machine of instance {} failed: {}", instance_,
                  error.what());
  }
}

std::string MachineLock::console() {
  std::string console = api_.session_console(session_);
  if (console.empty()) {
    throw StateError(
        fmt::format("instance '{}' has no running VirtualBox VM to control", instance_));
  }
  return console;
}

}  // namespace vmfest::detail::virtualbox
