//===- CpuExecutor.cpp - running nn functions as compiled CPU code --------===//

#include "compiler/codegen/cpu/CpuExecutor.h"
#include "compiler/codegen/cpu/CompileModel.h"
#include "compiler/codegen/cpu/Jit.h"
#include "compiler/codegen/common/Prepare.h"
#include "compiler/transforms/Fusion.h"
#include "runtime/CompiledModel.h"

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
  std::vector<int64_t> slots; // perBatch, fixed per slot
  int64_t cacheBytes = 0;     // kept across calls (rt::KernelCache)
  rt::KernelCache cache;
  std::vector<int64_t> inPlace; // per result: the argument it overwrites, or -1
  std::vector<bool> kinds;                 // per buffer: i32 (true) or f32
  std::vector<std::vector<float>> buffers; // per argument and result
  std::vector<float> workspace;
  std::map<int64_t, SmallVector<Type>> resultTypes; // per batch size
};

class CpuExecutor : public ref::Executor {
public:
  explicit CpuExecutor(bool fuse) : fuse(fuse) {}
  FailureOr<std::vector<Tensor>> run(func::FuncOp fn, ArrayRef<Tensor> args,
                                     const ref::EvalOptions &options) override;
  const char *name() const override { return "cpu"; }

private:
  FailureOr<Compiled *> get(func::FuncOp fn);
  std::map<std::string, Compiled> cache;
  bool fuse;
};

FailureOr<Compiled *> CpuExecutor::get(func::FuncOp fn) {
  std::string key = fn.getName().str();
  auto it = cache.find(key);
  if (it != cache.end())
    return &it->second;
  auto loops = cpu::buildLoops(fn, std::nullopt, fuse);
  if (failed(loops))
    return failure();
  Compiled c;
  c.module = std::move(*loops);
  auto kernel = c.module->lookupSymbol<func::FuncOp>("kernel");
  c.slots = kernel->getAttrOfType<DenseI64ArrayAttr>("nnc.slots").asArrayRef().vec();
  c.cacheBytes = kernel->getAttrOfType<IntegerAttr>("nnc.cache").getInt();
  c.inPlace = kernel->getAttrOfType<DenseI64ArrayAttr>("nnc.inplace").asArrayRef().vec();
  for (Type t : fn.getArgumentTypes())
    c.kinds.push_back(cast<RankedTensorType>(t).getElementType().isInteger(32));
  for (Type t : fn.getResultTypes())
    c.kinds.push_back(cast<RankedTensorType>(t).getElementType().isInteger(32));
  c.buffers.resize(c.kinds.size());
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
    if (static_cast<int64_t>(t.shape.size()) != type.getRank())
      return fn.emitError("argument of rank ") << t.shape.size() << " for a tensor of rank "
                                               << type.getRank();
    for (int64_t i = 0; i < type.getRank(); ++i)
      if (type.isDynamicDim(i)) {
        if (batch && batch != t.shape[i])
          return fn.emitError("arguments disagree on the batch size: ") << batch << " and "
                                                                         << t.shape[i];
        batch = t.shape[i];
      }
  }
  auto compiled = get(fn);
  if (failed(compiled))
    return failure();

  // Result shapes at this batch size.
  Compiled &c = **compiled;
  auto known = c.resultTypes.find(batch);
  if (known == c.resultTypes.end()) {
    OwningOpRef<func::FuncOp> sized(cast<func::FuncOp>(fn->clone()));
    if (failed(codegen::specializeBatch(*sized, batch)))
      return failure();
    known = c.resultTypes.emplace(batch, SmallVector<Type>(sized->getResultTypes())).first;
  }
  ArrayRef<Type> resultTypes = known->second;

  // Marshal: f32 and i32 buffers in argument order, then results, then rng,
  // workspace and batch. The buffers live in the compiled entry and are
  // reused from call to call.
  std::vector<void *> ptrs;
  for (size_t i = 0; i < c.buffers.size(); ++i) {
    bool isArg = i < args.size();
    size_t n = isArg ? args[i].data.size()
                     : cast<RankedTensorType>(resultTypes[i - args.size()]).getNumElements();
    std::vector<float> &buf = c.buffers[i]; // i32 data is stored in the same words
    buf.resize(std::max<size_t>(n, 1));
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
  int64_t rng[3] = {static_cast<int64_t>(options.seed), static_cast<int64_t>(options.step), options.firstRow};
  ptrs.push_back(c.cache.prepare(c.cacheBytes, 0)); // arguments change from call to call
  ptrs.push_back(rng);
  // The slots, 64-byte aligned in one float vector.
  size_t total = rt::placeSlots(c.slots, batch, nullptr, nullptr) + 64;
  c.workspace.resize(std::max(c.workspace.size(), total / 4 + 1));
  uintptr_t base = (reinterpret_cast<uintptr_t>(c.workspace.data()) + 63) & ~uintptr_t(63);
  std::vector<void *> slots;
  rt::placeSlots(c.slots, batch, reinterpret_cast<void *>(base), &slots);
  if (failed(c.jit->call("kernel", ptrs, batch, slots)))
    return fn.emitError("the compiled CPU code could not be called");

  std::vector<Tensor> out;
  for (size_t r = 0; r < resultTypes.size(); ++r) {
    auto t = cast<RankedTensorType>(resultTypes[r]);
    size_t i = args.size() + r;
    if (r < c.inPlace.size() && c.inPlace[r] >= 0)
      i = c.inPlace[r]; // updated in the argument's buffer
    Tensor res{std::vector<int64_t>(t.getShape().begin(), t.getShape().end()), {}};
    res.data.resize(t.getNumElements());
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

std::unique_ptr<ref::Executor> cpu::createExecutor(bool fuse) {
  return std::make_unique<CpuExecutor>(fuse);
}
