//===- OnnxImport.cpp - nnc import: an ONNX model as a .nn file -------------===//
//
// Reads an ONNX model (libonnx's protobuf classes) and writes the same
// computation in nnc's language, with its initializers as a safetensors file
// of weights under the names `--init-from` reads. Parameters are declared
// `= zeros`: their values come from that file. An ONNX graph has no loss;
// `--loss softmax_cross_entropy --labels y` (or mse, with a target) adds one,
// so that the model trains like any other. Every node of an op type nnc
// does not have is listed in one error.
//
//===----------------------------------------------------------------------===//

#include "tools/nnc/ModelFile.h"

#include "runtime/Checkpoint.h"
#include "runtime/StateDict.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/raw_ostream.h"

#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#ifdef NNC_HAVE_ONNX
#include <onnx/onnx_pb.h>
#endif

using namespace nnc;
using namespace nnc::driver;

#ifndef NNC_HAVE_ONNX
int nnc::driver::runImport(const Args &) {
  return userError("this nnc was built without ONNX (scripts/setup.sh installs libonnx-dev and libprotobuf-dev)");
}
#else

namespace {

/// An identifier of the language for an ONNX name.
std::string identifier(const std::string &name, const char *prefix) {
  std::string s = prefix;
  for (char c : name)
    s += std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
  return s;
}

std::string number(double v) {
  std::ostringstream os;
  os.precision(9);
  os << v;
  std::string s = os.str();
  if (s.find_first_of(".e") == std::string::npos && s.find("inf") == std::string::npos)
    s += ".0";
  return s;
}

std::string list(const std::vector<int64_t> &v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i)
    s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}

struct Initializer {
  std::vector<int64_t> shape;
  std::vector<float> floats;
  std::vector<int64_t> ints;
  bool isFloat = true;
};

bool readInitializer(const onnx::TensorProto &t, Initializer &out) {
  out.shape.assign(t.dims().begin(), t.dims().end());
  size_t n = 1;
  for (int64_t d : out.shape)
    n *= static_cast<size_t>(d);
  if (t.data_type() == onnx::TensorProto::FLOAT) {
    if (t.has_raw_data()) {
      if (t.raw_data().size() != n * 4)
        return false;
      out.floats.resize(n);
      std::memcpy(out.floats.data(), t.raw_data().data(), n * 4);
    } else {
      out.floats.assign(t.float_data().begin(), t.float_data().end());
    }
    return out.floats.size() == n;
  }
  if (t.data_type() == onnx::TensorProto::INT64) {
    out.isFloat = false;
    if (t.has_raw_data()) {
      if (t.raw_data().size() != n * 8)
        return false;
      out.ints.resize(n);
      std::memcpy(out.ints.data(), t.raw_data().data(), n * 8);
    } else {
      out.ints.assign(t.int64_data().begin(), t.int64_data().end());
    }
    return out.ints.size() == n;
  }
  return false;
}

std::map<std::string, const onnx::AttributeProto *> attributes(const onnx::NodeProto &n) {
  std::map<std::string, const onnx::AttributeProto *> a;
  for (const onnx::AttributeProto &x : n.attribute())
    a[x.name()] = &x;
  return a;
}

std::vector<int64_t> ints(const std::map<std::string, const onnx::AttributeProto *> &a, const char *k,
                          std::vector<int64_t> dflt = {}) {
  auto it = a.find(k);
  return it == a.end() ? dflt : std::vector<int64_t>(it->second->ints().begin(), it->second->ints().end());
}

int64_t integer(const std::map<std::string, const onnx::AttributeProto *> &a, const char *k, int64_t dflt) {
  auto it = a.find(k);
  return it == a.end() ? dflt : it->second->i();
}

double real(const std::map<std::string, const onnx::AttributeProto *> &a, const char *k, double dflt) {
  auto it = a.find(k);
  return it == a.end() ? dflt : it->second->f();
}

std::string text(const std::map<std::string, const onnx::AttributeProto *> &a, const char *k) {
  auto it = a.find(k);
  return it == a.end() ? "" : it->second->s();
}

/// The .nn text of an ONNX graph, node by node.
struct Translation {
  std::map<std::string, Initializer> &inits;
  int64_t opset;
  const onnx::GraphProto &g;
  // Names in the language: inputs and weights from their ONNX names,
  // intermediates `t_...`.
  std::map<std::string, std::string> names;
  std::set<std::string> taken;
  std::ostringstream decls, body;
  std::vector<rt::HostTensor> weights;
  std::vector<std::string> unsupported;
  int bn = 0;

