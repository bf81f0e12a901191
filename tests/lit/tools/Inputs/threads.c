/* Contexts of a built library are independent: four threads, each with a
 * context of its own, predict the same rows again and again and must get
 * exactly what one context gets alone. */
#include "model.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#define ROWS 64
#define ROUNDS 50

static float x[ROWS * MODEL_INPUT_SIZE], want[ROWS * MODEL_OUTPUT_SIZE];

static void *worker(void *arg) {
  model_ctx *m = model_create(NULL);
  float out[ROWS * MODEL_OUTPUT_SIZE];
  long bad = 0;
  for (int r = 0; m && r < ROUNDS; ++r) {
    if (model_predict(m, x, ROWS, out) != 0 || memcmp(out, want, sizeof out) != 0)
      ++bad;
  }
  if (!m)
    bad = -1;
  model_destroy(m);
  *(long *)arg = bad;
  return NULL;
}

int main(void) {
  for (int i = 0; i < ROWS * MODEL_INPUT_SIZE; ++i)
    x[i] = (float)((i * 37) % 101) / 101.0f - 0.5f;
  model_ctx *m = model_create(NULL);
  if (!m || model_predict(m, x, ROWS, want) != 0) {
    fprintf(stderr, "%s\n", model_error(m));
    return 1;
  }
  model_destroy(m);
  pthread_t t[4];
  long bad[4];
  for (int i = 0; i < 4; ++i)
    pthread_create(&t[i], NULL, worker, &bad[i]);
  int failed = 0;
  for (int i = 0; i < 4; ++i) {
    pthread_join(t[i], NULL);
    failed |= bad[i] != 0;
  }
  printf(failed ? "contexts disagree\n" : "4 threads x %d rounds: all equal\n", ROUNDS);
  return failed;
}
