// Splitting a model source's URL with libcurl's parser, to tell a download from a local file.
#pragma once

#include <string>

namespace vmfest::detail {

struct UrlParts {
  std::string scheme;  // lowercase: "http", "https", "file", ...
  std::string path;    // percent-decoded, without query or fragment
};
// Splits a URL ("https://host/dir/name.qcow2.gz?x=1" -> "https", "/dir/name.qcow2.gz");
// InvalidArgument when it is not a valid URL.
UrlParts parse_url(const std::string& url);

}  // namespace vmfest::detail
