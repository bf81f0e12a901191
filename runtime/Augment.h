//===- Augment.h - preprocessing and augmentation of samples ----*- C++ -*-===//
//
// A train section's `transform = [...]` list, applied in order to each
// sample of the model's first f32 input as it is gathered into a batch, as
// torchvision's `Compose` of the same-named transforms. Deterministic ones
// (`scale`, `normalize`) apply to every set; random ones only to training
// batches. Randomness is counter-based on (seed, epoch, sample, transform),
// so a batch is the same whichever thread makes it.
//
//===----------------------------------------------------------------------===//

#ifndef NNC_RUNTIME_AUGMENT_H
#define NNC_RUNTIME_AUGMENT_H

#include "runtime/Call.h"

#include <cstdint>
#include <vector>

namespace nnc::rt {

/// The transforms and their arguments (torchvision's names where one exists).
const std::vector<CallSpec> &transformSpecs();

/// Resolves and checks transform `t` for an input of sizes `dims` (after
/// the batch axis): image transforms need [C, H, W]; a crop must fit the
/// padded image and give the input's size; rates and probabilities in range.
Status checkTransform(Call &t, const std::vector<int64_t> &dims);

/// Whether `t` draws random numbers (and so applies to training data only).
bool isRandom(const Call &t);

/// Where a sample is drawn, for its random numbers.
struct SampleKey {
  uint64_t seed = 0;
  int64_t epoch = 0;  // 0 for evaluation
  int64_t sample = 0; // its row in the data set
};

/// Applies `transforms` to one sample `x` of sizes `dims` in place
/// (`scratch` is reused memory); `train` selects the random ones too.
void applyTransforms(const std::vector<Call> &transforms, const std::vector<int64_t> &dims, float *x,
                     bool train, const SampleKey &key, std::vector<float> &scratch);

} // namespace nnc::rt

#endif // NNC_RUNTIME_AUGMENT_H
