// VirtualBox's COM/XPCOM result codes as they travel in a RuntimeFault (xsd:int, so negative).
// Values from VirtualBox's VirtualBox.xidl (VBOX_E_*) and XPCOM's nsError.h (E_*).
#pragma once

#include <cstdint>
#include <string>

#include <fmt/format.h>

namespace vmfest::detail::virtualbox {

namespace result {
constexpr std::int32_t code(std::uint32_t value) { return static_cast<std::int32_t>(value); }
inline constexpr std::int32_t kObjectNotFound = code(0x80BB0001);     // VBOX_E_OBJECT_NOT_FOUND
inline constexpr std::int32_t kInvalidVmState = code(0x80BB0002);     // VBOX_E_INVALID_VM_STATE
inline constexpr std::int32_t kVmError = code(0x80BB0003);            // VBOX_E_VM_ERROR
inline constexpr std::int32_t kFileError = code(0x80BB0004);          // VBOX_E_FILE_ERROR
inline constexpr std::int32_t kIprtError = code(0x80BB0005);          // VBOX_E_IPRT_ERROR
inline constexpr std::int32_t kPdmError = code(0x80BB0006);           // VBOX_E_PDM_ERROR
inline constexpr std::int32_t kInvalidObjectState = code(0x80BB0007); // VBOX_E_INVALID_OBJECT_STATE
inline constexpr std::int32_t kHostError = code(0x80BB0008);          // VBOX_E_HOST_ERROR
inline constexpr std::int32_t kNotSupported = code(0x80BB0009);       // VBOX_E_NOT_SUPPORTED
inline constexpr std::int32_t kXmlError = code(0x80BB000A);           // VBOX_E_XML_ERROR
inline constexpr std::int32_t kInvalidSessionState = code(0x80BB000B);// VBOX_E_INVALID_SESSION_STATE
inline constexpr std::int32_t kObjectInUse = code(0x80BB000C);        // VBOX_E_OBJECT_IN_USE
inline constexpr std::int32_t kPasswordIncorrect = code(0x80BB000D);  // VBOX_E_PASSWORD_INCORRECT
inline constexpr std::int32_t kMaximumReached = code(0x80BB000E);     // VBOX_E_MAXIMUM_REACHED
inline constexpr std::int32_t kTimeout = code(0x80BB0010);            // VBOX_E_TIMEOUT
inline constexpr std::int32_t kNotImplemented = code(0x80004001);     // E_NOTIMPL
inline constexpr std::int32_t kFail = code(0x80004005);               // E_FAIL
inline constexpr std::int32_t kAccessDenied = code(0x80070005);       // E_ACCESSDENIED
inline constexpr std::int32_t kInvalidArgument = code(0x80070057);    // E_INVALIDARG
inline constexpr std::int32_t kUnexpected = code(0x8000FFFF);         // E_UNEXPECTED
}  // namespace result

// "VBOX_E_OBJECT_NOT_FOUND (0x80bb0001)"; unknown codes by their hex value alone.
inline std::string result_code_name(std::int32_t code) {
  const char* name = nullptr;
  switch (code) {
    case result::kObjectNotFound: name = "VBOX_E_OBJECT_NOT_FOUND"; break;
    case result::kInvalidVmState: name = "VBOX_E_INVALID_VM_STATE"; break;
    case result::kVmError: name = "VBOX_E_VM_ERROR"; break;
    case result::kFileError: name = "VBOX_E_FILE_ERROR"; break;
    case result::kIprtError: name = "VBOX_E_IPRT_ERROR"; break;
    case result::kPdmError: name = "VBOX_E_PDM_ERROR"; break;
    case result::kInvalidObjectState: name = "VBOX_E_INVALID_OBJECT_STATE"; break;
    case result::kHostError: name = "VBOX_E_HOST_ERROR"; break;
    case result::kNotSupported: name = "VBOX_E_NOT_SUPPORTED"; break;
    case result::kXmlError: name = "VBOX_E_XML_ERROR"; break;
    case result::kInvalidSessionState: name = "VBOX_E_INVALID_SESSION_STATE"; break;
    case result::kObjectInUse: name = "VBOX_E_OBJECT_IN_USE"; break;
    case result::kPasswordIncorrect: name = "VBOX_E_PASSWORD_INCORRECT"; break;
    case result::kMaximumReached: name = "VBOX_E_MAXIMUM_REACHED"; break;
    case result::kTimeout: name = "VBOX_E_TIMEOUT"; break;
    case result::kNotImplemented: name = "E_NOTIMPL"; break;
    case result::kFail: name = "E_FAIL"; break;
    case result::kAccessDenied: name = "E_ACCESSDENIED"; break;
    case result::kInvalidArgument: name = "E_INVALIDARG"; break;
    case result::kUnexpected: name = "E_UNEXPECTED"; break;
    default: break;
  }
  const auto hex = static_cast<std::uint32_t>(code);
  return name != nullptr ? fmt::format("{} (0x{:08x})", name, hex) : fmt::format("0x{:08x}", hex);
}

}  // namespace vmfest::detail::virtualbox
