//===- NNOps.cpp - nn dialect operations ----------------------------------===//
//
// Result-type inference (one short rule per op, all delegating to
// ShapeRules.h), verifiers and folders of the nn ops.
//
//===----------------------------------------------------------------------===//

#include "dialects/nn/NNOps.h"
#include "dialects/nn/ShapeRules.h"
#include "runtime/Random.h"

#include "mlir/Dialect/CommonFolders.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/Matchers.h"
#include "mlir/IR/OpImplementation.h"
#include "mlir/IR/PatternMatch.h"
#include "mlir/IR/TypeUtilities.h"

#include "llvm/ADT/SmallPtrSet.h"

using namespace mlir;
using namespace nnc;
using namespace nnc::nn;

//===----------------------------------------------------------------------===//
// Shared inference helpers
//===----------------------------------------------------------------------===//

static ArrayRef<int64_t> shapeOf(Value v) {
  return cast<RankedTensorType>(v.getType()).getShape();
}

static Type elementOf(Value v) {
  return cast<RankedTensorType>(v.getType()).getElementType();
}

/// Turns a shape rule's answer into a result type or a located error.
static LogicalResult finish(std::optional<Location> loc,
                            const shape::Inferred &r, Type element,
                            SmallVectorImpl<Type> &types) {
  if (!r.ok())
    return emitOptionalError(loc, r.error);
  types.push_back(RankedTensorType::get(r.shape, element));
  return success();
}

namespace nnc::nn {

LogicalResult inferBroadcast(std::optional<Location> loc, Value lhs, Value rhs,
                             SmallVectorImpl<Type> &types) {
  if (elementOf(lhs) != elementOf(rhs))
    return emitOptionalError(loc, "operands have different element types (",
                             elementOf(lhs), " and ", elementOf(rhs), ")");
  return finish(loc, shape::broadcast(shapeOf(lhs), shapeOf(rhs)),
                elementOf(lhs), types);
}

LogicalResult inferReduce(std::optional<Location> loc, Value input,
                          ArrayRef<int64_t> axes, bool keepdims,
                          SmallVectorImpl<Type> &types) {
  return finish(loc, shape::reduce(shapeOf(input), axes, keepdims),
                elementOf(input), types);
}

LogicalResult inferPool(std::optional<Location> loc, StringRef opName,
                        Value input, ArrayRef<int64_t> kernel,
                        ArrayRef<int64_t> stride, ArrayRef<int64_t> padding,
                        SmallVectorImpl<Type> &types) {
  StringRef what = opName.drop_front(strlen("nn."));
  return finish(loc,
                shape::pool2d(what, shapeOf(input), kernel, stride, padding),
                elementOf(input), types);
}

} // namespace nnc::nn

//===----------------------------------------------------------------------===//
// Per-op inference rules
//===----------------------------------------------------------------------===//

/// Ops parsed from text reach type inference before the verifier: their
/// operands must be ranked tensors and their attributes those the op
/// requires (the adaptor's verify), or inference would read nothing.
template <typename AdaptorT>
static LogicalResult checkedForInference(std::optional<Location> loc, AdaptorT &adaptor) {
  for (Value v : adaptor.getOperands())
    if (!isa<RankedTensorType>(v.getType()))
      return emitOptionalError(loc, "expects ranked tensor operands");
  if (loc && failed(adaptor.verify(*loc)))
    return failure();
  return success();
}

LogicalResult ConstantOp::inferReturnTypes(MLIRContext *,
                                           std::optional<Location> loc,
                                           Adaptor adaptor,
                                           SmallVectorImpl<Type> &types) {
  if (failed(checkedForInference(loc, adaptor)))
    return failure();
  auto type = dyn_cast<RankedTensorType>(adaptor.getValue().getType());
  if (!type)
    return emitOptionalError(loc, "constant value must be a ranked tensor");
  types.push_back(type);
  return success();
}

LogicalResult LeakyReluOp::inferReturnTypes(MLIRContext *,
                                            std::optional<Location> loc,
                                            Adaptor adaptor,
                                            SmallVectorImpl<Type> &types) {
  if (failed(checkedForInference(loc, adaptor)))
    return failure();
  types.push_back(adaptor.getInput().getType());
  return success();
}

