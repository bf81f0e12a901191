//===- Progress.h - progress of long work -----------------------*- C++ -*-===//
//
// On a terminal, one line rewritten in place (epoch, step, loss, samples/s,
// ETA); elsewhere (logs, CI), a plain line at most every few seconds.
//
//===----------------------------------------------------------------------===//

#ifndef NNC_RUNTIME_PROGRESS_H
#define NNC_RUNTIME_PROGRESS_H

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace nnc::rt {

class Progress {
public:
  explicit Progress(FILE *out);

  /// Reports step `step` of `steps` in epoch `epoch` of `epochs`.
  void update(int64_t epoch, int64_t epochs, int64_t step, int64_t steps, double loss,
              int64_t samples);
  /// Ends the in-place line before other output.
  void finishLine();

private:
  FILE *out;
  bool tty;
  bool open = false;
  std::chrono::steady_clock::time_point start, lastPrint;
  int64_t samplesAtStart = -1;
};

} // namespace nnc::rt

#endif // NNC_RUNTIME_PROGRESS_H
