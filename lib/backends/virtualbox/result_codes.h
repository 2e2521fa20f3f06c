// VirtualBox's COM/XPCOM result codes as they travel in a RuntimeFault (xsd:int, so negative).
// Values from VirtualBox's VirtualBox.xidl (VBOX_E_*) and XPCOM's nsError.h (E_*).
#pragma once

#include <cstdint>
#include <string>

#include <fmt/format.h>

namespace vmfest::detail::virtualbox {

struct ResultCode {
  std::uint32_t value;
  const char* name;
};

inline constexpr ResultCode kResultCodes[] = {
    {0x80BB0001, "VBOX_E_OBJECT_NOT_FOUND"},
    {0x80BB0002, "VBOX_E_INVALID_VM_STATE"},
    {0x80BB0003, "VBOX_E_VM_ERROR"},
    {0x80BB0004, "VBOX_E_FILE_ERROR"},
    {0x80BB0005, "VBOX_E_IPRT_ERROR"},
    {0x80BB0006, "VBOX_E_PDM_ERROR"},
    {0x80BB0007, "VBOX_E_INVALID_OBJECT_STATE"},
    {0x80BB0008, "VBOX_E_HOST_ERROR"},
    {0x80BB0009, "VBOX_E_NOT_SUPPORTED"},
    {0x80BB000A, "VBOX_E_XML_ERROR"},
    {0x80BB000B, "VBOX_E_INVALID_SESSION_STATE"},
    {0x80BB000C, "VBOX_E_OBJECT_IN_USE"},
    {0x80BB000D, "VBOX_E_PASSWORD_INCORRECT"},
    {0x80BB000E, "VBOX_E_MAXIMUM_REACHED"},
    {0x80BB000F, "VBOX_E_GSTCTL_GUEST_ERROR"},
    {0x80BB0010, "VBOX_E_TIMEOUT"},
    {0x80004001, "E_NOTIMPL"},
    {0x80004002, "E_NOINTERFACE"},
    {0x80004003, "E_POINTER"},
    {0x80004005, "E_FAIL"},
    {0x80070005, "E_ACCESSDENIED"},
    {0x8007000E, "E_OUTOFMEMORY"},
    {0x80070057, "E_INVALIDARG"},
    {0x8000FFFF, "E_UNEXPECTED"},
};

// The codes vmfest acts on or answers with.
namespace result {
constexpr std::int32_t code(std::uint32_t value) { return static_cast<std::int32_t>(value); }
inline constexpr std::int32_t kObjectNotFound = code(0x80BB0001);
inline constexpr std::int32_t kInvalidVmState = code(0x80BB0002);
inline constexpr std::int32_t kVmError = code(0x80BB0003);
inline constexpr std::int32_t kFileError = code(0x80BB0004);
inline constexpr std::int32_t kInvalidObjectState = code(0x80BB0007);
inline constexpr std::int32_t kNotSupported = code(0x80BB0009);
inline constexpr std::int32_t kObjectInUse = code(0x80BB000C);
inline constexpr std::int32_t kFail = code(0x80004005);
inline constexpr std::int32_t kInvalidArgument = code(0x80070057);
inline constexpr std::int32_t kUnexpected = code(0x8000FFFF);
}  // namespace result

// "VBOX_E_OBJECT_NOT_FOUND (0x80bb0001)"; an unknown code by its hex value alone.
inline std::string result_code_name(std::int32_t code) {
  const auto value = static_cast<std::uint32_t>(code);
  for (const ResultCode& known : kResultCodes) {
    if (known.value == value) return fmt::format("{} (0x{:08x})", known.name, value);
  }
  return fmt::format("0x{:08x}", value);
}

}  // namespace vmfest::detail::virtualbox
