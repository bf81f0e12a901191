//===- Prepared.cpp - a function emitted for CUDA, and its tensors -------===//

#include "compiler/codegen/cuda/Prepared.h"

#include "compiler/codegen/common/Prepare.h"

using namespace mlir;
using namespace nnc;
using namespace nnc::cuda;

FailureOr<std::unique_ptr<Prepared>> Prepared::emit(func::FuncOp fn) {
  auto p = std::make_unique<Prepared>();
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

ref::Tensor Prepared::result(unsigned i, int64_t batch, const float *words, size_t count) const {
  Value v = func::FuncOp(fn).front().getTerminator()->getOperand(i);
  auto t = cast<RankedTensorType>(v.getType());
  ref::Tensor res{std::vector<int64_t>(t.getShape()), {}};
  for (int64_t d = 0; d < t.getRank(); ++d)
    if (t.isDynamicDim(d)) {
      auto s = scaling.find(v);
      res.shape[d] = (s == scaling.end() ? 1 : s->second[d]) * batch;
    }
  res.data.resize(res.numel());
  bool integer = t.getElementType().isInteger(32);
  for (size_t k = 0; k < res.data.size() && k < count; ++k)
    res.data[k] = integer ? reinterpret_cast<const int32_t *>(words)[k] : words[k];
  return res;
}

int64_t cuda::batchOf(func::FuncOp fn, ArrayRef<ref::Tensor> args) {
  int64_t batch = 1;
  for (auto [a, t] : llvm::zip(fn.getArgumentTypes(), args)) {
    auto type = cast<RankedTensorType>(a);
    for (int64_t i = 0; i < type.getRank(); ++i)
      if (type.isDynamicDim(i))
        batch = t.shape[i];
  }
  return batch;
}

size_t cuda::wordsOf(const std::vector<int64_t> &shape, int64_t batch) {
  int64_t n = 1;
  for (int64_t d : shape)
    n *= d < 0 ? -d * batch : d;
  return static_cast<size_t>(std::max<int64_t>(n, 1));
}

std::vector<float> cuda::toWords(const ref::Tensor &t, bool integer) {
  std::vector<float> w(std::max<size_t>(t.data.size(), 1));
  for (size_t k = 0; k < t.data.size(); ++k) {
    if (integer)
      reinterpret_cast<int32_t *>(w.data())[k] = static_cast<int32_t>(t.data[k]);
    else
      w[k] = static_cast<float>(t.data[k]);
  }
  return w;
}
