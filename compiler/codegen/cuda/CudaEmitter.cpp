//===- CudaEmitter.cpp - fused kernels as CUDA C++ ------------------------===//
//
// Per nn.kernel, its members are split into passes over memory:
//  - a member read by exactly one other member, elementwise and of the
//    same shape (or as a reduction's input), is computed where it is read
//    (`fused`), and stored as it goes when another kernel reads it too;
//  - every other member starts a launch: a grid-stride loop over its
//    elements (elementwise); one thread per output element looping over
//    the reduced axes (reductions), or one block per output when outputs
//    are few and reductions long (a bias gradient, a batch norm's channel,
//    a convolution's weight gradient); products and convolutions as tiles
//    through shared memory;
//  - an elementwise member of a reduction's result shape that reads only
//    that launch's values runs in the same thread after the reduction (its
//    epilogue).
// Scalar formulas are codegen::scalarMath's, which the CPU backend uses too.
//
//===----------------------------------------------------------------------===//

#include "compiler/codegen/cuda/CudaEmitter.h"
#include "compiler/codegen/cuda/CudaSource.h"
#include "compiler/transforms/Fusion.h"
#include "compiler/codegen/common/ScalarMath.h"

#include "dialects/nn/NNOps.h"

#include "mlir/IR/Builders.h"

#include "llvm/ADT/DenseSet.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/Path.h"

#include <functional>
#include <sstream>

using namespace mlir;
using namespace nnc;
using namespace nnc::cuda;
namespace nnops = nnc::nn;

namespace {

using nnops::isReduction;

/// The most outputs a reduction (or weight gradient) takes a block each
/// for; more get a thread each.
constexpr int64_t kMaxBlockOutputs = 4096;
/// Products this deep with a result at most 16 wide take a block per
/// output.
constexpr int64_t kLongProduct = 1024;
/// Elements a thread of a block reduction loads before it sums them: with
/// a block per channel, few warps share a multiprocessor, and only loads
/// issued together hide the memory's latency (an unrolled strided loop
/// still checks its bound between loads, so they issue one at a time).
constexpr int kLoadsInFlight = 8;

RankedTensorType typeOf(Value v) { return cast<RankedTensorType>(v.getType()); }

bool isScalar(Operation *op) { return nnops::isElementwise(op); }

/// Ops computed one element at a time from elements of their operands at
/// other positions: a transpose, a one-hot encoding.
bool isPointwise(Operation *op) {
  return isa<nnops::TransposeOp, nnops::OneHotOp, nnops::ConcatOp, nnops::SliceOp>(op);
}

/// Convolutions and pooling, forward and backward: one thread per output
/// element looping over the window that feeds it.
bool isWindowed(Operation *op) {
  return isa<nnops::Conv2dOp, nnops::Conv2dGradInputOp, nnops::Conv2dGradWeightOp, nnops::MaxPool2dOp,
             nnops::AvgPool2dOp, nnops::MaxPool2dGradOp, nnops::AvgPool2dGradOp,
             nnops::ChannelWindowSumOp>(op);
}

bool readsElementsOf(Operation *user, Value v) {
  return !isa<nnops::BroadcastLikeOp>(user) || user->getOperand(0) == v;
}


class KernelWriter {
public:
  KernelWriter(func::FuncOp fn, const codegen::BatchScaling &scaling) : fn(fn), scaling(scaling) {}

  LogicalResult run(bool skip, CudaModule &out);

private:
  func::FuncOp fn;
  const codegen::BatchScaling &scaling;
  llvm::DenseMap<Value, std::string> bufferNames;
  unsigned nextBuffer = 0;

  // Per kernel.
  llvm::DenseSet<Operation *> members, fusedOps;
  llvm::DenseMap<Value, Value> yieldedAs; // inner value -> kernel result
  llvm::DenseSet<Value> inMemory;         // inner values other launches read

  // Per launch.
  std::ostringstream body;
  std::vector<Param> params;
  llvm::DenseMap<Value, unsigned> paramOf;
  llvm::DenseMap<Value, std::string> local; // values held in registers
  unsigned nextLocal = 0;

  std::string dim(Value v, int64_t i) {
    auto t = typeOf(v);
    if (!t.isDynamicDim(i))
      return std::to_string(t.getDimSize(i));
    auto it = scaling.find(v);
    int64_t k = it == scaling.end() ? 1 : it->second[i];
    return "(" + std::to_string(k) + " * n)";
  }
  std::vector<int64_t> shapeOf(Value v) {
    auto t = typeOf(v);
    std::vector<int64_t> s;
    for (int64_t i = 0; i < t.getRank(); ++i) {
      if (!t.isDynamicDim(i)) {
        s.push_back(t.getDimSize(i));
        continue;
      }
      auto it = scaling.find(v);
      s.push_back(-(it == scaling.end() ? 1 : it->second[i]));
    }
    return s;
  }
  std::string elements(Value v) {
    std::string e = "(i64)1";
    for (int64_t i = 0; i < typeOf(v).getRank(); ++i)
      e += " * " + dim(v, i);
    return e;
  }
  std::string bufferName(Value v) {
    auto [it, added] = bufferNames.try_emplace(v, "");
    if (added)
      it->second = "b" + std::to_string(nextBuffer++);
    return it->second;
  }
  std::string param(Value v, bool output) {
    auto it = paramOf.find(v);
    if (it != paramOf.end()) {
      params[it->second].output |= output;
      return params[it->second].name;
    }
    paramOf[v] = params.size();
    params.push_back({bufferName(v), viewRoot(v), output, getElementTypeOrSelf(v.getType()).isInteger(32),
                      shapeOf(v)});
    return params.back().name;
  }
  /// The buffer a reshape views (through chains of reshapes), or "".
  std::string viewRoot(Value v) {
    Value root = v;
    while (auto r = root.getDefiningOp<nnops::ReshapeOp>())
      root = r->getOperand(0);
    return root == v ? "" : bufferName(root);
  }

public:
  std::string rootBuffer(Value v) {
    std::string r = viewRoot(v);
    return r.empty() ? bufferName(v) : r;
  }

private:
  static std::string ctype(Value v) {
    return getElementTypeOrSelf(v.getType()).isInteger(32) ? "int" : "float";
  }

  /// The flat offset of `v`'s element at the multi-index `idx` of a space
  /// of `rank` axes, broadcast numpy-style (right-aligned, size 1 repeats).
  std::string offset(Value v, ArrayRef<std::string> idx) {
    auto t = typeOf(v);
    int64_t r = t.getRank(), lead = static_cast<int64_t>(idx.size()) - r;
    std::string off, stride = "1";
    for (int64_t d = r - 1; d >= 0; --d) {
      if (t.getDimSize(d) != 1) {
        // An index that is an expression is parenthesized.
        const std::string &i = idx[lead + d];
        bool simple = llvm::all_of(i, [](char ch) { return std::isalnum(static_cast<unsigned char>(ch)) || ch == '_'; });
        std::string term = (simple ? i : "(" + i + ")") + (stride == "1" ? "" : " * " + stride);
        off = off.empty() ? term : term + " + " + off;
      }
      stride = stride == "1" ? dim(v, d) : stride + " * " + dim(v, d);
    }
    return off.empty() ? "0" : off;
  }

