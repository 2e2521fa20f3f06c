# Installs vmfest as a CMake package (see vmfestConfig.cmake.in). Included by the top-level
# CMakeLists.txt after every target is defined; each target's install() sits beside it and joins
# the export set vmfestTargets.
include_guard(GLOBAL)
include(CMakePackageConfigHelpers)

set(VMFEST_CMAKE_INSTALL_DIR "${CMAKE_INSTALL_LIBDIR}/cmake/vmfest")
set(VMFEST_DATA_INSTALL_DIR "${CMAKE_INSTALL_DATADIR}/vmfest")
set(VMFEST_BOOST_VERSION "${Boost_MAJOR_VERSION}.${Boost_MINOR_VERSION}")

# Optional backends are components of their own export sets, so that the core package needs none
# of their libraries: find_package(vmfest COMPONENTS virtualbox) loads vmfestVirtualboxTargets.
set(VMFEST_COMPONENTS "")
if(TARGET vmfest_virtualbox)
  list(APPEND VMFEST_COMPONENTS virtualbox)
  install(EXPORT vmfestVirtualboxTargets NAMESPACE vmfest:: DESTINATION "${VMFEST_CMAKE_INSTALL_DIR}")
endif()
if(TARGET vmfest_libvirt)
  list(APPEND VMFEST_COMPONENTS libvirt)
  install(EXPORT vmfestLibvirtTargets NAMESPACE vmfest:: DESTINATION "${VMFEST_CMAKE_INSTALL_DIR}")
endif()

install(EXPORT vmfestTargets NAMESPACE vmfest:: DESTINATION "${VMFEST_CMAKE_INSTALL_DIR}")
configure_package_config_file(
  "${PROJECT_SOURCE_DIR}/cmake/vmfestConfig.cmake.in" "${PROJECT_BINARY_DIR}/vmfestConfig.cmake"
  INSTALL_DESTINATION "${VMFEST_CMAKE_INSTALL_DIR}"
  PATH_VARS VMFEST_DATA_INSTALL_DIR)
write_basic_package_version_file("${PROJECT_BINARY_DIR}/vmfestConfigVersion.cmake"
                                 COMPATIBILITY SameMinorVersion)
install(FILES "${PROJECT_BINARY_DIR}/vmfestConfig.cmake"
              "${PROJECT_BINARY_DIR}/vmfestConfigVersion.cmake"
              "${PROJECT_SOURCE_DIR}/cmake/VmfestAddTests.cmake"
        DESTINATION "${VMFEST_CMAKE_INSTALL_DIR}")
