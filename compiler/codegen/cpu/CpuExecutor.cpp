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
  std::vector<std::vector<float>> floats;
  std::vector<std::vector<int32_t>> ints;
  floats.reserve(args.size() + (*compiled)->resultTypes.size());
  ints.reserve(args.size() + (*compiled)->resultTypes.size());
  std::vector<void *> ptrs;
  auto buffer = [&](Type element, int64_t n, const Tensor *from) -> void * {
    if (element.isInteger(32)) {
      ints.emplace_back(n);
      if (from)
        for (int64_t i = 0; i < n; ++i)
          ints.back()[i] = static_cast<int32_t>(from->data[i]);
      return ints.back().data();
    }
    floats.emplace_back(n);
    if (from)
      for (int64_t i = 0; i < n; ++i)
        floats.back()[i] = static_cast<float>(from->data[i]);
    return floats.back().data();
  };
  for (auto [arg, t] : llvm::zip(fn.getArguments(), args)) {
    Type element = cast<RankedTensorType>(arg.getType()).getElementType();
    ptrs.push_back(buffer(element, t.numel(), &t));
  }
  std::vector<std::pair<void *, RankedTensorType>> results;
  for (RankedTensorType t : (*compiled)->resultTypes) {
    void *p = buffer(t.getElementType(), t.getNumElements(), nullptr);
    ptrs.push_back(p);
    results.push_back({p, t});
  }
  int64_t rng[2] = {static_cast<int64_t>(options.seed), static_cast<int64_t>(options.step)};
  ptrs.push_back(rng);
  if (failed((*compiled)->jit->call("kernel", ptrs)))
    return fn.emitError("the compiled CPU code could not be called");

  std::vector<Tensor> out;
  for (auto [p, t] : results) {
    Tensor r = Tensor::filled(std::vector<int64_t>(t.getShape().begin(), t.getShape().end()));
    for (int64_t i = 0; i < t.getNumElements(); ++i)
      r.data[i] = t.getElementType().isInteger(32) ? static_cast<int32_t *>(p)[i]
                                                   : static_cast<float *>(p)[i];
    out.push_back(std::move(r));
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