  /// A literal (splat constant, count, math on literals) as an expression.
  FailureOr<std::string> literal(Operation *def) {
    if (auto c = dyn_cast<nnops::ConstantOp>(def)) {
      auto attr = cast<DenseElementsAttr>(c.getValue());
      if (!attr.isSplat())
        return failure();
      if (attr.getElementType().isInteger(32))
        return std::to_string(attr.getSplatValue<APInt>().getSExtValue());
      return floatLiteral(attr.getSplatValue<APFloat>().convertToDouble());
    }
    if (auto c = dyn_cast<nnops::CountOp>(def)) {
      Value x = c->getOperand(0);
      std::string n = "(float)((i64)1";
      for (int64_t i = 0; i < typeOf(x).getRank(); ++i)
        if (c.getAxes().empty() || llvm::is_contained(c.getAxes(), i))
          n += " * " + dim(x, i);
      return n + ")";
    }
    if (isScalar(def)) {
      SmallVector<std::string> args;
      for (Value o : def->getOperands()) {
        if (!o.getDefiningOp())
          return failure();
        auto e = literal(o.getDefiningOp());
        if (failed(e))
          return failure();
        args.push_back(*e);
      }
      return scalarExpr(def, args);
    }
    return failure();
  }

  /// `v` at the multi-index `idx` (of the current space).
  FailureOr<std::string> value(Value v, ArrayRef<std::string> idx) {
    auto held = local.find(v);
    if (held != local.end())
      return held->second;
    Operation *def = v.getDefiningOp();
    if (def && members.contains(def) && fusedOps.contains(def))
      return isPointwise(def) ? pointwise(def, idx) : compute(def, idx);
    if (def && !members.contains(def) && !isa<nnops::KernelOp, nnops::ReshapeOp>(def)) {
      auto lit = literal(def);
      if (succeeded(lit))
        return *lit;
    }
    if (def && members.contains(def) && !inMemory.contains(v))
      return def->emitError("the CUDA backend cannot read this value across passes");
    return param(v, false) + "[" + offset(v, idx) + "]";
  }

  /// Computes `op` (elementwise) at `idx` into a register; stores it when
  /// other kernels or launches read it.
  FailureOr<std::string> compute(Operation *op, ArrayRef<std::string> idx) {
    SmallVector<std::string> args;
    for (Value o : op->getOperands()) {
      if (!readsElementsOf(op, o)) {
        args.push_back("0");
        continue;
      }
      auto e = value(o, idx);
      if (failed(e))
        return failure();
      args.push_back(*e);
    }
    Value r = op->getResult(0);
    std::string name = "t" + std::to_string(nextLocal++);
    body << "    const " << ctype(r) << " " << name << " = "
         << scalarExpr(op, args) << ";\n";
    local[r] = name;
    store(r, name, idx);
    return name;
  }

