//===- TrainSettings.cpp - the train section --------------------------===//
//
// Each setting is checked where it is written: optimizers against their
// table, data sources, schedules and transforms against the runtime's tables
// (runtime/Call.h), which then read the canonical text stored here. The
// model's first f32 input is the one transforms apply to, so their sizes are
// checked against it.
//
//===----------------------------------------------------------------------===//

#include "compiler/frontend/MLIRGenImpl.h"

#include "runtime/Augment.h"
#include "runtime/Schedule.h"

#include <cmath>

namespace nnc::frontend {

using namespace mlir;

//===----------------------------------------------------------------------===//
// The train section
//===----------------------------------------------------------------------===//

namespace {
struct OptimizerSpec {
  const char *name;
  const char *kind;
  std::vector<std::pair<const char *, double>> params; // NaN = required
};

const std::vector<OptimizerSpec> &optimizers() {
  static const double req = std::nan("");
  // Defaults are PyTorch's.
  static const std::vector<OptimizerSpec> table = {
      {"sgd", "sgd", {{"lr", req}, {"momentum", 0}, {"nesterov", 0}, {"weight_decay", 0}}},
      {"momentum", "sgd", {{"lr", req}, {"momentum", 0.9}, {"nesterov", 0}, {"weight_decay", 0}}},
      {"nesterov", "sgd", {{"lr", req}, {"momentum", 0.9}, {"nesterov", 1}, {"weight_decay", 0}}},
      {"adagrad", "adagrad", {{"lr", 0.01}, {"eps", 1e-10}, {"weight_decay", 0}}},
      {"rmsprop", "rmsprop",
       {{"lr", 0.01}, {"alpha", 0.99}, {"eps", 1e-8}, {"momentum", 0}, {"weight_decay", 0}}},
      {"adadelta", "adadelta", {{"lr", 1.0}, {"rho", 0.9}, {"eps", 1e-6}, {"weight_decay", 0}}},
      {"adam", "adam",
       {{"lr", 1e-3}, {"beta1", 0.9}, {"beta2", 0.999}, {"eps", 1e-8}, {"weight_decay", 0}}},
      {"adamw", "adamw",
       {{"lr", 1e-3}, {"beta1", 0.9}, {"beta2", 0.999}, {"eps", 1e-8}, {"weight_decay", 0.01}}},
  };
  return table;
}
} // namespace

DictionaryAttr MLIRGen::genTrain(const TrainSection &t) {
  static const std::vector<std::string> keys = {
      "optimizer", "batch", "epochs", "seed", "data", "test", "shuffle", "clip_norm", "validation", "freeze",
      "transform", "schedule", "patience", "min_delta", "monitor", "top_k", "sync_batch_norm"};
  SmallVector<NamedAttribute> out;
  llvm::StringMap<Loc> seen;
  unsigned before = errors;
  for (const KwArg &kw : t.entries) {
    if (!llvm::is_contained(keys, kw.name)) {
      error(kw.loc) << "unknown train setting '" << kw.name << "'" << didYouMean(kw.name, keys);
      continue;
    }
    if (auto [it, inserted] = seen.try_emplace(kw.name, kw.loc); !inserted) {
      error(kw.loc) << "train setting '" << kw.name << "' is already set at line "
                    << it->second.line;
      continue;
    }
    const Expr &v = *kw.value;
    StringRef key = kw.name;
    if (key == "batch" || key == "epochs" || key == "seed" || key == "patience" || key == "top_k") {
      auto n = intLiteral(v);
      if (!n || *n < (key == "seed" ? 0 : 1)) {
        error(v.loc) << "train setting '" << key << "' must be "
                     << (key == "seed" ? "a non-negative" : "a positive") << " integer";
        continue;
      }
      out.push_back(b.getNamedAttr(key, b.getI64IntegerAttr(*n)));
    } else if (key == "shuffle" || key == "sync_batch_norm") {
      if (v.kind != Expr::Bool) {
        error(v.loc) << "train setting '" << key << "' must be true or false";
        continue;
      }
      out.push_back(b.getNamedAttr(key, b.getBoolAttr(v.number != 0)));
    } else if (key == "clip_norm" || key == "validation" || key == "min_delta") {
      auto x = numberLiteral(v);
      bool ok = x && (key == "clip_norm" ? *x > 0 : key == "min_delta" ? *x >= 0 : (*x >= 0 && *x < 1));
      if (!ok) {
        error(v.loc) << "train setting '" << key << "' must be "
                     << (key == "clip_norm"   ? "a positive number"
                         : key == "min_delta" ? "a non-negative number"
                                              : "a fraction in [0, 1)");
        continue;
      }
      out.push_back(b.getNamedAttr(key, b.getF64FloatAttr(*x)));
    } else if (key == "freeze") {
      // Names or prefixes of tensors held fixed (Freeze.cpp).
      SmallVector<Attribute> patterns;
      bool ok = v.kind == Expr::List;
      for (const ExprPtr &e : v.args) {
        ok &= e->kind == Expr::String && !e->text.empty();
        if (ok)
          patterns.push_back(b.getStringAttr(e->text));
      }
      if (!ok) {
        error(v.loc) << "train setting 'freeze' must list names or prefixes, e.g. [\"conv1\", \"layer1\"]";
        continue;
      }
      out.push_back(b.getNamedAttr(key, b.getArrayAttr(patterns)));
    } else if (key == "data" || key == "test") {
      if (auto d = genDataSource(v))
        out.push_back(b.getNamedAttr(key, d));
    } else if (key == "monitor") {
      if (v.kind != Expr::String || (v.text != "loss" && v.text != "accuracy")) {
        error(v.loc) << "train setting 'monitor' must be \"loss\" or \"accuracy\" (of the validation or test set)";
        continue;
      }
      out.push_back(b.getNamedAttr(key, b.getStringAttr(v.text)));
    } else if (key == "schedule") {
      rt::Call call;
      if (!callOf(v, call))
        continue;
      if (rt::Status s = rt::checkSchedule(call); !s) {
        error(v.loc) << s.message();
        continue;
      }
      out.push_back(b.getNamedAttr(key, b.getStringAttr(call.text())));
    } else if (key == "transform") {
      std::vector<rt::Call> calls;
      bool ok = v.kind == Expr::List;
      if (!ok)
        error(v.loc) << "train setting 'transform' must list transforms, e.g. [random_crop(32, padding=4), hflip()]";
      std::vector<int64_t> dims = imageDims();
      for (size_t i = 0; ok && i < v.args.size(); ++i) {
        rt::Call call;
        ok = callOf(*v.args[i], call);
        if (!ok)
          break;
        if (rt::Status s = rt::checkTransform(call, dims); !s) {
          error(v.args[i]->loc) << s.message();
          ok = false;
          break;
        }
        calls.push_back(std::move(call));
      }
      if (ok)
        out.push_back(b.getNamedAttr(key, b.getStringAttr(rt::callListText(calls))));
    } else { // optimizer
      if (v.kind != Expr::Name && v.kind != Expr::Call) {
        error(v.loc) << "train setting 'optimizer' must name an optimizer, e.g. adam(lr=1e-3)";
        continue;
      }
      const OptimizerSpec *spec = nullptr;
      std::vector<std::string> names;
      for (const OptimizerSpec &o : optimizers()) {
        names.push_back(o.name);
        if (v.text == o.name)
          spec = &o;
      }
      if (!spec) {
        error(v.loc) << "unknown optimizer '" << v.text << "'" << didYouMean(v.text, names);
        continue;
      }
      SmallVector<double> values;
      for (auto &p : spec->params)
        values.push_back(p.second);
      bool ok = v.args.size() <= values.size();
      if (!ok)
        error(v.loc) << "optimizer '" << v.text << "' takes at most " << values.size()
                     << " arguments";
      for (size_t i = 0; ok && i < v.args.size(); ++i) {
        auto x = numberLiteral(*v.args[i]);
        if (!x && v.args[i]->kind == Expr::Bool)
          x = v.args[i]->number;
        if (!x) {
          error(v.args[i]->loc) << "optimizer arguments must be numbers";
          ok = false;
        } else {
          values[i] = *x;
        }
      }
      for (const KwArg &arg : v.kwargs) {
        if (!ok)
          break;
        auto it = llvm::find_if(spec->params, [&](auto &p) { return arg.name == p.first; });
        if (it == spec->params.end()) {
          std::vector<std::string> pnames;
          for (auto &p : spec->params)
            pnames.push_back(p.first);
          error(arg.loc) << "optimizer '" << v.text << "' has no argument '" << arg.name
                         << "'" << didYouMean(arg.name, pnames);
          ok = false;
          break;
        }
        auto x = numberLiteral(*arg.value);
        if (!x && arg.value->kind == Expr::Bool)
          x = arg.value->number;
        if (!x) {
          error(arg.value->loc) << "optimizer arguments must be numbers";
          ok = false;
          break;
        }
        values[it - spec->params.begin()] = *x;
      }
      if (!ok)
        continue;
      SmallVector<NamedAttribute> opt = {b.getNamedAttr("kind", b.getStringAttr(spec->kind))};
      for (size_t i = 0; i < values.size(); ++i) {
        if (std::isnan(values[i])) {
          error(v.loc) << "optimizer '" << v.text << "' needs argument '"
                       << spec->params[i].first << "'";
          ok = false;
          break;
        }
        if (values[i] < 0) {
          error(v.loc) << "optimizer argument '" << spec->params[i].first
                       << "' must be non-negative, got " << num(values[i]);
          ok = false;
          break;
        }
        // Decay rates of running averages, as torch.optim checks them.
        StringRef name = spec->params[i].first;
        bool rate = name == "beta1" || name == "beta2" || name == "rho";
        if (rate && values[i] >= (name == "rho" ? 1.0 + 1e-12 : 1.0)) {
          error(v.loc) << "optimizer argument '" << name << "' must be in [0, "
                       << (name == "rho" ? "1]" : "1)") << ", got " << num(values[i]);
          ok = false;
          break;
        }
        opt.push_back(b.getNamedAttr(spec->params[i].first, b.getF64FloatAttr(values[i])));
      }
      if (ok)
        out.push_back(b.getNamedAttr(key, b.getDictionaryAttr(opt)));
    }
  }
  return errors == before ? b.getDictionaryAttr(out) : nullptr;
}

/// Sizes after the batch axis of the input transforms apply to: the first
/// f32 input.
std::vector<int64_t> MLIRGen::imageDims() {
  for (unsigned i = 0; i < func.getNumArguments(); ++i) {
    auto role = func.getArgAttrOfType<StringAttr>(i, nnops::attr::kRole);
    auto type = cast<RankedTensorType>(func.getArgument(i).getType());
    if (role && role.getValue() == "input" && type.getElementType().isF32())
      return std::vector<int64_t>(type.getShape().begin() + 1, type.getShape().end());
  }
  return {};
}

/// A call of the train section (`name`, `name(...)`) as the runtime reads
/// it: numbers (constant expressions folded), lists of numbers, strings.
bool MLIRGen::callOf(const Expr &e, rt::Call &out) {
  if (e.kind != Expr::Call && e.kind != Expr::Name) {
    error(e.loc) << "expected a call such as hflip() or cosine(t_max=10)";
    return false;
  }
  out = rt::Call{e.text, {}};
  auto value = [&](const Expr &x, rt::CallArg &a) {
    const llvm::StringMap<const Expr *> none;
    if (x.kind == Expr::String) {
      a.isString = true;
      a.text = x.text;
      return true;
    }
    if (x.kind == Expr::Bool) {
      a.numbers = {x.number};
      return true;
    }
    if (x.kind == Expr::List) {
      a.list = true;
      for (const ExprPtr &elt : x.args) {
        ExprPtr f = fold(*elt, none);
        auto n = f ? numberLiteral(*f) : std::nullopt;
        if (!n) {
          error(elt->loc) << "expected a number";
          return false;
        }
        a.numbers.push_back(*n);
      }
      return true;
    }
    ExprPtr f = fold(x, none);
    auto n = f ? numberLiteral(*f) : std::nullopt;
    if (!n) {
      error(x.loc) << "expected a number, a list of numbers or a string";
      return false;
    }
    a.numbers = {*n};
    return true;
  };
  for (const ExprPtr &x : e.args) {
    rt::CallArg a;
    if (!value(*x, a))
      return false;
    out.args.push_back(std::move(a));
  }
  for (const KwArg &kw : e.kwargs) {
    rt::CallArg a;
    a.name = kw.name;
    if (!value(*kw.value, a))
      return false;
    out.args.push_back(std::move(a));
  }
  return true;
}

/// `data = KIND("path")` (or a bare path: MNIST's directory).
DictionaryAttr MLIRGen::genDataSource(const Expr &v) {
  static const std::vector<std::string> kinds = {"mnist", "csv", "cifar10", "npz", "npy", "images"};
  auto make = [&](StringRef kind, StringRef path) {
    return b.getDictionaryAttr(
        {b.getNamedAttr("kind", b.getStringAttr(kind)), b.getNamedAttr("path", b.getStringAttr(path))});
  };
  if (v.kind == Expr::String)
    return make("mnist", v.text);
  if (v.kind != Expr::Call || !llvm::is_contained(kinds, v.text)) {
    error(v.loc) << "a data source must be one of mnist(\"dir\"), csv(\"file.csv\"), cifar10(\"dir\"), "
                    "npz(\"file.npz\"), npy(\"dir\"), images(\"dir\")";
    return nullptr;
  }
  if (v.args.size() != 1 || v.args[0]->kind != Expr::String || !v.kwargs.empty()) {
    error(v.loc) << v.text << "(...) takes one string: the data path";
    return nullptr;
  }
  return make(v.text, v.args[0]->text);
}

} // namespace nnc::frontend
