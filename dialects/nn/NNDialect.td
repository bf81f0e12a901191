//===- NNDialect.td - the nn dialect definition ------------*- tablegen -*-===//
//
// The `nn` dialect is nnc's graph IR: value-semantics tensor ops at the level
// of a neural-network model (matmul, conv2d, batch_norm, losses). Every op
// infers its result type from its operands through InferTypeOpInterface, so
// the frontend, the verifier and later passes share one set of shape rules
// (ShapeRules.h).
//
//===----------------------------------------------------------------------===//

#ifndef NN_DIALECT_TD
#define NN_DIALECT_TD

include "mlir/IR/OpBase.td"
include "mlir/IR/AttrTypeBase.td"

def NN_Dialect : Dialect {
  let name = "nn";
  let cppNamespace = "::nnc::nn";
  let summary = "Neural-network graph dialect of nnc";
  let description = [{
    Tensor ops with value semantics describing a model's forward computation,
    its loss and (after autodiff) its backward graph. Activations are NCHW and
    convolution weights OIHW, as in PyTorch. Element types are f32 and i32
    (labels, indices). A dynamic leading dimension stands for the batch.
  }];
  let usePropertiesForAttributes = 0;
  let hasConstantMaterializer = 1;
}

class NN_Op<string mnemonic, list<Trait> traits = []>
    : Op<NN_Dialect, mnemonic, traits>;

def NN_F32Tensor : RankedTensorOf<[F32]>;
def NN_I32Tensor : RankedTensorOf<[I32]>;
def NN_Tensor : RankedTensorOf<[F32, I32]>;

def NN_ReductionAttr : ConfinedAttr<StrAttr, [AttrConstraint<CPred<
    "::llvm::is_contained({::llvm::StringRef(\"mean\"), ::llvm::StringRef(\"sum\"), "
    "::llvm::StringRef(\"none\")}, ::llvm::cast<::mlir::StringAttr>($_self).getValue())">,
    "one of \"mean\", \"sum\", \"none\"">]>;

#endif // NN_DIALECT_TD
