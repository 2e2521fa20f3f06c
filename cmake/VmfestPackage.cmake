# Installs vmfest as a CMake package (see vmfestConfig.cmake.in). Included by the top-level
# CMakeLists.txt after every target is defined; each target's install() sits beside it and joins
# the export set vmfestTargets.
include_guard(GLOBAL)
include(CMakePackageConfigHelpers)

set(VMFEST_CMAKE_INSTALL_DIR "${CMAKE_INSTALL_LIBDIR}/cmake/vmfest")
set(VMFEST_DATA_INSTALL_DIR "${CMAKE_INSTALL_DATADIR}/vmfest")
set(VMFEST_BOOST_VERSION "${Boost_MAJOR_VERSION}.${Boost_MINOR_VERSION}")

# The VirtualBox backend's generated gSOAP client is a static library of its own: consumers link it.
set(VMFEST_PACKAGE_NEEDS_GSOAP OFF)
if(TARGET vmfest_vbox_soap)
  # Its generated headers stay in the build tree: only the build may see them (an installed
  # package must not point into a build directory).
  foreach(property INTERFACE_INCLUDE_DIRECTORIES INTERFACE_SYSTEM_INCLUDE_DIRECTORIES)
    get_target_property(directories vmfest_vbox_soap ${property})
    if(directories)
      list(TRANSFORM directories REPLACE "^(.+)$" "$<BUILD_INTERFACE:\\1>")
      set_target_properties(vmfest_vbox_soap PROPERTIES ${property} "${directories}")
    endif()
  endforeach()
  install(TARGETS vmfest_vbox_soap EXPORT vmfestTargets)
  set(VMFEST_PACKAGE_NEEDS_GSOAP ON)
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
