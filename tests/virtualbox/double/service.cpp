// The vboxwebsrv operations of the fake VirtualBox. Fault texts and result codes follow
// VirtualBox's Main API (VirtualBoxImpl.cpp, MachineImpl.cpp, MediumImpl.cpp, vboxweb.cpp).
// This file: the connection (dispatch, faults), websessions and object references, progress and
// error info; the interfaces have files of their own (service_*.cpp).
#include <string>

#include "backends/virtualbox/result_codes.h"
#include "fake_virtualbox.h"
#include "service_support.h"

namespace vmfest::vbox_double {
namespace result = detail::virtualbox::result;
using Kind = Object::Kind;

Service::Service(World& world)
    : vboxBindingService(SOAP_IO_KEEPALIVE | SOAP_C_UTFSTRING), world_(world) {}

int Service::dispatch() {
  if (!reject_.empty()) {
    std::string reason = std::exchange(reject_, {});
    return soap_sender_fault(soap, reason.c_str(), nullptr);
  }
  return vboxBindingService::dispatch();
}

// vboxwebsrv's faults: the text as faultstring, VirtualBox's details in the SOAP 1.1 detail.
int Service::fault(const Fault& fault, const std::string& error_info) {
  soap_sender_fault(soap, fault.text.c_str(), nullptr);
  if (fault.code == 0 && fault.bad_object.empty()) return SOAP_FAULT;  // no VirtualBox details
  soap->fault->detail = soap_new_SOAP_ENV__Detail(soap);
  if (fault.code == 0) {
    auto* detail = soap_new__vbox__InvalidObjectFault(soap);
    detail->badObjectID = fault.bad_object;
    soap->fault->detail->vbox__InvalidObjectFault = detail;
  } else {
    auto* detail = soap_new__vbox__RuntimeFault(soap);
    detail->resultCode = fault.code;
    detail->returnval = error_info;
    soap->fault->detail->vbox__RuntimeFault = detail;
  }
  return SOAP_FAULT;
}

// ---- IWebsessionManager, IManagedObjectRef ----------------------------------------------------

int Service::IWebsessionManager_USCORElogon(
    _vbox__IWebsessionManager_USCORElogon* request,
    _vbox__IWebsessionManager_USCORElogonResponse& response) {
  return answer("", [&] {
    const WorldOptions& options = world_.options();
    if (!options.user.empty() &&
        (request->username != options.user || request->password != options.password)) {
      // vboxwebsrv answers a refused logon with a bare fault.
      throw Fault{0, "Authentication failed", ""};
    }
    Websession& websession = world_.websessions_[world_.next_websession_];
    websession.id = world_.next_websession_++;
    response.returnval = world_.reference(websession, object(Kind::VirtualBox));
  });
}

int Service::IWebsessionManager_USCOREgetSessionObject(
    _vbox__IWebsessionManager_USCOREgetSessionObject* request,
    _vbox__IWebsessionManager_USCOREgetSessionObjectResponse& response) {
  return answer(request->refIVirtualBox, [&] {
    world_.resolve(request->refIVirtualBox, Kind::VirtualBox);
    Object session = object(Kind::Session);
    session.session = std::make_shared<Session>();
    response.returnval =
        world_.reference(world_.websession_of(request->refIVirtualBox), std::move(session));
  });
}

int Service::IWebsessionManager_USCORElogoff(_vbox__IWebsessionManager_USCORElogoff* request,
                                             _vbox__IWebsessionManager_USCORElogoffResponse&) {
  return answer(request->refIVirtualBox, [&] {
    world_.resolve(request->refIVirtualBox, Kind::VirtualBox);
    world_.end(world_.websession_of(request->refIVirtualBox));
  });
}

int Service::IManagedObjectRef_USCORErelease(_vbox__IManagedObjectRef_USCORErelease* request,
                                             _vbox__IManagedObjectRef_USCOREreleaseResponse&) {
  return answer(request->_USCOREthis, [&] {
    Websession& websession = world_.websession_of(request->_USCOREthis);
    auto found = websession.objects.find(request->_USCOREthis);
    if (found == websession.objects.end()) invalid_object(request->_USCOREthis);
    if (found->second.kind == Kind::Session) world_.unlock(found->second.session);
    websession.objects.erase(found);
  });
}

// ---- IProgress, IVirtualBoxErrorInfo ----------------------------------------------------------

int Service::IProgress_USCOREwaitForCompletion(_vbox__IProgress_USCOREwaitForCompletion* request,
                                               _vbox__IProgress_USCOREwaitForCompletionResponse&) {
  std::shared_ptr<Progress> progress;
  int status = answer(request->_USCOREthis, [&] {
    progress = world_.resolve(request->_USCOREthis, Kind::Progress).progress;
  });
  if (status != SOAP_OK) return status;
  // Outside the world's lock: the operation waited for needs it to finish.
  std::unique_lock lock(progress->mutex);
  auto completed = [&] { return progress->completed; };
  if (request->timeout < 0) {
    progress->done.wait(lock, completed);
  } else {
    progress->done.wait_for(lock, std::chrono::milliseconds(request->timeout), completed);
  }
  return SOAP_OK;
}

int Service::IProgress_USCOREgetCompleted(_vbox__IProgress_USCOREgetCompleted* request,
                                          _vbox__IProgress_USCOREgetCompletedResponse& response) {
  return answer(request->_USCOREthis, [&] {
    Progress& progress = *world_.resolve(request->_USCOREthis, Kind::Progress).progress;
    std::lock_guard lock(progress.mutex);
    response.returnval = progress.completed;
  });
}

int Service::IProgress_USCOREgetResultCode(_vbox__IProgress_USCOREgetResultCode* request,
                                           _vbox__IProgress_USCOREgetResultCodeResponse& response) {
  return answer(request->_USCOREthis, [&] {
    Progress& progress = *world_.resolve(request->_USCOREthis, Kind::Progress).progress;
    std::lock_guard lock(progress.mutex);
    if (!progress.completed) {
      fail(result::kFail, "Result code is not available, operation is still in progress");
    }
    response.returnval = progress.result;
  });
}

int Service::IProgress_USCOREgetErrorInfo(_vbox__IProgress_USCOREgetErrorInfo* request,
                                          _vbox__IProgress_USCOREgetErrorInfoResponse& response) {
  return answer(request->_USCOREthis, [&] {
    Progress& progress = *world_.resolve(request->_USCOREthis, Kind::Progress).progress;
    std::lock_guard lock(progress.mutex);
    if (!progress.completed || progress.result == 0) return;
    Object info = object(Kind::ErrorInfo);
    info.code = progress.result;
    info.text = progress.error;
    response.returnval =
        world_.reference(world_.websession_of(request->_USCOREthis), std::move(info));
  });
}

int Service::IVirtualBoxErrorInfo_USCOREgetText(
    _vbox__IVirtualBoxErrorInfo_USCOREgetText* request,
    _vbox__IVirtualBoxErrorInfo_USCOREgetTextResponse& response) {
  return answer(request->_USCOREthis, [&] {
    response.returnval = world_.resolve(request->_USCOREthis, Kind::ErrorInfo).text;
  });
}

}  // namespace vmfest::vbox_double
