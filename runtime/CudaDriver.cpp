//===- CudaDriver.cpp - the CUDA driver API, loaded at run time ----------===//

#include "runtime/CudaDriver.h"

#include "runtime/CudaDevice.h"
#include "runtime/Library.h"

#include <dlfcn.h>

using namespace nnc::rt;

Status CudaDriver::fail(const std::string &what, int rc) const {
  const char *text = nullptr;
  if (getErrorString)
    getErrorString(rc, &text);
  return Status::error(what + ": " + (text ? text : "CUDA error") + " (CUresult " +
                       std::to_string(rc) + ")");
}

Status nnc::rt::loadCudaDriver(CudaDriver &d, int ordinal) {
  CudaDevice probe = probeCudaDevice();
  if (!probe.present)
    return Status::error(probe.why);
  // The probe found the library; this handle stays open for the process.
  void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  Symbols sym(lib);
  int (*init)(unsigned) = nullptr;
  int (*deviceGet)(int *, int) = nullptr;
  int (*deviceCount)(int *) = nullptr;
  int (*primaryRetain)(void **, int) = nullptr;
  int (*ctxSetCurrent)(void *) = nullptr;
  sym(init, "cuInit");
  sym(deviceGet, "cuDeviceGet");
  sym(deviceCount, "cuDeviceGetCount");
  sym(primaryRetain, "cuDevicePrimaryCtxRetain");
  sym(ctxSetCurrent, "cuCtxSetCurrent");
  sym(d.moduleLoadDataEx, "cuModuleLoadDataEx");
  sym(d.moduleUnload, "cuModuleUnload");
  sym(d.moduleGetFunction, "cuModuleGetFunction");
  sym(d.memAlloc, "cuMemAlloc_v2");
  sym(d.memFree, "cuMemFree_v2");
  sym(d.memHostAlloc, "cuMemHostAlloc");
  sym(d.memFreeHost, "cuMemFreeHost");
  sym(d.memcpyHtoDAsync, "cuMemcpyHtoDAsync_v2");
  sym(d.memcpyDtoHAsync, "cuMemcpyDtoHAsync_v2");
  sym(d.memcpyDtoDAsync, "cuMemcpyDtoDAsync_v2");
  sym(d.streamCreate, "cuStreamCreate");
  sym(d.streamDestroy, "cuStreamDestroy_v2");
  sym(d.streamSynchronize, "cuStreamSynchronize");
  sym(d.streamWaitEvent, "cuStreamWaitEvent");
  sym(d.eventCreate, "cuEventCreate");
  sym(d.eventDestroy, "cuEventDestroy_v2");
  sym(d.eventRecord, "cuEventRecord");
  sym(d.eventSynchronize, "cuEventSynchronize");
  sym(d.eventQuery, "cuEventQuery");
  sym(d.eventElapsedTime, "cuEventElapsedTime");
  sym(d.launchKernel, "cuLaunchKernel");
  sym(d.getErrorString, "cuGetErrorString");
  if (!sym.missing().empty())
    return Status::error("the CUDA driver (libcuda.so.1) has no entry point " + sym.missing());
  int device = 0;
  void *ctx = nullptr;
  if (int rc = init(0))
    return d.fail("cuInit", rc);
  int count = 0;
  if (int rc = deviceCount(&count))
    return d.fail("cuDeviceGetCount", rc);
  if (ordinal >= count)
    return Status::error("this rank's device is GPU " + std::to_string(ordinal) +
                         " (its place among the ranks on this machine), but the machine has " +
                         std::to_string(count) + ": start at most one rank per GPU");
  if (int rc = deviceGet(&device, ordinal))
    return d.fail("cuDeviceGet(" + std::to_string(ordinal) + ")", rc);
  if (int rc = primaryRetain(&ctx, device))
    return d.fail("cuDevicePrimaryCtxRetain", rc);
  if (int rc = ctxSetCurrent(ctx))
    return d.fail("cuCtxSetCurrent", rc);
  d.device = probe.name + ", " + probe.arch() + (ordinal ? " (GPU " + std::to_string(ordinal) + ")" : "");
  return Status::ok();
}
