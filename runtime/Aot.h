//===- Aot.h - training binaries made by `nnc build` ------------*- C++ -*-===//
//
// A binary made by `nnc build` is the model's compiled training step and
// evaluation function (object code, for the build machine's CPU), a table
// describing their buffers, and this runtime. `aot::main` parses the
// binary's flags and runs the same training loop as `nnc train`
// (runtime/Training.h), so the same seed gives the same numbers.
//
// The kernels follow the CPU backend's calling convention: one pointer per
// argument and result buffer, the rng buffer (seed, step), the batch size,
// then one pointer per slot of the memory plan (compiler/codegen/cpu/
// LowerToLoops.h). `call` receives them as arrays.
//
//===----------------------------------------------------------------------===//

#ifndef NNC_RUNTIME_AOT_H
#define NNC_RUNTIME_AOT_H

#include "runtime/Init.h"

#include <cstdint>
#include <string>
#include <vector>

namespace nnc::rt::aot {

using Kernel = void (*)(void **buffers, int64_t batch, void **slots);

struct TensorDesc {
  std::string name, role; // role: input, param, frozen, state, opt_state, step, output, loss, ...
  bool integer = false;   // i32, else f32
  std::vector<int64_t> shape; // a negative size -k means k per batch element
};

struct FunctionDesc {
  Kernel call = nullptr;
  std::vector<TensorDesc> args, results;
  std::vector<int64_t> slots; // bytes per batch element and fixed bytes, per slot
};

struct ModelDesc {
  std::string name;
  FunctionDesc trainStep; // results: loss first, then new state by name
  FunctionDesc model;     // arguments: the first ones of the training step
  unsigned lossResult = 0; // of `model`
  std::vector<InitSpec> inits; // per argument of `model` (inputs: none)
  // The train section's settings, the defaults of the binary's flags.
  int64_t epochs = 1, batch = 32;
  uint64_t seed = 0;
  bool shuffle = true;
  double validation = 0;
  std::string dataKind, dataPath;
};

/// The entry point of a built binary: flags, data, training.
int main(const ModelDesc &model, int argc, char **argv);

} // namespace nnc::rt::aot

#endif // NNC_RUNTIME_AOT_H