LogicalResult AllReduceOp::inferReturnTypes(MLIRContext *,
                                            std::optional<Location> loc,
                                            Adaptor adaptor,
                                            SmallVectorImpl<Type> &types) {
  if (failed(checkedForInference(loc, adaptor)))
    return failure();
  types.push_back(adaptor.getInput().getType());
  return success();
}

LogicalResult DropoutOp::inferReturnTypes(MLIRContext *,
                                          std::optional<Location> loc,
                                          Adaptor adaptor,
                                          SmallVectorImpl<Type> &types) {
  if (failed(checkedForInference(loc, adaptor)))
    return failure();
  types.push_back(adaptor.getInput().getType()); // result
  types.push_back(adaptor.getInput().getType()); // mask
  return success();
}

LogicalResult DropoutOp::verify() {
  float rate = getRate().convertToFloat();
  if (!(rate >= 0.0f && rate < 1.0f))
    return emitOpError("rate must be in [0, 1), got ") << rate;
  return success();
}

int64_t nnc::nn::classCount(Value v) {
  int64_t classes = 0;
  auto bound = [&](int64_t n) { classes = classes == 0 ? n : std::min(classes, n); };
  // Breadth-first over the values that carry v's elements; the IR is a DAG,
  // so the visited set bounds the walk.
  SmallVector<Value> work{v};
  llvm::SmallPtrSet<Operation *, 8> seen;
  while (!work.empty()) {
    Value x = work.pop_back_val();
    for (Operation *user : x.getUsers()) {
      if (!seen.insert(user).second)
        continue;
      if (auto o = dyn_cast<OneHotOp>(user))
        bound(o.getNumClasses());
      else if (isa<CrossEntropyOp, SoftmaxCrossEntropyOp>(user) && user->getOperand(1) == x) {
        auto logits = cast<RankedTensorType>(user->getOperand(0).getType());
        if (logits.getRank() == 2 && !logits.isDynamicDim(1))
          bound(logits.getDimSize(1));
      } else if (isa<ReshapeOp, TransposeOp, SliceOp, ConcatOp, IdentityOp>(user)) {
        work.push_back(user->getResult(0));
      }
    }
  }
  return classes;
}

uint64_t nnc::nn::locationId(Location loc) {
  if (auto f = dyn_cast<FileLineColLoc>(loc))
    return (static_cast<uint64_t>(f.getLine()) << 20) ^ f.getColumn();
  if (auto n = dyn_cast<NameLoc>(loc))
    return rt::mix64(locationId(n.getChildLoc()));
  if (auto f = dyn_cast<FusedLoc>(loc); f && !f.getLocations().empty())
    return locationId(f.getLocations().front());
  // A line of a block, expanded at a call: each call draws its own stream.
  if (auto c = dyn_cast<CallSiteLoc>(loc))
    return rt::mix64(locationId(c.getCallee()) ^ rt::mix64(locationId(c.getCaller())));
  return 0;
}

FailureOr<rt::InitSpec> nnc::nn::initSpec(func::FuncOp fn, unsigned index) {
  auto type = cast<RankedTensorType>(fn.getArgument(index).getType());
  auto init = fn.getArgAttrOfType<DictionaryAttr>(index, attr::kInit);
  if (!init || !type.hasStaticShape())
    return fn.emitError("argument ") << index << " has no initializer";
  rt::InitSpec spec;
  for (NamedAttribute a : init) {
    if (a.getName() == "loaded")
      spec.loaded = true;
    else if (auto s = dyn_cast<StringAttr>(a.getValue()))
      spec.kind = s.str();
    else if (auto f = dyn_cast<FloatAttr>(a.getValue()))
      spec.args[a.getName().str()] = f.getValueAsDouble();
    else if (auto i = dyn_cast<IntegerAttr>(a.getValue()))
      (a.getName() == "fan_in" ? spec.fanIn : spec.fanOut) = i.getInt();
    else if (auto d = dyn_cast<DenseElementsAttr>(a.getValue())) {
      if (isa<FloatType>(d.getElementType()))
        for (const APFloat &v : d.getValues<APFloat>())
          spec.literal.push_back(v.convertToDouble());
      else
        for (const APInt &v : d.getValues<APInt>())
          spec.literal.push_back(static_cast<double>(v.getSExtValue()));
    }
  }
  return spec;
}

