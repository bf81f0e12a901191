//===- CpuExecutor.cpp - running nn functions as compiled CPU code --------===//

#include "compiler/codegen/cpu/CpuExecutor.h"
#include "compiler/codegen/cpu/Jit.h"
#include "compiler/codegen/cpu/LowerToLoops.h"
#include "compiler/codegen/cpu/Specialize.h"

#include "mlir/Pass/PassManager.h"
#include "mlir/Transforms/Passes.h"

#include <map>

using namespace mlir;
using namespace nnc;
using ref::Tensor;

namespace {

struct Compiled {
  OwningOpRef<ModuleOp> module; // keeps the IR the engine was built from
  std::unique_ptr<cpu::JitModule> jit;
  SmallVector<RankedTensorType> resultTypes;
  std::vector<int64_t> resultSizes;
  std::vector<bool> kinds;                // per buffer: i32 (true) or f32
  std::vector<std::vector<float>> buffers; // per argument and result
};

class CpuExecutor : public ref::Executor {
public:
  FailureOr<std::vector<Tensor>> run(func::FuncOp fn, ArrayRef<Tensor> args,
                                     const ref::EvalOptions &options) override;
  const char *name() const override { return "cpu"; }

private:
  FailureOr<Compiled *> get(func::FuncOp fn, int64_t batch);
  std::map<std::pair<std::string, int64_t>, Compiled> cache;
};

FailureOr<Compiled *> CpuExecutor::get(func::FuncOp fn, int64_t batch) {
  auto key = std::make_pair(fn.getName().str(), batch);
  auto it = cache.find(key);
  if (it != cache.end())
    return &it->second;
  auto loops = cpu::buildLoops(fn, batch);
  if (failed(loops))
    return failure();
  Compiled c;
  c.module = std::move(*loops);
  auto kernel = c.module->lookupSymbol<func::FuncOp>("kernel");
  unsigned numArgs = fn.getNumArguments();
  for (Type t : kernel.getArgumentTypes().drop_front(numArgs).drop_back()) {
    auto m = cast<MemRefType>(t);
    c.resultTypes.push_back(RankedTensorType::get(m.getShape(), m.getElementType()));
  }
  auto jit = cpu::JitModule::compile(*c.module);
  if (failed(jit))
    return failure();
  c.jit = std::move(*jit);
  return &cache.emplace(key, std::move(c)).first->second;
}

FailureOr<std::vector<Tensor>> CpuExecutor::run(func::FuncOp fn, ArrayRef<Tensor> args,
                                                const ref::EvalOptions &options) {
  if (args.size() != fn.getNumArguments())
    return fn.emitError("expected ") << fn.getNumArguments() << " arguments, got " << args.size();
  int64_t batch = 0;
  for (auto [arg, t] : llvm::zip(fn.getArguments(), args)) {
    auto type = cast<RankedTensorType>(arg.getType());
    for (int64_t i = 0; i < type.getRank(); ++i)
      if (type.isDynamicDim(i) && i < static_cast<int64_t>(t.shape.size())) {
        if (batch && batch != t.shape[i])
          return fn.emitError("arguments disagree on the batch size: ") << batch << " and "
                                                                         << t.shape[i];
        batch = t.shape[i];
      }
  }
  auto compiled = get(fn, batch);
  if (failed(compiled))
    return failure();

  // Marshal: f32 and i32 buffers in argument order, then results, then rng.
  // The buffers live in the compiled entry and are reused from call to call.
  Compiled &c = **compiled;
  if (c.buffers.empty()) {
    for (Value arg : fn.getArguments())
      c.kinds.push_back(cast<RankedTensorType>(arg.getType()).getElementType().isInteger(32));
    for (RankedTensorType t : c.resultTypes) {
      c.kinds.push_back(t.getElementType().isInteger(32));
      c.resultSizes.push_back(t.getNumElements());
    }
    c.buffers.resize(c.kinds.size());
  }
  std::vector<void *> ptrs;
  for (size_t i = 0; i < c.buffers.size(); ++i) {
    bool isArg = i < args.size();
    size_t n = isArg ? args[i].data.size() : c.resultSizes[i - args.size()];
    std::vector<float> &buf = c.buffers[i]; // i32 data is stored in the same words
    buf.resize(n);
    if (isArg) {
      const double *src = args[i].data.data();
      if (c.kinds[i]) {
        auto *dst = reinterpret_cast<int32_t *>(buf.data());
        for (size_t k = 0; k < n; ++k)
          dst[k] = static_cast<int32_t>(src[k]);
      } else {
        for (size_t k = 0; k < n; ++k)
          buf[k] = static_cast<float>(src[k]);
      }
    }
    ptrs.push_back(buf.data());
  }
  int64_t rng[2] = {static_cast<int64_t>(options.seed), static_cast<int64_t>(options.step)};
  ptrs.push_back(rng);
  if (failed(c.jit->call("kernel", ptrs)))
    return fn.emitError("the compiled CPU code could not be called");

  std::vector<Tensor> out;
  for (size_t r = 0; r < c.resultTypes.size(); ++r) {
    RankedTensorType t = c.resultTypes[r];
    size_t i = args.size() + r;
    Tensor res{std::vector<int64_t>(t.getShape().begin(), t.getShape().end()), {}};
    res.data.resize(c.resultSizes[r]);
    if (c.kinds[i]) {
      auto *src = reinterpret_cast<const int32_t *>(c.buffers[i].data());
      for (size_t k = 0; k < res.data.size(); ++k)
        res.data[k] = src[k];
    } else {
      const float *src = c.buffers[i].data();
      for (size_t k = 0; k < res.data.size(); ++k)
        res.data[k] = src[k];
    }
    out.push_back(std::move(res));
  }
  return out;
}

} // namespace

std::unique_ptr<ref::Executor> cpu::createExecutor() { return std::make_unique<CpuExecutor>(); }

FailureOr<OwningOpRef<ModuleOp>> cpu::buildLoops(func::FuncOp fn, int64_t batch) {
  OwningOpRef<ModuleOp> scratch = ModuleOp::create(fn.getLoc());
  auto clone = cast<func::FuncOp>(fn->clone());
  scratch->push_back(clone);
  if (failed(specializeBatch(clone, batch)) || failed(decompose(clone)))
    return failure();
  PassManager pm(fn.getContext());
  pm.addPass(createCanonicalizerPass());
  pm.addPass(createCSEPass());
  if (failed(pm.run(*scratch)))
    return failure();
  OwningOpRef<ModuleOp> loops = ModuleOp::create(fn.getLoc());
  if (failed(lowerToLoops(clone, *loops, "kernel")))
    return failure();
  return loops;
}
