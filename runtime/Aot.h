//===- Aot.h - training binaries made by `nnc build` ------------*- C++ -*-===//
//
// A binary made by `nnc build` is the model's compiled training step and
// evaluation function (object code, for the build machine's CPU), their
// description (runtime/CompiledModel.h) written out as C++, and this runtime.
// `aot::main` parses the binary's flags and runs the same training loop as
// `nnc train` (runtime/Training.h), so the same seed gives the same numbers.
//
//===----------------------------------------------------------------------===//

#ifndef NNC_RUNTIME_AOT_H
#define NNC_RUNTIME_AOT_H

#include "runtime/CompiledModel.h"

namespace nnc::rt::aot {

/// The entry point of a built binary: flags, data, training.
int main(const ModelDesc &model, int argc, char **argv);

} // namespace nnc::rt::aot

#endif // NNC_RUNTIME_AOT_H
