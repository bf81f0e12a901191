//===- NNOps.td - nn dialect operations --------------------*- tablegen -*-===//
//
// One record per op. Every op infers its result type (InferTypeOpAdaptor);
// the rule is a short function in NNOps.cpp that calls ShapeRules.h, so the
// assembly formats name operand types only.
//
//===----------------------------------------------------------------------===//

#ifndef NN_OPS_TD
#define NN_OPS_TD

include "NNDialect.td"
include "mlir/Interfaces/InferTypeOpInterface.td"
include "mlir/Interfaces/SideEffectInterfaces.td"
include "mlir/IR/BuiltinAttributeInterfaces.td"

//===----------------------------------------------------------------------===//
// Constants
//===----------------------------------------------------------------------===//

def NN_ConstantOp : NN_Op<"constant",
    [ConstantLike, Pure, InferTypeOpAdaptor]> {
  let summary = "tensor constant";
  let description = [{
    A dense tensor literal (f32 or i32).

    ```mlir
    %c = nn.constant dense<[1.0, 2.0]> : tensor<2xf32>
    ```
  }];
  let arguments = (ins ElementsAttr:$value);
  let results = (outs NN_Tensor:$result);
  let assemblyFormat = "attr-dict $value";
  let hasFolder = 1;
}

//===----------------------------------------------------------------------===//
// Elementwise unary ops (f32 -> f32, same shape)
//===----------------------------------------------------------------------===//

class NN_UnaryOp<string mnemonic, string formula, list<Trait> traits = []>
    : NN_Op<mnemonic, !listconcat([Pure, InferTypeOpAdaptor], traits)> {
  let summary = "elementwise " # formula;
  let description = "Computes `" # formula # "` for every element.\n\n"
    "```mlir\n%y = nn." # mnemonic # " %x : tensor<?x10xf32>\n```";
  let arguments = (ins NN_F32Tensor:$input);
  let results = (outs NN_F32Tensor:$result);
  let assemblyFormat = "$input attr-dict `:` type($input)";
  let extraClassDefinition = [{
    ::llvm::LogicalResult $cppClass::inferReturnTypes(
        ::mlir::MLIRContext *, std::optional<::mlir::Location>,
        Adaptor adaptor, ::llvm::SmallVectorImpl<::mlir::Type> &types) {
      types.push_back(adaptor.getInput().getType());
      return ::mlir::success();
    }
  }];
}

def NN_NegOp : NN_UnaryOp<"neg", "-x"> { let hasFolder = 1; }
def NN_ExpOp : NN_UnaryOp<"exp", "e^x">;
def NN_LogOp : NN_UnaryOp<"log", "ln(x)"> { let hasCanonicalizer = 1; }
def NN_SqrtOp : NN_UnaryOp<"sqrt", "sqrt(x)">;
def NN_AbsOp : NN_UnaryOp<"abs", "|x|">;
def NN_SigmoidOp : NN_UnaryOp<"sigmoid", "1 / (1 + e^-x)">;
def NN_TanhOp : NN_UnaryOp<"tanh", "tanh(x)">;
def NN_ReluOp : NN_UnaryOp<"relu", "max(x, 0)">;
def NN_SoftplusOp : NN_UnaryOp<"softplus", "ln(1 + e^x)">;
def NN_StepOp : NN_UnaryOp<"step", "x > 0 ? 1 : 0 (not differentiable)">;
def NN_IdentityOp : NN_UnaryOp<"identity", "x"> { let hasFolder = 1; }

def NN_LeakyReluOp : NN_Op<"leaky_relu", [Pure, InferTypeOpAdaptor]> {
  let summary = "elementwise x > 0 ? x : alpha * x";
  let description = [{
    PyTorch's `leaky_relu(x, negative_slope=alpha)`.

    ```mlir
    %y = nn.leaky_relu %x {alpha = 0.01 : f32} : tensor<?x10xf32>
    ```
  }];
  let arguments = (ins NN_F32Tensor:$input, F32Attr:$alpha);
  let results = (outs NN_F32Tensor:$result);
  let assemblyFormat = "$input attr-dict `:` type($input)";
}