  std::string unique(std::string s) {
    std::string base = s;
    for (int k = 2; taken.count(s); ++k)
      s = base + "_" + std::to_string(k);
    taken.insert(s);
    return s;
  }

  /// A weight as a parameter of the model (declared once), its values to the
  /// weights file under the key --init-from looks up.
  std::string param(const std::string &onnxName, bool transpose = false) {
    auto it = names.find(onnxName);
    if (it != names.end())
      return it->second;
    const Initializer &w = inits.at(onnxName);
    std::string n = unique(identifier(onnxName, "w_"));
    names[onnxName] = n;
    rt::HostTensor h{rt::torchKey(n), w.shape, {}};
    h.data.assign(w.floats.begin(), w.floats.end());
    if (transpose) { // Gemm's transB: stored [out, in], used [in, out]
      h.shape = {w.shape[1], w.shape[0]};
      for (int64_t i = 0; i < w.shape[0]; ++i)
        for (int64_t j = 0; j < w.shape[1]; ++j)
          h.data[static_cast<size_t>(j * w.shape[0] + i)] = w.floats[static_cast<size_t>(i * w.shape[1] + j)];
    }
    decls << "  param " << n << ": f32" << list(h.shape) << " = zeros\n";
    weights.push_back(std::move(h));
    return n;
  }

