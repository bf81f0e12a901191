//===- NNDialect.h - the nn dialect -----------------------------*- C++ -*-===//
//
// Declares nnc::nn::NNDialect (generated from NNDialect.td).
//
//===----------------------------------------------------------------------===//

#ifndef NNC_DIALECTS_NN_NNDIALECT_H
#define NNC_DIALECTS_NN_NNDIALECT_H

#include "mlir/IR/Dialect.h"

#include "dialects/nn/NNOpsDialect.h.inc"

#endif // NNC_DIALECTS_NN_NNDIALECT_H
