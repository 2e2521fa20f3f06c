# One place for the project's compiler warnings.
function(vmfest_set_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic -Wshadow -Wconversion
                                           -Wno-sign-conversion -Wnon-virtual-dtor -Wold-style-cast)
  if(VMFEST_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
endfunction()
