# vmfest_add_tests(TARGET t [TIMEOUT seconds] [LABELS ...])
#
# Registers a GoogleTest binary's VM tests with ctest: one ctest test per GoogleTest test (so ctest
# -j runs them in parallel), labelled `vm`, with a timeout, and each declared to need one processor
# so ctest does not start more VMs at once than the host has cores for.
include_guard(GLOBAL)
include(GoogleTest)

function(vmfest_add_tests)
  cmake_parse_arguments(ARG "" "TARGET;TIMEOUT" "LABELS;ENVIRONMENT" ${ARGN})
  if(NOT ARG_TARGET)
    message(FATAL_ERROR "vmfest_add_tests: TARGET is required")
  endif()
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 300)
  endif()
  gtest_discover_tests(${ARG_TARGET}
    DISCOVERY_TIMEOUT 60
    PROPERTIES
      LABELS "vm;${ARG_LABELS}"
      TIMEOUT ${ARG_TIMEOUT}
      PROCESSORS 1
      ENVIRONMENT "${ARG_ENVIRONMENT}")
endfunction()