def NN_DropoutOp : NN_Op<"dropout", [InferTypeOpAdaptor]> {
  let summary = "inverted dropout (training only)";
  let description = [{
    With `training`, zeroes each element with probability `rate` and scales
    the others by `1 / (1 - rate)` (PyTorch's `Dropout`); without it, the
    identity. The second result is the mask the input was multiplied by
    (0 or `1 / (1 - rate)`, all ones without `training`), which the gradient
    reuses. Not `Pure`: each execution draws a new mask.

    ```mlir
    %y, %mask = nn.dropout %x {rate = 0.5 : f32, training} : tensor<?x128xf32>
    ```
  }];
  let arguments = (ins NN_F32Tensor:$input, F32Attr:$rate, UnitAttr:$training);
  let results = (outs NN_F32Tensor:$result, NN_F32Tensor:$mask);
  let assemblyFormat = "$input attr-dict `:` type($input)";
  let hasVerifier = 1;
}

def NN_AllReduceOp : NN_Op<"all_reduce", [InferTypeOpAdaptor]> {
  let summary = "a value combined over the ranks of a data-parallel run";
  let description = [{
    In a data-parallel run (runtime/Distributed.h), every rank computes the
    same ops on its shard of one global batch; `all_reduce` gives each rank
    the combination of its operand over all ranks: with `sum`, the sum;
    otherwise the mean weighted by each rank's share of the global batch's
    rows, which is the value one process would compute on the whole batch
    when the operand is a mean over the batch. The identity in a single
    process. The training step of a distributed run applies it to the
    gradients and the batch-norm running statistics. Not `Pure`: it
    communicates, and every rank runs the same `all_reduce` ops in order.

    ```mlir
    %g = nn.all_reduce %dw : tensor<784x128xf32>
    ```
  }];
  let arguments = (ins NN_F32Tensor:$input, UnitAttr:$sum);
  let results = (outs NN_F32Tensor:$result);
  let assemblyFormat = "$input attr-dict `:` type($input)";
}

//===----------------------------------------------------------------------===//
// Elementwise binary ops with numpy broadcasting
//===----------------------------------------------------------------------===//

class NN_BinaryOp<string mnemonic, string formula, list<Trait> traits = []>
    : NN_Op<mnemonic, !listconcat([Pure, InferTypeOpAdaptor], traits)> {
  let summary = "elementwise " # formula # " with numpy-style broadcasting";
  let description = "Computes `" # formula # "`; operand shapes broadcast as "
    "in numpy (trailing axes aligned, size-1 axes stretched).\n\n"
    "```mlir\n%c = nn." # mnemonic # " %a, %b : tensor<?x10xf32>, tensor<10xf32>\n```";
  let arguments = (ins NN_Tensor:$lhs, NN_Tensor:$rhs);
  let results = (outs NN_Tensor:$result);
  let assemblyFormat = "$lhs `,` $rhs attr-dict `:` type($lhs) `,` type($rhs)";
  let extraClassDefinition = [{
    ::llvm::LogicalResult $cppClass::inferReturnTypes(
        ::mlir::MLIRContext *, std::optional<::mlir::Location> loc,
        Adaptor adaptor, ::llvm::SmallVectorImpl<::mlir::Type> &types) {
      if (::mlir::failed(checkedForInference(loc, adaptor)))
        return ::mlir::failure();
      return ::nnc::nn::inferBroadcast(loc,
          adaptor.getLhs(), adaptor.getRhs(), types);
    }
  }];
}

def NN_AddOp : NN_BinaryOp<"add", "a + b", [Commutative]> { let hasFolder = 1; }
def NN_SubOp : NN_BinaryOp<"sub", "a - b"> { let hasFolder = 1; }
def NN_MulOp : NN_BinaryOp<"mul", "a * b", [Commutative]> { let hasFolder = 1; }
def NN_DivOp : NN_BinaryOp<"div", "a / b"> { let hasFolder = 1; }
def NN_PowOp : NN_BinaryOp<"pow", "a ^ b">;

//===----------------------------------------------------------------------===//
// Linear algebra and shape manipulation
//===----------------------------------------------------------------------===//

def NN_MatmulOp : NN_Op<"matmul", [Pure, InferTypeOpAdaptor]> {
  let summary = "matrix product [M, K] x [K, N] -> [M, N]";
  let description = [{
    `torch.mm`. Both operands are rank 2 f32 tensors.

    ```mlir
    %y = nn.matmul %x, %w : tensor<?x784xf32>, tensor<784x128xf32>
    ```
  }];
  let arguments = (ins NN_F32Tensor:$lhs, NN_F32Tensor:$rhs);
  let results = (outs NN_F32Tensor:$result);
  let assemblyFormat = "$lhs `,` $rhs attr-dict `:` type($lhs) `,` type($rhs)";
}

def NN_ReshapeOp : NN_Op<"reshape", [Pure, InferTypeOpAdaptor]> {
  let summary = "reshape, keeping the element order";
  let description = [{
    `shape` lists the new sizes; at most one entry is -1 and is inferred
    (it becomes a dynamic dimension when the input has one).

    ```mlir
    %y = nn.reshape %x {shape = array<i64: -1, 1, 28, 28>} : tensor<?x784xf32>
    ```
  }];
  let arguments = (ins NN_Tensor:$input, DenseI64ArrayAttr:$shape);
  let results = (outs NN_Tensor:$result);
  let assemblyFormat = "$input attr-dict `:` type($input)";
  let hasFolder = 1;
}

def NN_TransposeOp : NN_Op<"transpose", [Pure, InferTypeOpAdaptor]> {
  let summary = "permute axes: result axis i is input axis perm[i]";
  let description = [{
    `torch.permute(x, perm)`.

    ```mlir
    %y = nn.transpose %x {perm = array<i64: 1, 0>} : tensor<4x3xf32>
    ```
  }];
  let arguments = (ins NN_Tensor:$input, DenseI64ArrayAttr:$perm);
  let results = (outs NN_Tensor:$result);
  let assemblyFormat = "$input attr-dict `:` type($input)";
  let hasFolder = 1;
}

def NN_ConcatOp : NN_Op<"concat", [Pure, InferTypeOpAdaptor]> {
  let summary = "join tensors along an axis";
  let description = [{
    `torch.cat(inputs, dim=axis)`; all other axes must agree.

    ```mlir
    %y = nn.concat %a, %b {axis = 1 : i64} : tensor<?x3xf32>, tensor<?x5xf32>
    ```
  }];
  let arguments = (ins Variadic<NN_Tensor>:$inputs, I64Attr:$axis);
  let results = (outs NN_Tensor:$result);
  let assemblyFormat = "$inputs attr-dict `:` type($inputs)";
}

//===----------------------------------------------------------------------===//
// Reductions
//===----------------------------------------------------------------------===//

class NN_ReduceOp<string mnemonic, string what>
    : NN_Op<mnemonic, [Pure, InferTypeOpAdaptor]> {
  let summary = what # " over `axes` (all axes when empty)";
  let description = "Reduces the listed axes; `keepdims` keeps them as size 1 "
    "(`torch." # !subst("reduce_", "", mnemonic) # "(x, dim, keepdim)`).\n\n"
    "```mlir\n%s = nn." # mnemonic # " %x {axes = array<i64: 1>} : tensor<?x10xf32>\n```";
  let arguments = (ins NN_F32Tensor:$input, DenseI64ArrayAttr:$axes,
                       DefaultValuedAttr<BoolAttr, "false">:$keepdims);
  let results = (outs NN_F32Tensor:$result);
  let assemblyFormat = "$input attr-dict `:` type($input)";
  let extraClassDefinition = [{
    ::llvm::LogicalResult $cppClass::inferReturnTypes(
        ::mlir::MLIRContext *, std::optional<::mlir::Location> loc,
        Adaptor adaptor, ::llvm::SmallVectorImpl<::mlir::Type> &types) {
      if (::mlir::failed(checkedForInference(loc, adaptor)))
        return ::mlir::failure();
      return ::nnc::nn::inferReduce(loc, adaptor.getInput(),
          adaptor.getAxes(),
          adaptor.getKeepdimsAttr() && adaptor.getKeepdimsAttr().getValue(), types);
    }
  }];
}

def NN_ReduceSumOp : NN_ReduceOp<"reduce_sum", "sum">;
def NN_ReduceMeanOp : NN_ReduceOp<"reduce_mean", "mean">;
def NN_ReduceMaxOp : NN_ReduceOp<"reduce_max", "maximum">;

def NN_ArgmaxOp : NN_Op<"argmax", [Pure, InferTypeOpAdaptor]> {
  let summary = "index of the maximum along an axis (i32, not differentiable)";
  let description = [{
    `torch.argmax(x, dim=axis)`: the axis is removed; ties pick the first.

    ```mlir
    %i = nn.argmax %x {axis = 1 : i64} : tensor<?x10xf32>
    ```
  }];
  let arguments = (ins NN_F32Tensor:$input, I64Attr:$axis);
  let results = (outs NN_I32Tensor:$result);
  let assemblyFormat = "$input attr-dict `:` type($input)";
}

def NN_OneHotOp : NN_Op<"one_hot", [Pure, InferTypeOpAdaptor]> {
  let summary = "i32 labels [...] -> f32 one-hot [..., num_classes]";
  let description = [{
    `torch.nn.functional.one_hot(labels, num_classes).float()`.

    ```mlir
    %t = nn.one_hot %y {num_classes = 10 : i64} : tensor<?xi32>
    ```
  }];
  let arguments = (ins NN_I32Tensor:$input, I64Attr:$num_classes);
  let results = (outs NN_F32Tensor:$result);
  let assemblyFormat = "$input attr-dict `:` type($input)";
}

def NN_SoftmaxOp : NN_Op<"softmax", [Pure, InferTypeOpAdaptor]> {
  let summary = "softmax along an axis";
  let description = [{
    `exp(x - max) / sum(exp(x - max))` along `axis` (`torch.softmax`).

    ```mlir
    %p = nn.softmax %x {axis = 1 : i64} : tensor<?x10xf32>
    ```
  }];
  let arguments = (ins NN_F32Tensor:$input, I64Attr:$axis);
  let results = (outs NN_F32Tensor:$result);
  let assemblyFormat = "$input attr-dict `:` type($input)";
}

def NN_LogSoftmaxOp : NN_Op<"log_softmax", [Pure, InferTypeOpAdaptor]> {
  let summary = "log of softmax along an axis, computed stably";
  let description = [{
    `x - max - log(sum(exp(x - max)))` along `axis` (`torch.log_softmax`).

    ```mlir
    %p = nn.log_softmax %x {axis = 1 : i64} : tensor<?x10xf32>
    ```
  }];
  let arguments = (ins NN_F32Tensor:$input, I64Attr:$axis);
  let results = (outs NN_F32Tensor:$result);
  let assemblyFormat = "$input attr-dict `:` type($input)";
}

//===----------------------------------------------------------------------===//
// Convolution, pooling, normalization
//===----------------------------------------------------------------------===//

def NN_Conv2dOp : NN_Op<"conv2d", [Pure, InferTypeOpAdaptor]> {
  let summary = "2-D convolution, NCHW input, OIHW weight";
  let description = [{
    `torch.nn.functional.conv2d(x, w, stride, padding, groups=groups)` without
    bias (a bias is a broadcast `nn.add`). Output size per spatial axis:
    `(in + 2 * padding - kernel) / stride + 1`.

    ```mlir
    %y = nn.conv2d %x, %w {stride = array<i64: 1, 1>, padding = array<i64: 2, 2>,
                           groups = 1 : i64} : tensor<?x1x28x28xf32>, tensor<32x1x5x5xf32>
    ```
  }];
  let arguments = (ins NN_F32Tensor:$input, NN_F32Tensor:$weight,
                       DenseI64ArrayAttr:$stride, DenseI64ArrayAttr:$padding,
                       DefaultValuedAttr<I64Attr, "1">:$groups);
  let results = (outs NN_F32Tensor:$result);
  let assemblyFormat = "$input `,` $weight attr-dict `:` type($input) `,` type($weight)";
}

class NN_PoolOp<string mnemonic, string what, dag extra = (ins)>
    : NN_Op<mnemonic, [Pure, InferTypeOpAdaptor]> {
  let summary = "2-D " # what # " pooling over NCHW input";
  let description = "Window `kernel`, step `stride`, implicit zero (avg) or "
    "-inf (max) padding `padding` (`torch.nn.functional." # mnemonic # "`).\n\n"
    "```mlir\n%y = nn." # mnemonic # " %x {kernel = array<i64: 2, 2>, "
    "stride = array<i64: 2, 2>, padding = array<i64: 0, 0>} : tensor<?x32x28x28xf32>\n```";
  let arguments = !con((ins NN_F32Tensor:$input, DenseI64ArrayAttr:$kernel,
                            DenseI64ArrayAttr:$stride,
                            DenseI64ArrayAttr:$padding), extra);
  let results = (outs NN_F32Tensor:$result);
  let assemblyFormat = "$input attr-dict `:` type($input)";
  let extraClassDefinition = [{
    ::llvm::LogicalResult $cppClass::inferReturnTypes(
        ::mlir::MLIRContext *, std::optional<::mlir::Location> loc,
        Adaptor adaptor, ::llvm::SmallVectorImpl<::mlir::Type> &types) {
      if (::mlir::failed(checkedForInference(loc, adaptor)))
        return ::mlir::failure();
      return ::nnc::nn::inferPool(loc, getOperationName(), adaptor.getInput(),
          adaptor.getKernel(), adaptor.getStride(), adaptor.getPadding(), types);
    }
  }];
}

def NN_MaxPool2dOp : NN_PoolOp<"max_pool2d", "max">;
def NN_AvgPool2dOp : NN_PoolOp<"avg_pool2d", "average",
    (ins DefaultValuedAttr<BoolAttr, "true">:$count_include_pad)>;

def NN_BatchNormOp : NN_Op<"batch_norm", [Pure, InferTypeOpAdaptor]> {
  let summary = "batch normalization over axis 1 ([N, C] or [N, C, H, W])";
  let description = [{
    `torch.nn.functional.batch_norm`. With `training`, normalizes with the
    batch mean and biased variance over every axis but 1 (the training step
    then updates the running statistics with
    `running = (1 - momentum) * running + momentum * batch`, unbiased
    variance); without it, normalizes with `running_mean` / `running_var`.
    `y = (x - mean) / sqrt(var + eps) * gamma + beta`.
    The second and third results are the `mean` and `var` it normalized
    with (like the saved statistics of PyTorch's `native_batch_norm`), so
    that the running statistics need no second pass over `x`.

    ```mlir
    %y, %mean, %var = nn.batch_norm %x, %g, %b, %rm, %rv {eps = 1.0e-05 : f32, momentum = 0.1 : f32}
        : tensor<?x32x28x28xf32>, tensor<32xf32>, tensor<32xf32>, tensor<32xf32>, tensor<32xf32>
    ```
  }];
  let arguments = (ins NN_F32Tensor:$input, NN_F32Tensor:$gamma,
                       NN_F32Tensor:$beta, NN_F32Tensor:$running_mean,
                       NN_F32Tensor:$running_var, F32Attr:$eps, F32Attr:$momentum,
                       UnitAttr:$training);
  let results = (outs NN_F32Tensor:$result, NN_F32Tensor:$mean, NN_F32Tensor:$var);
  let assemblyFormat = [{
    $input `,` $gamma `,` $beta `,` $running_mean `,` $running_var attr-dict `:`
    type($input) `,` type($gamma) `,` type($beta) `,` type($running_mean) `,`
    type($running_var)
  }];
}

def NN_BatchNormGradOp : NN_Op<"batch_norm_grad", [Pure, InferTypeOpAdaptor]> {
  let summary = "gradients of training-mode batch normalization";
  let description = [{
    The backward op of `batch_norm` with `training` (PyTorch's
    `native_batch_norm_backward`): for output gradient `dy`, input `x` and
    scale `gamma`, with the batch statistics of `x` over every axis but 1
    (`n` elements per channel, biased variance):
    `xhat = (x - mean) / sqrt(var + eps)`,
    `dbeta = sum(dy)`, `dgamma = sum(dy * xhat)`,
    `dx = gamma / sqrt(var + eps) * (dy - dbeta / n - xhat * dgamma / n)`.
    One op instead of a dozen elementwise ops and reductions, so a backend
    makes a few passes per channel over data that stays in cache.

    ```mlir
    %dx, %dgamma, %dbeta = nn.batch_norm_grad %dy, %x, %g {eps = 1.0e-05 : f32}
        : tensor<?x32x28x28xf32>, tensor<?x32x28x28xf32>, tensor<32xf32>
    ```
  }];
  let arguments = (ins NN_F32Tensor:$grad, NN_F32Tensor:$input, NN_F32Tensor:$gamma,
                       F32Attr:$eps);
  let results = (outs NN_F32Tensor:$grad_input, NN_F32Tensor:$grad_gamma,
                      NN_F32Tensor:$grad_beta);
  let assemblyFormat = [{
    $grad `,` $input `,` $gamma attr-dict `:` type($grad) `,` type($input) `,` type($gamma)
  }];
}

def NN_GroupNormOp : NN_Op<"group_norm", [Pure, InferTypeOpAdaptor]> {
  let summary = "group normalization over channel groups";
  let description = [{
    `torch.nn.functional.group_norm(x, groups, gamma, beta, eps)`: channels
    split into `groups` groups; each (sample, group) is normalized with its
    own mean and biased variance, then scaled per channel.

    ```mlir
    %y = nn.group_norm %x, %g, %b {groups = 4 : i64, eps = 1.0e-05 : f32}
        : tensor<?x32x8x8xf32>, tensor<32xf32>, tensor<32xf32>
    ```
  }];
  let arguments = (ins NN_F32Tensor:$input, NN_F32Tensor:$gamma,
                       NN_F32Tensor:$beta, I64Attr:$groups, F32Attr:$eps);
  let results = (outs NN_F32Tensor:$result);
  let assemblyFormat = [{
    $input `,` $gamma `,` $beta attr-dict `:` type($input) `,` type($gamma) `,`
    type($beta)
  }];
}

def NN_LocalResponseNormOp : NN_Op<"local_response_norm",
    [Pure, InferTypeOpAdaptor]> {
  let summary = "local response normalization across channels";
  let description = [{
    `torch.nn.LocalResponseNorm(size, alpha, beta, k)`:
    `y[c] = x[c] / (k + alpha / size * sum_{c' in window(c)} x[c']^2) ^ beta`,
    the window covering channels `c - size/2 .. c + (size-1)/2` (zero outside).

    ```mlir
    %y = nn.local_response_norm %x {size = 5 : i64, alpha = 1.0e-04 : f32,
        beta = 0.75 : f32, k = 2.0 : f32} : tensor<?x64x8x8xf32>
    ```
  }];
  let arguments = (ins NN_F32Tensor:$input, I64Attr:$size, F32Attr:$alpha,
                       F32Attr:$beta, F32Attr:$k);
  let results = (outs NN_F32Tensor:$result);
  let assemblyFormat = "$input attr-dict `:` type($input)";
}

//===----------------------------------------------------------------------===//
// Losses
//===----------------------------------------------------------------------===//

class NN_LossOp<string mnemonic, string what, Type targetType>
    : NN_Op<mnemonic, [Pure, InferTypeOpAdaptor]> {
  let summary = what;
  let arguments = (ins NN_F32Tensor:$input, targetType:$target,
                       DefaultValuedAttr<NN_ReductionAttr, "\"mean\"">:$reduction);
  let results = (outs NN_F32Tensor:$result);
  let assemblyFormat = "$input `,` $target attr-dict `:` type($input) `,` type($target)";
}

def NN_MseLossOp : NN_LossOp<"mse_loss", "mean squared error", NN_F32Tensor> {
  let description = [{
    `torch.nn.MSELoss(reduction)`: `(input - target)^2`, averaged over all
    elements for `mean`. Shapes must match.

    ```mlir
    %l = nn.mse_loss %p, %t : tensor<?x784xf32>, tensor<?x784xf32>
    ```
  }];
}

def NN_L1LossOp : NN_LossOp<"l1_loss", "mean absolute error", NN_F32Tensor> {
  let description = [{
    `torch.nn.L1Loss(reduction)`: `|input - target|`. Shapes must match.

    ```mlir
    %l = nn.l1_loss %p, %t : tensor<?x1xf32>, tensor<?x1xf32>
    ```
  }];
}

def NN_BceLossOp : NN_LossOp<"bce_loss", "binary cross-entropy on probabilities",
                             NN_F32Tensor> {
  let description = [{
    `torch.nn.BCELoss(reduction)`:
    `-(t * log(p) + (1 - t) * log(1 - p))`, logs clamped at -100 as PyTorch does.

    ```mlir
    %l = nn.bce_loss %p, %t : tensor<?x1xf32>, tensor<?x1xf32>
    ```
  }];
}

def NN_CrossEntropyOp : NN_LossOp<"cross_entropy",
    "categorical cross-entropy on probabilities", NN_Tensor> {
  let hasCanonicalizer = 1;
  let description = [{
    Input `p` holds class probabilities [N, C]. The target is either i32 class
    indices [N] (then the loss is `-log(p[n, y[n]])`, `torch.nn.NLLLoss` on
    `log(p)`) or f32 probabilities [N, C] (then `-sum_c t * log(p)`). Reduced
    over the batch by `reduction`. Canonicalization turns
    `cross_entropy(softmax(x), labels)` into the stable
    `softmax_cross_entropy(x, labels)`.

    ```mlir
    %l = nn.cross_entropy %p, %y : tensor<?x10xf32>, tensor<?xi32>
    ```
  }];
}

def NN_SoftmaxCrossEntropyOp : NN_LossOp<"softmax_cross_entropy",
    "softmax followed by cross-entropy, on logits", NN_I32Tensor> {
  let description = [{
    `torch.nn.CrossEntropyLoss(reduction)`: logits [N, C], i32 class indices
    [N]; `logsumexp(x[n]) - x[n, y[n]]`, computed stably.

    ```mlir
    %l = nn.softmax_cross_entropy %x, %y : tensor<?x10xf32>, tensor<?xi32>
    ```
  }];
}

//===----------------------------------------------------------------------===//
// Ops that autodiff creates: broadcasts, counts and the backward kernels of
// ops whose gradient is not a composition of other ops.
//===----------------------------------------------------------------------===//

def NN_BroadcastLikeOp : NN_Op<"broadcast_like", [Pure, InferTypeOpAdaptor]> {
  let summary = "broadcast a tensor to the shape of another";
  let description = [{
    Numpy-broadcasts `input` to the shape of `like` (whose values are not
    read). The gradient of a reduction or broadcast uses it.

    ```mlir
    %y = nn.broadcast_like %g, %x : tensor<?x1xf32>, tensor<?x10xf32>
    ```
  }];
  let arguments = (ins NN_F32Tensor:$input, NN_Tensor:$like);
  let results = (outs NN_F32Tensor:$result);
  let assemblyFormat = "$input `,` $like attr-dict `:` type($input) `,` type($like)";
}

def NN_CountOp : NN_Op<"count", [Pure, InferTypeOpAdaptor]> {
  let summary = "number of elements over axes, as an f32 scalar";
  let description = [{
    The product of the sizes of `input` along `axes` (all axes when empty),
    known at run time when an axis is dynamic. Mean reductions divide by it.

    ```mlir
    %n = nn.count %x {axes = array<i64: 0>} : tensor<?x10xf32>
    ```
  }];
  let arguments = (ins NN_Tensor:$input, DenseI64ArrayAttr:$axes);
  let results = (outs NN_F32Tensor:$result);
  let assemblyFormat = "$input attr-dict `:` type($input)";
}

def NN_SliceOp : NN_Op<"slice", [Pure, InferTypeOpAdaptor]> {
  let summary = "a contiguous range along one axis";
  let description = [{
    Elements `start .. start + size - 1` along `axis` (`torch.narrow`).

    ```mlir
    %y = nn.slice %x {axis = 1 : i64, start = 3 : i64, size = 5 : i64} : tensor<?x8xf32>
    ```
  }];
  let arguments = (ins NN_Tensor:$input, I64Attr:$axis, I64Attr:$start, I64Attr:$size);
  let results = (outs NN_Tensor:$result);
  let assemblyFormat = "$input attr-dict `:` type($input)";
}

def NN_ChannelWindowSumOp : NN_Op<"channel_window_sum", [Pure, InferTypeOpAdaptor]> {
  let summary = "sum over a window of neighbouring channels";
  let description = [{
    `y[n, c, ...] = sum of x[n, c', ...] for c - before <= c' <= c + after`
    (channels outside the tensor count as zero). Local response normalization
    and its gradient are built from it.

    ```mlir
    %y = nn.channel_window_sum %x {before = 2 : i64, after = 2 : i64} : tensor<?x64x8x8xf32>
    ```
  }];
  let arguments = (ins NN_F32Tensor:$input, I64Attr:$before, I64Attr:$after);
  let results = (outs NN_F32Tensor:$result);
  let assemblyFormat = "$input attr-dict `:` type($input)";
}

def NN_Conv2dGradInputOp : NN_Op<"conv2d_grad_input", [Pure, InferTypeOpAdaptor]> {
  let summary = "gradient of conv2d with respect to its input";
  let description = [{
    Given the output gradient `dy` [N, O, OH, OW] and the weight [O, I/g, KH,
    KW], the input gradient [N, I, H, W] (a transposed convolution;
    `torch.nn.grad.conv2d_input`). `input_size` is [H, W].

    ```mlir
    %dx = nn.conv2d_grad_input %dy, %w {stride = array<i64: 1, 1>, padding = array<i64: 2, 2>,
        groups = 1 : i64, input_size = array<i64: 28, 28>} : tensor<?x32x28x28xf32>, tensor<32x1x5x5xf32>
    ```
  }];
  let arguments = (ins NN_F32Tensor:$grad, NN_F32Tensor:$weight,
                       DenseI64ArrayAttr:$stride, DenseI64ArrayAttr:$padding,
                       I64Attr:$groups, DenseI64ArrayAttr:$input_size);
  let results = (outs NN_F32Tensor:$result);
  let assemblyFormat = "$grad `,` $weight attr-dict `:` type($grad) `,` type($weight)";
}

def NN_Conv2dGradWeightOp : NN_Op<"conv2d_grad_weight", [Pure, InferTypeOpAdaptor]> {
  let summary = "gradient of conv2d with respect to its weight";
  let description = [{
    Given the input [N, I, H, W] and the output gradient [N, O, OH, OW], the
    weight gradient [O, I/g, KH, KW] summed over the batch
    (`torch.nn.grad.conv2d_weight`). `kernel` is [KH, KW].

    ```mlir
    %dw = nn.conv2d_grad_weight %x, %dy {stride = array<i64: 1, 1>, padding = array<i64: 2, 2>,
        groups = 1 : i64, kernel = array<i64: 5, 5>} : tensor<?x1x28x28xf32>, tensor<?x32x28x28xf32>
    ```
  }];
  let arguments = (ins NN_F32Tensor:$input, NN_F32Tensor:$grad,
                       DenseI64ArrayAttr:$stride, DenseI64ArrayAttr:$padding,
                       I64Attr:$groups, DenseI64ArrayAttr:$kernel);
  let results = (outs NN_F32Tensor:$result);
  let assemblyFormat = "$input `,` $grad attr-dict `:` type($input) `,` type($grad)";
}

class NN_PoolGradOp<string mnemonic, string what, dag extra = (ins)>
    : NN_Op<mnemonic, [Pure, InferTypeOpAdaptor]> {
  let summary = "gradient of " # what # " pooling with respect to its input";
  let description = "Scatters the output gradient `grad` back over the "
    "pooling windows of `input` (same attributes as the forward op); the "
    "result has `input`'s shape.\n\n"
    "```mlir\n%dx = nn." # mnemonic # " %dy, %x {kernel = array<i64: 2, 2>, "
    "stride = array<i64: 2, 2>, padding = array<i64: 0, 0>} : "
    "tensor<?x32x14x14xf32>, tensor<?x32x28x28xf32>\n```";
  let arguments = !con((ins NN_F32Tensor:$grad, NN_F32Tensor:$input,
                            DenseI64ArrayAttr:$kernel, DenseI64ArrayAttr:$stride,
                            DenseI64ArrayAttr:$padding), extra);
  let results = (outs NN_F32Tensor:$result);
  let assemblyFormat = "$grad `,` $input attr-dict `:` type($grad) `,` type($input)";
  let extraClassDeclaration = [{
    /// Whether the windows tile the input exactly (kernel = stride, no
    /// padding, no rows or columns past the last window): every input
    /// element then lies in exactly one window.
    bool windowsTileInput();
  }];
  let extraClassDefinition = [{
    ::llvm::LogicalResult $cppClass::inferReturnTypes(
        ::mlir::MLIRContext *, std::optional<::mlir::Location>,
        Adaptor adaptor, ::llvm::SmallVectorImpl<::mlir::Type> &types) {
      types.push_back(adaptor.getInput().getType());
      return ::mlir::success();
    }
    bool $cppClass::windowsTileInput() {
      auto in = ::llvm::cast<::mlir::ShapedType>(getInput().getType()).getShape();
      auto out = ::llvm::cast<::mlir::ShapedType>(getGrad().getType()).getShape();
      ::llvm::ArrayRef<int64_t> k = getKernel(), s = getStride(), p = getPadding();
      return in.size() == 4 && out.size() == 4 && k == s && p[0] == 0 && p[1] == 0 &&
             in[2] == out[2] * k[0] && in[3] == out[3] * k[1];
    }
  }];
}

def NN_MaxPool2dGradOp : NN_PoolGradOp<"max_pool2d_grad", "max">;
def NN_AvgPool2dGradOp : NN_PoolGradOp<"avg_pool2d_grad", "average",
    (ins DefaultValuedAttr<BoolAttr, "true">:$count_include_pad)>;

//===----------------------------------------------------------------------===//
// Kernels: the fusion pass's groups
//===----------------------------------------------------------------------===//

def NN_KernelOp : NN_Op<"kernel", [RecursiveMemoryEffects,
    SingleBlockImplicitTerminator<"YieldOp">]> {
  let summary = "ops that a backend runs as one kernel";
  let description = [{
    The unit of code generation the fusion pass (compiler/transforms/
    Fusion.cpp) forms: the ops of the region, in order, run as one kernel
    (one loop nest or a few back to back on the CPU, one launch on a GPU).
    Values the region yields are the kernel's results; values it reads
    from above are its inputs. An op whose results are used only inside
    the kernel is not written to memory: a backend computes it where it
    is read. The region captures values from above (it is not isolated):
    splat constants and element counts stay outside kernels, and every
    kernel reads them as literals.

    ```mlir
    %y = nn.kernel -> tensor<?x10xf32> {
      %s = nn.add %x, %b : tensor<?x10xf32>, tensor<10xf32>
      %r = nn.relu %s : tensor<?x10xf32>
      nn.yield %r : tensor<?x10xf32>
    }
    ```
  }];
  let results = (outs Variadic<NN_Tensor>:$results);
  let regions = (region SizedRegion<1>:$body);
  let assemblyFormat = "(`->` type($results)^)? $body attr-dict";
  let hasVerifier = 1;
}

def NN_YieldOp : NN_Op<"yield", [Pure, Terminator, HasParent<"KernelOp">]> {
  let summary = "the results of a kernel";
  let arguments = (ins Variadic<NN_Tensor>:$values);
  let builders = [OpBuilder<(ins), [{ /* no values */ }]>];
  let assemblyFormat = "attr-dict ($values^ `:` type($values))?";
}

#endif // NN_OPS_TD
