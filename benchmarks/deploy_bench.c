/* Times model_predict of a library made by `nnc build --lib` (model.h):
 *   deploy_bench WEIGHTS BATCH REPS INPUT.bin OUTPUT.bin
 * reads BATCH samples from INPUT.bin, writes the outputs to OUTPUT.bin (to
 * check against the peer) and prints the best milliseconds per call. */
#include "model.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
  if (argc != 6)
    return 2;
  long batch = atol(argv[2]), reps = atol(argv[3]);
  float *x = malloc(sizeof(float) * batch * MODEL_INPUT_SIZE);
  float *y = malloc(sizeof(float) * batch * MODEL_OUTPUT_SIZE);
  FILE *in = fopen(argv[4], "rb");
  if (!in || fread(x, sizeof(float), batch * MODEL_INPUT_SIZE, in) != (size_t)(batch * MODEL_INPUT_SIZE))
    return 1;
  fclose(in);
  model_ctx *m = model_create(argv[1]);
  if (!m) {
    fprintf(stderr, "%s\n", model_error(NULL));
    return 1;
  }
  double best = 1e30;
  for (long r = 0; r < reps; ++r) {
    double t = now();
    if (model_predict(m, x, batch, y) != 0) {
      fprintf(stderr, "%s\n", model_error(m));
      return 1;
    }
    t = now() - t;
    if (t < best)
      best = t;
  }
  FILE *out = fopen(argv[5], "wb");
  fwrite(y, sizeof(float), batch * MODEL_OUTPUT_SIZE, out);
  fclose(out);
  printf("%.4f\n", best * 1e3);
  model_destroy(m);
  return 0;
}
