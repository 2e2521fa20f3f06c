// Thin RAII over libvirt's C API for the libvirt backend: owned handles, errors as
// vmfest::BackendError with libvirt's own message, and the process-wide event loop that streams
// (the console) and connection keepalives need.
#pragma once

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace vmfest::detail::libvirt {

struct ConnectClose {
  void operator()(virConnectPtr connection) const noexcept { virConnectClose(connection); }
};
struct DomainFree {
  void operator()(virDomainPtr domain) const noexcept { virDomainFree(domain); }
};
struct PoolFree {
  void operator()(virStoragePoolPtr pool) const noexcept { virStoragePoolFree(pool); }
};
struct VolumeFree {
  void operator()(virStorageVolPtr volume) const noexcept { virStorageVolFree(volume); }
};
struct StreamFree {
  void operator()(virStreamPtr stream) const noexcept { virStreamFree(stream); }
};
using Connection = std::unique_ptr<virConnect, ConnectClose>;
using Domain = std::unique_ptr<virDomain, DomainFree>;
using Pool = std::unique_ptr<virStoragePool, PoolFree>;
using Volume = std::unique_ptr<virStorageVol, VolumeFree>;
using Stream = std::unique_ptr<virStream, StreamFree>;

// libvirt's message for the call that just failed in this thread ("" if none).
std::string last_error();
// The code of that error (virErrorNumber), VIR_ERR_OK if none.
int last_error_code();
// BackendError "<what> on <uri>: <libvirt's message>; <hint>".
[[noreturn]] void fail(const std::string& what, const std::string& uri,
                       const std::string& hint = "");

// Opens `uri` read-write, with keepalives, within VMFEST_LIBVIRT_TIMEOUT seconds (default 60),
// or returns a new reference to the process's live connection to it: one per URI and process,
// closed when the process ends. Starts the event loop first, so streams and keepalives work. Errors
// name the URI and what to check (libvirtd running and answering, the URI's user in group libvirt).
Connection connect(const std::string& uri);

// Takes each of the `count` handles of an array libvirt allocated (a listing), and frees the array.
template <typename Handle, typename Raw>
std::vector<Handle> adopt_all(Raw** array, int count) {
  std::vector<Handle> handles;
  handles.reserve(static_cast<std::size_t>(std::max(count, 0)));
  for (int i = 0; i < count; ++i) handles.emplace_back(array[i]);
  std::free(array);  // NOLINT(cppcoreguidelines-no-malloc): libvirt's allocation
  return handles;
}

// Looks a domain or volume up by name; nullopt when it does not exist, BackendError otherwise.
std::optional<Domain> find_domain(virConnectPtr connection, const std::string& name,
                                  const std::string& uri);
std::optional<Volume> find_volume(virStoragePoolPtr pool, const std::string& name,
                                  const std::string& uri);

// Stops a domain at once (virDomainDestroy). A domain that is not running, or gone, is done;
// BackendError naming it and libvirt's reason when it still runs (a read-only connection, a
// hypervisor that does not answer).
void destroy_domain(virDomainPtr domain, const std::string& uri);

// The host's domains (virConnectListAllDomains `flags`: 0 for all, running or not).
std::vector<Domain> list_domains(virConnectPtr connection, const std::string& uri,
                                 unsigned flags = 0);
// The names of every domain of the host, running or not.
std::vector<std::string> domain_names(virConnectPtr connection, const std::string& uri);

// XML text escaped for an element's content or an attribute value.
std::string xml_escape(const std::string& text);
// The reverse of xml_escape (the five entities libvirt writes).
std::string xml_unescape(const std::string& text);

}  // namespace vmfest::detail::libvirt