  /// A convolution or pooling op's element at `idx` (NCHW, OIHW) into
  /// `acc`. Reads its operands from memory, bounds-checked at the padding.
  LogicalResult windowed(Operation *op, ArrayRef<std::string> idx) {
    auto read = [&](Value v, std::vector<std::string> at) -> std::string {
      return param(v, false) + "[" + offset(v, at) + "]";
    };
    if (auto cw = dyn_cast<nnops::ChannelWindowSumOp>(op)) {
      // Channels c - before .. c + after; those outside count as zero.
      Value x = op->getOperand(0);
      std::vector<std::string> at(idx.begin(), idx.end());
      at[1] = "cc";
      body << "    float acc = 0.0f;\n    for (i64 cc = " << idx[1] << " - " << cw.getBefore() << "; cc <= "
           << idx[1] << " + " << cw.getAfter() << "; ++cc)\n      if (cc >= 0 && cc < " << dim(x, 1)
           << ") acc += " << read(x, at) << ";\n";
      return success();
    }
    auto attr = [&](StringRef name) { return cast<DenseI64ArrayAttr>(op->getAttr(name)).asArrayRef(); };
    ArrayRef<int64_t> s = attr("stride"), p = attr("padding");
    std::string sh = std::to_string(s[0]), sw = std::to_string(s[1]);
    std::string ph = std::to_string(p[0]), pw = std::to_string(p[1]);
    auto &o = body;
    const std::string &n = idx[0], &c = idx[1], &h = idx[2], &w = idx[3];
    if (auto conv = dyn_cast<nnops::Conv2dOp>(op)) {
      Value x = op->getOperand(0), wt = op->getOperand(1);
      int64_t g = conv.getGroups(), cg = typeOf(wt).getDimSize(1), og = typeOf(wt).getDimSize(0) / g;
      o << "    float acc = 0.0f;\n    const i64 cbase = (" << c << " / " << og << ") * " << cg << ";\n";
      o << "    for (i64 ci = 0; ci < " << cg << "; ++ci)\n      for (i64 kh = 0; kh < " << dim(wt, 2)
        << "; ++kh) {\n        const i64 ih = " << h << " * " << sh << " - " << ph << " + kh;\n"
        << "        if (ih < 0 || ih >= " << dim(x, 2) << ") continue;\n        for (i64 kw = 0; kw < "
        << dim(wt, 3) << "; ++kw) {\n          const i64 iw = " << w << " * " << sw << " - " << pw
        << " + kw;\n          if (iw < 0 || iw >= " << dim(x, 3) << ") continue;\n          acc += "
        << read(x, {n, "cbase + ci", "ih", "iw"}) << " * " << read(wt, {c, "ci", "kh", "kw"})
        << ";\n        }\n      }\n";
      return success();
    }
    if (auto gi = dyn_cast<nnops::Conv2dGradInputOp>(op)) {
      Value dy = op->getOperand(0), wt = op->getOperand(1);
      int64_t g = gi.getGroups(), cg = typeOf(wt).getDimSize(1), og = typeOf(wt).getDimSize(0) / g;
      o << "    float acc = 0.0f;\n    const i64 grp = " << c << " / " << cg << ";\n";
      o << "    for (i64 oo = 0; oo < " << og << "; ++oo)\n      for (i64 kh = 0; kh < " << dim(wt, 2)
        << "; ++kh) {\n        const i64 th = " << h << " + " << ph << " - kh;\n"
        << "        if (th < 0 || th % " << sh << " != 0 || th / " << sh << " >= " << dim(dy, 2)
        << ") continue;\n        for (i64 kw = 0; kw < " << dim(wt, 3) << "; ++kw) {\n"
        << "          const i64 tw = " << w << " + " << pw << " - kw;\n"
        << "          if (tw < 0 || tw % " << sw << " != 0 || tw / " << sw << " >= " << dim(dy, 3)
        << ") continue;\n          acc += "
        << read(dy, {n, "grp * " + std::to_string(og) + " + oo", "th / " + sh, "tw / " + sw}) << " * "
        << read(wt, {"grp * " + std::to_string(og) + " + oo", c + " - grp * " + std::to_string(cg), "kh", "kw"})
        << ";\n        }\n      }\n";
      return success();
    }
    if (auto gw = dyn_cast<nnops::Conv2dGradWeightOp>(op)) {
      // idx = (o, ci, kh, kw) of the weight; a sum over (batch, oh, ow), by
      // this thread alone or, in a block per weight (`blockPerWeight`), by
      // each thread over every blockDim.x-th of them.
      Value x = op->getOperand(0), dy = op->getOperand(1), r = op->getResult(0);
      int64_t g = gw.getGroups(), og = typeOf(r).getDimSize(0) / g, cg = typeOf(r).getDimSize(1);
      o << "    float acc = 0.0f;\n    const i64 cin = (" << n << " / " << og << ") * " << cg << " + " << c
        << ";\n";
      std::string ih = "oh * " + sh + " - " + ph + " + " + h, iw = "ow * " + sw + " - " + pw + " + " + w;
      std::string term = read(dy, {"b", n, "oh", "ow"}) + " * " + read(x, {"b", "cin", "ih", "iw"});
      if (blockPerWeight(op)) {
        // kLoadsInFlight elements a round: their loads first, then the sums.
        std::string m = dim(x, 0) + " * " + dim(dy, 2) + " * " + dim(dy, 3);
        o << "    for (i64 r0 = threadIdx.x; r0 < " << m << "; r0 += " << kLoadsInFlight << " * blockDim.x) {\n";
        for (int u = 0; u < kLoadsInFlight; ++u) {
          std::string su = "_" + std::to_string(u), ohu = "oh" + su, owu = "ow" + su, bu = "b" + su;
          std::string ihu = "ih" + su, iwu = "iw" + su;
          o << "      const i64 r" << su << " = r0 + " << u << " * blockDim.x;\n"
            << "      const i64 " << owu << " = r" << su << " % " << dim(dy, 3) << ", " << ohu << " = (r" << su << " / "
            << dim(dy, 3) << ") % " << dim(dy, 2) << ", " << bu << " = r" << su << " / (" << dim(dy, 3) << " * "
            << dim(dy, 2) << ");\n"
            << "      const i64 " << ihu << " = " << ohu << " * " << sh << " - " << ph << " + " << h << ", " << iwu
            << " = " << owu << " * " << sw << " - " << pw << " + " << w << ";\n"
            << "      const bool ok" << su << " = r" << su << " < " << m << " && " << ihu << " >= 0 && " << ihu
            << " < " << dim(x, 2) << " && " << iwu << " >= 0 && " << iwu << " < " << dim(x, 3) << ";\n"
            << "      const float g" << su << " = ok" << su << " ? " << read(dy, {bu, n, ohu, owu})
            << " : 0.0f, x" << su << " = ok" << su << " ? " << read(x, {bu, "cin", ihu, iwu}) << " : 0.0f;\n";
        }
        for (int u = 0; u < kLoadsInFlight; ++u)
          o << "      acc += g_" << u << " * x_" << u << ";\n";
        o << "    }\n";
        return success();
      }
      o << "    for (i64 b = 0; b < " << dim(x, 0) << "; ++b)\n      for (i64 oh = 0; oh < " << dim(dy, 2)
        << "; ++oh) {\n        const i64 ih = " << ih << ";\n"
        << "        if (ih < 0 || ih >= " << dim(x, 2) << ") continue;\n        for (i64 ow = 0; ow < "
        << dim(dy, 3) << "; ++ow) {\n          const i64 iw = " << iw
        << ";\n          if (iw < 0 || iw >= " << dim(x, 3) << ") continue;\n          acc += " << term
        << ";\n        }\n      }\n";
      return success();
    }
    ArrayRef<int64_t> k = attr("kernel");
    std::string kh = std::to_string(k[0]), kw = std::to_string(k[1]);
    if (isa<nnops::MaxPool2dOp, nnops::AvgPool2dOp>(op)) {
      Value x = op->getOperand(0);
      bool max = isa<nnops::MaxPool2dOp>(op);
      o << "    float acc = " << (max ? "-NNC_INF" : "0.0f") << ";\n    i64 valid = 0;\n";
      o << "    for (i64 a = 0; a < " << kh << "; ++a) {\n      const i64 ih = " << h << " * " << sh << " - "
        << ph << " + a;\n      if (ih < 0 || ih >= " << dim(x, 2) << ") continue;\n"
        << "      for (i64 bb = 0; bb < " << kw << "; ++bb) {\n        const i64 iw = " << w << " * " << sw
        << " - " << pw << " + bb;\n        if (iw < 0 || iw >= " << dim(x, 3) << ") continue;\n"
        << "        const float v = " << read(x, {n, c, "ih", "iw"}) << ";\n        "
        << (max ? "acc = v > acc || v != v ? v : acc;" : "acc += v;") << "\n        ++valid;\n      }\n    }\n";
      if (!max) {
        bool include = cast<nnops::AvgPool2dOp>(op).getCountIncludePad();
        o << "    acc = acc / (float)" << (include ? "(" + kh + " * " + kw + ")" : "valid") << ";\n";
      }
      o << "    (void)valid;\n";
      return success();
    }
    // Pooling gradients: idx is an input element; the windows holding it.
    Value dy = op->getOperand(0), x = op->getOperand(1);
    bool max = isa<nnops::MaxPool2dGradOp>(op);
    // Only the windows that can hold it: oh * sh - ph <= h < oh * sh - ph + kh.
    auto range = [&](const std::string &v, const std::string &i, const std::string &s, const std::string &p,
                     const std::string &k, const std::string &extent) {
      o << "    const i64 " << v << "Lo = " << i << " + " << p << " - " << k << " + 1 > 0 ? (" << i << " + " << p
        << " - " << k << " + " << s << ") / " << s << " : 0;\n    const i64 " << v << "Hi = (" << i << " + " << p
        << ") / " << s << " + 1 < " << extent << " ? (" << i << " + " << p << ") / " << s << " + 1 : " << extent
        << ";\n";
    };
    o << "    float acc = 0.0f;\n";
    range("oh", h, sh, ph, kh, dim(dy, 2));
    range("ow", w, sw, pw, kw, dim(dy, 3));
    o << "    for (i64 oh = ohLo; oh < ohHi; ++oh) {\n      const i64 h0 = oh * " << sh << " - "
      << ph << ";\n      if (" << h << " < h0 || " << h << " >= h0 + " << kh << ") continue;\n"
      << "      for (i64 ow = owLo; ow < owHi; ++ow) {\n        const i64 w0 = ow * " << sw
      << " - " << pw << ";\n        if (" << w << " < w0 || " << w << " >= w0 + " << kw << ") continue;\n";
    if (max) {
      // The window's first maximum (row-major), as the forward op picks.
      o << "        float best = -NNC_INF; i64 bh = -1, bw = -1;\n"
        << "        for (i64 a = 0; a < " << kh << "; ++a)\n          for (i64 bb = 0; bb < " << kw
        << "; ++bb) {\n            const i64 ih = h0 + a, iw = w0 + bb;\n"
        << "            if (ih < 0 || ih >= " << dim(x, 2) << " || iw < 0 || iw >= " << dim(x, 3)
        << ") continue;\n            const float v = " << read(x, {n, c, "ih", "iw"}) << ";\n"
        << "            if (bh < 0 || v > best || (v != v && best == best)) { best = v; bh = ih; bw = iw; }\n"
        << "          }\n        if (bh == " << h << " && bw == " << w << ") acc += "
        << read(dy, {n, c, "oh", "ow"}) << ";\n";
    } else {
      bool include = cast<nnops::AvgPool2dGradOp>(op).getCountIncludePad();
      std::string count = "(float)(" + kh + " * " + kw + ")";
      if (!include) {
        o << "        i64 valid = 0;\n        for (i64 a = 0; a < " << kh << "; ++a)\n"
          << "          for (i64 bb = 0; bb < " << kw << "; ++bb)\n"
          << "            valid += h0 + a >= 0 && h0 + a < " << dim(x, 2) << " && w0 + bb >= 0 && w0 + bb < "
          << dim(x, 3) << ";\n";
        count = "(float)valid";
      }
      o << "        acc += " << read(dy, {n, c, "oh", "ow"}) << " / " << count << ";\n";
    }
    o << "      }\n    }\n";
    return success();
  }

