// The state of the fake VirtualBox and the vboxwebsrv operations on it: websessions and their
// managed object references, machines (settings, session locks, states), media (MultiAttach and
// its differencing images), NAT rules, serial ports, progress objects. It enforces VirtualBox's
// rules and answers with the faults VirtualBox gives; a launched machine runs as a QEMU guest.
#pragma once

#include <array>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "guest.h"
#include "soapvboxBindingService.h"

namespace vmfest::vbox_double {

struct WorldOptions {
  std::string api;   // "6.1", "7.0", "7.1"
  std::string user;  // empty: any logon is accepted (websrvauthlibrary null)
  std::string password;
  // vboxwebsrv's --timeout: a websession idle this long is gone (and its locks with it).
  std::chrono::seconds session_timeout{300};
};

// A fault to answer with: a RuntimeFault (VirtualBox's result code) or an InvalidObjectFault.
struct Fault {
  std::int32_t code = 0;  // 0: InvalidObjectFault
  std::string text;
  std::string bad_object;
};
[[noreturn]] void fail(std::int32_t code, std::string text);
[[noreturn]] void invalid_object(const std::string& ref);
std::string new_uuid();
const char* state_name(vbox__MachineState state);
// Whether the file is in a format VirtualBox opens as `device` (VDI, ISO 9660).
bool has_format(const std::filesystem::path& file, vbox__DeviceType device);

struct Medium {
  std::string uuid;
  std::filesystem::path location;  // the image; for a differencing image, its storage folder
  vbox__DeviceType device = vbox__DeviceType::HardDisk;
  vbox__MediumType type = vbox__MediumType::Normal;
  std::string description;
  std::shared_ptr<Medium> parent;  // the base of a differencing image
  int children = 0;
  std::vector<std::string> machines;  // UUIDs of the machines it is attached to
  bool closed = false;
};

struct Attachment {
  std::string controller;
  int port = 0;
  int device = 0;
  vbox__DeviceType type = vbox__DeviceType::Null;
  std::shared_ptr<Medium> medium;
};

struct NatRule {
  std::string name;
  vbox__NATProtocol protocol = vbox__NATProtocol::TCP;
  std::string host_ip;
  int host_port = 0;
  std::string guest_ip;
  int guest_port = 0;
};

struct NetworkAdapter {
  bool enabled = false;
  vbox__NetworkAttachmentType attachment = vbox__NetworkAttachmentType::Null;
  vbox__NetworkAdapterType type = vbox__NetworkAdapterType::Am79C973;
  std::vector<NatRule> rules;
};

struct SerialPort {
  bool enabled = false;
  vbox__PortMode mode = vbox__PortMode::Disconnected;
  std::string path;
};

struct Settings {
  unsigned memory_mib = 128;
  unsigned cpus = 1;
  std::vector<std::pair<std::string, vbox__StorageBus>> controllers;
  std::vector<Attachment> attachments;
  std::array<NetworkAdapter, 8> adapters;
  std::array<SerialPort, 4> serial_ports;
};

struct Machine;

struct Session {
  enum class Lock { None, Write, Shared, Launch };
  Lock lock = Lock::None;
  bool spawning = false;  // launchVMProcess in progress
  std::shared_ptr<Machine> machine;
  std::optional<Settings> edits;  // a write lock's uncommitted settings
};

struct Machine {
  std::string uuid;
  std::string name;
  std::filesystem::path settings_file;
  std::string os_type;
  std::vector<std::string> groups;
  bool registered = false;
  Settings settings;
  vbox__MachineState state = vbox__MachineState::PoweredOff;
  std::shared_ptr<Session> writer;              // holds the write lock
  std::vector<std::weak_ptr<Session>> sharers;  // shared locks and the launching session
  std::unique_ptr<Guest> guest;                 // while the VM runs
};

struct Progress {
  std::mutex mutex;
  std::condition_variable done;
  bool completed = false;
  std::int32_t result = 0;
  std::string error;
  void complete(std::int32_t code, std::string text);
};

// What a managed object reference stands for.
struct Object {
  enum class Kind {
    VirtualBox,
    Session,
    Machine,
    Medium,
    StorageController,
    NetworkAdapter,
    NATEngine,
    SerialPort,
    Console,
    Progress,
    ErrorInfo
  };
  Kind kind = Kind::VirtualBox;
  std::shared_ptr<Session> session;  // a Session, or the session a machine view came from
  std::shared_ptr<Machine> machine;
  std::shared_ptr<Medium> medium;
  std::shared_ptr<Progress> progress;
  unsigned slot = 0;
  std::int32_t code = 0;  // ErrorInfo
  std::string text;       // ErrorInfo
  bool operator==(const Object& other) const;
};

struct Websession {
  std::uint64_t id = 0;
  std::chrono::steady_clock::time_point last_used = std::chrono::steady_clock::now();
  std::uint64_t next_object = 1;
  std::map<std::string, Object> objects;
};

class World {
 public:
  explicit World(WorldOptions options);
  ~World();  // stops every guest
  World(const World&) = delete;
  World& operator=(const World&) = delete;

  const WorldOptions& options() const { return options_; }

 private:
  friend class Service;

  // ---- references (call with mutex_ held)
  Object& resolve(const std::string& ref, Object::Kind kind);
  // The websession a reference belongs to (InvalidObjectFault when it is unknown or expired).
  Websession& websession_of(const std::string& ref);
  void end(Websession& websession);
  std::string reference(Websession& websession, Object object);

