# `cpack -G DEB` in a build tree makes one Debian package, vmfest_<version>_amd64.deb, with what
# `cmake --install` installs: the static libraries and their headers, the CMake package, the
# `vmfest` CLI, and the default model's build script and guest files (the guest agent is inside
# the library). tools/test-debian-package.sh builds it from a tree configured for /usr.
include_guard(GLOBAL)

# The package installs where the tree was configured to (the fixtures keep that path of the
# default-model script): configure with -DCMAKE_INSTALL_PREFIX=/usr for a Debian package.
set(CPACK_PACKAGING_INSTALL_PREFIX "${CMAKE_INSTALL_PREFIX}")

set(CPACK_PACKAGE_NAME vmfest)
set(CPACK_PACKAGE_VENDOR "vmfest")
set(CPACK_PACKAGE_CONTACT "vmfest maintainers <vmfest@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY
    "integration tests against fresh virtual machines (C++ library, GoogleTest plugin, CLI)")
set(CPACK_PACKAGE_DESCRIPTION
    "vmfest clones a VM image per test (copy-on-write, warm from a saved booted guest), hands\n\
the test an SSH handle into it and destroys it afterwards. QEMU is the default backend;\n\
libvirt and VirtualBox (vboxwebsrv) are optional.")
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION devel)
# The CLI's shared libraries (libssh, libcurl, libvirt, ...) are found by dpkg-shlibdeps.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
# The libraries are static, so a project that links them needs the headers and libraries they
# were built against (vmfestConfig.cmake finds them again); running VMs needs QEMU, qemu-img and
# genisoimage (the cloud-init seed); building the default model needs its ingredients
# (tools/build-default-model.sh).
set(_vmfest_deb_depends
    cmake g++
    libgtest-dev libgmock-dev libboost-filesystem1.81-dev libssh-dev libcurl4-openssl-dev
    zlib1g-dev libssl-dev libarchive-dev nlohmann-json3-dev libspdlog-dev libfmt-dev
    qemu-system-x86 qemu-utils genisoimage)
file(STRINGS "${PROJECT_SOURCE_DIR}/tools/lib/default-model-packages.txt" _vmfest_model_packages
     REGEX "^(image|tool) ")
list(TRANSFORM _vmfest_model_packages REPLACE "^[a-z]+ " "")
list(APPEND _vmfest_deb_depends ${_vmfest_model_packages})
set(_vmfest_deb_suggests "")
if(TARGET vmfest_libvirt)
  list(APPEND _vmfest_deb_suggests libvirt-dev)
endif()
if(TARGET vmfest_virtualbox)
  list(APPEND _vmfest_deb_suggests libgsoap-dev)
endif()
list(JOIN _vmfest_deb_depends ", " CPACK_DEBIAN_PACKAGE_DEPENDS)
list(JOIN _vmfest_deb_suggests ", " CPACK_DEBIAN_PACKAGE_SUGGESTS)

include(CPack)
