//===- KernelSpec.h - named kernel shapes as model sources ------*- C++ -*-===//
//
// `nnc bench --kernel SPEC` and the kernel benchmarks measure one op at a
// given shape. A spec names the op and its sizes; it becomes a small .nn
// model, so the op goes through the same pipeline (fusion, loops, LLVM) as
// in any model:
//
//   gemm:MxNxK                    [M, K] @ [K, N]
//   conv2d:N,C,H,W,O,K[,S[,P]]    NCHW input, O filters of KxK, stride S, padding P
//   elementwise:N:EXPR            EXPR over f32[N] inputs x, y, z (those it names)
//   reduction:RxC[:AXIS]          sum of an f32[R, C] over AXIS (default 1)
//   softmax_ce:NxC                softmax cross-entropy of [N, C] logits, i32 labels
//
// Forward, the operands are inputs and the op's value an output. With
// `backward`, the f32 operands are parameters and the model minimizes the
// sum of the op's value (or the loss itself): the training step then holds
// the op, its gradients and an SGD update with a zero learning rate.
//
//===----------------------------------------------------------------------===//

#ifndef NNC_COMPILER_FRONTEND_KERNELSPEC_H
#define NNC_COMPILER_FRONTEND_KERNELSPEC_H

#include <string>

namespace nnc {

/// The model source of `spec`, or "" with `error` saying what is wrong.
std::string kernelSource(const std::string &spec, bool backward, std::string &error);

/// The specs the benchmarks and `nnc bench --help` show as examples.
const char *kernelSpecHelp();

} // namespace nnc

#endif // NNC_COMPILER_FRONTEND_KERNELSPEC_H
