//===- CudaDriver.h - the CUDA driver API, loaded at run time ---*- C++ -*-===//
//
// libcuda is opened with dlopen (never linked: a binary linked to the stub
// dies before main on a machine without a driver) into a table of the
// entry points nnc uses. Handles are opaque pointers, results the driver's
// CUresult codes. The table is plain data, so the tests can fill it with a
// driver that runs the same kernels on the host.
//
//===----------------------------------------------------------------------===//

#ifndef NNC_RUNTIME_CUDADRIVER_H
#define NNC_RUNTIME_CUDADRIVER_H

#include "runtime/Status.h"

#include <cstddef>
#include <string>

namespace nnc::rt {

using CuDevicePtr = unsigned long long;

struct CudaDriver {
  int (*moduleLoadDataEx)(void **module, const void *image, unsigned numOptions, int *options,
                          void **values) = nullptr;
  int (*moduleUnload)(void *module) = nullptr;
  int (*moduleGetFunction)(void **function, void *module, const char *name) = nullptr;
  int (*memAlloc)(CuDevicePtr *ptr, size_t bytes) = nullptr;
  int (*memFree)(CuDevicePtr ptr) = nullptr;
  int (*memHostAlloc)(void **ptr, size_t bytes, unsigned flags) = nullptr; // pinned
  int (*memFreeHost)(void *ptr) = nullptr;
  int (*memcpyHtoDAsync)(CuDevicePtr dst, const void *src, size_t bytes, void *stream) = nullptr;
  int (*memcpyDtoHAsync)(void *dst, CuDevicePtr src, size_t bytes, void *stream) = nullptr;
  int (*memcpyDtoDAsync)(CuDevicePtr dst, CuDevicePtr src, size_t bytes, void *stream) = nullptr;
  int (*streamCreate)(void **stream, unsigned flags) = nullptr;
  int (*streamDestroy)(void *stream) = nullptr;
  int (*streamSynchronize)(void *stream) = nullptr;
  int (*streamWaitEvent)(void *stream, void *event, unsigned flags) = nullptr;
  int (*eventCreate)(void **event, unsigned flags) = nullptr;
  int (*eventDestroy)(void *event) = nullptr;
  int (*eventRecord)(void *event, void *stream) = nullptr;
  int (*eventSynchronize)(void *event) = nullptr;
  int (*eventQuery)(void *event) = nullptr; // 600 (not ready) until the work before it is done
  int (*eventElapsedTime)(float *milliseconds, void *start, void *end) = nullptr;
  int (*launchKernel)(void *function, unsigned gridX, unsigned gridY, unsigned gridZ, unsigned blockX,
                      unsigned blockY, unsigned blockZ, unsigned sharedBytes, void *stream,
                      void **params, void **extra) = nullptr;
  int (*getErrorString)(int rc, const char **text) = nullptr;

  /// The device the context is current on ("NVIDIA H100 80GB HBM3, sm_90").
  std::string device;

  /// `what` failed with `rc`, in words ("cuMemAlloc(4096 bytes): out of
  /// memory").
  Status fail(const std::string &what, int rc) const;
};

/// Opens libcuda, takes device `ordinal`'s primary context and makes it
/// current. Fails with one line saying why (no driver, no device, a stub
/// driver, fewer devices than `ordinal` + 1).
Status loadCudaDriver(CudaDriver &out, int ordinal = 0);

} // namespace nnc::rt

#endif // NNC_RUNTIME_CUDADRIVER_H
