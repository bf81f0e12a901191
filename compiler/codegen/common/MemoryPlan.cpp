//===- MemoryPlan.cpp - slots for intermediate buffers --------------------===//

#include "compiler/codegen/common/MemoryPlan.h"

#include <utility>

using namespace nnc::codegen;

unsigned SlotPlanner::acquire(SlotSize size) {
  int best = -1;
  auto cost = [](const SlotSize &s) { return std::make_pair(s.perBatch, s.fixed); };
  for (unsigned i = 0; i < slotSizes.size(); ++i)
    if (free[i] && slotSizes[i].perBatch >= size.perBatch && slotSizes[i].fixed >= size.fixed &&
        (best < 0 || cost(slotSizes[i]) < cost(slotSizes[static_cast<unsigned>(best)])))
      best = static_cast<int>(i);
  if (best < 0) {
    slotSizes.push_back(size);
    free.push_back(true);
    best = static_cast<int>(slotSizes.size() - 1);
  }
  free[static_cast<unsigned>(best)] = false;
  return static_cast<unsigned>(best);
}

std::vector<int64_t> SlotPlanner::flattened() const {
  std::vector<int64_t> out;
  for (const SlotSize &s : slotSizes) {
    out.push_back(s.perBatch);
    out.push_back(s.fixed);
  }
  return out;
}
