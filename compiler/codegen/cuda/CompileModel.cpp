//===- CompileModel.cpp - a whole model compiled for a CUDA device -------===//

#include "compiler/codegen/cuda/CompileModel.h"
#include "compiler/codegen/common/MemoryPlan.h"

#include "compiler/codegen/common/ModelDescription.h"
#include "compiler/codegen/cuda/Nvrtc.h"
#include "compiler/codegen/cuda/EmittedFunction.h"

#include <map>

using namespace mlir;
using namespace nnc;
using namespace nnc::cuda;

ImageFn cuda::ptxImage(std::string arch) {
  return [arch](const CudaModule &code, func::FuncOp fn) -> FailureOr<std::string> {
    NvrtcResult r = compileCached(code.source, fn.getName().str() + ".cu", arch, {}, defaultCacheDir());
    if (!r.ok)
      return fn.emitError(r.error) << (r.log.empty() ? "" : "\n" + r.log);
    return r.ptx;
  };
}

FailureOr<rt::CudaCode> cuda::planBuffers(const CudaModule &code, size_t numArgs, func::FuncOp fn) {
  struct Use {
    int64_t perBatch = 0, fixed = 0;
    size_t first = SIZE_MAX, last = 0;
  };
  std::map<std::string, int32_t> index;
  for (size_t i = 0; i < code.args.size(); ++i)
    index[code.args[i]] = static_cast<int32_t>(i);
  std::vector<Use> uses; // per buffer after the arguments
  rt::CudaCode out;
  out.blockSize = kBlockSize;
  out.maxBlocks = kMaxBlocks;
  // Collectives run on a stream of their own until the first launch that
  // reads what one of them combined waits for all of them: until then
  // their buffers stay theirs (no later launch may take their slots).
  std::vector<int32_t> combining, combined; // buffers of collectives in flight
  auto touch = [&](int32_t b, size_t k) {
    if (static_cast<size_t>(b) >= numArgs)
      uses[static_cast<size_t>(b) - numArgs].last = std::max(uses[static_cast<size_t>(b) - numArgs].last, k);
  };
  for (size_t k = 0; k < code.launches.size(); ++k) {
    const Launch &l = code.launches[k];
    rt::CudaLaunch launch{l.name, l.ops + " at " + l.loc, {}, l.threadsPerBatch, l.threadsFixed, l.rng};
    if (l.collective)
      launch.collective = l.sum ? rt::Collective::Sum : rt::Collective::Mean;
    for (const Param &p : l.params) {
      const std::string &root = p.viewOf.empty() ? p.name : p.viewOf;
      auto [it, fresh] = index.try_emplace(root, static_cast<int32_t>(numArgs + uses.size()));
      if (fresh)
        uses.emplace_back();
      launch.buffers.push_back(it->second);
      if (static_cast<size_t>(it->second) < numArgs)
        continue;
      Use &u = uses[static_cast<size_t>(it->second) - numArgs];
      int64_t n = 1;
      bool batched = false;
      for (int64_t d : p.shape) {
        n *= d < 0 ? -d : d;
        batched |= d < 0;
      }
      (batched ? u.perBatch : u.fixed) = std::max(batched ? u.perBatch : u.fixed, n);
      u.first = std::min(u.first, k);
      u.last = std::max(u.last, k);
    }
    if (!l.collective && llvm::any_of(llvm::zip(l.params, launch.buffers), [&](auto pb) {
          return !std::get<0>(pb).output && llvm::is_contained(combined, std::get<1>(pb));
        })) {
      launch.waits = true;
      for (int32_t b : combining)
        touch(b, k);
      combining.clear();
      combined.clear();
    }
    if (l.collective) {
      combining.insert(combining.end(), launch.buffers.begin(), launch.buffers.end());
      combined.push_back(launch.buffers[1]);
    }
    out.launches.push_back(std::move(launch));
  }
  // What no launch reads (a combined result returned as it is) is waited
  // for at the function's end.
  for (int32_t b : combining)
    touch(b, code.launches.size());
  std::vector<bool> isResult(uses.size());
  for (const std::string &r : code.results) {
    auto it = index.find(r);
    if (it == index.end())
      return fn.emitError("the CUDA code computes no buffer for the result '") << r << "'";
    out.results.push_back(it->second);
    if (static_cast<size_t>(it->second) >= numArgs)
      isResult[static_cast<size_t>(it->second) - numArgs] = true;
  }
  // Slots from the planner both backends share (codegen::SlotPlanner):
  // buffers in order of first use, each slot given back once the last
  // launch touching its buffer is over.
  std::vector<size_t> order(uses.size());
  for (size_t b = 0; b < uses.size(); ++b)
    order[b] = b;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return uses[a].first < uses[b].first; });
  std::vector<int64_t> slotOf(uses.size(), -1);
  codegen::SlotPlanner planner;
  std::vector<size_t> live; // buffers holding a slot
  for (size_t b : order) {
    if (isResult[b])
      continue;
    for (auto it = live.begin(); it != live.end();) {
      if (uses[*it].last < uses[b].first) {
        planner.release(static_cast<unsigned>(slotOf[*it]));
        it = live.erase(it);
      } else {
        ++it;
      }
    }
    slotOf[b] = planner.acquire({uses[b].perBatch, uses[b].fixed});
    live.push_back(b);
  }
  out.slots = planner.flattened();
  for (size_t b = 0; b < uses.size(); ++b)
    out.buffers.insert(out.buffers.end(), {uses[b].perBatch, uses[b].fixed, slotOf[b]});
  return out;
}

FailureOr<rt::ModelDesc> cuda::compileModel(ModuleOp module, StringRef name, const ImageFn &image,
                                            std::vector<CudaModule> *modules) {
  auto model = module.lookupSymbol<func::FuncOp>(name);
  auto step = module.lookupSymbol<func::FuncOp>((name + "_train_step").str());
  if (!model || !step)
    return module.emitError("no model '") << name << "' with a training step";
  rt::ModelDesc m;
  for (auto [fn, desc] : {std::pair{step, &m.trainStep}, std::pair{model, &m.model}}) {
    auto signature = codegen::describeSignature(fn);
    if (failed(signature))
      return failure();
    *desc = std::move(*signature);
    auto prepared = EmittedFunction::emit(fn);
    if (failed(prepared))
      return failure();
    const CudaModule &code = (*prepared)->code;
    auto plan = planBuffers(code, desc->args.size(), fn);
    if (failed(plan))
      return failure();
    auto img = image(code, fn);
    if (failed(img))
      return failure();
    desc->cuda = std::move(*plan);
    desc->cuda.image = std::move(*img);
    if (modules)
      modules->push_back(code);
  }
  if (failed(codegen::describeModel(model, m)))
    return failure();
  return m;
}
