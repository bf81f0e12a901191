# Runs the frontend fuzzer for a bounded time over a fresh copy of the seeds;
# fails on any crash, leak, out-of-memory or per-input time-out.
file(REMOVE_RECURSE ${CORPUS})
file(MAKE_DIRECTORY ${CORPUS})
foreach(dir ${SEEDS})
  file(GLOB seeds ${dir}/*.nn)
  file(COPY ${seeds} DESTINATION ${CORPUS})
endforeach()
execute_process(
  COMMAND ${FUZZER} -max_total_time=${SECONDS} -timeout=10 -rss_limit_mb=2048
          -dict=${DICT} -print_final_stats=1 ${CORPUS}
  RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "fuzzer failed with exit code ${rc}")
endif()