ArrayRef<TypeID> nnc::nn::elementwiseOps() {
  static const TypeID ids[] = {
      TypeID::get<NegOp>(),   TypeID::get<ExpOp>(),       TypeID::get<LogOp>(),
      TypeID::get<SqrtOp>(),  TypeID::get<AbsOp>(),       TypeID::get<SigmoidOp>(),
      TypeID::get<TanhOp>(),  TypeID::get<ReluOp>(),      TypeID::get<SoftplusOp>(),
      TypeID::get<StepOp>(),  TypeID::get<IdentityOp>(),  TypeID::get<LeakyReluOp>(),
      TypeID::get<AddOp>(),   TypeID::get<SubOp>(),       TypeID::get<MulOp>(),
      TypeID::get<DivOp>(),   TypeID::get<PowOp>(),       TypeID::get<BroadcastLikeOp>()};
  return ids;
}

bool nnc::nn::isElementwise(Operation *op) {
  return llvm::is_contained(elementwiseOps(), op->getName().getTypeID());
}

bool nnc::nn::isReduction(Operation *op) { return isa<ReduceSumOp, ReduceMaxOp>(op); }

bool nnc::nn::hostsEpilogue(Operation *op) {
  if (auto pool = dyn_cast<MaxPool2dGradOp>(op))
    return pool.windowsTileInput();
  return isa<BatchNormOp, MatmulOp, Conv2dOp>(op) || isReduction(op);
}

ArrayRef<int64_t> nnc::nn::reductionAxes(Operation *op) {
  return cast<DenseI64ArrayAttr>(op->getAttr("axes")).asArrayRef();
}

bool nnc::nn::keepsReducedAxes(Operation *op) {
  auto keep = op->getAttrOfType<BoolAttr>("keepdims");
  return keep && keep.getValue();
}

LogicalResult KernelOp::verify() {
  auto yield = cast<YieldOp>(getBody().front().getTerminator());
  if (yield.getValues().getTypes() != getResultTypes())
    return emitOpError("yields ") << yield.getValues().size()
                                  << " values whose types differ from the kernel's results";
  return success();
}

LogicalResult MatmulOp::inferReturnTypes(MLIRContext *,
                                         std::optional<Location> loc,
                                         Adaptor adaptor,
                                         SmallVectorImpl<Type> &types) {
  if (failed(checkedForInference(loc, adaptor)))
    return failure();
  return finish(loc,
                shape::matmul(shapeOf(adaptor.getLhs()), shapeOf(adaptor.getRhs())),
                elementOf(adaptor.getLhs()), types);
}

LogicalResult ReshapeOp::inferReturnTypes(MLIRContext *,
                                          std::optional<Location> loc,
                                          Adaptor adaptor,
                                          SmallVectorImpl<Type> &types) {
  if (failed(checkedForInference(loc, adaptor)))
    return failure();
  return finish(loc, shape::reshape(shapeOf(adaptor.getInput()), adaptor.getShape()),
                elementOf(adaptor.getInput()), types);
}

LogicalResult TransposeOp::inferReturnTypes(MLIRContext *,
                                            std::optional<Location> loc,
                                            Adaptor adaptor,
                                            SmallVectorImpl<Type> &types) {
  if (failed(checkedForInference(loc, adaptor)))
    return failure();
  return finish(loc, shape::transpose(shapeOf(adaptor.getInput()), adaptor.getPerm()),
                elementOf(adaptor.getInput()), types);
}

