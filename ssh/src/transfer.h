// File transfers over SFTP, or over exec channels for guests without an SFTP server (private to
// the ssh component).
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

#include "connection.h"
#include "vmfest/ssh/session.h"

namespace vmfest::ssh::detail {

void upload(Connection& connection, const std::filesystem::path& local, const std::string& remote,
            TransferMethod method);
void download(Connection& connection, const std::string& remote, const std::filesystem::path& local,
              TransferMethod method);
std::string read_remote_file(Connection& connection, const std::string& remote,
                             TransferMethod method);
void write_remote_file(Connection& connection, const std::string& remote, std::string_view content,
                       int mode, TransferMethod method);

}  // namespace vmfest::ssh::detail