  /// A transpose or one-hot at `idx`: its operand read at other positions.
  FailureOr<std::string> pointwise(Operation *op, ArrayRef<std::string> idx) {
    std::string v;
    if (auto t = dyn_cast<nnops::TransposeOp>(op)) {
      // Result axis i is the input's axis perm[i].
      ArrayRef<int64_t> perm = t.getPerm();
      std::vector<std::string> src(perm.size());
      for (size_t i = 0; i < perm.size(); ++i)
        src[perm[i]] = idx[i];
      auto e = value(op->getOperand(0), src);
      if (failed(e))
        return failure();
      v = *e;
    } else if (auto sl = dyn_cast<nnops::SliceOp>(op)) {
      std::vector<std::string> at(idx.begin(), idx.end());
      at[sl.getAxis()] = "(" + idx[sl.getAxis()] + " + " + std::to_string(sl.getStart()) + ")";
      auto e = value(op->getOperand(0), at);
      if (failed(e))
        return failure();
      v = *e;
    } else if (auto cat = dyn_cast<nnops::ConcatOp>(op)) {
      // The input whose slice along the axis holds the element.
      int64_t axis = cat.getAxis();
      Value r = op->getResult(0);
      std::string name = "t" + std::to_string(nextLocal++), start = "0";
      body << "    " << ctype(r) << " " << name << ";\n";
      for (auto [k, in] : llvm::enumerate(op->getOperands())) {
        std::vector<std::string> at(idx.begin(), idx.end());
        at[axis] = "(" + idx[axis] + " - " + start + ")";
        std::string end = start + " + " + dim(in, axis);
        body << "    " << (k ? "else " : "") << "if (" << idx[axis] << " < " << end << ") {\n";
        auto e = value(in, at);
        if (failed(e))
          return failure();
        body << "    " << name << " = " << *e << ";\n    }\n";
        start = "(" + end + ")";
      }
      local[r] = name;
      store(r, name, idx);
      return name;
    } else {
      auto e = value(op->getOperand(0), idx.drop_back());
      if (failed(e))
        return failure();
      v = "(" + *e + " == (int)" + idx.back() + " ? 1.0f : 0.0f)";
    }
    Value r = op->getResult(0);
    std::string name = "t" + std::to_string(nextLocal++);
    body << "    const " << ctype(r) << " " << name << " = " << v << ";\n";
    local[r] = name;
    store(r, name, idx);
    return name;
  }

  void store(Value r, const std::string &what, ArrayRef<std::string> idx) {
    if (yieldedAs.count(r) || inMemory.contains(r))
      body << "    " << param(r, true) << "[" << offset(r, idx) << "] = " << what << ";\n";
  }

  /// Index variables of a space of `v`'s shape from the linear index `i`.
  std::vector<std::string> unflatten(Value v, const std::string &prefix) {
    int64_t r = typeOf(v).getRank();
    std::vector<std::string> idx(r);
    body << "    [[maybe_unused]] i64 " << prefix << "rem = i;\n";
    for (int64_t d = r - 1; d >= 0; --d) {
      idx[d] = prefix + std::to_string(d);
      if (d == 0)
        body << "    [[maybe_unused]] const i64 " << idx[d] << " = " << prefix << "rem;\n";
      else
        body << "    [[maybe_unused]] const i64 " << idx[d] << " = " << prefix << "rem % " << dim(v, d) << "; " << prefix
             << "rem /= " << dim(v, d) << ";\n";
    }
    return idx;
  }

  /// Whether a reduction gets a block per output: a fixed, small number
  /// of outputs, each over a reduction that grows with the batch or is
  /// at least a block long.
  bool blockPerOutput(Operation *root) {
    auto out = typeOf(root->getResult(0));
    if (!out.hasStaticShape() || out.getNumElements() > kMaxBlockOutputs)
      return false;
    Value x = root->getOperand(0);
    auto rt = typeOf(x);
    ArrayRef<int64_t> axes = nnops::reductionAxes(root);
    int64_t extent = 1;
    for (int64_t d = 0; d < rt.getRank(); ++d)
      if (axes.empty() || llvm::is_contained(axes, d)) {
        if (rt.isDynamicDim(d))
          return true;
        extent *= rt.getDimSize(d);
      }
    return extent >= kBlockSize;
  }

  /// Whether a weight gradient gets a block per weight element: few
  /// weights (as for reductions), each a sum over the batch and the map.
  bool blockPerWeight(Operation *op) {
    auto w = typeOf(op->getResult(0));
    return isa<nnops::Conv2dGradWeightOp>(op) && w.hasStaticShape() && w.getNumElements() <= kMaxBlockOutputs;
  }

  void resetLaunch() {
    body.str("");
    params.clear();
    paramOf.clear();
    local.clear();
    nextLocal = 0;
  }

  // The launch being written (emitLaunch and the launch families).
  LogicalResult emitKernel(nnops::KernelOp kernel, unsigned k, bool skip, CudaModule &out,
                           std::ostringstream &src);
  void planKernel(Block &block, Operation *&unsupported);
  LogicalResult emitLaunch(Operation *root, unsigned k, unsigned index, CudaModule &out,
                           std::ostringstream &src);
  LogicalResult emitEpilogue(ArrayRef<std::string> at);
  LogicalResult storeAcc(ArrayRef<std::string> idx);
  LogicalResult tiled(const std::string &M, const std::string &N, const std::string &K,
                      const std::function<FailureOr<std::string>()> &loadA,
                      const std::function<FailureOr<std::string>()> &loadB,
                      const std::function<std::vector<std::string>()> &at);
  static std::vector<int64_t> tileThreads(int64_t rows, int64_t colsPerBatch);
  LogicalResult blockPerOutputLaunch(bool max,
                                     const std::function<LogicalResult(ArrayRef<std::string>)> &accumulate);
  LogicalResult matmulLaunch(nnops::MatmulOp mm);
  LogicalResult convLaunch(Operation *root, nnops::Conv2dOp conv);
  LogicalResult blockReductionLaunch(Operation *root);
  LogicalResult batchNormLaunch(Operation *root);
  LogicalResult elementLaunch(Operation *root);

