# Runs a fuzzer for a bounded time over a fresh copy of the seeds (the files
# matching PATTERN in SEEDS), inputs up to MAX_LEN bytes, with DICT when
# given; fails on any crash, leak, out-of-memory or per-input time-out.
file(REMOVE_RECURSE ${CORPUS})
file(MAKE_DIRECTORY ${CORPUS})
foreach(dir ${SEEDS})
  file(GLOB seeds ${dir}/${PATTERN})
  file(COPY ${seeds} DESTINATION ${CORPUS})
endforeach()
set(DICT_FLAG "")
if(DICT)
  set(DICT_FLAG -dict=${DICT})
endif()
execute_process(
  COMMAND ${FUZZER} -max_total_time=${SECONDS} -timeout=10 -rss_limit_mb=2048
          ${DICT_FLAG} -max_len=${MAX_LEN} -print_final_stats=1 ${CORPUS}
  RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "fuzzer failed with exit code ${rc}")
endif()
