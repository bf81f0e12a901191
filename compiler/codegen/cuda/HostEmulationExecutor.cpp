//===- HostEmulationExecutor.cpp - the CUDA backend as a test executor ----===//
//
// The generated CUDA of a function run on the host (HostKernels) behind the
// reference evaluator's Executor interface, so that every check of a
// backend against the evaluator runs this one too. A library of its own
// (NNCCudaExecutor): the CUDA backend itself does not depend on the
// evaluator.
//
//===----------------------------------------------------------------------===//

#include "compiler/codegen/cuda/HostEmulationExecutor.h"
#include "compiler/codegen/cuda/EmittedFunction.h"
#include "compiler/codegen/cuda/HostEmulation.h"

#include <map>

using namespace mlir;
using namespace nnc;
using namespace nnc::cuda;

/// Result `i` of `f` as a tensor, from the words of its buffer.
static ref::Tensor resultOf(const EmittedFunction &f, unsigned i, int64_t batch, const float *words,
                            size_t count) {
  const codegen::BatchScaling &scaling = f.scaling;
  Value v = func::FuncOp(f.fn).front().getTerminator()->getOperand(i);
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

/// The batch size of a call: the size of an argument's dynamic axis (1
/// when there is none).
static int64_t batchOf(func::FuncOp fn, ArrayRef<ref::Tensor> args) {
  int64_t batch = 1;
  for (auto [a, t] : llvm::zip(fn.getArgumentTypes(), args)) {
    auto type = cast<RankedTensorType>(a);
    for (int64_t i = 0; i < type.getRank(); ++i)
      if (type.isDynamicDim(i))
        batch = t.shape[i];
  }
  return batch;
}

/// The words of argument `t` (i32 when `integer`), at least one.
static std::vector<float> toWords(const ref::Tensor &t, bool integer) {
  std::vector<float> w(std::max<size_t>(t.data.size(), 1));
  for (size_t k = 0; k < t.data.size(); ++k) {
    if (integer)
      reinterpret_cast<int32_t *>(w.data())[k] = static_cast<int32_t>(t.data[k]);
    else
      w[k] = static_cast<float>(t.data[k]);
  }
  return w;
}

namespace {

struct Compiled {
  std::unique_ptr<EmittedFunction> prepared;
  std::unique_ptr<HostKernels> kernels;
};

class HostEmulationExecutor : public ref::Executor {
public:
  explicit HostEmulationExecutor(std::string compiler) : compiler(std::move(compiler)) {}
  const char *name() const override { return "cuda-host"; }

  FailureOr<std::vector<ref::Tensor>> run(func::FuncOp fn, ArrayRef<ref::Tensor> args,
                                          const ref::EvalOptions &options) override {
    long long rng[3] = {static_cast<long long>(options.seed), static_cast<long long>(options.step),
                        static_cast<long long>(options.firstRow)};
    int64_t batch = batchOf(fn, args);
    auto c = get(fn);
    if (failed(c))
      return failure();
    const CudaModule &code = (*c)->prepared->code;

    // Buffers by name: arguments, then what launches write; views share
    // their root's.
    std::map<std::string, std::vector<float>> buffers;
    for (auto [i, t] : llvm::enumerate(args))
      buffers[code.args[i]] = toWords(t, getElementTypeOrSelf(fn.getArgumentTypes()[i]).isInteger(32));
    for (auto [launch, call] : llvm::zip(code.launches, (*c)->kernels->entries)) {
      std::vector<void *> ptrs;
      for (const Param &p : launch.params) {
        std::vector<float> &b = buffers[p.viewOf.empty() ? p.name : p.viewOf];
        if (b.size() < wordsOf(p.shape, batch))
          b.resize(wordsOf(p.shape, batch));
        ptrs.push_back(b.data());
      }
      std::vector<void *> params;
      for (void *&p : ptrs)
        params.push_back(&p);
      const long long *rngPtr = rng;
      if (launch.rng)
        params.push_back(&rngPtr);
      long long n = batch;
      params.push_back(&n);
      long long threads = launch.threadsPerBatch * batch + launch.threadsFixed;
      call(params.data(), std::clamp<long long>((threads + kBlockSize - 1) / kBlockSize, 1, kMaxBlocks));
    }
    std::vector<ref::Tensor> out;
    for (auto [i, r] : llvm::enumerate(code.results)) {
      auto found = buffers.find(r);
      if (found == buffers.end())
        return fn.emitError("the emulated CUDA code wrote no result '") << r << "'";
      out.push_back(resultOf(*(*c)->prepared, i, batch, found->second.data(), found->second.size()));
    }
    return out;
  }

private:
  std::string compiler;
  std::map<std::string, std::unique_ptr<Compiled>> cache; // by function name

  /// The function emitted and compiled for the host, once.
  FailureOr<Compiled *> get(func::FuncOp fn) {
    auto it = cache.find(fn.getName().str());
    if (it != cache.end())
      return it->second.get();
    auto prepared = EmittedFunction::emit(fn);
    if (failed(prepared))
      return failure();
    auto kernels = HostKernels::compile((*prepared)->code, compiler, fn);
    if (failed(kernels))
      return failure();
    auto c = std::make_unique<Compiled>();
    c->prepared = std::move(*prepared);
    c->kernels = std::move(*kernels);
    return (cache[fn.getName().str()] = std::move(c)).get();
  }

};

} // namespace

std::unique_ptr<ref::Executor> cuda::createHostEmulationExecutor(std::string compiler) {
  return std::make_unique<HostEmulationExecutor>(std::move(compiler));
}