LogicalResult ConcatOp::inferReturnTypes(MLIRContext *,
                                         std::optional<Location> loc,
                                         Adaptor adaptor,
                                         SmallVectorImpl<Type> &types) {
  if (failed(checkedForInference(loc, adaptor)))
    return failure();
  SmallVector<shape::Shape> shapes;
  for (Value v : adaptor.getInputs()) {
    if (elementOf(v) != elementOf(adaptor.getInputs().front()))
      return emitOptionalError(loc, "concat inputs have different element types");
    shapes.emplace_back(shapeOf(v));
  }
  if (shapes.empty())
    return emitOptionalError(loc, "concat needs at least one input");
  return finish(loc, shape::concat(shapes, adaptor.getAxis()),
                elementOf(adaptor.getInputs().front()), types);
}

LogicalResult ArgmaxOp::inferReturnTypes(MLIRContext *ctx,
                                         std::optional<Location> loc,
                                         Adaptor adaptor,
                                         SmallVectorImpl<Type> &types) {
  if (failed(checkedForInference(loc, adaptor)))
    return failure();
  return finish(loc,
                shape::removeAxis("argmax", shapeOf(adaptor.getInput()),
                                  adaptor.getAxis()),
                IntegerType::get(ctx, 32), types);
}

LogicalResult OneHotOp::inferReturnTypes(MLIRContext *ctx,
                                         std::optional<Location> loc,
                                         Adaptor adaptor,
                                         SmallVectorImpl<Type> &types) {
  if (failed(checkedForInference(loc, adaptor)))
    return failure();
  if (adaptor.getNumClasses() < 1)
    return emitOptionalError(loc, "one_hot needs at least one class, got ",
                             adaptor.getNumClasses());
  shape::Shape s(shapeOf(adaptor.getInput()));
  s.push_back(adaptor.getNumClasses());
  return finish(loc, shape::Inferred::of(s), Float32Type::get(ctx), types);
}

LogicalResult SoftmaxOp::inferReturnTypes(MLIRContext *,
                                          std::optional<Location> loc,
                                          Adaptor adaptor,
                                          SmallVectorImpl<Type> &types) {
  if (failed(checkedForInference(loc, adaptor)))
    return failure();
  return finish(loc,
                shape::checkAxis("softmax", shapeOf(adaptor.getInput()),
                                 adaptor.getAxis()),
                elementOf(adaptor.getInput()), types);
}

LogicalResult LogSoftmaxOp::inferReturnTypes(MLIRContext *,
                                             std::optional<Location> loc,
                                             Adaptor adaptor,
                                             SmallVectorImpl<Type> &types) {
  if (failed(checkedForInference(loc, adaptor)))
    return failure();
  return finish(loc,
                shape::checkAxis("log_softmax", shapeOf(adaptor.getInput()),
                                 adaptor.getAxis()),
                elementOf(adaptor.getInput()), types);
}

LogicalResult Conv2dOp::inferReturnTypes(MLIRContext *,
                                         std::optional<Location> loc,
                                         Adaptor adaptor,
                                         SmallVectorImpl<Type> &types) {
  if (failed(checkedForInference(loc, adaptor)))
    return failure();
  return finish(loc,
                shape::conv2d(shapeOf(adaptor.getInput()),
                              shapeOf(adaptor.getWeight()), adaptor.getStride(),
                              adaptor.getPadding(),
                              adaptor.getGroupsAttr() ? adaptor.getGroups() : 1),
                elementOf(adaptor.getInput()), types);
}

LogicalResult BatchNormGradOp::inferReturnTypes(MLIRContext *,
                                                std::optional<Location> loc,
                                                Adaptor adaptor,
                                                SmallVectorImpl<Type> &types) {
  if (failed(checkedForInference(loc, adaptor)))
    return failure();
  ArrayRef<int64_t> in = shapeOf(adaptor.getInput());
  shape::Inferred r = shape::Inferred::of(in);
  if (shapeOf(adaptor.getGrad()) != in)
    r = shape::Inferred::fail("batch_norm_grad: the gradient and the input differ in shape");
  if (r.ok())
    r = shape::channelParam("batch_norm_grad", "gamma", in, shapeOf(adaptor.getGamma()), 2);
  if (failed(finish(loc, r, elementOf(adaptor.getInput()), types)))
    return failure();
  types.push_back(adaptor.getGamma().getType());
  types.push_back(adaptor.getGamma().getType());
  return success();
}

