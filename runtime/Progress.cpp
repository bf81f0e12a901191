//===- Progress.cpp - progress of long work -------------------------------===//

#include "runtime/Progress.h"

#include <unistd.h>

namespace nnc::rt {

Progress::Progress(FILE *out) : out(out), tty(out && isatty(fileno(out)) != 0) {
  start = lastPrint = std::chrono::steady_clock::now();
}

void Progress::update(int64_t epoch, int64_t epochs, int64_t step, int64_t steps, double loss,
                      int64_t samples) {
  if (!out) // quiet
    return;
  auto now = std::chrono::steady_clock::now();
  if (samplesAtStart < 0) {
    samplesAtStart = samples;
    start = now;
  }
  double since = std::chrono::duration<double>(now - lastPrint).count();
  // A terminal sees the last step of each epoch; a log only a line every 10 s.
  bool last = step == steps;
  if (tty ? (!last && since < 0.2) : since < 10.0)
    return;
  lastPrint = now;
  double elapsed = std::chrono::duration<double>(now - start).count();
  double rate = elapsed > 0 ? static_cast<double>(samples - samplesAtStart) / elapsed : 0.0;
  double done = static_cast<double>((epoch - 1) * steps + step) / static_cast<double>(epochs * steps);
  double eta = done > 0 ? elapsed * (1 - done) / done : 0.0;
  std::fprintf(out, "%sepoch %lld/%lld  step %lld/%lld  loss %.4f  %.0f samples/s  ETA %02d:%02d%s",
               tty ? "\r" : "", static_cast<long long>(epoch), static_cast<long long>(epochs),
               static_cast<long long>(step), static_cast<long long>(steps), loss, rate,
               static_cast<int>(eta) / 60, static_cast<int>(eta) % 60, tty ? "\033[K" : "\n");
  std::fflush(out);
  open = tty;
}

void Progress::finishLine() {
  if (open)
    std::fputc('\n', out);
  open = false;
}

} // namespace nnc::rt
