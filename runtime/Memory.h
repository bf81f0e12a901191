//===- Memory.h - large buffers on huge pages -------------------*- C++ -*-===//
//
// Buffers of several megabytes (a data set, a step's workspace, a large
// tensor) are streamed through by the kernels: on 4 KiB pages every 4 KiB is
// a TLB miss, and where the kernel gives transparent huge pages only on
// request (`madvise` mode), nothing else asks for them. They also start on a
// cache line: a 512-bit load from a buffer 16 bytes off (where malloc puts
// large blocks) spans two lines, and a row sum over such a buffer ran 40%
// slower.
//
//===----------------------------------------------------------------------===//

#ifndef NNC_RUNTIME_MEMORY_H
#define NNC_RUNTIME_MEMORY_H

#include <cstddef>
#include <cstdint>
#include <new>
#include <vector>

#include <sys/mman.h>

namespace nnc::rt {

/// The alignment of host buffers kernels read: a cache line, one 512-bit
/// vector.
inline constexpr size_t kBufferAlignment = 64;

/// An allocator whose blocks start on a cache line.
template <typename T> struct CacheLineAllocator {
  using value_type = T;
  CacheLineAllocator() = default;
  template <typename U> CacheLineAllocator(const CacheLineAllocator<U> &) {}
  T *allocate(size_t n) {
    return static_cast<T *>(::operator new(n * sizeof(T), std::align_val_t(kBufferAlignment)));
  }
  void deallocate(T *p, size_t) { ::operator delete(p, std::align_val_t(kBufferAlignment)); }
  template <typename U> bool operator==(const CacheLineAllocator<U> &) const { return true; }
};

/// f32 (or i32) data that kernels read and write in place.
using Floats = std::vector<float, CacheLineAllocator<float>>;

/// Resizes `v` to `n` elements; new storage of 4 MiB or more is asked to be
/// backed by huge pages before it is first touched.
template <typename V> void resizeLarge(V &v, size_t n) {
  using T = typename V::value_type;
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
