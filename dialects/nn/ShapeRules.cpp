//===- ShapeRules.cpp - shape rules of the nn ops -------------------------===//
//
// See ShapeRules.h. Messages are lower-case and name both shapes and the axis
// that disagrees, because they reach users through the frontend unchanged.
//
//===----------------------------------------------------------------------===//

#include "dialects/nn/ShapeRules.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/StringRef.h"

#include <fmt/format.h>

namespace nnc::shape {

int64_t elements(llvm::ArrayRef<int64_t> shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    int64_t size = d < 0 ? 1 : d; // (dynamic)
    if (size != 0 && n > kMaxElements / size)
      return -1;
    n *= size;
  }
  return n;
}

std::string str(llvm::ArrayRef<int64_t> shape) {
  std::string out = "[";
  for (auto [i, d] : llvm::enumerate(shape)) {
    if (i)
      out += ", ";
    out += d == kDynamic ? std::string("?") : std::to_string(d);
  }
  return out + "]";
}

bool compatible(int64_t a, int64_t b) {
  return a == b || a == kDynamic || b == kDynamic;
}

Inferred broadcast(llvm::ArrayRef<int64_t> a, llvm::ArrayRef<int64_t> b) {
  size_t rank = std::max(a.size(), b.size());
  Shape out(rank);
  for (size_t i = 0; i < rank; ++i) {
    // Align trailing axes: axis i of the result is a[i - (rank - a.size())].
    int64_t da = i + a.size() >= rank ? a[i + a.size() - rank] : 1;
    int64_t db = i + b.size() >= rank ? b[i + b.size() - rank] : 1;
    if (da == 1)
      out[i] = db;
    else if (db == 1)
      out[i] = da;
    else if (compatible(da, db))
      out[i] = da == kDynamic ? db : da;
    else
      return Inferred::fail(fmt::format(
          "cannot broadcast shapes {} and {}: axis {} of the result has "
          "size {} vs {}",
          str(a), str(b), i, da, db));
  }
  return Inferred::of(out);
}

Inferred matmul(llvm::ArrayRef<int64_t> a, llvm::ArrayRef<int64_t> b) {
  if (a.size() != 2 || b.size() != 2)
    return Inferred::fail(fmt::format(
        "matmul needs two rank-2 operands, got {} and {}", str(a), str(b)));
  if (!compatible(a[1], b[0]))
    return Inferred::fail(fmt::format(
        "matmul inner dimensions differ: {} @ {} (axis 1 of the left is {}, "
        "axis 0 of the right is {})",
        str(a), str(b), a[1], b[0]));
  return Inferred::of({a[0], b[1]});
}

Inferred checkAxis(llvm::StringRef what, llvm::ArrayRef<int64_t> in,
                   int64_t axis) {
  if (axis < 0 || axis >= static_cast<int64_t>(in.size()))
    return Inferred::fail(fmt::format("{} axis {} is out of range for {} (rank {})",
                                      what.str(), axis, str(in), in.size()));
  return Inferred::of(in);
}

Inferred removeAxis(llvm::StringRef what, llvm::ArrayRef<int64_t> in,
                    int64_t axis) {
  Inferred r = checkAxis(what, in, axis);
  if (r.ok())
    r.shape.erase(r.shape.begin() + axis);
  return r;
}

Inferred reduce(llvm::ArrayRef<int64_t> in, llvm::ArrayRef<int64_t> axes,
                bool keepdims) {
  llvm::SmallVector<bool, 4> reduced(in.size(), axes.empty());
  for (int64_t axis : axes) {
    Inferred r = checkAxis("reduction", in, axis);
    if (!r.ok())
      return r;
    if (reduced[axis])
      return Inferred::fail(fmt::format("reduction axis {} is listed twice", axis));
    reduced[axis] = true;
  }
  Shape out;
  for (auto [d, red] : llvm::zip(in, reduced)) {
    if (!red)
      out.push_back(d);
    else if (keepdims)
      out.push_back(1);
  }
  return Inferred::of(out);
}

