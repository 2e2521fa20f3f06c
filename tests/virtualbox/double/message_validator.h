// Checks SOAP messages against the XML Schema of one VirtualBox version (the <xsd:schema> of its
// WSDL), with libxml2: the element in the SOAP Body, or the detail of a fault, must be valid.
#pragma once

#include <filesystem>
#include <memory>
#include <string>

namespace vmfest::vbox_double {

struct MessageCheck {
  std::string element;  // local name of the Body's element ("IMachine_getState", "Fault")
  std::string error;    // empty when the message is valid
};

class MessageValidator {
 public:
  explicit MessageValidator(const std::filesystem::path& xsd);  // throws std::runtime_error
  ~MessageValidator();
  MessageValidator(const MessageValidator&) = delete;
  MessageValidator& operator=(const MessageValidator&) = delete;

  // `envelope` is the HTTP body. Safe to call from several threads at once.
  [[nodiscard]] MessageCheck check(const std::string& envelope) const;

 private:
  struct Schema;
  std::unique_ptr<Schema> schema_;
};

}  // namespace vmfest::vbox_double