  /// Node `n` as a statement of `body`, or an entry of `unsupported`.
  void node(const onnx::NodeProto &n) {
    const std::string &op = n.op_type();
    if (op == "Constant")
      return;
    auto a = attributes(n);
    auto arg = [&](int i) -> std::string {
      const std::string &x = n.input(i);
      if (names.count(x))
        return names[x];
      if (inits.count(x) && inits[x].isFloat)
        return param(x);
      return "";
    };
    std::string expr;
    auto un = [&](const char *f) { expr = std::string(f) + "(" + arg(0) + ")"; };
    auto bin = [&](const char *o) { expr = arg(0) + " " + o + " " + arg(1); };
    if (op == "Relu") un("relu");
    else if (op == "Sigmoid") un("sigmoid");
    else if (op == "Tanh") un("tanh");
    else if (op == "Softplus") un("softplus");
    else if (op == "Exp") un("exp");
    else if (op == "Log") un("log");
    else if (op == "Sqrt") un("sqrt");
    else if (op == "Abs") un("abs");
    else if (op == "Identity" || op == "Dropout") un("identity");
    else if (op == "Neg") expr = "-" + arg(0);
    else if (op == "Add") bin("+");
    else if (op == "Sub") bin("-");
    else if (op == "Mul") bin("*");
    else if (op == "Div") bin("/");
    else if (op == "MatMul") bin("@");
    else if (op == "LeakyRelu") expr = "leaky_relu(" + arg(0) + ", alpha=" + number(real(a, "alpha", 0.01)) + ")";
    else if (op == "Softmax" || op == "LogSoftmax") {
      int64_t axis = integer(a, "axis", opset >= 13 ? -1 : 1);
      expr = std::string(op == "Softmax" ? "softmax(" : "log_softmax(") + arg(0) + ", axis=" + std::to_string(axis) + ")";
    } else if (op == "Flatten") {
      if (integer(a, "axis", 1) != 1)
        unsupported.push_back(n.name() + " (Flatten with axis other than 1)");
      un("flatten");
    } else if (op == "GlobalAveragePool") {
      expr = "adaptive_avg_pool2d(" + arg(0) + ", 1)";
    } else if (op == "ReduceMean" || op == "ReduceSum" || op == "ReduceMax") {
      // Axes: an attribute, or (ReduceSum from opset 13) a second input.
      std::vector<int64_t> axes = ints(a, "axes");
      if (op == "ReduceSum" && n.input_size() > 1 && inits.count(n.input(1)))
        axes = inits[n.input(1)].ints;
      if (axes.empty()) {
        unsupported.push_back(n.name() + " (" + op + " over every axis)");
        return;
      }
      expr = std::string(op == "ReduceMean" ? "mean(" : op == "ReduceSum" ? "sum(" : "max(") + arg(0) + ", axis=" +
             list(axes) + ", keepdims=" + (integer(a, "keepdims", 1) ? "true" : "false") + ")";
    } else if (op == "Transpose") {
      expr = "transpose(" + arg(0) + ", perm=" + list(ints(a, "perm")) + ")";
    } else if (op == "Concat") {
      expr = "concat([";
      for (int i = 0; i < n.input_size(); ++i)
        expr += (i ? ", " : "") + arg(i);
      expr += "], axis=" + std::to_string(integer(a, "axis", 1)) + ")";
    } else if (op == "Reshape" && n.input_size() == 2 && inits.count(n.input(1)) && !inits[n.input(1)].isFloat) {
      std::vector<int64_t> s = inits[n.input(1)].ints;
      if (inits.count(n.input(0)) && inits[n.input(0)].isFloat) { // a weight: sizes all known
        int64_t total = 1, known = 1;
        for (int64_t d : inits[n.input(0)].shape)
          total *= d;
        for (int64_t d : s)
          known *= d == -1 ? 1 : d;
        for (int64_t &d : s)
          if (d == -1)
            d = total / std::max<int64_t>(1, known);
        expr = "reshape(" + arg(0) + ", " + list(s) + ")";
        std::string result = unique(identifier(n.output(0), "t_"));
        names[n.output(0)] = result;
        body << "  " << result << " = " << expr << "\n";
        return;
      }
      bool batchFirst = !s.empty() && (s[0] == 0 || s[0] == -1);
      std::vector<int64_t> rest(s.begin() + (s.empty() ? 0 : 1), s.end());
      if (batchFirst && rest == std::vector<int64_t>{-1}) {
        un("flatten");
      } else if (batchFirst && std::find(rest.begin(), rest.end(), -1) == rest.end() &&
                 std::find(rest.begin(), rest.end(), 0) == rest.end()) {
        expr = "reshape(" + arg(0) + ", [B";
        for (int64_t d : rest)
          expr += ", " + std::to_string(d);
        expr += "])";
      } else {
        unsupported.push_back(n.name() + " (Reshape to " + list(s) + ": only [batch, ...] shapes)");
      }
    } else if (op == "Gemm") {
      std::string A = arg(0);
      if (integer(a, "transA", 0))
        A = "transpose(" + A + ")";
      std::string B = integer(a, "transB", 0) && inits.count(n.input(1)) ? param(n.input(1), true)
                      : integer(a, "transB", 0)                          ? "transpose(" + arg(1) + ")"
                                                                         : arg(1);
      double alpha = real(a, "alpha", 1), beta = real(a, "beta", 1);
      expr = (alpha != 1 ? number(alpha) + " * " : "") + "(" + A + " @ " + B + ")";
      if (n.input_size() > 2 && !n.input(2).empty())
        expr += " + " + (beta != 1 ? number(beta) + " * " : "") + arg(2);
    } else if (op == "Conv") {
      std::vector<int64_t> pads = ints(a, "pads", {0, 0, 0, 0}), dil = ints(a, "dilations", {1, 1});
      std::string autoPad = text(a, "auto_pad");
      if (pads.size() != 4 || pads[0] != pads[2] || pads[1] != pads[3] || dil != std::vector<int64_t>{1, 1} ||
          (!autoPad.empty() && autoPad != "NOTSET" && autoPad != "VALID")) {
        unsupported.push_back(n.name() + " (Conv with asymmetric padding, dilation or auto_pad)");
        return;
      }
      expr = "conv2d(" + arg(0) + ", " + arg(1) + ", stride=" + list(ints(a, "strides", {1, 1})) + ", padding=" +
             list({pads[0], pads[1]}) + ", groups=" + std::to_string(integer(a, "group", 1)) + ")";
      if (n.input_size() > 2 && !n.input(2).empty())
        expr += " + reshape(" + arg(2) + ", [" + std::to_string(inits[n.input(2)].shape[0]) + ", 1, 1])";
    } else if (op == "MaxPool" || op == "AveragePool") {
      std::vector<int64_t> pads = ints(a, "pads", {0, 0, 0, 0});
      if (pads.size() != 4 || pads[0] != pads[2] || pads[1] != pads[3] || integer(a, "ceil_mode", 0)) {
        unsupported.push_back(n.name() + " (" + op + " with asymmetric padding or ceil_mode)");
        return;
      }
      expr = std::string(op == "MaxPool" ? "max_pool2d(" : "avg_pool2d(") + arg(0) +
             ", kernel=" + list(ints(a, "kernel_shape")) + ", stride=" + list(ints(a, "strides", {1, 1})) +
             ", padding=" + list({pads[0], pads[1]});
      if (op == "AveragePool")
        expr += std::string(", count_include_pad=") + (integer(a, "count_include_pad", 0) ? "true" : "false");
      expr += ")";
    } else if (op == "BatchNormalization") {
      // The layer form: its tensors named NAME.gamma, .beta, .running_mean,
      // .running_var, which --init-from reads as NAME.weight, .bias, ...
      std::string layer = unique("bn" + std::to_string(bn++));
      const char *slots[] = {"gamma", "beta", "running_mean", "running_var"};
      for (int k = 0; k < 4; ++k) {
        const Initializer &w = inits.at(n.input(k + 1));
        rt::HostTensor h{rt::torchKey(layer + "." + slots[k]), w.shape, {}};
        h.data.assign(w.floats.begin(), w.floats.end());
        weights.push_back(std::move(h));
      }
      expr = "batch_norm(" + arg(0) + ", eps=" + number(real(a, "epsilon", 1e-5)) +
             ", momentum=" + number(1 - real(a, "momentum", 0.9)) + ", name=\"" + layer + "\")";
    } else {
      unsupported.push_back(n.name() + " (" + op + ")");
      return;
    }
    // Graph outputs keep their names; intermediates are t_...
    bool isOutput = std::any_of(g.output().begin(), g.output().end(),
                                [&](const onnx::ValueInfoProto &v) { return v.name() == n.output(0); });
    std::string result = unique(identifier(n.output(0), isOutput ? "" : "t_"));
    if (std::isdigit(static_cast<unsigned char>(result[0])))
      result = unique("y" + result);
    names[n.output(0)] = result;
    body << "  " << result << " = " << expr << "\n";

  }
};

} // namespace