Inferred reshape(llvm::ArrayRef<int64_t> in, llvm::ArrayRef<int64_t> target) {
  int inferAt = -1;
  int64_t known = 1;
  for (auto [i, d] : llvm::enumerate(target)) {
    if (d == -1) {
      if (inferAt >= 0)
        return Inferred::fail(fmt::format(
            "reshape target {} has more than one inferred (-1) size",
            str(target)));
      inferAt = i;
    } else if (d <= 0) {
      return Inferred::fail(fmt::format(
          "reshape target {} has a non-positive size at axis {}", str(target), i));
    } else {
      known *= d;
    }
  }
  bool dynamicIn = llvm::is_contained(in, kDynamic);
  int64_t total = 1;
  for (int64_t d : in)
    total *= d == kDynamic ? 1 : d;
  Shape out(target);
  if (dynamicIn) {
    if (inferAt >= 0)
      out[inferAt] = kDynamic;
    else if (total != 0 && known % total != 0)
      return Inferred::fail(fmt::format(
          "cannot reshape {} to {}: {} elements are not a multiple of {}",
          str(in), str(target), known, total));
    return Inferred::of(out);
  }
  if (inferAt >= 0) {
    if (total % known != 0)
      return Inferred::fail(fmt::format(
          "cannot reshape {} ({} elements) to {}: {} is not a multiple of {}",
          str(in), total, str(target), total, known));
    out[inferAt] = total / known;
  } else if (known != total) {
    return Inferred::fail(fmt::format(
        "cannot reshape {} ({} elements) to {} ({} elements)", str(in), total,
        str(target), known));
  }
  return Inferred::of(out);
}

Inferred transpose(llvm::ArrayRef<int64_t> in, llvm::ArrayRef<int64_t> perm) {
  if (perm.size() != in.size())
    return Inferred::fail(fmt::format(
        "transpose permutation {} has {} entries but the input {} has rank {}",
        str(perm), perm.size(), str(in), in.size()));
  llvm::SmallVector<bool, 4> seen(in.size(), false);
  Shape out;
  for (int64_t p : perm) {
    if (p < 0 || p >= static_cast<int64_t>(in.size()) || seen[p])
      return Inferred::fail(fmt::format(
          "transpose permutation {} is not a permutation of 0..{}", str(perm),
          in.size() - 1));
    seen[p] = true;
    out.push_back(in[p]);
  }
  return Inferred::of(out);
}

Inferred concat(llvm::ArrayRef<Shape> ins, int64_t axis) {
  if (ins.empty())
    return Inferred::fail("concat needs at least one input");
  Inferred r = checkAxis("concat", ins[0], axis);
  if (!r.ok())
    return r;
  Shape out(ins[0]);
  for (const Shape &s : ins.drop_front()) {
    if (s.size() != out.size())
      return Inferred::fail(fmt::format("concat inputs {} and {} differ in rank",
                                        str(ins[0]), str(s)));
    for (size_t i = 0; i < s.size(); ++i) {
      if (static_cast<int64_t>(i) == axis) {
        out[i] = (out[i] == kDynamic || s[i] == kDynamic) ? kDynamic
                                                          : out[i] + s[i];
      } else if (!compatible(out[i], s[i])) {
        return Inferred::fail(fmt::format(
            "concat inputs {} and {} differ at axis {} ({} vs {})", str(ins[0]),
            str(s), i, out[i], s[i]));
      }
    }
  }
  return Inferred::of(out);
}

/// Checks a 2-entry spatial attribute (`stride`, `padding`, `kernel`).
static std::string checkPair(llvm::StringRef what, llvm::StringRef name,
                             llvm::ArrayRef<int64_t> v, int64_t min) {
  if (v.size() != 2)
    return fmt::format("{} {} must have 2 entries (height, width), got {}",
                       what.str(), name.str(), str(v));
  for (int64_t x : v)
    if (x < min)
      return fmt::format("{} {} {} must be >= {}", what.str(), name.str(),
                         str(v), min);
  return {};
}

/// Output size of a sliding window, or kDynamic for a dynamic input.
static int64_t windowOut(int64_t in, int64_t k, int64_t s, int64_t p) {
  if (in == kDynamic)
    return kDynamic;
  if (in + 2 * p < k)
    return 0; // the window does not fit even once
  return (in + 2 * p - k) / s + 1;
}

