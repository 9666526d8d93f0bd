# SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE
# cmake -DPROG=path -DVERSION=x.y.z -DIN=page.1.in -DOUT=page.1 -P gen-man.cmake
# Fills @HELP@ of a man page with `PROG --help`, escaped for roff.
execute_process(COMMAND ${PROG} --help OUTPUT_VARIABLE help RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "${PROG} --help failed: ${rc}")
endif()
string(REPLACE "\\" "\\e" help "${help}")
string(REGEX REPLACE "(^|\n)([.'])" "\\1\\\\&\\2" help "${help}")
string(REGEX REPLACE "\n$" "" help "${help}")
file(READ ${IN} page)
string(REPLACE "@HELP@" "${help}" page "${page}")
string(REPLACE "@PROJECT_VERSION@" "${VERSION}" page "${page}")
file(WRITE ${OUT} "${page}")