LogicalResult BatchNormOp::inferReturnTypes(MLIRContext *,
                                            std::optional<Location> loc,
                                            Adaptor adaptor,
                                            SmallVectorImpl<Type> &types) {
  if (failed(checkedForInference(loc, adaptor)))
    return failure();
  ArrayRef<int64_t> in = shapeOf(adaptor.getInput());
  std::pair<StringRef, Value> params[] = {
      {"gamma", adaptor.getGamma()},
      {"beta", adaptor.getBeta()},
      {"running_mean", adaptor.getRunningMean()},
      {"running_var", adaptor.getRunningVar()}};
  shape::Inferred r = shape::Inferred::of(in);
  for (auto [name, v] : params)
    if (r.ok())
      r = shape::channelParam("batch_norm", name, in, shapeOf(v), 2);
  if (failed(finish(loc, r, elementOf(adaptor.getInput()), types)))
    return failure();
  types.push_back(adaptor.getRunningMean().getType()); // the statistics used
  types.push_back(adaptor.getRunningVar().getType());
  return success();
}

LogicalResult GroupNormOp::inferReturnTypes(MLIRContext *,
                                            std::optional<Location> loc,
                                            Adaptor adaptor,
                                            SmallVectorImpl<Type> &types) {
  if (failed(checkedForInference(loc, adaptor)))
    return failure();
  ArrayRef<int64_t> in = shapeOf(adaptor.getInput());
  shape::Inferred r = shape::channelParam("group_norm", "gamma", in,
                                          shapeOf(adaptor.getGamma()), 2);
  if (r.ok())
    r = shape::channelParam("group_norm", "beta", in, shapeOf(adaptor.getBeta()), 2);
  int64_t groups = adaptor.getGroups();
  if (r.ok() && (groups < 1 || (in[1] != shape::kDynamic && in[1] % groups)))
    r = shape::Inferred::fail(
        "group_norm groups (" + std::to_string(groups) +
        ") must be >= 1 and divide the channel count of " + shape::str(in));
  return finish(loc, r, elementOf(adaptor.getInput()), types);
}

LogicalResult LocalResponseNormOp::inferReturnTypes(
    MLIRContext *, std::optional<Location> loc, Adaptor adaptor,
    SmallVectorImpl<Type> &types) {
  if (failed(checkedForInference(loc, adaptor)))
    return failure();
  ArrayRef<int64_t> in = shapeOf(adaptor.getInput());
  if (in.size() < 3)
    return emitOptionalError(
        loc, "local_response_norm input must have rank >= 3 (N, C, ...), got ",
        shape::str(in));
  if (adaptor.getSize() < 1)
    return emitOptionalError(loc, "local_response_norm size must be >= 1");
  types.push_back(adaptor.getInput().getType());
  return success();
}

//===----------------------------------------------------------------------===//
// Losses
//===----------------------------------------------------------------------===//

// Default-valued attributes are read through their Attr getters: during
// parsing, inference runs before defaults are filled in.
template <typename Adaptor>
static bool reduces(Adaptor &adaptor) {
  auto r = adaptor.getReductionAttr();
  return !r || r.getValue() != "none";
}

LogicalResult MseLossOp::inferReturnTypes(MLIRContext *,
                                          std::optional<Location> loc,
                                          Adaptor adaptor,
                                          SmallVectorImpl<Type> &types) {
  if (failed(checkedForInference(loc, adaptor)))
    return failure();
  return finish(loc,
                shape::pointwiseLoss("mse_loss", shapeOf(adaptor.getInput()),
                                     shapeOf(adaptor.getTarget()), reduces(adaptor)),
                elementOf(adaptor.getInput()), types);
}

LogicalResult L1LossOp::inferReturnTypes(MLIRContext *,
                                         std::optional<Location> loc,
                                         Adaptor adaptor,
                                         SmallVectorImpl<Type> &types) {
  if (failed(checkedForInference(loc, adaptor)))
    return failure();
  return finish(loc,
                shape::pointwiseLoss("l1_loss", shapeOf(adaptor.getInput()),
                                     shapeOf(adaptor.getTarget()), reduces(adaptor)),
                elementOf(adaptor.getInput()), types);
}

