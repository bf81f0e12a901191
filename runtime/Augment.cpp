//===- Augment.cpp - preprocessing and augmentation of samples ------------===//
//
// Each transform follows torchvision's functional form of the same name:
// F.normalize, RandomCrop (zero padding), F.hflip / F.vflip, RandomAffine's
// integer translation, F.rotate (nearest, zero fill, about the centre),
// ColorJitter's brightness, contrast and saturation (in a random order, as
// ColorJitter draws it) and additive Gaussian noise.
//
//===----------------------------------------------------------------------===//

#include "runtime/Augment.h"
#include "runtime/Random.h"

#include <algorithm>
#include <cmath>

using namespace nnc::rt;

const std::vector<CallSpec> &nnc::rt::transformSpecs() {
  using P = ParamSpec;
  static const std::vector<CallSpec> table = {
      {"scale", {{"factor", P::Number, true}}, "scale(factor)"},
      {"normalize", {{"mean", P::List, true}, {"std", P::List, true}}, "normalize(mean=[...], std=[...])"},
      {"random_crop", {{"size", P::Number, true}, {"padding", P::Number, false, 0}},
       "random_crop(size, padding=0)"},
      {"hflip", {{"p", P::Number, false, 0.5}}, "hflip(p=0.5)"},
      {"vflip", {{"p", P::Number, false, 0.5}}, "vflip(p=0.5)"},
      {"translate", {{"x", P::Number, true}, {"y", P::Number, false, -1}}, "translate(x, y=x) (fractions of the size)"},
      {"rotate", {{"degrees", P::Number, true}}, "rotate(degrees)"},
      {"color_jitter",
       {{"brightness", P::Number, false, 0}, {"contrast", P::Number, false, 0}, {"saturation", P::Number, false, 0}},
       "color_jitter(brightness=0, contrast=0, saturation=0)"},
      {"noise", {{"std", P::Number, true}}, "noise(std)"},
  };
  return table;
}

bool nnc::rt::isRandom(const Call &t) { return t.name != "scale" && t.name != "normalize"; }

Status nnc::rt::checkTransform(Call &t, const std::vector<int64_t> &dims) {
  if (Status s = resolveCall(transformSpecs(), "transform", t); !s)
    return s;
  auto bad = [&](const std::string &why) { return Status::error("transform " + t.name + ": " + why); };
  bool image = t.name != "scale" && t.name != "noise";
  if (image && t.name != "normalize" && dims.size() != 3)
    return bad("needs an image input of sizes [C, H, W] after the batch axis");
  int64_t channels = dims.size() == 3 ? dims[0] : 1;
  if (t.name == "normalize") {
    std::vector<double> mean = t.numbers("mean"), sd = t.numbers("std");
    auto fits = [&](size_t n) { return n == 1 || static_cast<int64_t>(n) == channels; };
    if (!fits(mean.size()) || !fits(sd.size()))
      return bad("mean and std need one value, or one per channel (" + std::to_string(channels) + ")");
    for (double s : sd)
      if (!(s > 0))
        return bad("every std must be positive");
  } else if (t.name == "random_crop") {
    double size = t.number("size"), pad = t.number("padding");
    if (!(pad >= 0) || pad != std::floor(pad))
      return bad("padding must be a non-negative whole number");
    if (size != std::floor(size) || size < 1)
      return bad("size must be a positive whole number");
    int64_t h = dims[1], w = dims[2];
    if (size > static_cast<double>(std::min(h, w)) + 2 * pad)
      return bad("a crop of " + std::to_string(static_cast<int64_t>(size)) + " is larger than the padded image (" +
                 std::to_string(h + 2 * static_cast<int64_t>(pad)) + "x" +
                 std::to_string(w + 2 * static_cast<int64_t>(pad)) + ")");
    if (static_cast<int64_t>(size) != h || h != w)
      return bad("the crop must give the model's input size " + std::to_string(h) + "x" + std::to_string(w) +
                 ", not " + std::to_string(static_cast<int64_t>(size)));
  } else if (t.name == "hflip" || t.name == "vflip") {
    double p = t.number("p");
    if (!(p >= 0 && p <= 1))
      return bad("p must be a probability in [0, 1]");
  } else if (t.name == "translate") {
    double x = t.number("x"), y = t.number("y");
    if (y == -1) { // not given: as x (RandomAffine's translate=(x, y) written once)
      y = x;
      for (CallArg &a : t.args)
        if (a.name == "y")
          a.numbers = {x};
    }
    if (!(x >= 0 && x <= 1) || !(y >= 0 && y <= 1))
      return bad("x and y must be fractions in [0, 1]");
  } else if (t.name == "rotate") {
    if (!(t.number("degrees") >= 0 && t.number("degrees") <= 180))
      return bad("degrees must be in [0, 180]");
  } else if (t.name == "color_jitter") {
    for (const char *k : {"brightness", "contrast", "saturation"})
      if (!(t.number(k) >= 0))
        return bad(std::string(k) + " must be non-negative");
  } else if (t.name == "noise") {
    if (!(t.number("std") >= 0))
      return bad("std must be non-negative");
  } else if (t.name == "scale") {
    if (!std::isfinite(t.number("factor")))
      return bad("factor must be finite");
  }
  return Status::ok();
}

