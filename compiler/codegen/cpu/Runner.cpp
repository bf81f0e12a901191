//===- Runner.cpp - one function compiled and bound to buffers ------------===//

#include "compiler/codegen/cpu/Runner.h"

#include "compiler/codegen/cpu/Jit.h"
#include "compiler/codegen/common/ModelDescription.h"
#include "compiler/codegen/cpu/CompileModel.h"

#include "runtime/Memory.h"

#include <chrono>
#include <cstring>

using namespace mlir;
using namespace nnc;
using namespace nnc::cpu;

FunctionRunner::~FunctionRunner() = default;

FailureOr<std::unique_ptr<FunctionRunner>> FunctionRunner::create(func::FuncOp fn, int64_t batch,
                                                                  bool profile, bool fuse, bool fixedWeights) {
  auto begin = std::chrono::steady_clock::now();
  std::unique_ptr<FunctionRunner> r(new FunctionRunner);
  r->batch = batch;
  r->code = ModuleOp::create(fn.getLoc());
  if (failed(addLoops(fn, std::nullopt, *r->code, kModelKernel, profile, fuse, fixedWeights)))
    return failure();
  auto d = codegen::describeSignature(fn);
  if (failed(d))
    return failure();
  r->f = std::move(*d);
  auto kernel = r->code->lookupSymbol<func::FuncOp>(kModelKernel);
  r->f.slots = kernel->getAttrOfType<DenseI64ArrayAttr>("nnc.slots").asArrayRef().vec();
  r->f.cache = kernel->getAttrOfType<IntegerAttr>("nnc.cache").getInt();
  r->table = kernel->getAttrOfType<ArrayAttr>("nnc.kernels");
  auto jit = JitModule::compile(*r->code);
  if (failed(jit) || failed((*jit)->prepare(kModelKernel)))
    return failure();
  r->jit = std::move(*jit);
  r->seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count();

  uint64_t counter = 0;
  for (const rt::TensorDesc &t : r->f.args) {
    rt::HostTensor h = rt::syntheticTensor(t, batch, counter);
    std::vector<int32_t, rt::CacheLineAllocator<int32_t>> words;
    rt::resizeLarge(words, std::max<size_t>(h.data.size(), 1));
    if (!t.integer) // integers (labels) are 0
      std::memcpy(words.data(), h.data.data(), h.data.size() * 4);
    r->buffers.push_back(std::move(words));
  }
  for (const rt::TensorDesc &t : r->f.results)
    rt::resizeLarge(r->buffers.emplace_back(), static_cast<size_t>(std::max<int64_t>(t.numel(batch), 1)));
  for (auto &b : r->buffers)
    r->pointers.push_back(b.data());
  // Version 1 throughout: the weights never change; 0 recomputes.
  r->pointers.push_back(r->cache.prepare(r->f.cache, fixedWeights ? 1 : 0));
  r->pointers.push_back(r->rng);
  rt::resizeLarge(r->workspace, rt::placeSlots(r->f.slots, batch, nullptr, nullptr) / 4 + 16);
  auto base = (reinterpret_cast<uintptr_t>(r->workspace.data()) + 63) & ~uintptr_t(63);
  rt::placeSlots(r->f.slots, batch, reinterpret_cast<void *>(base), &r->slots);
  return r;
}

void FunctionRunner::run() { (void)jit->call(kModelKernel, pointers, batch, slots); }