LogicalResult BceLossOp::inferReturnTypes(MLIRContext *,
                                          std::optional<Location> loc,
                                          Adaptor adaptor,
                                          SmallVectorImpl<Type> &types) {
  if (failed(checkedForInference(loc, adaptor)))
    return failure();
  return finish(loc,
                shape::pointwiseLoss("bce_loss", shapeOf(adaptor.getInput()),
                                     shapeOf(adaptor.getTarget()), reduces(adaptor)),
                elementOf(adaptor.getInput()), types);
}

LogicalResult CrossEntropyOp::inferReturnTypes(MLIRContext *,
                                               std::optional<Location> loc,
                                               Adaptor adaptor,
                                               SmallVectorImpl<Type> &types) {
  if (failed(checkedForInference(loc, adaptor)))
    return failure();
  bool labels = elementOf(adaptor.getTarget()).isInteger(32);
  return finish(loc,
                shape::classLoss("cross_entropy", shapeOf(adaptor.getInput()),
                                 shapeOf(adaptor.getTarget()), labels,
                                 reduces(adaptor)),
                elementOf(adaptor.getInput()), types);
}

LogicalResult SoftmaxCrossEntropyOp::inferReturnTypes(
    MLIRContext *, std::optional<Location> loc, Adaptor adaptor,
    SmallVectorImpl<Type> &types) {
  if (failed(checkedForInference(loc, adaptor)))
    return failure();
  return finish(loc,
                shape::classLoss("softmax_cross_entropy",
                                 shapeOf(adaptor.getInput()),
                                 shapeOf(adaptor.getTarget()), true,
                                 reduces(adaptor)),
                elementOf(adaptor.getInput()), types);
}

//===----------------------------------------------------------------------===//
// Ops created by autodiff
//===----------------------------------------------------------------------===//

LogicalResult BroadcastLikeOp::inferReturnTypes(MLIRContext *ctx,
                                                std::optional<Location> loc,
                                                Adaptor adaptor,
                                                SmallVectorImpl<Type> &types) {
  if (failed(checkedForInference(loc, adaptor)))
    return failure();
  ArrayRef<int64_t> like = shapeOf(adaptor.getLike());
  shape::Inferred r = shape::broadcast(shapeOf(adaptor.getInput()), like);
  if (r.ok() && r.shape.size() != like.size())
    r = shape::Inferred::fail("broadcast_like input " + shape::str(shapeOf(adaptor.getInput())) +
                              " has a higher rank than " + shape::str(like));
  if (!r.ok())
    return emitOptionalError(loc, r.error);
  types.push_back(RankedTensorType::get(like, Float32Type::get(ctx)));
  return success();
}

LogicalResult CountOp::inferReturnTypes(MLIRContext *ctx,
                                        std::optional<Location> loc,
                                        Adaptor adaptor,
                                        SmallVectorImpl<Type> &types) {
  if (failed(checkedForInference(loc, adaptor)))
    return failure();
  shape::Inferred r = shape::reduce(shapeOf(adaptor.getInput()), adaptor.getAxes(), false);
  return finish(loc, r.ok() ? shape::Inferred::of({}) : r, Float32Type::get(ctx), types);
}

LogicalResult SliceOp::inferReturnTypes(MLIRContext *,
                                        std::optional<Location> loc,
                                        Adaptor adaptor,
                                        SmallVectorImpl<Type> &types) {
  if (failed(checkedForInference(loc, adaptor)))
    return failure();
  return finish(loc,
                shape::slice(shapeOf(adaptor.getInput()), adaptor.getAxis(),
                             adaptor.getStart(), adaptor.getSize()),
                elementOf(adaptor.getInput()), types);
}

LogicalResult ChannelWindowSumOp::inferReturnTypes(
    MLIRContext *, std::optional<Location> loc, Adaptor adaptor,
    SmallVectorImpl<Type> &types) {
  if (failed(checkedForInference(loc, adaptor)))
    return failure();
  if (shapeOf(adaptor.getInput()).size() < 2 || adaptor.getBefore() < 0 ||
      adaptor.getAfter() < 0)
    return emitOptionalError(loc, "channel_window_sum needs rank >= 2 and a "
                                  "non-negative window");
  types.push_back(adaptor.getInput().getType());
  return success();
}