namespace {

/// Random numbers of one transform of one sample.
struct Draw {
  uint64_t seed, stream;
  uint64_t counter = 0;
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform01(seed, stream, counter++); }
  double normal() { return standardNormal(seed, stream, counter++); }
};

void blend(float *x, int64_t n, float f, const float *other, float constant) {
  for (int64_t i = 0; i < n; ++i) {
    float o = other ? other[i] : constant;
    x[i] = std::clamp(f * x[i] + (1 - f) * o, 0.0f, 1.0f);
  }
}

/// torchvision's rgb_to_grayscale of a [3, H, W] image into `gray` ([H, W]).
void grayscale(const float *x, int64_t hw, std::vector<float> &gray) {
  gray.resize(static_cast<size_t>(hw));
  for (int64_t i = 0; i < hw; ++i)
    gray[i] = 0.2989f * x[i] + 0.587f * x[hw + i] + 0.114f * x[2 * hw + i];
}

void colorJitter(const Call &t, float *x, int64_t c, int64_t hw, Draw &d, std::vector<float> &scratch) {
  double factors[3];
  const char *keys[3] = {"brightness", "contrast", "saturation"};
  for (int k = 0; k < 3; ++k) {
    double a = t.number(keys[k]);
    factors[k] = a > 0 ? d.uniform(std::max(0.0, 1 - a), 1 + a) : 1.0;
  }
  int order[3] = {0, 1, 2};
  for (int i = 2; i > 0; --i) // a seeded Fisher-Yates shuffle
    std::swap(order[i], order[static_cast<int>(d.uniform(0, 1) * (i + 1)) % (i + 1)]);
  for (int k : order) {
    if (t.number(keys[k]) <= 0)
      continue;
    float f = static_cast<float>(factors[k]);
    if (k == 0) {
      blend(x, c * hw, f, nullptr, 0.0f);
    } else if (k == 1) {
      double mean = 0;
      if (c == 3) {
        grayscale(x, hw, scratch);
        for (int64_t i = 0; i < hw; ++i)
          mean += scratch[i];
      } else {
        for (int64_t i = 0; i < c * hw; ++i)
          mean += x[i];
        mean /= static_cast<double>(c);
      }
      blend(x, c * hw, f, nullptr, static_cast<float>(mean / static_cast<double>(hw)));
    } else if (c == 3) {
      grayscale(x, hw, scratch);
      for (int64_t ch = 0; ch < 3; ++ch)
        blend(x + ch * hw, hw, f, scratch.data(), 0.0f);
    }
  }
}

/// Moves each channel of `x` ([c, h, w]) so that out(i, j) = in(src(i, j)),
/// zero where the source is outside.
template <typename Source>
void remap(float *x, int64_t c, int64_t h, int64_t w, std::vector<float> &scratch, Source src) {
  scratch.assign(x, x + c * h * w);
  for (int64_t i = 0; i < h; ++i)
    for (int64_t j = 0; j < w; ++j) {
      auto [si, sj] = src(i, j);
      bool inside = si >= 0 && si < h && sj >= 0 && sj < w;
      for (int64_t ch = 0; ch < c; ++ch)
        x[(ch * h + i) * w + j] = inside ? scratch[(ch * h + si) * w + sj] : 0.0f;
    }
}

} // namespace

