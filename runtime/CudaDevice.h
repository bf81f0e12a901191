//===- CudaDevice.h - the CUDA driver, loaded at run time -------*- C++ -*-===//
//
// libcuda is opened with dlopen (never linked: a binary linked to the stub
// dies before main on a machine without a driver) and probed through a
// table of its entry points: is there a driver, a device, which one.
//
//===----------------------------------------------------------------------===//

#ifndef NNC_RUNTIME_CUDADEVICE_H
#define NNC_RUNTIME_CUDADEVICE_H

#include <string>

namespace nnc::rt {

struct CudaDevice {
  bool present = false;
  std::string name; // "NVIDIA H100 80GB HBM3"
  int major = 0, minor = 0;
  std::string why;  // when absent: one line saying why
  std::string arch() const { return "sm_" + std::to_string(major) + std::to_string(minor); }
};

/// Device 0 of the CUDA driver, if there is a driver and a device.
CudaDevice probeCudaDevice();

} // namespace nnc::rt

#endif // NNC_RUNTIME_CUDADEVICE_H