Inferred conv2d(llvm::ArrayRef<int64_t> in, llvm::ArrayRef<int64_t> w,
                llvm::ArrayRef<int64_t> stride, llvm::ArrayRef<int64_t> padding,
                int64_t groups) {
  if (in.size() != 4)
    return Inferred::fail(fmt::format(
        "conv2d input must be rank 4 (N, C, H, W), got {}", str(in)));
  if (w.size() != 4)
    return Inferred::fail(fmt::format(
        "conv2d weight must be rank 4 (O, I, KH, KW), got {}", str(w)));
  for (auto [name, v, min] : {std::tuple{"stride", stride, 1},
                              std::tuple{"padding", padding, 0}})
    if (std::string e = checkPair("conv2d", name, v, min); !e.empty())
      return Inferred::fail(e);
  if (groups < 1)
    return Inferred::fail(fmt::format("conv2d groups must be >= 1, got {}", groups));
  if (in[1] != kDynamic && in[1] % groups != 0)
    return Inferred::fail(fmt::format(
        "conv2d input channels ({}) are not divisible by groups ({})", in[1],
        groups));
  if (w[0] != kDynamic && w[0] % groups != 0)
    return Inferred::fail(fmt::format(
        "conv2d output channels ({}) are not divisible by groups ({})", w[0],
        groups));
  if (in[1] != kDynamic && w[1] != kDynamic && in[1] != w[1] * groups)
    return Inferred::fail(fmt::format(
        "conv2d input {} has {} channels but weight {} expects {} "
        "(axis 1 of the weight times groups = {})",
        str(in), in[1], str(w), w[1] * groups, groups));
  Shape out = {in[0], w[0], 0, 0};
  for (int i = 0; i < 2; ++i) {
    int64_t o = windowOut(in[2 + i], w[2 + i], stride[i], padding[i]);
    if (o != kDynamic && o < 1)
      return Inferred::fail(fmt::format(
          "conv2d kernel {} does not fit input {} with padding {}", str(w),
          str(in), str(padding)));
    out[2 + i] = o;
  }
  return Inferred::of(out);
}

Inferred pool2d(llvm::StringRef what, llvm::ArrayRef<int64_t> in,
                llvm::ArrayRef<int64_t> kernel, llvm::ArrayRef<int64_t> stride,
                llvm::ArrayRef<int64_t> padding) {
  if (in.size() != 4)
    return Inferred::fail(fmt::format(
        "{} input must be rank 4 (N, C, H, W), got {}", what.str(), str(in)));
  for (auto [name, v, min] : {std::tuple{"kernel", kernel, 1},
                              std::tuple{"stride", stride, 1},
                              std::tuple{"padding", padding, 0}})
    if (std::string e = checkPair(what, name, v, min); !e.empty())
      return Inferred::fail(e);
  Shape out = {in[0], in[1], 0, 0};
  for (int i = 0; i < 2; ++i) {
    if (padding[i] * 2 > kernel[i])
      return Inferred::fail(fmt::format(
          "{} padding {} must be at most half the kernel {}", what.str(),
          str(padding), str(kernel)));
    int64_t o = windowOut(in[2 + i], kernel[i], stride[i], padding[i]);
    if (o != kDynamic && o < 1)
      return Inferred::fail(fmt::format("{} kernel {} does not fit input {}",
                                        what.str(), str(kernel), str(in)));
    out[2 + i] = o;
  }
  return Inferred::of(out);
}

Inferred channelParam(llvm::StringRef what, llvm::StringRef name,
                      llvm::ArrayRef<int64_t> in, llvm::ArrayRef<int64_t> param,
                      unsigned minRank) {
  if (in.size() < minRank)
    return Inferred::fail(fmt::format("{} input must have rank >= {}, got {}",
                                      what.str(), minRank, str(in)));
  if (param.size() != 1 || !compatible(param[0], in[1]))
    return Inferred::fail(fmt::format(
        "{} {} has shape {} but the input {} has {} channels (axis 1)",
        what.str(), name.str(), str(param), str(in),
        in[1] == kDynamic ? std::string("?") : std::to_string(in[1])));
  return Inferred::of(in);
}

Inferred pointwiseLoss(llvm::StringRef what, llvm::ArrayRef<int64_t> in,
                       llvm::ArrayRef<int64_t> target, bool reduce) {
  bool same = in.size() == target.size();
  for (size_t i = 0; same && i < in.size(); ++i)
    same = compatible(in[i], target[i]);
  if (!same)
    return Inferred::fail(fmt::format(
        "{} input {} and target {} must have the same shape", what.str(),
        str(in), str(target)));
  return reduce ? Inferred::of({}) : Inferred::of(in);
}

