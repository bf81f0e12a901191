//===- Memory.h - large buffers on huge pages -------------------*- C++ -*-===//
//
// Buffers of several megabytes (a data set, a step's workspace, a large
// tensor) are streamed through by the kernels: on 4 KiB pages every 4 KiB is
// a TLB miss, and where the kernel gives transparent huge pages only on
// request (`madvise` mode), nothing else asks for them.
//
//===----------------------------------------------------------------------===//

#ifndef NNC_RUNTIME_MEMORY_H
#define NNC_RUNTIME_MEMORY_H

#include <cstddef>
#include <cstdint>
#include <vector>

#include <sys/mman.h>

namespace nnc::rt {

/// Resizes `v` to `n` elements; new storage of 4 MiB or more is asked to be
/// backed by huge pages before it is first touched.
template <typename T> void resizeLarge(std::vector<T> &v, size_t n) {
  constexpr size_t kWorthIt = size_t(4) << 20;
  if (n > v.capacity() && n * sizeof(T) >= kWorthIt) {
    v.reserve(n);
#ifdef MADV_HUGEPAGE
    constexpr uintptr_t kHuge = uintptr_t(2) << 20;
    uintptr_t begin = (reinterpret_cast<uintptr_t>(v.data()) + kHuge - 1) & ~(kHuge - 1);
    uintptr_t end = reinterpret_cast<uintptr_t>(v.data() + n) & ~(kHuge - 1);
    if (end > begin)
      (void)madvise(reinterpret_cast<void *>(begin), end - begin, MADV_HUGEPAGE);
#endif
  }
  v.resize(n);
}

} // namespace nnc::rt

#endif // NNC_RUNTIME_MEMORY_H
