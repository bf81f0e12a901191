//===- Passes.td - nnc compiler passes ---------------------*- tablegen -*-===//

#ifndef NNC_TRANSFORMS_PASSES_TD
#define NNC_TRANSFORMS_PASSES_TD

include "mlir/Pass/PassBase.td"

def Autodiff : Pass<"nnc-autodiff", "mlir::ModuleOp"> {
  let summary = "Derive the backward graph of every model that minimizes a loss";
  let description = [{
    For each model function `@m` with a result of role `loss`, adds
    `@m_grad`: the forward computation in training mode (batch statistics,
    dropout masks), then the gradient of the loss with respect to every
    trainable parameter, built in reverse mode from the per-op rules in
    GradientRules.cpp. Results: the loss, the outputs, then one gradient per
    parameter (`nn.role = "grad"`, `nn.name` = the parameter's name).
    Backward ops carry `NameLoc("grad", forward location)`.
  }];
  let options = [
    Option<"wrtInputs", "wrt-inputs", "bool", /*default=*/"false",
           "Also return gradients with respect to the f32 inputs">
  ];
  let dependentDialects = ["::nnc::nn::NNDialect"];
}

def BuildTrainStep : Pass<"nnc-build-train-step", "mlir::ModuleOp"> {
  let summary = "Build the training step: forward, backward and optimizer update";
  let description = [{
    For each `@m_grad`, adds `@m_train_step`. Its arguments are the model's,
    then the optimizer state of each parameter (`nn.role = "opt_state"`), then
    the step number `t` (f32, from 1). It returns the loss, the outputs, and
    the new value of every parameter, batch-norm running statistic and
    optimizer state, each named like the argument it replaces. The optimizer
    and its hyper-parameters come from the module's `nn.train` attribute.
  }];
  let dependentDialects = ["::nnc::nn::NNDialect"];
}

def PropagateFrozen : Pass<"nnc-propagate-frozen", "mlir::func::FuncOp"> {
  let summary = "Replace frozen tensors with literal initializers by constants";
  let description = [{
    A frozen argument (`nn.role = "frozen"`) initialized with zeros, ones,
    constant(v) or written-out values, all equal, and read only by
    elementwise ops is never trained: its reads become a splat
    `nn.constant`, which folding and the fusion pass's literals use.
  }];
  let dependentDialects = ["::nnc::nn::NNDialect"];
}

def FoldBatchNorm : Pass<"nnc-fold-batch-norm", "mlir::func::FuncOp"> {
  let summary = "Fold evaluation-mode batch norms into the convolution or product before them";
  let description = [{
    `batch_norm(conv2d(x, w) [+ b])` in evaluation mode becomes
    `conv2d(x, w * s) + (beta + ([b] - running_mean) * s)` with
    `s = gamma / sqrt(running_var + eps)`; the same for a matrix product
    with weights `[K, C]`. Applies where the layer's result (and its bias
    add) feed only the batch norm.
  }];
  let dependentDialects = ["::nnc::nn::NNDialect"];
}

def Fuse : Pass<"nnc-fuse", "mlir::func::FuncOp"> {
  let summary = "Group core ops into nn.kernel ops, the backends' units of code";
  let description = [{
    Applies the fusion policy of compiler/transforms/Fusion.cpp (documented
    in docs/fusion.md) to a function of core ops (composites decomposed):
    elementwise producers into their consumers, epilogues into batch norms
    and reductions, adjacent independent elementwise kernels into one.
    Every op that computes something ends up in exactly one `nn.kernel`.
  }];
  let dependentDialects = ["::nnc::nn::NNDialect"];
}

#endif // NNC_TRANSFORMS_PASSES_TD