void nnc::rt::applyTransforms(const std::vector<Call> &transforms, const std::vector<int64_t> &dims, float *x,
                              bool train, const SampleKey &key, std::vector<float> &scratch) {
  int64_t n = 1;
  for (int64_t d : dims)
    n *= d;
  bool image = dims.size() == 3;
  int64_t c = image ? dims[0] : 1, h = image ? dims[1] : 1, w = image ? dims[2] : n;
  std::vector<float> extra;
  for (size_t k = 0; k < transforms.size(); ++k) {
    const Call &t = transforms[k];
    if (isRandom(t) && !train)
      continue;
    Draw d{key.seed, mix64(0xa0a0000000000000ULL ^ (static_cast<uint64_t>(key.epoch) << 40) ^
                           (static_cast<uint64_t>(key.sample) << 8) ^ k)};
    if (t.name == "scale") {
      float f = static_cast<float>(t.number("factor"));
      for (int64_t i = 0; i < n; ++i)
        x[i] *= f;
    } else if (t.name == "normalize") {
      std::vector<double> mean = t.numbers("mean"), sd = t.numbers("std");
      int64_t per = n / c;
      for (int64_t ch = 0; ch < c; ++ch) {
        float m = static_cast<float>(mean[mean.size() == 1 ? 0 : ch]);
        float s = static_cast<float>(sd[sd.size() == 1 ? 0 : ch]);
        for (int64_t i = ch * per; i < (ch + 1) * per; ++i)
          x[i] = (x[i] - m) / s;
      }
    } else if (t.name == "random_crop") {
      int64_t pad = static_cast<int64_t>(t.number("padding")), size = static_cast<int64_t>(t.number("size"));
      int64_t range = h + 2 * pad - size + 1;
      int64_t top = std::min(range - 1, static_cast<int64_t>(d.uniform(0, 1) * range));
      int64_t left = std::min(range - 1, static_cast<int64_t>(d.uniform(0, 1) * range));
      remap(x, c, h, w, scratch, [&](int64_t i, int64_t j) { return std::pair{i + top - pad, j + left - pad}; });
    } else if (t.name == "hflip" || t.name == "vflip") {
      if (d.uniform(0, 1) >= t.number("p"))
        continue;
      bool horizontal = t.name == "hflip";
      remap(x, c, h, w, scratch, [&](int64_t i, int64_t j) {
        return horizontal ? std::pair{i, w - 1 - j} : std::pair{h - 1 - i, j};
      });
    } else if (t.name == "translate") {
      double fx = t.number("x"), fy = t.number("y") < 0 ? fx : t.number("y");
      // RandomAffine: a shift of round(uniform(-f * size, f * size)) pixels.
      int64_t dx = static_cast<int64_t>(std::nearbyint(d.uniform(-fx * w, fx * w)));
      int64_t dy = static_cast<int64_t>(std::nearbyint(d.uniform(-fy * h, fy * h)));
      remap(x, c, h, w, scratch, [&](int64_t i, int64_t j) { return std::pair{i - dy, j - dx}; });
    } else if (t.name == "rotate") {
      double deg = t.number("degrees");
      double a = d.uniform(-deg, deg) * M_PI / 180;
      double ca = std::cos(a), sa = std::sin(a);
      // Counter-clockwise about the centre; each output pixel's centre
      // mapped back and rounded to the nearest source pixel.
      remap(x, c, h, w, scratch, [&](int64_t i, int64_t j) {
        double xo = static_cast<double>(j) + 0.5 - static_cast<double>(w) / 2;
        double yo = static_cast<double>(i) + 0.5 - static_cast<double>(h) / 2;
        double xs = ca * xo - sa * yo + static_cast<double>(w) / 2 - 0.5;
        double ys = sa * xo + ca * yo + static_cast<double>(h) / 2 - 0.5;
        return std::pair{static_cast<int64_t>(std::nearbyint(ys)), static_cast<int64_t>(std::nearbyint(xs))};
      });
    } else if (t.name == "color_jitter") {
      colorJitter(t, x, c, h * w, d, extra);
    } else if (t.name == "noise") {
      float s = static_cast<float>(t.number("std"));
      for (int64_t i = 0; i < n; ++i)
        x[i] += s * static_cast<float>(d.normal());
    }
  }
}
