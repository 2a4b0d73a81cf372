# lr_embed(TARGET SYMBOL FILE): compiles FILE into TARGET as
# `const char SYMBOL[]` (NUL-terminated), so SQL migrations and the built-in
# model catalog live in readable files but ship inside the binary. The C
# file is written at configure time; editing FILE re-runs the configure.
function(lr_embed target symbol file)
  set(out "${CMAKE_CURRENT_BINARY_DIR}/embed_${symbol}.c")
  file(READ "${file}" hex HEX)
  string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
  file(CONFIGURE OUTPUT "${out}"
       CONTENT "/* generated from ${file} */\nconst char ${symbol}[] = {${bytes} 0x00};\n")
  set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS "${file}")
  target_sources(${target} PRIVATE "${out}")
endfunction()