int nnc::driver::runImport(const Args &args) {
  const Command &c = command("import");
  if (auto rc = needFile(c, args))
    return *rc;
  std::string path = args.positional[0], out = args.get("o");
  if (out.empty())
    out = llvm::sys::path::stem(path).str() + ".nn";
  if (!llvm::StringRef(out).ends_with(".nn"))
    return usageError("-o must name a .nn file (the weights go beside it, as .safetensors)", &c);
  std::string weightsPath = out.substr(0, out.size() - 3) + ".safetensors";
  std::string loss = args.get("loss", "auto"), labels = args.get("labels", "y");
  if (loss != "auto" && loss != "none" && loss != "softmax_cross_entropy" && loss != "mse" &&
      loss != "binary_cross_entropy")
    return usageError("--loss must be auto, none, softmax_cross_entropy, mse or binary_cross_entropy", &c);

  std::ifstream in(path, std::ios::binary);
  if (!in)
    return userError(path + ": cannot open the file");
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  onnx::ModelProto model;
  if (bytes.empty() || !model.ParseFromString(bytes) || !model.has_graph())
    return userError(path + ": not an ONNX model (the protobuf does not parse as a ModelProto with a graph)");
  int64_t opset = 0;
  for (const onnx::OperatorSetIdProto &o : model.opset_import())
    if (o.domain().empty() || o.domain() == "ai.onnx")
      opset = o.version();
  if (opset < 7 || opset > 18)
    return userError(path + ": opset " + std::to_string(opset) + " is not supported (7 to 18 are)");
  const onnx::GraphProto &g = model.graph();

  std::map<std::string, Initializer> inits;
  for (const onnx::TensorProto &t : g.initializer()) {
    Initializer init;
    if (!readInitializer(t, init))
      return userError(path + ": initializer '" + t.name() + "' is not a whole float32 or int64 tensor");
    inits[t.name()] = std::move(init);
  }
  for (const onnx::NodeProto &n : g.node()) // Constant nodes are initializers too
    if (n.op_type() == "Constant") {
      for (const onnx::AttributeProto &a : n.attribute())
        if (a.name() == "value" && a.has_t()) {
          Initializer init;
          if (!readInitializer(a.t(), init))
            return userError(path + ": constant '" + n.output(0) + "' is not a float32 or int64 tensor");
          inits[n.output(0)] = std::move(init);
        }
    }

  Translation t{inits, opset, g};
  for (const onnx::ValueInfoProto &v : g.input()) {
    if (inits.count(v.name()))
      continue;
    const auto &tensor = v.type().tensor_type();
    if (tensor.elem_type() != onnx::TensorProto::FLOAT)
      return userError(path + ": input '" + v.name() + "' is not float32");
    std::vector<std::string> dims;
    for (int i = 0; i < tensor.shape().dim_size(); ++i) {
      const auto &d = tensor.shape().dim(i);
      if (i == 0)
        dims.push_back("B"); // the batch axis, whatever the file fixed it to
      else if (d.has_dim_value() && d.dim_value() > 0)
        dims.push_back(std::to_string(d.dim_value()));
      else
        return userError(path + ": input '" + v.name() + "' has a dynamic size at axis " + std::to_string(i) +
                         "; nnc's inputs are dynamic in the batch axis only");
    }
    if (dims.empty())
      return userError(path + ": input '" + v.name() + "' is a scalar; nnc's inputs have a batch axis");
    std::string n = t.unique(identifier(v.name(), ""));
    if (!n.empty() && std::isdigit(static_cast<unsigned char>(n[0])))
      n = t.unique("x" + n);
    t.names[v.name()] = n;
    t.decls << "  input " << n << ": f32[";
    for (size_t i = 0; i < dims.size(); ++i)
      t.decls << (i ? ", " : "") << dims[i];
    t.decls << "]\n";
  }

  for (const onnx::NodeProto &n : g.node())
    t.node(n);
  if (!t.unsupported.empty()) {
    std::string all;
    for (const std::string &u : t.unsupported)
      all += "\n  " + u;
    return userError(path + ": " + std::to_string(t.unsupported.size()) + " node(s) nnc cannot import:" + all);
  }
  std::vector<std::string> outputs;
  for (const onnx::ValueInfoProto &v : g.output()) {
    if (!t.names.count(v.name()))
      return userError(path + ": output '" + v.name() + "' is computed by no node nnc imported");
    outputs.push_back(t.names[v.name()]);
  }
  // The first output's sizes after the batch axis, for the loss.
  std::vector<int64_t> outDims;
  if (g.output_size() > 0)
    for (int i = 1; i < g.output(0).type().tensor_type().shape().dim_size(); ++i)
      outDims.push_back(g.output(0).type().tensor_type().shape().dim(i).dim_value());
  bool known = std::all_of(outDims.begin(), outDims.end(), [](int64_t d) { return d > 0; });
  if (loss == "auto") // scores of classes, or values to regress
    loss = known && outDims.size() == 1 && outDims[0] > 1 ? "softmax_cross_entropy" : known ? "mse" : "none";
  if (loss == "none")
    loss.clear();
  if (!loss.empty() && loss != "softmax_cross_entropy" && !known)
    return userError(path + ": the first output's sizes are not in the file; give --loss none or "
                            "--loss softmax_cross_entropy");
  std::string modelName = identifier(g.name().empty() ? llvm::sys::path::stem(path).str() : g.name(), "");
  if (modelName.empty() || std::isdigit(static_cast<unsigned char>(modelName[0])))
    modelName = "m" + modelName;
  std::ostringstream nn;
  nn << "# Imported by nnc import from " << llvm::sys::path::filename(path).str() << " (opset " << opset
     << "); weights in " << llvm::sys::path::filename(weightsPath).str() << ":\n#   nnc predict "
     << llvm::sys::path::filename(out).str() << " --init-from " << llvm::sys::path::filename(weightsPath).str()
     << " --input rows.csv\nmodel " << modelName << " {\n"
     << t.decls.str();
  if (!loss.empty()) {
    nn << "  input " << labels << (loss == "softmax_cross_entropy" ? ": i32[B]" : ": f32[B");
    if (loss != "softmax_cross_entropy") {
      for (int64_t d : outDims)
        nn << ", " << d;
      nn << "]";
    }
    nn << "\n";
  }
  nn << t.body.str();
  for (const std::string &o : outputs)
    nn << "  output " << o << "\n";
  if (!loss.empty())
    nn << "  loss = " << loss << "(" << outputs[0] << ", " << labels << ")\n  minimize loss\n";
  nn << "}\n";
  if (rt::Status s = rt::saveCheckpoint(weightsPath, t.weights, {{"format", "pt"}}); !s)
    return userError(s.message());
  if (int rc = writeOutput(out, nn.str()))
    return rc;
  llvm::outs() << "wrote " << out << " (" << g.node_size() << " nodes) and " << weightsPath << " ("
               << t.weights.size() << " tensors)\n";
  return kOk;
}
#endif
