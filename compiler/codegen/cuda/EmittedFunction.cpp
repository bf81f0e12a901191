//===- EmittedFunction.cpp - a function prepared and emitted for CUDA -----===//

#include "compiler/codegen/cuda/EmittedFunction.h"

#include "compiler/codegen/common/Prepare.h"

using namespace mlir;
using namespace nnc;
using namespace nnc::cuda;

FailureOr<std::unique_ptr<EmittedFunction>> EmittedFunction::emit(func::FuncOp fn) {
  auto p = std::make_unique<EmittedFunction>();
  auto module = codegen::prepare(fn, std::nullopt, /*fuse=*/true, &p->scaling);
  if (failed(module))
    return failure();
  p->module = std::move(*module);
  p->fn = *p->module->getOps<func::FuncOp>().begin();
  auto code = emitCuda(p->fn, p->scaling);
  if (failed(code))
    return failure();
  p->code = std::move(*code);
  return p;
}

size_t cuda::wordsOf(const std::vector<int64_t> &shape, int64_t batch) {
  int64_t n = 1;
  for (int64_t d : shape)
    n *= d < 0 ? -d * batch : d;
  return static_cast<size_t>(std::max<int64_t>(n, 1));
}
