#include "fake_virtualbox.h"

#include <algorithm>
#include <fstream>
#include <random>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "backends/virtualbox/result_codes.h"

namespace vmfest::vbox_double {
namespace fs = std::filesystem;
namespace result = detail::virtualbox::result;
using Kind = Object::Kind;

void fail(std::int32_t code, std::string text) { throw Fault{code, std::move(text), ""}; }

void invalid_object(const std::string& ref) {
  throw Fault{0, fmt::format("Invalid managed object reference \"{}\"", ref), ref};
}

std::string new_uuid() {
  thread_local std::mt19937_64 random{std::random_device{}()};
  const std::uint64_t high = random();
  const std::uint64_t low = random();
  return fmt::format("{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}", high >> 32, (high >> 16) & 0xffff,
                     high & 0xfff, ((low >> 48) & 0x3fff) | 0x8000, low & 0xffffffffffffULL);
}

const char* state_name(vbox__MachineState state) {
  switch (state) {
    case vbox__MachineState::PoweredOff:
      return "PoweredOff";
    case vbox__MachineState::Aborted:
      return "Aborted";
    case vbox__MachineState::Running:
      return "Running";
    case vbox__MachineState::Paused:
      return "Paused";
    case vbox__MachineState::Starting:
      return "Starting";
    case vbox__MachineState::Stopping:
      return "Stopping";
    default:
      return "Busy";
  }
}

namespace {

bool powered_off(vbox__MachineState state) {
  return state == vbox__MachineState::PoweredOff || state == vbox__MachineState::Aborted;
}

bool file_starts_with(const fs::path& file, std::streamoff offset, const std::string& magic) {
  std::ifstream in(file, std::ios::binary);
  std::string bytes(magic.size(), '\0');
  in.seekg(offset);
  return in.read(bytes.data(), static_cast<std::streamsize>(bytes.size())) && bytes == magic;
}

}  // namespace

// What VirtualBox would find in the file: a VDI image ("<<< ... >>>" header, signature 0xbeda107f)
// or an ISO 9660 image ("CD001" in the first volume descriptor).
bool has_format(const fs::path& file, vbox__DeviceType device) {
  if (device == vbox__DeviceType::HardDisk) {
    return file_starts_with(file, 0x40, std::string("\x7f\x10\xda\xbe", 4));
  }
  return file_starts_with(file, 0x8001, "CD001");
}

void Progress::complete(std::int32_t code, std::string text) {
  std::lock_guard lock(mutex);
  completed = true;
  result = code;
  error = std::move(text);
  done.notify_all();
}

bool Object::operator==(const Object& other) const {
  return kind == other.kind && session == other.session && machine == other.machine &&
         medium == other.medium && progress == other.progress && slot == other.slot &&
         kind != Kind::ErrorInfo;
}

// ---- World
// ---------------------------------------------------------------------------------------

World::World(WorldOptions options) : options_(std::move(options)) {}

World::~World() {
  for (auto& worker : workers_) worker.join();
  for (auto& machine : machines_) machine->guest.reset();
}

Websession& World::websession_of(const std::string& ref) {
  std::uint64_t id = 0;
  if (std::sscanf(ref.c_str(), "%16lx-", &id) != 1) invalid_object(ref);
  auto found = websessions_.find(id);
  if (found == websessions_.end()) invalid_object(ref);
  Websession& websession = found->second;
  const auto now = std::chrono::steady_clock::now();
  if (now - websession.last_used > options_.session_timeout) {
    end(websession);
    invalid_object(ref);
  }
  websession.last_used = now;
  return websession;
}

void World::end(Websession& websession) {
  // Its session objects go, and with them their locks (a launched VM runs on).
  for (auto& [ref, held] : websession.objects) {
    if (held.kind == Kind::Session) unlock(held.session);
  }
  websessions_.erase(websession.id);
}

Object& World::resolve(const std::string& ref, Kind kind) {
  Websession& websession = websession_of(ref);
  auto found = websession.objects.find(ref);
  if (found == websession.objects.end() || found->second.kind != kind) invalid_object(ref);
  return found->second;
}

std::string World::reference(Websession& websession, Object object) {
  for (const auto& [ref, existing] : websession.objects) {
    if (existing == object) return ref;
  }
  std::string ref = fmt::format("{:016x}-{:016x}", websession.id, websession.next_object++);
  websession.objects.emplace(ref, std::move(object));
  return ref;
}

Settings& World::readable(const Object& view) {
  if (view.session && view.session->edits && view.session->machine == view.machine) {
    return *view.session->edits;
  }
  return view.machine->settings;
}

// VirtualBox: settings change on a machine that is not registered yet, or through the session
// machine of a write lock while the VM is off. Anything else is "not mutable".
Settings& World::writable(const Object& view) {
  Machine& machine = *view.machine;
  if (!machine.registered) return machine.settings;
  if (view.session && view.session->edits && view.session->machine == view.machine &&
      powered_off(machine.state)) {
    return *view.session->edits;
  }
  fail(result::kInvalidVmState,
       fmt::format("The machine is not mutable (state is {})", state_name(machine.state)));
}

bool World::locked(const Machine& machine) const {
  if (machine.writer) return true;
  return std::any_of(machine.sharers.begin(), machine.sharers.end(),
                     [](const auto& session) { return !session.expired(); });
}

void World::refresh(Machine& machine) {
  const bool runs =
      machine.state == vbox__MachineState::Running || machine.state == vbox__MachineState::Paused;
  if (runs && machine.guest && machine.guest->stopped()) vm_stopped(machine);
}

// The VM process ended: its lock and every session on it go.
void World::vm_stopped(Machine& machine) {
  if (machine.guest) machine.guest->kill();
  machine.guest.reset();
  machine.state = vbox__MachineState::PoweredOff;
  for (auto& weak : machine.sharers) {
    if (auto session = weak.lock()) {
      session->lock = Session::Lock::None;
      session->machine.reset();
    }
  }
  machine.sharers.clear();
}

void World::unlock(const std::shared_ptr<Session>& session) {
  auto machine = session->machine;
  if (!machine) return;
  if (session->lock == Session::Lock::Write) {
    // Unsaved changes are discarded, and with them the differencing images they made.
    for (auto& attachment : session->edits->attachments) {
      const auto& committed = machine->settings.attachments;
      const bool kept = std::any_of(committed.begin(), committed.end(), [&](const Attachment& a) {
        return a.medium == attachment.medium;
      });
      if (kept || !attachment.medium) continue;
      auto& owners = attachment.medium->machines;
      owners.erase(std::remove(owners.begin(), owners.end(), machine->uuid), owners.end());
      if (attachment.medium->parent) delete_storage(*attachment.medium);
    }
    machine->writer.reset();
  }
  auto& sharers = machine->sharers;
  sharers.erase(std::remove_if(sharers.begin(), sharers.end(),
                               [&](const auto& weak) {
                                 auto other = weak.lock();
                                 return !other || other == session;
                               }),
                sharers.end());
  session->lock = Session::Lock::None;
  session->edits.reset();
  session->machine.reset();
}

void World::save(const Machine& machine, const Settings& settings) const {
  fs::create_directories(machine.settings_file.parent_path());
  std::ofstream out(machine.settings_file);
  out << "<?xml version=\"1.0\"?>\n"
      << "<!-- Written by vmfest's VirtualBox test double; not a VirtualBox settings file. -->\n"
      << fmt::format(
             "<VirtualBox xmlns=\"http://www.virtualbox.org/\"><Machine uuid=\"{{{}}}\" "
             "name=\"{}\" OSType=\"{}\" memoryMiB=\"{}\" cpus=\"{}\"/></VirtualBox>\n",
             machine.uuid, machine.name, machine.os_type, settings.memory_mib, settings.cpus);
}

void World::detach_all(Machine& machine, Settings& settings) {
  for (auto& attachment : settings.attachments) {
    if (!attachment.medium) continue;
    auto& owners = attachment.medium->machines;
    owners.erase(std::remove(owners.begin(), owners.end(), machine.uuid), owners.end());
  }
  settings.attachments.clear();
}

void World::delete_storage(Medium& medium) {
  std::error_code ignored;
  fs::remove_all(medium.location, ignored);
  if (medium.device == vbox__DeviceType::HardDisk && !medium.parent) {
    fs::remove_all(fs::path(medium.location.string() + ".qemu"), ignored);
  }
  if (medium.parent) --medium.parent->children;
  medium.closed = true;
  media_.erase(std::remove_if(media_.begin(), media_.end(),
                              [&](const auto& open) { return open.get() == &medium; }),
               media_.end());
}

std::shared_ptr<Machine> World::find(const std::string& name_or_id) const {
  std::string id = name_or_id;
  if (id.size() == 38 && id.front() == '{' && id.back() == '}') id = id.substr(1, 36);
  for (const auto& machine : machines_) {
    if (machine->registered && (machine->uuid == id || machine->name == name_or_id)) {
      return machine;
    }
  }
  return nullptr;
}

void World::run_worker(std::function<void()> work) { workers_.emplace_back(std::move(work)); }

std::string World::error_info(const std::string& caller, const Fault& fault) {
  try {
    Object info;
    info.kind = Kind::ErrorInfo;
    info.code = fault.code;
    info.text = fault.text;
    return reference(websession_of(caller), std::move(info));
  } catch (const Fault&) {
    return {};  // a caller without a websession (logon) gets no error object
  }
}

}  // namespace vmfest::vbox_double
