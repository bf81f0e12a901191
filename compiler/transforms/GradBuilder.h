//===- GradBuilder.h - building blocks of gradient rules --------*- C++ -*-===//
//
// A thin builder over nn ops for the gradient rules and the optimizer
// updates: arithmetic, broadcasts and their reverse (sumTo), reductions and
// reshapes that respect a dynamic batch dimension. Every op it creates gets
// the builder's location.
//
//===----------------------------------------------------------------------===//

#ifndef NNC_COMPILER_TRANSFORMS_GRADBUILDER_H
#define NNC_COMPILER_TRANSFORMS_GRADBUILDER_H

#include "dialects/nn/NNOps.h"

#include "mlir/IR/Builders.h"

namespace nnc {

class GradBuilder {
public:
  GradBuilder(mlir::OpBuilder &b, mlir::Location loc) : b(b), loc(loc) {}

  mlir::OpBuilder &builder() { return b; }
  mlir::Location location() const { return loc; }

  /// Creates an nn op with inferred result types (a failure is a compiler bug).
  template <typename OpTy>
  mlir::Operation *op(mlir::ValueRange operands,
                      llvm::ArrayRef<mlir::NamedAttribute> attrs = {}) {
    return b.create<OpTy>(loc, operands, attrs).getOperation();
  }
  template <typename OpTy>
  mlir::Value make(mlir::ValueRange operands,
                   llvm::ArrayRef<mlir::NamedAttribute> attrs = {}) {
    return op<OpTy>(operands, attrs)->getResult(0);
  }

  mlir::Value scalar(double v);
  mlir::Value add(mlir::Value a, mlir::Value c) { return make<nn::AddOp>({a, c}); }
  mlir::Value sub(mlir::Value a, mlir::Value c) { return make<nn::SubOp>({a, c}); }
  mlir::Value mul(mlir::Value a, mlir::Value c) { return make<nn::MulOp>({a, c}); }
  mlir::Value div(mlir::Value a, mlir::Value c) { return make<nn::DivOp>({a, c}); }
  mlir::Value neg(mlir::Value a) { return make<nn::NegOp>({a}); }
  mlir::Value mul(mlir::Value a, double c) { return mul(a, scalar(c)); }
  mlir::Value add(mlir::Value a, double c) { return add(a, scalar(c)); }
  /// c - a
  mlir::Value rsub(double c, mlir::Value a) { return sub(scalar(c), a); }

  mlir::Value sumAxes(mlir::Value x, llvm::ArrayRef<int64_t> axes, bool keepdims);
  mlir::Value meanAxes(mlir::Value x, llvm::ArrayRef<int64_t> axes, bool keepdims);
  /// Number of elements of `x` over `axes` (all when empty), f32 scalar.
  mlir::Value count(mlir::Value x, llvm::ArrayRef<int64_t> axes);
  mlir::Value broadcastLike(mlir::Value g, mlir::Value like);
  /// Reshapes `x` to `shape`, whose dynamic sizes (at most one) become -1.
  mlir::Value reshapeTo(mlir::Value x, llvm::ArrayRef<int64_t> shape);
  /// Sums a broadcast gradient back to `target`'s shape.
  mlir::Value sumTo(mlir::Value g, mlir::Type target);
  /// Expands the gradient of a reduction over `axes` back to `x`'s shape.
  mlir::Value unreduce(mlir::Value dy, mlir::Value x, llvm::ArrayRef<int64_t> axes,
                       bool keepdims);
  /// A [C] per-channel tensor shaped to broadcast against a rank-`rank`
  /// NC... tensor: [C, 1, ..., 1].
  mlir::Value channels(mlir::Value c, int64_t rank);

private:
  mlir::OpBuilder &b;
  mlir::Location loc;
};

/// All axes of a rank-`rank` tensor except 1 (the channel axis).
llvm::SmallVector<int64_t> allButChannels(int64_t rank);

} // namespace nnc

#endif // NNC_COMPILER_TRANSFORMS_GRADBUILDER_H
