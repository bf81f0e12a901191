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

def Freeze : Pass<"nnc-freeze", "mlir::ModuleOp"> {
  let summary = "Hold the parameters the train section's `freeze` names fixed";
  let description = [{
    Each pattern of the module's `nn.train` `freeze` list names tensors of
    the model: a name, or a prefix of names (`layer1` holds `layer1.0.conv1.w`
    fixed). Matching parameters become frozen tensors whose values are
    loaded (`nn.init` gains `loaded`: a checkpoint or `--init-from` sets
    them; they never become constants), so autodiff computes no gradient
    for them and the optimizer keeps no state. A batch norm whose scale and
    shift are both held normalizes with its running statistics and leaves
    them unchanged, as a PyTorch module in `eval()` mode does. A pattern that
    names no tensor is an error.
  }];
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
    A frozen argument (`nn.role = "frozen"`, not `loaded`) initialized with zeros, ones,
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

//===----------------------------------------------------------------------===//
// Preparation for a backend (compiler/codegen/common/Prepare.cpp)
//===----------------------------------------------------------------------===//

def SelectFunctions : Pass<"nnc-select-functions", "mlir::ModuleOp"> {
  let summary = "Keep only the functions a backend compiles";
  let description = [{
    Erases every function of the module but those named in `functions`
    (all of them when empty): the training step and the model, say, which
    the backend passes that follow lower.
  }];
  let options = [
    ListOption<"functions", "functions", "std::string", "The functions to keep">
  ];
}

def SpecializeBatch : Pass<"nnc-specialize-batch", "mlir::func::FuncOp"> {
  let summary = "Give the batch size a value";
  let description = [{
    Replaces every dynamic size of the function's arguments by `batch` and
    re-infers the types of all ops and results (through the shape rules).
    A batch of 0 leaves the function symbolic.
  }];
  let options = [
    Option<"batch", "batch", "int64_t", /*default=*/"0", "The batch size (0: symbolic)">
  ];
}

def Decompose : Pass<"nnc-decompose", "mlir::func::FuncOp"> {
  let summary = "Rewrite composite ops into the core ops backends implement";
  let description = [{
    Softmax, log-softmax, group norm, local response norm, means and the
    losses become core ops (exp, sums, maxima, one-hot, ...). Batch norm
    keeps kernels of its own.
  }];
  let dependentDialects = ["::nnc::nn::NNDialect"];
}

def Rematerialize : Pass<"nnc-rematerialize", "mlir::func::FuncOp"> {
  let summary = "Copy cheap elementwise ops into each of their readers";
  let description = [{
    The first step of the fusion policy (compiler/transforms/Fusion.cpp):
    a cheap elementwise op whose readers could all compute it in place is
    copied into each of them, where no buffer then lives longer.
  }];
  let dependentDialects = ["::nnc::nn::NNDialect"];
}

def BatchScaling : Pass<"nnc-batch-scaling", "mlir::func::FuncOp"> {
  let summary = "Record how every batch-dependent size grows with the batch";
  let description = [{
    For a function with a symbolic batch size: every op result and argument
    with a dynamic size gets `nn.per_batch`, its shape with each dynamic
    size replaced by that size per batch element (found by specializing
    copies to batch 1 and 2). A size that does not grow in proportion to
    the batch, or a value with two batch axes, is an error at its location.
    Backends read the sizes at run time as `per_batch * batch`.
  }];
}

//===----------------------------------------------------------------------===//
// The CPU backend (compiler/codegen/cpu/)
//===----------------------------------------------------------------------===//

def LowerToLoops : Pass<"nnc-lower-to-loops", "mlir::ModuleOp"> {
  let summary = "Lower fused nn functions to loops over buffers";
  let description = [{
    Each function of nn ops (fused into nn.kernel ops, batch scaling
    recorded) becomes a function of the same name over memrefs, built from
    scf loops, arith, math and vector ops, in destination-passing style:
    `(args..., results..., cache, rng, batch, slots...)`. Each kernel is an
    `scf.execute_region {nnc.kernel = i}`. The function carries its memory
    plan (`nnc.slots`), its kernels (`nnc.kernels`), its in-place updates
    (`nnc.inplace`) and the bytes of weight-only work it keeps across calls
    in the cache (`nnc.cache`; functions marked `nnc.cache_weights`).
  }];
  let options = [
    Option<"profile", "profile", "bool", /*default=*/"false",
           "Bracket every kernel with calls to nnc_profile_begin/end">
  ];
  let dependentDialects = ["::mlir::arith::ArithDialect", "::mlir::math::MathDialect",
                           "::mlir::memref::MemRefDialect", "::mlir::scf::SCFDialect",
                           "::mlir::vector::VectorDialect", "::mlir::func::FuncDialect"];
}

def ChooseTiling : Pass<"nnc-choose-tiling", "mlir::func::FuncOp"> {
  let summary = "Record how each product and convolution is blocked on this CPU";
  let description = [{
    Sets `nnc.tiling` on every matmul (rows, vectors, depth, group),
    convolution (channel_block) and convolution weight gradient
    (channel_block, input_block, batch_chunk): the choices the CPU
    lowerings read (compiler/codegen/cpu/Tiling.cpp), derived from the
    host's vector registers and cache sizes (compiler/codegen/cpu/Machine.h)
    unless the options name another machine's. Choices already recorded are
    kept, after a check against the op's shapes.
  }];
  let options = [
    Option<"lanes", "lanes", "int64_t", /*default=*/"0", "f32 lanes per vector (0: the host's)">,
    Option<"registers", "registers", "int64_t", /*default=*/"0", "vector registers (0: the host's)">,
    Option<"l1", "l1", "int64_t", /*default=*/"0", "L1 data cache bytes (0: the host's)">,
    Option<"l2", "l2", "int64_t", /*default=*/"0", "L2 cache bytes per core (0: the host's)">,
  ];
}

def OutlineKernels : Pass<"nnc-outline-kernels", "mlir::ModuleOp"> {
  let summary = "Move each kernel into a function of its own";
  let description = [{
    Each `scf.execute_region {nnc.kernel = i}` of a function `NAME` becomes
    a private, never inlined function `NAME_ki` taking the arguments it
    uses, which `NAME` calls; kernels that are the same code but for their
    names become one function. LLVM's cost per function then grows with a
    kernel, not with the whole step.
  }];
}

def PartitionCode : Pass<"nnc-partition-code", "mlir::ModuleOp"> {
  let summary = "Deal the functions into nested modules lowered and compiled in parallel";
  let description = [{
    Moves every function of the module into one of `parts` nested modules,
    largest first (by op count) into the lightest so far; each declares
    what it calls in the others and holds a copy of the private constants
    (literal tensors) it reads. The passes that follow run on the nested
    modules (in parallel), and each becomes one LLVM module, optimized and
    compiled on a thread of its own. The assignment depends on the IR
    alone, so that the same model gives the same objects on any machine.
  }];
  let options = [
    Option<"parts", "parts", "unsigned", /*default=*/"16", "Number of nested modules">,
  ];
}

def AliasScopes : Pass<"nnc-alias-scopes", "mlir::ModuleOp"> {
  let summary = "State the noalias facts of buffer arguments on every access";
  let description = [{
    In the LLVM dialect: every load, store and copy whose address derives
    from a `noalias` pointer argument gets that argument's alias scope and
    is declared apart from every other argument's, so the facts survive in
    the loop bodies OpenMP outlines.
  }];
}

#endif // NNC_TRANSFORMS_PASSES_TD
