#include "url.h"

#include <algorithm>
#include <cctype>
#include <memory>

#include <curl/curl.h>
#include <fmt/format.h>

#include "vmfest/error.h"

namespace vmfest::detail {

UrlParts parse_url(const std::string& url) {
  std::unique_ptr<CURLU, decltype(&curl_url_cleanup)> handle(curl_url(), curl_url_cleanup);
  if (!handle) throw SetupError("libcurl could not create a URL parser");
  const CURLUcode status =
      curl_url_set(handle.get(), CURLUPART_URL, url.c_str(), CURLU_NON_SUPPORT_SCHEME);
  if (status != CURLUE_OK) {
    throw InvalidArgument(
        fmt::format("'{}' is not a valid URL: {}", url, curl_url_strerror(status)));
  }
  auto part = [&](CURLUPart which, unsigned int flags) {
    char* text = nullptr;
    if (curl_url_get(handle.get(), which, &text, flags) != CURLUE_OK || text == nullptr)
      return std::string();
    std::string value(text);
    curl_free(text);
    return value;
  };
  UrlParts parts{part(CURLUPART_SCHEME, 0), part(CURLUPART_PATH, CURLU_URLDECODE)};
  std::transform(parts.scheme.begin(), parts.scheme.end(), parts.scheme.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return parts;
}

}  // namespace vmfest::detail
