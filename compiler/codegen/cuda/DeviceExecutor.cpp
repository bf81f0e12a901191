//===- DeviceExecutor.cpp - generated CUDA run on a GPU ------------------===//
//
// The same launch table the host emulation runs, on a device through the
// driver API (libcuda opened with dlopen): PTX from NVRTC (cached on disk)
// loaded as a module per function and batch size, buffers in device
// memory, launches on one stream, results copied back.
//
//===----------------------------------------------------------------------===//

#include "compiler/codegen/cuda/DeviceExecutor.h"

#include "compiler/codegen/cuda/Nvrtc.h"
#include "compiler/codegen/cuda/Prepared.h"
#include "runtime/CudaDevice.h"

#include <dlfcn.h>

#include <map>

using namespace mlir;
using namespace nnc;
using namespace nnc::cuda;

namespace {

using CUdeviceptr = unsigned long long;

/// The driver entry points used here (cuda.h signatures, handles as void*).
struct Driver {
  void *lib = nullptr;
  int (*init)(unsigned) = nullptr;
  int (*deviceGet)(int *, int) = nullptr;
  int (*primaryRetain)(void **, int) = nullptr;
  int (*ctxSetCurrent)(void *) = nullptr;
  int (*moduleLoadData)(void **, const void *) = nullptr;
  int (*moduleUnload)(void *) = nullptr;
  int (*moduleGetFunction)(void **, void *, const char *) = nullptr;
  int (*memAlloc)(CUdeviceptr *, size_t) = nullptr;
  int (*memFree)(CUdeviceptr) = nullptr;
  int (*memcpyHtoD)(CUdeviceptr, const void *, size_t) = nullptr;
  int (*memcpyDtoH)(void *, CUdeviceptr, size_t) = nullptr;
  int (*launch)(void *, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, void *,
                void **, void **) = nullptr;
  int (*ctxSynchronize)() = nullptr;
  int (*errorString)(int, const char **) = nullptr;

  std::string error(int rc) const {
    const char *s = nullptr;
    if (errorString)
      errorString(rc, &s);
    return s ? s : "CUDA error " + std::to_string(rc);
  }
};

struct Module {
  std::unique_ptr<Prepared> prepared;
  void *module = nullptr;
  std::vector<void *> functions;
};

class DeviceExecutor : public ref::Executor {
public:
  DeviceExecutor(Driver d, std::string arch) : d(d), arch(std::move(arch)) {}
  ~DeviceExecutor() override {
    for (auto &[key, m] : modules)
      d.moduleUnload(m.module);
  }
  const char *name() const override { return "cuda"; }

  FailureOr<std::vector<ref::Tensor>> run(func::FuncOp fn, ArrayRef<ref::Tensor> args,
                                          const ref::EvalOptions &options) override {
    int64_t batch = batchOf(fn, args);
    auto m = load(fn);
    if (failed(m))
      return failure();
    const CudaModule &code = (*m)->prepared->code;

    // Device buffers by name; views share their root's.
    std::map<std::string, std::pair<CUdeviceptr, size_t>> buffers;
    auto release = [&] {
      for (auto &[n, b] : buffers)
        d.memFree(b.first);
    };
    auto buffer = [&](const std::string &name, size_t bytes) -> FailureOr<CUdeviceptr> {
      auto it = buffers.find(name);
      if (it != buffers.end() && it->second.second >= bytes)
        return it->second.first;
      if (it != buffers.end())
        return fn.emitError("the CUDA buffer '") << name << "' is used with two sizes";
      CUdeviceptr p = 0;
      if (int rc = d.memAlloc(&p, bytes))
        return fn.emitError("cuMemAlloc(") << bytes << "): " << d.error(rc);
      buffers[name] = {p, bytes};
      return p;
    };
    for (auto [i, t] : llvm::enumerate(args)) {
      std::vector<float> host = toWords(t, getElementTypeOrSelf(fn.getArgumentTypes()[i]).isInteger(32));
      auto p = buffer(code.args[i], host.size() * 4);
      if (failed(p)) {
        release();
        return failure();
      }
      if (int rc = d.memcpyHtoD(*p, host.data(), host.size() * 4)) {
        release();
        return fn.emitError("cuMemcpyHtoD: ") << d.error(rc);
      }
    }
    long long rngHost[2] = {static_cast<long long>(options.seed), static_cast<long long>(options.step)};
    auto rng = buffer("rng", sizeof rngHost);
    if (failed(rng) || d.memcpyHtoD(*rng, rngHost, sizeof rngHost)) {
      release();
      return fn.emitError("cannot pass the random seed to the device");
    }
    for (auto [launch, f] : llvm::zip(code.launches, (*m)->functions)) {
      std::vector<CUdeviceptr> ptrs;
      for (const Param &p : launch.params) {
        auto b = buffer(p.viewOf.empty() ? p.name : p.viewOf, wordsOf(p.shape, batch) * 4);
        if (failed(b)) {
          release();
          return failure();
        }
        ptrs.push_back(*b);
      }
      long long n = batch;
      std::vector<void *> params;
      for (CUdeviceptr &p : ptrs)
        params.push_back(&p);
      if (launch.rng)
        params.push_back(&*rng);
      params.push_back(&n);
      long long threads = launch.threadsPerBatch * batch + launch.threadsFixed;
      unsigned blocks = static_cast<unsigned>(
          std::clamp<long long>((threads + kBlockSize - 1) / kBlockSize, 1, 65535));
      if (int rc = d.launch(f, blocks, 1, 1, kBlockSize, 1, 1, 0, nullptr, params.data(), nullptr)) {
        release();
        return fn.emitError("launching ") << launch.name << " (" << launch.ops << " at " << launch.loc
                                          << "): " << d.error(rc);
      }
    }
    if (int rc = d.ctxSynchronize()) {
      release();
      return fn.emitError("the CUDA kernels failed: ") << d.error(rc);
    }
    std::vector<ref::Tensor> out;
    for (auto [i, r] : llvm::enumerate(code.results)) {
      auto found = buffers.find(r);
      if (found == buffers.end()) {
        release();
        return fn.emitError("the CUDA code wrote no result '") << r << "'";
      }
      std::vector<float> host(found->second.second / 4);
      if (int rc = d.memcpyDtoH(host.data(), found->second.first, host.size() * 4)) {
        release();
        return fn.emitError("cuMemcpyDtoH: ") << d.error(rc);
      }
      out.push_back((*m)->prepared->result(i, batch, host.data(), host.size()));
    }
    release();
    return out;
  }

private:
  Driver d;
  std::string arch;
  std::map<std::string, Module> modules; // by function name