Inferred classLoss(llvm::StringRef what, llvm::ArrayRef<int64_t> in,
                   llvm::ArrayRef<int64_t> target, bool labels, bool reduce) {
  if (in.size() != 2)
    return Inferred::fail(fmt::format(
        "{} input must be [batch, classes], got {}", what.str(), str(in)));
  if (labels) {
    if (target.size() != 1 || !compatible(target[0], in[0]))
      return Inferred::fail(fmt::format(
          "{} labels must be [batch] = [{}] for input {}, got {}", what.str(),
          in[0] == kDynamic ? std::string("?") : std::to_string(in[0]),
          str(in), str(target)));
  } else if (target.size() != 2 || !compatible(target[0], in[0]) ||
             !compatible(target[1], in[1])) {
    return Inferred::fail(fmt::format(
        "{} target {} must have the input's shape {}", what.str(), str(target),
        str(in)));
  }
  return reduce ? Inferred::of({}) : Inferred::of({in[0]});
}

Inferred slice(llvm::ArrayRef<int64_t> in, int64_t axis, int64_t start,
               int64_t size) {
  Inferred r = checkAxis("slice", in, axis);
  if (!r.ok())
    return r;
  if (start < 0 || size < 1 || (in[axis] != kDynamic && start + size > in[axis]))
    return Inferred::fail(fmt::format("slice [{}, {}) is out of range for axis {} of {}",
                                      start, start + size, axis, str(in)));
  r.shape[axis] = size;
  return r;
}

/// Checks that `out` is the conv2d output of `in` under `w`.
static Inferred checkConvPair(llvm::StringRef what, llvm::ArrayRef<int64_t> in,
                              llvm::ArrayRef<int64_t> w, llvm::ArrayRef<int64_t> out,
                              llvm::ArrayRef<int64_t> stride,
                              llvm::ArrayRef<int64_t> padding, int64_t groups) {
  Inferred fwd = conv2d(in, w, stride, padding, groups);
  if (!fwd.ok())
    return fwd;
  bool same = fwd.shape.size() == out.size();
  for (size_t i = 0; same && i < out.size(); ++i)
    same = compatible(fwd.shape[i], out[i]);
  if (!same)
    return Inferred::fail(fmt::format(
        "{} gradient {} does not match the convolution output {}", what.str(),
        str(out), str(fwd.shape)));
  return fwd;
}

Inferred conv2dGradInput(llvm::ArrayRef<int64_t> grad, llvm::ArrayRef<int64_t> w,
                         llvm::ArrayRef<int64_t> stride,
                         llvm::ArrayRef<int64_t> padding, int64_t groups,
                         llvm::ArrayRef<int64_t> inputSize) {
  if (grad.size() != 4 || w.size() != 4 || inputSize.size() != 2 || groups < 1)
    return Inferred::fail("conv2d_grad_input needs rank-4 grad and weight and a 2-entry input_size");
  Shape in = {grad[0], w[1] == kDynamic ? kDynamic : w[1] * groups, inputSize[0],
              inputSize[1]};
  Inferred r = checkConvPair("conv2d_grad_input", in, w, grad, stride, padding, groups);
  return r.ok() ? Inferred::of(in) : r;
}

Inferred conv2dGradWeight(llvm::ArrayRef<int64_t> in, llvm::ArrayRef<int64_t> grad,
                          llvm::ArrayRef<int64_t> stride,
                          llvm::ArrayRef<int64_t> padding, int64_t groups,
                          llvm::ArrayRef<int64_t> kernel) {
  if (in.size() != 4 || grad.size() != 4 || kernel.size() != 2 || groups < 1 ||
      in[1] == kDynamic || in[1] % groups)
    return Inferred::fail("conv2d_grad_weight needs rank-4 input and grad, static "
                          "input channels divisible by groups, and a 2-entry kernel");
  Shape w = {grad[1], in[1] / groups, kernel[0], kernel[1]};
  Inferred r = checkConvPair("conv2d_grad_weight", in, w, grad, stride, padding, groups);
  return r.ok() ? Inferred::of(w) : r;
}

} // namespace nnc::shape
