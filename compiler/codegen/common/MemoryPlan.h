//===- MemoryPlan.h - slots for intermediate buffers ------------*- C++ -*-===//
//
// The one memory planner of both backends. Intermediates live in slots of
// `perBatch * batch + fixed` units (bytes on the CPU, words on CUDA), which
// a backend asks for in the order its code runs and gives back after the
// last read of the value they hold; a slot is reused best-fit, so memory
// follows liveness and no call allocates. The backends decide lifetimes
// (and, on the CPU, in-place updates, which keep a slot across values);
// the planner decides where.
//
//===----------------------------------------------------------------------===//

#ifndef NNC_COMPILER_CODEGEN_COMMON_MEMORYPLAN_H
#define NNC_COMPILER_CODEGEN_COMMON_MEMORYPLAN_H

#include <cstdint>
#include <vector>

namespace nnc::codegen {

struct SlotSize {
  int64_t perBatch = 0, fixed = 0;
};

class SlotPlanner {
public:
  /// A slot for a value of `size` from now on: the free slot that holds it
  /// and is smallest (per batch element first), else a new slot of `size`.
  unsigned acquire(SlotSize size);
  /// `slot` is free again (its value is read no more).
  void release(unsigned slot) { free[slot] = true; }
  /// The slots' sizes, in the order they were created.
  const std::vector<SlotSize> &sizes() const { return slotSizes; }
  /// The slots' sizes as [perBatch0, fixed0, perBatch1, ...].
  std::vector<int64_t> flattened() const;

private:
  std::vector<SlotSize> slotSizes;
  std::vector<bool> free;
};

} // namespace nnc::codegen

#endif // NNC_COMPILER_CODEGEN_COMMON_MEMORYPLAN_H
