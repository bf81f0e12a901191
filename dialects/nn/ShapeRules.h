//===- ShapeRules.h - shape rules of the nn ops -----------------*- C++ -*-===//
//
// Pure functions from operand shapes (and attributes) to result shapes. They
// are the single source of truth for shapes: the ops' InferTypeOpInterface
// implementations, the verifier and the frontend's diagnostics all go through
// them. A failed rule returns a lower-case message naming the shapes and the
// offending axis; the caller attaches the location.
//
// Dynamic sizes use kDynamic (== mlir::ShapedType::kDynamic) and are assumed
// to match whatever static size they meet; the runtime checks them.
//
//===----------------------------------------------------------------------===//

#ifndef NNC_DIALECTS_NN_SHAPERULES_H
#define NNC_DIALECTS_NN_SHAPERULES_H

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/SmallVector.h"
#include "llvm/ADT/StringRef.h"

#include <cstdint>
#include <limits>
#include <string>

namespace nnc::shape {

inline constexpr int64_t kDynamic = std::numeric_limits<int64_t>::min();

using Shape = llvm::SmallVector<int64_t, 4>;

/// A result shape, or the reason there is none.
struct Inferred {
  Shape shape;
  std::string error;

  bool ok() const { return error.empty(); }
  static Inferred of(llvm::ArrayRef<int64_t> s) { return {Shape(s), {}}; }
  static Inferred fail(std::string msg) { return {{}, std::move(msg)}; }
};

/// Renders a shape as `[?, 784]`.
std::string str(llvm::ArrayRef<int64_t> shape);

/// The most elements one tensor may hold (2^40: 4 TiB of f32), counting a
/// symbolic (batch) axis as 1. Every element count below this, and every
/// byte count at any batch that fits memory, is exact in int64_t.
constexpr int64_t kMaxElements = int64_t(1) << 40;

/// The number of elements of `shape` (dynamic sizes counted as 1), or -1
/// when it exceeds kMaxElements; never overflows.
int64_t elements(llvm::ArrayRef<int64_t> shape);

/// True when two sizes can be equal (equal, or either is dynamic).
bool compatible(int64_t a, int64_t b);

Inferred broadcast(llvm::ArrayRef<int64_t> a, llvm::ArrayRef<int64_t> b);
Inferred matmul(llvm::ArrayRef<int64_t> a, llvm::ArrayRef<int64_t> b);
Inferred reduce(llvm::ArrayRef<int64_t> in, llvm::ArrayRef<int64_t> axes,
                bool keepdims);
Inferred reshape(llvm::ArrayRef<int64_t> in, llvm::ArrayRef<int64_t> target);
Inferred transpose(llvm::ArrayRef<int64_t> in, llvm::ArrayRef<int64_t> perm);
Inferred concat(llvm::ArrayRef<Shape> ins, int64_t axis);
/// Checks `axis` against `in`'s rank; `what` names the op in the message.
Inferred checkAxis(llvm::StringRef what, llvm::ArrayRef<int64_t> in,
                   int64_t axis);
Inferred removeAxis(llvm::StringRef what, llvm::ArrayRef<int64_t> in,
                    int64_t axis);
/// Elements [start, start + size) along `axis`.
Inferred slice(llvm::ArrayRef<int64_t> in, int64_t axis, int64_t start,
               int64_t size);
/// The input shape of a convolution whose output gradient and weight are
/// given; `inputSize` is [H, W].
Inferred conv2dGradInput(llvm::ArrayRef<int64_t> grad,
                         llvm::ArrayRef<int64_t> weight,
                         llvm::ArrayRef<int64_t> stride,
                         llvm::ArrayRef<int64_t> padding, int64_t groups,
                         llvm::ArrayRef<int64_t> inputSize);
/// The weight shape of a convolution with this input and output gradient.
Inferred conv2dGradWeight(llvm::ArrayRef<int64_t> in,
                          llvm::ArrayRef<int64_t> grad,
                          llvm::ArrayRef<int64_t> stride,
                          llvm::ArrayRef<int64_t> padding, int64_t groups,
                          llvm::ArrayRef<int64_t> kernel);
Inferred conv2d(llvm::ArrayRef<int64_t> in, llvm::ArrayRef<int64_t> weight,
                llvm::ArrayRef<int64_t> stride, llvm::ArrayRef<int64_t> padding,
                int64_t groups);
Inferred pool2d(llvm::StringRef what, llvm::ArrayRef<int64_t> in,
                llvm::ArrayRef<int64_t> kernel, llvm::ArrayRef<int64_t> stride,
                llvm::ArrayRef<int64_t> padding);
/// Checks that a per-channel parameter `name` of op `what` is [C] for an
/// input whose axis 1 has C channels (rank >= minRank).
Inferred channelParam(llvm::StringRef what, llvm::StringRef name,
                      llvm::ArrayRef<int64_t> in, llvm::ArrayRef<int64_t> param,
                      unsigned minRank);
/// Elementwise loss: input and target shapes must agree; the result is a
/// scalar unless reduction is "none".
Inferred pointwiseLoss(llvm::StringRef what, llvm::ArrayRef<int64_t> in,
                       llvm::ArrayRef<int64_t> target, bool reduce);
/// Class-wise loss: input [N, C]; target [N] (labels) or [N, C].
Inferred classLoss(llvm::StringRef what, llvm::ArrayRef<int64_t> in,
                   llvm::ArrayRef<int64_t> target, bool labels, bool reduce);

} // namespace nnc::shape

#endif // NNC_DIALECTS_NN_SHAPERULES_H