LogicalResult Conv2dGradInputOp::inferReturnTypes(
    MLIRContext *, std::optional<Location> loc, Adaptor adaptor,
    SmallVectorImpl<Type> &types) {
  if (failed(checkedForInference(loc, adaptor)))
    return failure();
  return finish(loc,
                shape::conv2dGradInput(shapeOf(adaptor.getGrad()),
                                       shapeOf(adaptor.getWeight()),
                                       adaptor.getStride(), adaptor.getPadding(),
                                       adaptor.getGroups(), adaptor.getInputSize()),
                elementOf(adaptor.getGrad()), types);
}

LogicalResult Conv2dGradWeightOp::inferReturnTypes(
    MLIRContext *, std::optional<Location> loc, Adaptor adaptor,
    SmallVectorImpl<Type> &types) {
  if (failed(checkedForInference(loc, adaptor)))
    return failure();
  return finish(loc,
                shape::conv2dGradWeight(shapeOf(adaptor.getInput()),
                                        shapeOf(adaptor.getGrad()),
                                        adaptor.getStride(), adaptor.getPadding(),
                                        adaptor.getGroups(), adaptor.getKernel()),
                elementOf(adaptor.getGrad()), types);
}

//===----------------------------------------------------------------------===//
// Folders
//===----------------------------------------------------------------------===//

OpFoldResult ConstantOp::fold(FoldAdaptor) { return getValue(); }

OpFoldResult IdentityOp::fold(FoldAdaptor) { return getInput(); }

OpFoldResult NegOp::fold(FoldAdaptor adaptor) {
  if (auto inner = getInput().getDefiningOp<NegOp>())
    return inner.getInput();
  return constFoldUnaryOp<FloatAttr, APFloat, void>(adaptor.getOperands(),
                                     [](const APFloat &a) { return -a; });
}

/// True when `v` is a constant whose every element equals `x`.
static bool isSplat(Attribute attr, double x) {
  auto splat = dyn_cast_or_null<SplatElementsAttr>(attr);
  if (!splat)
    return false;
  if (isa<FloatType>(splat.getElementType()))
    return splat.getSplatValue<APFloat>().convertToDouble() == x;
  return splat.getSplatValue<APInt>().getSExtValue() == static_cast<int64_t>(x);
}

/// Folds `lhs op c` to lhs when c is the op's right identity and the result
/// keeps lhs's type (broadcasting a constant must not change the shape).
template <typename Op>
static OpFoldResult foldRightIdentity(Op op, Attribute rhs, double identity) {
  if (isSplat(rhs, identity) && op.getLhs().getType() == op.getType())
    return op.getLhs();
  return {};
}

/// Folds two same-typed constants elementwise.
template <typename Op, typename FloatFn, typename IntFn>
static OpFoldResult foldConstants(Op op, ArrayRef<Attribute> operands,
                                  FloatFn floatFn, IntFn intFn) {
  if (op.getLhs().getType() != op.getRhs().getType())
    return {};
  if (isa<FloatType>(getElementTypeOrSelf(op.getType())))
    return constFoldBinaryOp<FloatAttr, APFloat, void>(operands, floatFn);
  return constFoldBinaryOp<IntegerAttr, APInt, void>(operands, intFn);
}

OpFoldResult AddOp::fold(FoldAdaptor adaptor) {
  if (OpFoldResult r = foldRightIdentity(*this, adaptor.getRhs(), 0.0))
    return r;
  return foldConstants(*this, adaptor.getOperands(),
                       [](const APFloat &a, const APFloat &b) { return a + b; },
                       [](const APInt &a, const APInt &b) { return a + b; });
}

OpFoldResult SubOp::fold(FoldAdaptor adaptor) {
  if (OpFoldResult r = foldRightIdentity(*this, adaptor.getRhs(), 0.0))
    return r;
  return foldConstants(*this, adaptor.getOperands(),
                       [](const APFloat &a, const APFloat &b) { return a - b; },
                       [](const APInt &a, const APInt &b) { return a - b; });
}

