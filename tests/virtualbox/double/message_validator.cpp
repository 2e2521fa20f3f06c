#include "message_validator.h"

#include <libxml/parser.h>
#include <libxml/xmlschemas.h>

#include <cstring>
#include <stdexcept>

namespace vmfest::vbox_double {
namespace {

constexpr const char* kSoapEnvelope = "http://schemas.xmlsoap.org/soap/envelope/";

bool is(const xmlNode* node, const char* ns, const char* name) {
  return node != nullptr && node->type == XML_ELEMENT_NODE && node->ns != nullptr &&
         std::strcmp(reinterpret_cast<const char*>(node->ns->href), ns) == 0 &&
         std::strcmp(reinterpret_cast<const char*>(node->name), name) == 0;
}

xmlNode* first_element(xmlNode* node) {
  for (; node != nullptr; node = node->next) {
    if (node->type == XML_ELEMENT_NODE) return node;
  }
  return nullptr;
}

void collect(void* errors, xmlErrorPtr error) {
  auto* text = static_cast<std::string*>(errors);
  std::string message = error->message != nullptr ? error->message : "invalid";
  while (!message.empty() && message.back() == '\n') message.pop_back();
  if (!text->empty()) *text += "; ";
  *text += message;
}

struct DocumentDeleter {
  void operator()(xmlDoc* document) const { xmlFreeDoc(document); }
};

}  // namespace

struct MessageValidator::Schema {
  xmlSchemaPtr schema = nullptr;
  ~Schema() { xmlSchemaFree(schema); }
};

MessageValidator::MessageValidator(const std::filesystem::path& xsd)
    : schema_(std::make_unique<Schema>()) {
  xmlInitParser();
  xmlSchemaParserCtxtPtr parser = xmlSchemaNewParserCtxt(xsd.c_str());
  if (parser == nullptr) throw std::runtime_error("cannot read the schema " + xsd.string());
  schema_->schema = xmlSchemaParse(parser);
  xmlSchemaFreeParserCtxt(parser);
  if (schema_->schema == nullptr) {
    throw std::runtime_error("the schema " + xsd.string() + " does not compile");
  }
}

MessageValidator::~MessageValidator() = default;

MessageCheck MessageValidator::check(const std::string& envelope) const {
  std::unique_ptr<xmlDoc, DocumentDeleter> document(
      xmlReadMemory(envelope.data(), static_cast<int>(envelope.size()), "message.xml", nullptr,
                    XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING));
  if (!document) {
    const xmlError* error = xmlGetLastError();
    return {"", std::string("the message is not well-formed XML: ") +
                    (error != nullptr && error->message != nullptr ? error->message : "?")};
  }
  xmlNode* root = xmlDocGetRootElement(document.get());
  if (!is(root, kSoapEnvelope, "Envelope")) return {"", "the message is not a SOAP 1.1 Envelope"};
  xmlNode* body = first_element(root->children);
  if (is(body, kSoapEnvelope, "Header")) body = first_element(body->next);
  if (!is(body, kSoapEnvelope, "Body")) return {"", "the SOAP Envelope has no Body"};
  xmlNode* element = first_element(body->children);
  if (element == nullptr) return {"", "the SOAP Body is empty"};
  if (first_element(element->next) != nullptr) {
    return {"", "the SOAP Body holds more than one element (document/literal wants one)"};
  }
  MessageCheck result{reinterpret_cast<const char*>(element->name), ""};
  if (is(element, kSoapEnvelope, "Fault")) {
    // A fault is SOAP's; what VirtualBox defines is the element in its detail.
    xmlNode* child = first_element(element->children);
    while (child != nullptr && std::strcmp(reinterpret_cast<const char*>(child->name), "detail"))
      child = first_element(child->next);
    element = child != nullptr ? first_element(child->children) : nullptr;
    if (element == nullptr) return result;
  }
  xmlSchemaValidCtxtPtr context = xmlSchemaNewValidCtxt(schema_->schema);
  xmlSchemaSetValidStructuredErrors(context, &collect, &result.error);
  int status = xmlSchemaValidateOneElement(context, element);
  xmlSchemaFreeValidCtxt(context);
  if (status != 0 && result.error.empty())
    result.error = "invalid (libxml2 status " + std::to_string(status) + ")";
  return result;
}

}  // namespace vmfest::vbox_double
