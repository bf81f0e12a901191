/* Runs a model built with `nnc build --lib` on the rows of a CSV file and
 * prints what `nnc predict` prints: a header, then each row's outputs (and
 * the class of a classifier).
 *
 *   nnc build examples/xor_mlp.nn --lib --checkpoint xor.safetensors -o libxor
 *   cc -I. examples/deploy/predict.c libxor.so -o predict
 *   ./predict rows.csv
 */
#include "model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s ROWS.csv\n", argv[0]);
    return 2;
  }
  FILE *in = fopen(argv[1], "r");
  if (!in) {
    fprintf(stderr, "%s: cannot open %s\n", argv[0], argv[1]);
    return 1;
  }
  /* The rows: numbers, a header line skipped. */
  size_t cap = 1024, n = 0;
  float *x = malloc(cap * sizeof(float));
  char line[65536];
  while (fgets(line, sizeof line, in)) {
    char *p = line, *end;
    float v = strtof(p, &end);
    if (end == p)
      continue; /* the header, or a blank line */
    for (;;) {
      if (n == cap)
        x = realloc(x, (cap *= 2) * sizeof(float));
      x[n++] = v;
      p = end;
      while (*p == ',' || *p == ' ')
        ++p;
      v = strtof(p, &end);
      if (end == p)
        break;
    }
  }
  fclose(in);
  int64_t rows = (int64_t)(n / MODEL_INPUT_SIZE);
  model_ctx *m = model_create(NULL);
  if (!m) {
    fprintf(stderr, "%s: %s\n", argv[0], model_error(NULL));
    return 1;
  }
  float *out = malloc((size_t)rows * MODEL_OUTPUT_SIZE * sizeof(float));
  if (model_predict(m, x, rows, out) != 0) {
    fprintf(stderr, "%s: %s\n", argv[0], model_error(m));
    return 1;
  }
  int64_t classes = model_classes();
  for (int64_t j = 0; j < MODEL_OUTPUT_SIZE; ++j) {
    if (MODEL_OUTPUT_SIZE > 1)
      printf("%s%s[%lld]", j ? "," : "", model_output_name(), (long long)j);
    else
      printf("%s", model_output_name());
  }
  printf(classes ? ",class\n" : "\n");
  for (int64_t r = 0; r < rows; ++r) {
    const float *y = out + r * MODEL_OUTPUT_SIZE;
    int64_t best = 0;
    for (int64_t j = 0; j < MODEL_OUTPUT_SIZE; ++j) {
      printf("%s%.6g", j ? "," : "", y[j]);
      if (y[j] > y[best])
        best = j;
    }
    if (classes)
      printf(",%lld", (long long)best);
    printf("\n");
  }
  model_destroy(m);
  free(out);
  free(x);
  return 0;
}