  /// The function prepared, emitted and loaded on the device, once.
  FailureOr<Module *> load(func::FuncOp fn) {
    auto it = modules.find(fn.getName().str());
    if (it != modules.end())
      return &it->second;
    auto prepared = Prepared::emit(fn);
    if (failed(prepared))
      return failure();
    const CudaModule *code = &(*prepared)->code;
    NvrtcResult ptx = compileCached(code->source, fn.getName().str() + ".cu", arch, {}, defaultCacheDir());
    if (!ptx.ok)
      return fn.emitError(ptx.error) << (ptx.log.empty() ? "" : "\n" + ptx.log);
    Module m;
    if (int rc = d.moduleLoadData(&m.module, ptx.ptx.c_str()))
      return fn.emitError("cuModuleLoadData: ") << d.error(rc);
    for (const Launch &l : code->launches) {
      void *f = nullptr;
      if (int rc = d.moduleGetFunction(&f, m.module, l.name.c_str()))
        return fn.emitError("cuModuleGetFunction(") << l.name << "): " << d.error(rc);
      m.functions.push_back(f);
    }
    m.prepared = std::move(*prepared);
    return &modules.emplace(fn.getName().str(), std::move(m)).first->second;
  }
};

} // namespace

std::unique_ptr<ref::Executor> cuda::createDeviceExecutor(std::string &why) {
  rt::CudaDevice dev = rt::probeCudaDevice();
  if (!dev.present) {
    why = dev.why;
    return nullptr;
  }
  Driver d;
  d.lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  auto sym = [&](auto &fn, const char *name) {
    fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(d.lib, name));
    return fn != nullptr;
  };
  bool ok = d.lib && sym(d.init, "cuInit") && sym(d.deviceGet, "cuDeviceGet") &&
            sym(d.primaryRetain, "cuDevicePrimaryCtxRetain") && sym(d.ctxSetCurrent, "cuCtxSetCurrent") &&
            sym(d.moduleLoadData, "cuModuleLoadData") && sym(d.moduleUnload, "cuModuleUnload") &&
            sym(d.moduleGetFunction, "cuModuleGetFunction") && sym(d.memAlloc, "cuMemAlloc_v2") &&
            sym(d.memFree, "cuMemFree_v2") && sym(d.memcpyHtoD, "cuMemcpyHtoD_v2") &&
            sym(d.memcpyDtoH, "cuMemcpyDtoH_v2") && sym(d.launch, "cuLaunchKernel") &&
            sym(d.ctxSynchronize, "cuCtxSynchronize") && sym(d.errorString, "cuGetErrorString");
  if (!ok) {
    why = "the CUDA driver lacks an entry point nnc needs";
    return nullptr;
  }
  int device = 0;
  void *ctx = nullptr;
  if (int rc = d.init(0); rc || d.deviceGet(&device, 0) || d.primaryRetain(&ctx, device) ||
                          d.ctxSetCurrent(ctx)) {
    why = "the CUDA driver could not open device 0 (" + d.error(rc) + ")";
    return nullptr;
  }
  return std::make_unique<DeviceExecutor>(d, dev.arch());
}