  std::string ops, where;           // the kernel's ops and DSL location
  SmallVector<Operation *> roots;   // its members that are not fused
  size_t ri = 0;                    // the next root to emit
  Launch launch;
  Value space;                      // the launch's result: one thread per element
  std::string totalExpr;            // the elements (or tiles, blocks) the launch covers
  std::vector<int64_t> threadShape; // threads per dimension (negative: per batch element)
};


LogicalResult KernelWriter::run(bool skip, CudaModule &out) {
  std::ostringstream src;
  src << prelude();
  // Buffer names: arguments first, so a dump reads in order.
  for (BlockArgument a : fn.getArguments())
    bufferName(a);
  unsigned kernelIndex = 0;
  for (Operation &top : fn.front().without_terminator()) {
    auto kernel = dyn_cast<nnops::KernelOp>(top);
    if (kernel && failed(emitKernel(kernel, kernelIndex++, skip, out, src)))
      return failure();
  }
  out.source = src.str();
  for (BlockArgument a : fn.getArguments())
    out.args.push_back(bufferName(a));
  for (Value r : fn.front().getTerminator()->getOperands())
    out.results.push_back(rootBuffer(r));
  return success();
}

/// One nn.kernel: which members are computed where they are read, then
/// its launches.
LogicalResult KernelWriter::emitKernel(nnops::KernelOp kernel, unsigned k, bool skip, CudaModule &out,
                                  std::ostringstream &src) {
  members.clear();
  fusedOps.clear();
  yieldedAs.clear();
  inMemory.clear();
  Block &block = kernel.getBody().front();
  for (Operation &m : block.without_terminator())
    members.insert(&m);
  for (auto [inner, res] : llvm::zip(block.getTerminator()->getOperands(), kernel.getResults())) {
    yieldedAs[inner] = res;
    bufferNames[inner] = bufferName(res);
  }
  ops.clear();
  where.clear();
  for (Operation &m : block.without_terminator())
    ops += (ops.empty() ? "" : "+") + m.getName().stripDialect().str();
  Location first = kernel.getBody().front().front().getLoc();
  if (auto named = dyn_cast<NameLoc>(first))
    first = named.getChildLoc();
  if (auto call = dyn_cast<CallSiteLoc>(first)) // a block's line
    first = call.getCallee();
  if (auto l = dyn_cast<FileLineColLoc>(first))
    where = llvm::formatv("{0}:{1}:{2}", llvm::sys::path::filename(l.getFilename().getValue()),
                          l.getLine(), l.getColumn());
  Operation *unsupported = nullptr;
  planKernel(block, unsupported);
  if (unsupported) {
    if (!skip)
      return unsupported->emitError("the CUDA backend does not generate '")
             << unsupported->getName() << "' yet";
    out.skipped.push_back(ops + " at " + where);
    return success();
  }
  // Launches, in member order.
  roots.clear();
  for (Operation &m : block.without_terminator())
    if (!fusedOps.contains(&m))
      roots.push_back(&m);
  unsigned launchIndex = 0;
  for (ri = 0; ri < roots.size();) {
    Operation *root = roots[ri++];
    if (failed(emitLaunch(root, k, launchIndex++, out, src)))
      return failure();
  }
  return success();
}

/// Which members are computed where they are read (`fusedOps`), and which
/// values other launches read from memory (`inMemory`).
void KernelWriter::planKernel(Block &block, Operation *&unsupported) {
  using nnc::kFusedAttr;
  for (Operation &m : block.without_terminator()) {
    if (!isScalar(&m) && !isReduction(&m) && !isPointwise(&m) && !isWindowed(&m) &&
        !isa<nnops::MatmulOp, nnops::BatchNormOp, nnops::BatchNormGradOp, nnops::DropoutOp, nnops::AllReduceOp,
             nnops::CountOp>(m)) {
      unsupported = unsupported ? unsupported : &m;
      continue;
    }
    // As the fusion pass marked it (Fusion.cpp, markFusedProducers).
    if (m.hasAttr(kFusedAttr))
      fusedOps.insert(&m);
  }
  // Values of this kernel read by another launch go through memory.
  for (Operation &m : block.without_terminator())
    if (!fusedOps.contains(&m))
      for (Value r : m.getResults())
        for (Operation *u : r.getUsers())
          if (members.contains(u))
            inMemory.insert(r);

}

/// One launch from `root`: its family's code, then its signature and
/// thread count.
LogicalResult KernelWriter::emitLaunch(Operation *root, unsigned k, unsigned index, CudaModule &out,
                                  std::ostringstream &src) {
  resetLaunch();
  launch = Launch();
  launch.name = "k" + std::to_string(k) + "_" + std::to_string(index);
  launch.kernel = k;
  launch.loc = where;
  launch.ops = ops;
  space = root->getResult(0);
  totalExpr = elements(space);
  threadShape = shapeOf(space);
  auto conv = dyn_cast<nnops::Conv2dOp>(root);
  auto convGrad = dyn_cast<nnops::Conv2dGradInputOp>(root);
  LogicalResult done = success();
  if (auto reduce = dyn_cast<nnops::AllReduceOp>(root)) {
    // The runtime's to run (NCCL): a launch without code. (Fusion leaves
    // it alone in its kernel, so its input is in memory.)
    param(root->getOperand(0), false);
    param(space, true);
    launch.collective = true;
    launch.sum = reduce.getSum();
  } else if (auto mm = dyn_cast<nnops::MatmulOp>(root))
    done = matmulLaunch(mm);
  else if ((conv && conv.getGroups() == 1) || (convGrad && convGrad.getGroups() == 1))
    done = convLaunch(root, conv);
  else if (isReduction(root) && blockPerOutput(root))
    done = blockReductionLaunch(root);
  else if (blockPerWeight(root))
    done = blockPerOutputLaunch(false, [&](ArrayRef<std::string> idx) { return windowed(root, idx); });
  else if (isa<nnops::BatchNormOp, nnops::BatchNormGradOp>(root))
    done = batchNormLaunch(root);
  else
    done = elementLaunch(root);
  if (failed(done))
    return failure();
  launch.params = params;
  // Threads: one per element of the launch's space (a block per
  // channel for batch norms, per output for block reductions).
  std::vector<int64_t> s = threadShape;
  int64_t per = 0, fixed = 1;
  bool dynamic = false;
  for (int64_t d : s) {
    if (d < 0) {
      dynamic = true;
      per = per ? per * -d : -d;
    } else {
      fixed *= d;
    }
  }
  launch.threadsPerBatch = dynamic ? per * fixed : 0;
  launch.threadsFixed = dynamic ? 0 : fixed;
  src << launchSource(launch, totalExpr, body.str());
  out.launches.push_back(std::move(launch));
  return success();
}

// The epilogue: elementwise roots of the result's shape reading only
// this launch's values (or memory other kernels wrote), at `at`.
LogicalResult KernelWriter::emitEpilogue(ArrayRef<std::string> at) {
  while (ri < roots.size() && isScalar(roots[ri]) && typeOf(roots[ri]->getResult(0)) == typeOf(space)) {
    Operation *next = roots[ri];
    std::function<bool(Operation *)> ready = [&](Operation *op) {
      for (Value o : op->getOperands()) {
        Operation *d = o.getDefiningOp();
        if (!d || !members.contains(d) || local.count(o))
          continue;
        if (!fusedOps.contains(d) || !ready(d))
          return false;
      }
      return true;
    };
    if (!ready(next))
      break;
    if (failed(compute(next, at)))
      return failure();
    ++ri;
  }
  return success();
}

  // A thread's result `acc` at `idx` stored, then the epilogue on it
  // (values computed in the loops before live in their scopes: they are
  // forgotten).
LogicalResult KernelWriter::storeAcc(ArrayRef<std::string> idx) {
  local.clear();
  local[space] = "acc";
  store(space, "acc", idx);
  return emitEpilogue(idx);
}

  // A product tiled through shared memory: outputs (row, col) of an
  // M x N result in tiles of 16 x 16 per block of 256 threads, the
  // operands staged 16 deep at a time. `loadA(row, k)` and `loadB(k,
  // col)` write code that defines their values (bounds are checked
  // here); `at(row, col)` writes the output's index. Blocks stride over
  // the tiles; the epilogue applies to each thread's output.
LogicalResult KernelWriter::tiled(const std::string &M, const std::string &N, const std::string &K,
                             const std::function<FailureOr<std::string>()> &loadA,
                             const std::function<FailureOr<std::string>()> &loadB,
                             const std::function<std::vector<std::string>()> &at) {
  launch.barriers = true;
  totalExpr = "((" + M + " + 15) / 16) * ((" + N + " + 15) / 16)";
  body << "  const i64 tilesN = (" << N << " + 15) / 16;\n"
       << "  __shared__ float As[16][17];\n  __shared__ float Bs[16][17];\n"
       << "  const i64 tx = threadIdx.x % 16, ty = threadIdx.x / 16;\n"
       << "  for (i64 tile = blockIdx.x; tile < total; tile += gridDim.x) {\n"
       << "    const i64 o0 = (tile / tilesN) * 16 + ty, o1 = (tile % tilesN) * 16 + tx;\n"
       << "    float acc = 0.0f;\n    for (i64 k0 = 0; k0 < " << K << "; k0 += 16) {\n"
       << "    As[ty][tx] = 0.0f;\n    Bs[ty][tx] = 0.0f;\n"
       << "    if (o0 < " << M << " && k0 + tx < " << K << ") {\n    const i64 ka = k0 + tx;\n";
  auto x = loadA();
  if (failed(x))
    return failure();
  body << "    As[ty][tx] = " << *x << ";\n    }\n"
       << "    if (k0 + ty < " << K << " && o1 < " << N << ") {\n    const i64 kb = k0 + ty;\n";
  auto y = loadB();
  if (failed(y))
    return failure();
  body << "    Bs[ty][tx] = " << *y << ";\n    }\n    __syncthreads();\n"
       << "    for (int j = 0; j < 16; ++j)\n      acc += As[ty][j] * Bs[j][tx];\n"
       << "    __syncthreads();\n    }\n    if (o0 < " << M << " && o1 < " << N << ") {\n";
  if (failed(storeAcc(at())))
    return failure();
  body << "    }\n  }\n";
  return success();
}