OpFoldResult MulOp::fold(FoldAdaptor adaptor) {
  if (OpFoldResult r = foldRightIdentity(*this, adaptor.getRhs(), 1.0))
    return r;
  return foldConstants(*this, adaptor.getOperands(),
                       [](const APFloat &a, const APFloat &b) { return a * b; },
                       [](const APInt &a, const APInt &b) { return a * b; });
}

OpFoldResult DivOp::fold(FoldAdaptor adaptor) {
  if (OpFoldResult r = foldRightIdentity(*this, adaptor.getRhs(), 1.0))
    return r;
  // Integer division by zero is not folded; float division follows IEEE.
  if (!isa<FloatType>(getElementTypeOrSelf(getType())))
    return {};
  return foldConstants(*this, adaptor.getOperands(),
                       [](const APFloat &a, const APFloat &b) { return a / b; },
                       [](const APInt &a, const APInt &) { return a; });
}

OpFoldResult ReshapeOp::fold(FoldAdaptor adaptor) {
  if (getInput().getType() == getType())
    return getInput();
  // reshape(reshape(x)) == reshape(x): skip the inner one.
  if (auto inner = getInput().getDefiningOp<ReshapeOp>()) {
    getInputMutable().assign(inner.getInput());
    return getResult();
  }
  if (auto dense = dyn_cast_or_null<DenseElementsAttr>(adaptor.getInput()))
    if (getType().hasStaticShape())
      return dense.reshape(getType());
  return {};
}

OpFoldResult TransposeOp::fold(FoldAdaptor) {
  ArrayRef<int64_t> perm = getPerm();
  if (llvm::equal(perm, llvm::seq<int64_t>(0, perm.size())))
    return getInput();
  // transpose(transpose(x, p), q) == transpose(x, p o q).
  if (auto inner = getInput().getDefiningOp<TransposeOp>()) {
    SmallVector<int64_t> composed;
    for (int64_t q : perm)
      composed.push_back(inner.getPerm()[q]);
    if (llvm::equal(composed, llvm::seq<int64_t>(0, composed.size())))
      return inner.getInput();
    getInputMutable().assign(inner.getInput());
    setPerm(composed);
    return getResult();
  }
  return {};
}

//===----------------------------------------------------------------------===//
// Canonicalization patterns: numerically stable forms
//===----------------------------------------------------------------------===//

namespace {
/// cross_entropy(softmax(x, axis=1), labels) -> softmax_cross_entropy(x, labels):
/// the fused form never takes the log of a probability that underflowed.
struct FuseSoftmaxCrossEntropy : public OpRewritePattern<CrossEntropyOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(CrossEntropyOp op, PatternRewriter &rewriter) const override {
    auto softmax = op.getInput().getDefiningOp<SoftmaxOp>();
    if (!softmax || softmax.getAxis() != 1 ||
        !getElementTypeOrSelf(op.getTarget().getType()).isInteger(32))
      return failure();
    rewriter.replaceOpWithNewOp<SoftmaxCrossEntropyOp>(
        op, ValueRange{softmax.getInput(), op.getTarget()}, op->getAttrs());
    return success();
  }
};

/// log(softmax(x)) -> log_softmax(x).
struct FuseLogSoftmax : public OpRewritePattern<LogOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(LogOp op, PatternRewriter &rewriter) const override {
    auto softmax = op.getInput().getDefiningOp<SoftmaxOp>();
    if (!softmax)
      return failure();
    rewriter.replaceOpWithNewOp<LogSoftmaxOp>(op, ValueRange{softmax.getInput()},
                                              softmax->getAttrs());
    return success();
  }
};
} // namespace

void CrossEntropyOp::getCanonicalizationPatterns(RewritePatternSet &results, MLIRContext *ctx) {
  results.add<FuseSoftmaxCrossEntropy>(ctx);
}

void LogOp::getCanonicalizationPatterns(RewritePatternSet &results, MLIRContext *ctx) {
  results.add<FuseLogSoftmax>(ctx);
}

#define GET_OP_CLASSES
#include "dialects/nn/NNOps.cpp.inc"
