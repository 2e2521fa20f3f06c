# vmfest_add_tests(TARGET t [MODELS name=source ...] [TIMEOUT seconds] [SHARDS n] [VMS_PER_TEST n]
#                  [LABELS ...] [ENVIRONMENT VAR=value ...] [FIXTURES_REQUIRED fixture ...]
#                  [PREFIX p] [FILTER gtest-filter] [COST seconds])
#
# Registers a GoogleTest binary's VM tests with ctest, labelled `vm`, with a timeout:
# - by default one ctest test per GoogleTest test (found by gtest_discover_tests), so `ctest -j`
#   runs them in parallel;
# - with SHARDS n, n ctest tests "t/shard-i-of-n", each running a gtest shard of the whole binary
#   (GTEST_SHARD_INDEX/GTEST_TOTAL_SHARDS): suites with a SharedInstanceTest boot once per shard.
# Each test declares the VMs it runs (VMS_PER_TEST, default 1; a shard counts as one test) as
# ctest resources of type `vms`, and vmfest_add_tests hands ctest a resource spec with the host's
# capacity, so `ctest -j16` on 2 cores queues VM tests in ctest instead of in vmfest's host-wide
# cap (VMFEST_MAX_VMS, which still guards runs outside ctest). The capacity is VMFEST_MAX_VMS
# (environment or cache variable) at configure time, else min(cores, memory / 512 MiB); a test of
# more VMs takes the whole host, and vmfest runs the rest beyond its cap.
# COST, about the seconds each of these tests takes, lets `ctest -j` start long tests first on a
# build tree's first run (later runs use the times ctest recorded), so that no long test is left
# to run alone at the end of a CI run.
# MODELS are set up once per test binary before its first test (VMFEST_MODELS); the default model
# always is. Failed tests leave their logs in ${CMAKE_BINARY_DIR}/vmfest-artifacts
# (VMFEST_ARTIFACTS), every test process the timeline of its instances in its records/ folder
# (`vmfest report` draws it), and JUnit XML goes to ${CMAKE_BINARY_DIR}/vmfest-junit. FIXTURES_REQUIRED
# names ctest fixtures every test needs (e.g. a set-up test that empties its VMFEST_HOME).
# The same binary can be registered again with another PREFIX for its ctest names, e.g. against
# another model: vmfest_add_tests(TARGET t PREFIX debian/ FILTER "Guest.*"
# MODELS debian=https://... ENVIRONMENT VMFEST_TEST_MODEL=debian); FILTER picks its tests.
include_guard(GLOBAL)
include(GoogleTest)

# The host's capacity for VMs, as the library computes its default cap.
function(_vmfest_vm_capacity out)
  if(DEFINED VMFEST_MAX_VMS)
    set(capacity ${VMFEST_MAX_VMS})
  elseif(DEFINED ENV{VMFEST_MAX_VMS})
    set(capacity $ENV{VMFEST_MAX_VMS})
  else()
    cmake_host_system_information(RESULT cores QUERY NUMBER_OF_LOGICAL_CORES)
    cmake_host_system_information(RESULT memory_mib QUERY TOTAL_PHYSICAL_MEMORY)
    math(EXPR by_memory "${memory_mib} / 512")
    set(capacity ${cores})
    if(by_memory LESS capacity)
      set(capacity ${by_memory})
    endif()
    if(capacity LESS 1)
      set(capacity 1)
    endif()
  endif()
  set(${out} ${capacity} PARENT_SCOPE)
endfunction()

# Writes the resource spec once per build tree and makes ctest use it from this directory's
# CTestTestfile (ctest reads CTEST_RESOURCE_SPEC_FILE there unless --resource-spec-file is given).
function(_vmfest_declare_vm_resources)
  set(spec "${CMAKE_BINARY_DIR}/vmfest-resources.json")
  _vmfest_vm_capacity(capacity)
  file(CONFIGURE OUTPUT "${spec}" CONTENT
       "{\"version\": {\"major\": 1, \"minor\": 0}, \"local\": [{\"vms\": [{\"id\": \"host\", \"slots\": ${capacity}}]}]}\n")
  get_property(done DIRECTORY PROPERTY VMFEST_RESOURCES_DECLARED)
  if(NOT done)
    set(script "${CMAKE_CURRENT_BINARY_DIR}/vmfest-resources.cmake")
    file(CONFIGURE OUTPUT "${script}" CONTENT "set(CTEST_RESOURCE_SPEC_FILE [==[${spec}]==])\n")
    set_property(DIRECTORY APPEND PROPERTY TEST_INCLUDE_FILES "${script}")
    set_property(DIRECTORY PROPERTY VMFEST_RESOURCES_DECLARED TRUE)
  endif()
endfunction()