  // Threads for a tiled product: 256 per tile, a multiple of the batch
  // when a side grows with it (an upper bound: blocks stride over the
  // tiles).
std::vector<int64_t> KernelWriter::tileThreads(int64_t rows, int64_t colsPerBatch) {
  return std::vector<int64_t>{-(((rows + 15) / 16) * ((colsPerBatch + 15) / 16) * 256)};
}

  // A block per output element of `space`: `accumulate(idx)` writes
  // the code that declares `acc` and adds this thread's share of
  // output idx to it; the block's total (nnc_block_sum, or
  // nnc_block_max with `max`) goes to thread 0, which stores it and
  // runs the epilogue. Blocks stride over the outputs.
LogicalResult KernelWriter::blockPerOutputLaunch(
    bool max, const std::function<LogicalResult(ArrayRef<std::string>)> &accumulate) {
  launch.barriers = true;
  threadShape = shapeOf(space);
  threadShape.push_back(kBlockSize);
  body << "  __shared__ float part[" << kBlockSize / 32 << "];\n"
       << "  for (i64 out = blockIdx.x; out < total; out += gridDim.x) {\n    const i64 i = out;\n";
  std::vector<std::string> idx = unflatten(space, "o");
  if (failed(accumulate(idx)))
    return failure();
  body << "    acc = nnc_block_" << (max ? "max" : "sum") << "(acc, part);\n    if (threadIdx.x == 0) {\n";
  if (failed(storeAcc(idx)))
    return failure();
  body << "    }\n  }\n";
  return success();
}

LogicalResult KernelWriter::matmulLaunch(nnops::MatmulOp mm) {
  Value a = mm->getOperand(0), b = mm->getOperand(1);
  std::string M = dim(space, 0), N = dim(space, 1), K = dim(a, 1);
  int64_t tilesN = (typeOf(space).isDynamicDim(1) ? 1 : (typeOf(space).getDimSize(1) + 15) / 16);
  std::vector<int64_t> ms = shapeOf(space);
  auto at = typeOf(a);
  if (!typeOf(space).isDynamicDim(1) && typeOf(space).getDimSize(1) <= 16 && !at.isDynamicDim(1) &&
      at.getDimSize(1) >= kLongProduct) {
    // A narrow result over a long K (a classifier layer): one block
    // per output, its threads striding over K, as a reduction (16 x
    // 16 tiles would leave all but a few multiprocessors idle).
    if (failed(blockPerOutputLaunch(false, [&](ArrayRef<std::string> o) -> LogicalResult {
          body << "    float acc = 0.0f;\n    for (i64 ka = threadIdx.x; ka < " << K
               << "; ka += blockDim.x) {\n    const i64 kb = ka;\n";
          auto x = value(a, {o[0], "ka"});
          if (failed(x))
            return failure();
          auto y = value(b, {"kb", o[1]});
          if (failed(y))
            return failure();
          body << "    acc += " << *x << " * " << *y << ";\n    }\n";
          return success();
        })))
      return failure();
  } else {
  threadShape = {ms[0] < 0 ? ms[0] * tilesN * 16 : ((ms[0] + 15) / 16) * tilesN * 256};
  if (failed(tiled(
          M, N, K, [&] { return value(a, {"o0", "ka"}); }, [&] { return value(b, {"kb", "o1"}); },
          [] { return std::vector<std::string>{"o0", "o1"}; })))
    return failure();
  }
  return success();
}

LogicalResult KernelWriter::convLaunch(Operation *root, nnops::Conv2dOp conv) {
  // Convolutions as implicit products (groups of one): the forward
  // pass is W[O, C*KH*KW] x X'[C*KH*KW, N*OH*OW], the input gradient
  // W^T[C, O*KH*KW] x dY'[O*KH*KW, N*H*W], where X' and dY' gather
  // the window element for each (k, column) from memory on the fly
  // (zero at the padding, and where a stride skips a position).
  auto attr = [&](StringRef name) { return cast<DenseI64ArrayAttr>(root->getAttr(name)).asArrayRef(); };
  ArrayRef<int64_t> st = attr("stride"), pd = attr("padding");
  Value wt = root->getOperand(1), in = root->getOperand(0);
  auto wtt = typeOf(wt);
  int64_t KH = wtt.getDimSize(2), KW = wtt.getDimSize(3);
  auto rs = typeOf(space);
  int64_t plane = rs.getDimSize(2) * rs.getDimSize(3), W = rs.getDimSize(3);
  std::string khw = std::to_string(KH * KW), kw = std::to_string(KW), kh = std::to_string(KH);
  std::string P = std::to_string(plane), Ws = std::to_string(W);
  std::string rows = dim(space, 1), cols = dim(space, 0) + " * " + P;
  auto read = [&](Value v, std::vector<std::string> at) {
    return param(v, false) + "[" + offset(v, at) + "]";
  };
  auto column = [&](const std::string &c) {
    return std::vector<std::string>{"(" + c + " / " + P + ")", "((" + c + " % " + P + ") / " + Ws + ")",
                                    "(" + c + " % " + Ws + ")"};
  };
  threadShape = tileThreads(rs.getDimSize(1), plane);
  std::string sh = std::to_string(st[0]), sw = std::to_string(st[1]);
  std::string ph = std::to_string(pd[0]), pw = std::to_string(pd[1]);
  if (conv) {
    std::string K = std::to_string(wtt.getDimSize(1) * KH * KW);
    auto loadA = [&]() -> FailureOr<std::string> {
      return read(wt, {"o0", "(ka / " + khw + ")", "((ka / " + kw + ") % " + kh + ")", "(ka % " + kw + ")"});
    };
    auto loadB = [&]() -> FailureOr<std::string> {
      std::vector<std::string> c = column("o1");
      body << "    const i64 ih = " << c[1] << " * " << sh << " - " << ph << " + (kb / " << kw << ") % " << kh
           << ", iw = " << c[2] << " * " << sw << " - " << pw << " + kb % " << kw << ";\n";
      return "(ih >= 0 && ih < " + dim(in, 2) + " && iw >= 0 && iw < " + dim(in, 3) + ") ? " +
             read(in, {c[0], "(kb / " + khw + ")", "ih", "iw"}) + " : 0.0f";
    };
    if (failed(tiled(rows, cols, K, loadA, loadB, [&] {
          std::vector<std::string> c = column("o1");
          return std::vector<std::string>{c[0], "o0", c[1], c[2]};
        })))
      return failure();
  } else {
    Value dy = in;
    std::string K = std::to_string(wtt.getDimSize(0) * KH * KW);
    auto loadA = [&]() -> FailureOr<std::string> {
      return read(wt, {"(ka / " + khw + ")", "o0", "((ka / " + kw + ") % " + kh + ")", "(ka % " + kw + ")"});
    };
    auto loadB = [&]() -> FailureOr<std::string> {
      std::vector<std::string> c = column("o1");
      body << "    const i64 th = " << c[1] << " + " << ph << " - (kb / " << kw << ") % " << kh
           << ", tw = " << c[2] << " + " << pw << " - kb % " << kw << ";\n";
      return "(th >= 0 && th % " + sh + " == 0 && th / " + sh + " < " + dim(dy, 2) + " && tw >= 0 && tw % " +
             sw + " == 0 && tw / " + sw + " < " + dim(dy, 3) + ") ? " +
             read(dy, {c[0], "(kb / " + khw + ")", "th / " + sh, "tw / " + sw}) + " : 0.0f";
    };
    if (failed(tiled(rows, cols, K, loadA, loadB, [&] {
          std::vector<std::string> c = column("o1");
          return std::vector<std::string>{c[0], "o0", c[1], c[2]};
        })))
      return failure();
  }
  return success();
}

LogicalResult KernelWriter::blockReductionLaunch(Operation *root) {
  // Few outputs, long reductions (a loss, a bias gradient over the
  // batch): one block per output; threads stride over the reduced
  // elements, then combine through warp shuffles and shared memory.
  Value x = root->getOperand(0);
  auto rt = typeOf(x);
  ArrayRef<int64_t> axes = nnops::reductionAxes(root);
  bool keep = nnops::keepsReducedAxes(root);
  bool sum = isa<nnops::ReduceSumOp>(root);
  std::string identity = sum ? "0.0f" : "-NNC_INF";
  auto combine = [&](const std::string &a, const std::string &b) {
    return sum ? a + " + " + b : "nnc_max(" + a + ", " + b + ")";
  };
  std::string extent = "(i64)1";
  for (int64_t d = 0; d < rt.getRank(); ++d)
    if (axes.empty() || llvm::is_contained(axes, d))
      extent += " * " + dim(x, d);
  int64_t outermost = -1;
  for (int64_t d = 0; d < rt.getRank() && outermost < 0; ++d)
    if (axes.empty() || llvm::is_contained(axes, d))
      outermost = d;
  if (failed(blockPerOutputLaunch(!sum, [&](ArrayRef<std::string> idx) -> LogicalResult {
        // kLoadsInFlight elements a round, each computed in full
        // before any is combined (so their loads issue together); an
        // element past the end is computed at the last one (a fused
        // store writes the same value there) and not combined.
        body << "    float acc = " << identity << ";\n"
             << "    for (i64 rb = threadIdx.x; rb < " << extent << "; rb += " << kLoadsInFlight
             << " * blockDim.x) {\n";
        auto before = local;
        for (int u = 0; u < kLoadsInFlight; ++u) {
          std::string su = "_" + std::to_string(u);
          body << "    const i64 q" << su << " = rb + " << u << " * blockDim.x;\n    const bool ok" << su
               << " = q" << su << " < " << extent << ";\n    [[maybe_unused]] i64 rrem" << su << " = ok" << su
               << " ? q" << su << " : " << extent << " - 1;\n";
          std::vector<std::string> xi(rt.getRank());
          unsigned next = 0;
          for (int64_t d = 0; d < rt.getRank(); ++d) {
            bool reduced = axes.empty() || llvm::is_contained(axes, d);
            xi[d] = reduced ? "r" + std::to_string(d) + su : idx[next];
            next += !reduced || keep;
          }
          for (int64_t d = rt.getRank() - 1; d >= 0; --d)
            if (d == outermost)
              body << "    const i64 " << xi[d] << " = rrem" << su << ";\n";
            else if (axes.empty() || llvm::is_contained(axes, d))
              body << "    const i64 " << xi[d] << " = rrem" << su << " % " << dim(x, d) << "; rrem" << su
                   << " /= " << dim(x, d) << ";\n";
          local = before;
          auto v = value(x, xi);
          if (failed(v))
            return failure();
          body << "    const float v" << su << " = " << *v << ";\n";
        }
        for (int u = 0; u < kLoadsInFlight; ++u) {
          std::string su = "_" + std::to_string(u);
          body << "    acc = " << combine("acc", "(ok" + su + " ? v" + su + " : " + identity + ")") << ";\n";
        }
        body << "    }\n";
        return success();
      })))
    return failure();
  return success();
}

LogicalResult KernelWriter::batchNormLaunch(Operation *root) {
  // One block per channel: its threads stride over the channel's
  // elements for each statistic (combined by nnc_block_sum, the same
  // total in every thread), then over them again for the outputs.
  launch.barriers = true;
  Value x = root->getOperand(isa<nnops::BatchNormOp>(root) ? 0 : 1);
  totalExpr = dim(x, 1);
  threadShape = {typeOf(x).getDimSize(1) * kBlockSize};
  int64_t rank = typeOf(x).getRank();
  std::string count = "(i64)1";
  for (int64_t d = 0; d < rank; ++d)
    if (d != 1)
      count += " * " + dim(x, d);
  // This thread's elements of the channel, kLoadsInFlight a round:
  // every load of a round first (`loads`: a name and the tensor
  // read), then `each` element that is in the channel, given the
  // suffix _u of its names (r_u, ok_u, the loads) and its index.
  using Each = std::function<LogicalResult(const std::string &, ArrayRef<std::string>)>;
  auto channelRounds = [&](ArrayRef<std::pair<std::string, Value>> loads, const Each &each) {
    body << "    for (i64 r0 = threadIdx.x; r0 < m; r0 += " << kLoadsInFlight << " * blockDim.x) {\n";
    std::vector<std::vector<std::string>> aus(kLoadsInFlight, std::vector<std::string>(rank));
    for (int u = 0; u < kLoadsInFlight; ++u) {
      std::string su = "_" + std::to_string(u);
      std::vector<std::string> &au = aus[u];
      au[1] = "c";
      body << "      const i64 r" << su << " = r0 + " << u << " * blockDim.x;\n      const bool ok" << su
           << " = r" << su << " < m;\n      [[maybe_unused]] i64 rrem" << su << " = r" << su << ";\n";
      for (int64_t d = rank - 1; d >= 0; --d) {
        if (d == 1)
          continue;
        au[d] = "e" + std::to_string(d) + su;
        body << "      const i64 " << au[d] << " = " << (d == 0 ? "rrem" + su : "rrem" + su + " % " + dim(x, d))
             << ";" << (d == 0 ? "\n" : " rrem" + su + " /= " + dim(x, d) + ";\n");
      }
      for (const auto &[name, v] : loads)
        body << "      const float " << name << su << " = ok" << su << " ? " << param(v, false) << "["
             << offset(v, au) << "] : 0.0f;\n";
    }
    for (int u = 0; u < kLoadsInFlight; ++u) {
      std::string su = "_" + std::to_string(u);
      body << "      if (ok" << su << ") {\n";
      if (failed(each(su, aus[u])))
        return failure();
      body << "      }\n";
    }
    body << "    }\n";
    return success();
  };
  // A sum over the channel of term(_u).
  auto channelSum = [&](ArrayRef<std::pair<std::string, Value>> loads, const std::string &acc,
                        const std::function<std::string(const std::string &)> &term) {
    (void)channelRounds(loads, [&](const std::string &su, ArrayRef<std::string>) {
      body << "      " << acc << " += " << term(su) << ";\n";
      return success();
    });
  };
  body << "  __shared__ float part[" << kBlockSize / 32 << "];\n"
       << "  for (i64 c = blockIdx.x; c < total; c += gridDim.x) {\n"
       << "    const i64 m = " << count << ";\n    const float cnt = (float)m;\n";
  auto stats = [&](bool training, double eps) {
    if (training) {
      body << "    float s = 0.0f;\n";
      channelSum({{"xv", x}}, "s", [](const std::string &u) { return "xv" + u; });
      body << "    const float mean = nnc_block_sum(s, part) / cnt;\n    float ss = 0.0f;\n";
      channelSum({{"xv", x}}, "ss", [](const std::string &u) { return "(xv" + u + " - mean) * (xv" + u + " - mean)"; });
      body << "    const float var = nnc_block_sum(ss, part) / cnt;\n";
    } else {
      body << "    const float mean = " << param(root->getOperand(3), false) << "[c];\n"
           << "    const float var = " << param(root->getOperand(4), false) << "[c];\n";
    }
    body << "    const float rstd = 1.0f / sqrtf(var + " << floatLiteral(eps) << ");\n";
  };
  if (auto bn = dyn_cast<nnops::BatchNormOp>(root)) {
    stats(bn.getTraining(), bn.getEps().convertToDouble());
    body << "    if (threadIdx.x == 0) {\n";
    store(bn.getMean(), "mean", {"c"});
    store(bn.getVar(), "var", {"c"});
    body << "    }\n    const float scale = rstd * " << param(bn.getGamma(), false) << "[c];\n"
         << "    const float shift = " << param(bn.getBeta(), false) << "[c];\n";
    // The epilogue once per element of a round: each from the same
    // roots and values.
    auto before = local;
    size_t firstEpilogueRoot = ri;
    if (failed(channelRounds({{"xv", x}}, [&](const std::string &su, ArrayRef<std::string> au) {
          body << "      const float y" << su << " = (xv" << su << " - mean) * scale + shift;\n";
          local = before;
          ri = firstEpilogueRoot;
          local[space] = "y" + su;
          store(space, "y" + su, au);
          return emitEpilogue(au);
        })))
      return failure();
  } else {
    auto g = cast<nnops::BatchNormGradOp>(root);
    Value dy = root->getOperand(0);
    stats(true, g.getEps().convertToDouble());
    std::string dys = param(dy, false);
    body << "    float sdy = 0.0f, sdyx = 0.0f;\n";
    (void)channelRounds({{"xv", x}, {"gv", dy}}, [&](const std::string &u, ArrayRef<std::string>) {
      body << "      sdy += gv" << u << ";\n      sdyx += gv" << u << " * (xv" << u << " - mean);\n";
      return success();
    });
    body << "    sdy = nnc_block_sum(sdy, part);\n    sdyx = nnc_block_sum(sdyx, part);\n"
         << "    const float dgamma = sdyx * rstd, dbeta = sdy;\n"
         << "    const float k = " << param(g.getGamma(), false) << "[c] * rstd / cnt;\n"
         << "    if (threadIdx.x == 0) {\n";
    store(root->getResult(1), "dgamma", {"c"});
    store(root->getResult(2), "dbeta", {"c"});
    body << "    }\n";
    (void)channelRounds({{"xv", x}, {"gv", dy}}, [&](const std::string &u, ArrayRef<std::string> au) {
      body << "      const float dx" << u << " = k * (cnt * gv" << u << " - sdy - (xv" << u
           << " - mean) * rstd * dgamma);\n";
      store(root->getResult(0), "dx" + u, au);
      return success();
    });
  }
  body << "  }\n";
  return success();
}

/// One thread per element of the root's result (grid-stride).
LogicalResult KernelWriter::elementLaunch(Operation *root) {
body << "  for (i64 i = nnc_first(); i < total; i += nnc_stride()) {\n";
{
std::vector<std::string> idx = unflatten(space, "o");
bool epilogue = false;
if (auto drop = dyn_cast<nnops::DropoutOp>(root)) {
  // The evaluator's mask: element i of a stream keyed by the step
  // and the op's DSL position.
  double rate = drop.getRate().convertToDouble();
  auto x = value(root->getOperand(0), idx);
  if (failed(x))
    return failure();
  if (drop.getTraining()) {
    launch.rng = true;
    std::string perRow = "(u64)1";
    for (int64_t d = 1; d < typeOf(space).getRank(); ++d)
      perRow += " * " + dim(space, d);
    body << dropoutMask(nnops::locationId(root->getLoc()), rate, perRow);
  } else {
    body << "    const float mask = 1.0f;\n";
  }
  body << "    const float y = " << *x << " * mask;\n";
  local[root->getResult(0)] = "y";
  local[root->getResult(1)] = "mask";
  store(root->getResult(0), "y", idx);
  store(root->getResult(1), "mask", idx);
  epilogue = true;
} else if (isWindowed(root)) {
  if (failed(windowed(root, idx)))
    return failure();
  local[space] = "acc";
  store(space, "acc", idx);
  epilogue = true;
} else if (isPointwise(root)) {
  if (failed(pointwise(root, idx)))
    return failure();
} else if (isa<nnops::CountOp>(root)) {
  // A count read whole (combined over a run's ranks) goes to memory.
  auto n = literal(root);
  if (failed(n))
    return failure();
  store(space, *n, idx);
} else if (isReduction(root)) {
  // One thread per output element: loop over the reduced axes.
  Value x = root->getOperand(0);
  auto rt = typeOf(x);
  ArrayRef<int64_t> axes = nnops::reductionAxes(root);
  bool keep = nnops::keepsReducedAxes(root);
  bool sum = isa<nnops::ReduceSumOp>(root);
  std::string acc = "acc";
  body << "    float acc = " << (sum ? "0.0f" : "-NNC_INF") << ";\n";
  std::vector<std::string> xi(rt.getRank());
  unsigned next = 0;
  std::string indent = "    ";
  for (int64_t d = 0; d < rt.getRank(); ++d) {
    bool reduced = axes.empty() || llvm::is_contained(axes, d);
    if (reduced) {
      xi[d] = "r" + std::to_string(d);
      body << indent << "for (i64 " << xi[d] << " = 0; " << xi[d] << " < " << dim(x, d) << "; ++"
           << xi[d] << ") {\n";
      indent += "  ";
      if (keep)
        ++next;
    } else {
      xi[d] = idx[next++];
    }
  }
  auto v = value(x, xi);
  if (failed(v))
    return failure();
  body << indent << (sum ? "acc += " + *v + ";" : "acc = nnc_max(acc, " + *v + ");") << "\n";
  for (int64_t d = 0; d < rt.getRank(); ++d)
    if (axes.empty() || llvm::is_contained(axes, d)) {
      indent.resize(indent.size() - 2);
      body << indent << "}\n";
    }
  local[space] = acc;
  store(space, acc, idx);
  epilogue = true;
} else {
  // Elementwise: a grid-stride loop over the root's elements.
  if (failed(compute(root, idx)))
    return failure();
}
if (epilogue && failed(emitEpilogue(idx)))
  return failure();
}
body << "  }\n";
  return success();
}


} // namespace

FailureOr<CudaModule> cuda::emitCuda(func::FuncOp fn, const codegen::BatchScaling &scaling,
                                     bool skipUnsupported) {
  CudaModule out;
  KernelWriter e(fn, scaling);
  if (failed(e.run(skipUnsupported, out)))
    return failure();
  return out;
}
