//===- CudaDevice.cpp - the CUDA driver, loaded at run time --------------===//

#include "runtime/CudaDevice.h"

#include <dlfcn.h>

using namespace nnc::rt;

CudaDevice nnc::rt::probeCudaDevice() {
  CudaDevice d;
  void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    d.why = "no CUDA driver on this machine (libcuda.so.1 cannot be loaded)";
    return d;
  }
  // CUresult is an int; CUdevice an int; attributes 75/76 are the compute
  // capability's major and minor numbers.
  auto init = reinterpret_cast<int (*)(unsigned)>(dlsym(lib, "cuInit"));
  auto count = reinterpret_cast<int (*)(int *)>(dlsym(lib, "cuDeviceGetCount"));
  auto get = reinterpret_cast<int (*)(int *, int)>(dlsym(lib, "cuDeviceGet"));
  auto name = reinterpret_cast<int (*)(char *, int, int)>(dlsym(lib, "cuDeviceGetName"));
  auto attr = reinterpret_cast<int (*)(int *, int, int)>(dlsym(lib, "cuDeviceGetAttribute"));
  if (!init || !count || !get || !name || !attr) {
    d.why = "the CUDA driver (libcuda.so.1) lacks the entry points nnc needs";
    return d;
  }
  if (int rc = init(0)) {
    d.why = "the CUDA driver did not start (cuInit returned " + std::to_string(rc) +
            (rc == 100 ? ": no device" : rc == 34 ? ": the driver is a stub" : "") + ")";
    return d;
  }
  int n = 0, dev = 0;
  if (count(&n) || n == 0 || get(&dev, 0)) {
    d.why = "the CUDA driver sees no device";
    return d;
  }
  char buf[256] = {};
  name(buf, sizeof buf, dev);
  attr(&d.major, 75, dev);
  attr(&d.minor, 76, dev);
  d.name = buf;
  d.present = true;
  return d;
}