function(vmfest_add_tests)
  cmake_parse_arguments(ARG "" "TARGET;TIMEOUT;SHARDS;VMS_PER_TEST;PREFIX;FILTER;COST"
                        "MODELS;LABELS;ENVIRONMENT;FIXTURES_REQUIRED" ${ARGN})
  if(NOT ARG_TARGET)
    message(FATAL_ERROR "vmfest_add_tests: TARGET is required")
  endif()
  if(ARG_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "vmfest_add_tests: unknown arguments ${ARG_UNPARSED_ARGUMENTS}")
  endif()
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 300)
  endif()
  if(NOT ARG_VMS_PER_TEST)
    set(ARG_VMS_PER_TEST 1)
  endif()
  if(NOT ARG_COST)
    set(ARG_COST 0)
  endif()
  # A test of more VMs than the host's capacity takes the whole host in ctest, and vmfest runs its
  # other VMs beyond the cap (a 3-VM group on a 2-core runner).
  _vmfest_vm_capacity(capacity)
  if(ARG_VMS_PER_TEST GREATER capacity)
    set(ARG_VMS_PER_TEST ${capacity})
  endif()

  set(environment "VMFEST_ARTIFACTS=${CMAKE_BINARY_DIR}/vmfest-artifacts")
  if(ARG_MODELS)
    # ENVIRONMENT is a ;-list, so the models travel comma-separated.
    string(REPLACE ";" "," models "${ARG_MODELS}")
    list(APPEND environment "VMFEST_MODELS=${models}")
  endif()
  if(VMFEST_MODEL_SCRIPT)
    # Set by vmfestConfig.cmake: the installed default-model script, wherever the package went.
    list(APPEND environment "VMFEST_MODEL_SCRIPT=${VMFEST_MODEL_SCRIPT}")
  endif()
  # vmfest's waits (a VM slot, a guest's readiness) end before ctest's timeout would kill the test
  # without a word: it fails with vmfest's error, the console's tail and its artifacts. A test
  # starved of VM slots (other jobs on the host hold them) fails naming the holders at half time.
  list(APPEND environment "VMFEST_TEST_TIMEOUT=${ARG_TIMEOUT}")
  math(EXPR slot_wait "${ARG_TIMEOUT} / 2")
  list(APPEND environment "VMFEST_SLOT_WAIT=${slot_wait}")
  list(APPEND environment ${ARG_ENVIRONMENT})

  _vmfest_declare_vm_resources()
  # Again here, in the caller's scope: GoogleTest keeps its discovery script's path in a variable
  # of the scope that included it, which a project that added vmfest by FetchContent cannot see.
  include(GoogleTest)
  set(labels vm ${ARG_LABELS})
  set(junit "${CMAKE_BINARY_DIR}/vmfest-junit")

  # One registration's names: the same binary may be registered under several prefixes.
  string(MAKE_C_IDENTIFIER "${ARG_TARGET}_${ARG_PREFIX}" registration)
  if(ARG_SHARDS)
    set(filter "")
    if(ARG_FILTER)
      set(filter "--gtest_filter=${ARG_FILTER}")
    endif()
    math(EXPR last "${ARG_SHARDS} - 1")
    foreach(index RANGE ${last})
      set(name "${ARG_PREFIX}${ARG_TARGET}/shard-${index}-of-${ARG_SHARDS}")
      add_test(NAME "${name}"
               COMMAND ${ARG_TARGET} ${filter}
                       "--gtest_output=xml:${junit}/${registration}-shard-${index}.xml")
      set_tests_properties("${name}" PROPERTIES
        LABELS "${labels}"
        TIMEOUT ${ARG_TIMEOUT}
        PROCESSORS ${ARG_VMS_PER_TEST}
        RESOURCE_GROUPS "vms:${ARG_VMS_PER_TEST}"
        COST ${ARG_COST}
        FIXTURES_REQUIRED "${ARG_FIXTURES_REQUIRED}"
        ENVIRONMENT "${environment};GTEST_SHARD_INDEX=${index};GTEST_TOTAL_SHARDS=${ARG_SHARDS}")
    endforeach()
    return()
  endif()

  # gtest_discover_tests splits ;-lists in its PROPERTIES apart (ENVIRONMENT with two variables
  # would break), so a script of our own sets the properties once ctest knows the tests.
  set(test_list "${registration}_VMFEST_TESTS")
  # NO_PRETTY_VALUES: ctest names are GoogleTest's (a parameter's value stays out of them).
  gtest_discover_tests(${ARG_TARGET} DISCOVERY_TIMEOUT 60 TEST_LIST ${test_list}
                       TEST_PREFIX "${ARG_PREFIX}" TEST_FILTER "${ARG_FILTER}"
                       XML_OUTPUT_DIR "${junit}" NO_PRETTY_VALUES)
  set(script "${CMAKE_CURRENT_BINARY_DIR}/${registration}_vmfest_properties.cmake")
  file(CONFIGURE OUTPUT "${script}" @ONLY CONTENT [=[
if(@test_list@)
  set_tests_properties(${@test_list@} PROPERTIES
    LABELS [==[@labels@]==]
    TIMEOUT @ARG_TIMEOUT@
    PROCESSORS @ARG_VMS_PER_TEST@
    RESOURCE_GROUPS [==[vms:@ARG_VMS_PER_TEST@]==]
    COST @ARG_COST@
    FIXTURES_REQUIRED [==[@ARG_FIXTURES_REQUIRED@]==]
    ENVIRONMENT [==[@environment@]==])
endif()
]=])
  set_property(DIRECTORY APPEND PROPERTY TEST_INCLUDE_FILES "${script}")
endfunction()