  // ---- rules shared by several operations
  Settings& readable(const Object& view);
  Settings& writable(const Object& view);
  void refresh(Machine& machine);
  void vm_stopped(Machine& machine);
  void unlock(const std::shared_ptr<Session>& session);
  bool locked(const Machine& machine) const;
  void save(const Machine& machine, const Settings& settings) const;
  void detach_all(Machine& machine, Settings& settings);
  void delete_storage(Medium& medium);
  std::shared_ptr<Machine> find(const std::string& name_or_id) const;
  // An IVirtualBoxErrorInfo for `fault` in the caller's websession ("" without one).
  std::string error_info(const std::string& caller, const Fault& fault);
  void run_worker(std::function<void()> work);

  WorldOptions options_;
  std::mutex mutex_;
  std::uint64_t next_websession_ = 0x5ee51017;
  std::map<std::uint64_t, Websession> websessions_;
  std::vector<std::shared_ptr<Machine>> machines_;  // created, registered or not, not deleted
  std::vector<std::shared_ptr<Medium>> media_;      // open media
  std::vector<std::thread> workers_;
};

// One connection's SOAP service: the generated skeleton's operations, answered from the World.
class Service : public vboxBindingService {
 public:
  explicit Service(World& world);
  vboxBindingService* copy() override { return new Service(world_); }

  // Answers the message with a Client fault saying `reason` instead of dispatching it (a request
  // that does not match the schema).
  void reject_next(std::string reason) { reject_ = std::move(reason); }
  using vboxBindingService::dispatch;
  int dispatch() override;

#define VMFEST_OPERATION(name) \
  int name(_vbox__##name* request, _vbox__##name##Response& response) override;
  VMFEST_OPERATION(IWebsessionManager_USCORElogon)
  VMFEST_OPERATION(IWebsessionManager_USCOREgetSessionObject)
  VMFEST_OPERATION(IWebsessionManager_USCORElogoff)
  VMFEST_OPERATION(IManagedObjectRef_USCORErelease)
  VMFEST_OPERATION(IVirtualBox_USCOREgetAPIVersion)
  VMFEST_OPERATION(IVirtualBox_USCOREcreateMachine)
  VMFEST_OPERATION(IVirtualBox_USCOREregisterMachine)
  VMFEST_OPERATION(IVirtualBox_USCOREfindMachine)
  VMFEST_OPERATION(IVirtualBox_USCOREopenMedium)
  VMFEST_OPERATION(IMedium_USCOREgetType)
  VMFEST_OPERATION(IMedium_USCOREsetType)
  VMFEST_OPERATION(IMedium_USCOREsetDescription)
  VMFEST_OPERATION(IMedium_USCOREclose)
  VMFEST_OPERATION(IMachine_USCOREgetId)
  VMFEST_OPERATION(IMachine_USCOREgetState)
  VMFEST_OPERATION(IMachine_USCOREsetMemorySize)
  VMFEST_OPERATION(IMachine_USCOREsetCPUCount)
  VMFEST_OPERATION(IMachine_USCOREsaveSettings)
  VMFEST_OPERATION(IMachine_USCOREaddStorageController)
  VMFEST_OPERATION(IMachine_USCOREattachDevice)
  VMFEST_OPERATION(IMachine_USCOREgetNetworkAdapter)
  VMFEST_OPERATION(IMachine_USCOREgetSerialPort)
  VMFEST_OPERATION(IMachine_USCORElockMachine)
  VMFEST_OPERATION(IMachine_USCORElaunchVMProcess)
  VMFEST_OPERATION(IMachine_USCOREunregister)
  VMFEST_OPERATION(IMachine_USCOREdeleteConfig)
  VMFEST_OPERATION(ISession_USCOREgetMachine)
  VMFEST_OPERATION(ISession_USCOREgetConsole)
  VMFEST_OPERATION(ISession_USCOREunlockMachine)
  VMFEST_OPERATION(IConsole_USCOREpause)
  VMFEST_OPERATION(IConsole_USCOREresume)
  VMFEST_OPERATION(IConsole_USCOREpowerButton)
  VMFEST_OPERATION(IConsole_USCOREpowerDown)
  VMFEST_OPERATION(IProgress_USCOREwaitForCompletion)
  VMFEST_OPERATION(IProgress_USCOREgetCompleted)
  VMFEST_OPERATION(IProgress_USCOREgetResultCode)
  VMFEST_OPERATION(IProgress_USCOREgetErrorInfo)
  VMFEST_OPERATION(IVirtualBoxErrorInfo_USCOREgetText)
  VMFEST_OPERATION(INetworkAdapter_USCOREsetEnabled)
  VMFEST_OPERATION(INetworkAdapter_USCOREsetAttachmentType)
  VMFEST_OPERATION(INetworkAdapter_USCOREsetAdapterType)
  VMFEST_OPERATION(INetworkAdapter_USCOREgetNATEngine)
  VMFEST_OPERATION(INATEngine_USCOREgetRedirects)
  VMFEST_OPERATION(INATEngine_USCOREaddRedirect)
  VMFEST_OPERATION(INATEngine_USCOREremoveRedirect)
  VMFEST_OPERATION(ISerialPort_USCOREsetEnabled)
  VMFEST_OPERATION(ISerialPort_USCOREsetHostMode)
  VMFEST_OPERATION(ISerialPort_USCOREsetPath)
#undef VMFEST_OPERATION

 private:
  // Runs an operation under the world's lock; a thrown Fault becomes the SOAP fault vboxwebsrv
  // would send (`caller`: the reference the request was made on).
  template <class Operation>
  int answer(const std::string& caller, Operation operation);
  int fault(const Fault& fault, const std::string& error_info);
  Machine& console_machine(const std::string& console,
                           std::initializer_list<vbox__MachineState> states);

  World& world_;
  std::string reject_;
};

}  // namespace vmfest::vbox_double
