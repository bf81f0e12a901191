//===- Onnx.cpp - nnc export --format onnx ---------------------------------===//
//
// Writes a model's evaluation function (the nn dialect, batch norm and
// dropout in evaluation mode) as an ONNX graph (opset 13) through the
// protobuf classes of Debian's libonnx: one node per nn op, the weights of
// a checkpoint as initializers under nnc's names, inputs and outputs with
// the batch axis symbolic ("B"). Only what the outputs read is exported:
// labels and the loss stay behind. An op without an ONNX counterpart fails
// the export with every such op listed.
//
//===----------------------------------------------------------------------===//

#include "tools/nnc/ModelFile.h"

#include "dialects/nn/NNOps.h"
#include "runtime/Checkpoint.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinAttributes.h"

#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/DenseSet.h"
#include "llvm/Support/raw_ostream.h"

#include <fstream>

#ifdef NNC_HAVE_ONNX
#include <onnx/onnx_pb.h>
#endif

using namespace mlir;
using namespace nnc;
using namespace nnc::driver;

#ifndef NNC_HAVE_ONNX
int nnc::driver::exportOnnx(Loaded &, const std::vector<rt::HostTensor> &, const std::string &) {
  return userError("this nnc was built without ONNX (scripts/setup.sh installs libonnx-dev and libprotobuf-dev)");
}
#else

namespace {

std::string where(Operation *op) {
  std::string s;
  llvm::raw_string_ostream os(s);
  op->getLoc().print(os);
  return s;
}

class Exporter {
public:
  Exporter(onnx::GraphProto &g) : g(g) {}

  std::string name(Value v) {
    auto it = names.find(v);
    if (it != names.end())
      return it->second;
    std::string n = "t" + std::to_string(next++);
    names[v] = n;
    return n;
  }
  void setName(Value v, const std::string &n) { names[v] = n; }

  onnx::NodeProto &node(const char *type, std::initializer_list<std::string> inputs, Value out) {
    onnx::NodeProto &n = *g.add_node();
    n.set_op_type(type);
    n.set_name(std::string(type) + "_" + std::to_string(g.node_size()));
    for (const std::string &i : inputs)
      n.add_input(i);
    n.add_output(name(out));
    return n;
  }
  static void ints(onnx::NodeProto &n, const char *attr, llvm::ArrayRef<int64_t> values) {
    onnx::AttributeProto &a = *n.add_attribute();
    a.set_name(attr);
    a.set_type(onnx::AttributeProto::INTS);
    for (int64_t v : values)
      a.add_ints(v);
  }
  static void integer(onnx::NodeProto &n, const char *attr, int64_t v) {
    onnx::AttributeProto &a = *n.add_attribute();
    a.set_name(attr);
    a.set_type(onnx::AttributeProto::INT);
    a.set_i(v);
  }
  static void real(onnx::NodeProto &n, const char *attr, float v) {
    onnx::AttributeProto &a = *n.add_attribute();
    a.set_name(attr);
    a.set_type(onnx::AttributeProto::FLOAT);
    a.set_f(v);
  }
  /// An int64 initializer (shapes, axes) named after `base`.
  std::string int64s(const std::string &base, llvm::ArrayRef<int64_t> values) {
    onnx::TensorProto &t = *g.add_initializer();
    t.set_name(base);
    t.set_data_type(onnx::TensorProto::INT64);
    t.add_dims(static_cast<int64_t>(values.size()));
    for (int64_t v : values)
      t.add_int64_data(v);
    return base;
  }
  void floats(const std::string &n, llvm::ArrayRef<int64_t> shape, const float *data, size_t count) {
    onnx::TensorProto &t = *g.add_initializer();
    t.set_name(n);
    t.set_data_type(onnx::TensorProto::FLOAT);
    for (int64_t d : shape)
      t.add_dims(d);
    t.set_raw_data(std::string(reinterpret_cast<const char *>(data), count * sizeof(float)));
  }

  /// One nn op as ONNX nodes; false when it has no counterpart.
  bool op(Operation *op) {
    auto in = [&](unsigned i) { return name(op->getOperand(i)); };
    Value out = op->getNumResults() ? op->getResult(0) : Value();
    auto unary = [&](const char *type) {
      node(type, {in(0)}, out);
      return true;
    };
    auto binary = [&](const char *type) {
      node(type, {in(0), in(1)}, out);
      return true;
    };
    if (isa<nn::AddOp>(op))
      return binary("Add");
    if (isa<nn::SubOp>(op))
      return binary("Sub");
    if (isa<nn::MulOp>(op))
      return binary("Mul");
    if (isa<nn::DivOp>(op))
      return binary("Div");
    if (isa<nn::PowOp>(op))
      return binary("Pow");
    if (isa<nn::MatmulOp>(op))
      return binary("MatMul");
    if (isa<nn::ReluOp>(op))
      return unary("Relu");
    if (isa<nn::SigmoidOp>(op))
      return unary("Sigmoid");
    if (isa<nn::TanhOp>(op))
      return unary("Tanh");
    if (isa<nn::ExpOp>(op))
      return unary("Exp");
    if (isa<nn::LogOp>(op))
      return unary("Log");
    if (isa<nn::SqrtOp>(op))
      return unary("Sqrt");
    if (isa<nn::AbsOp>(op))
      return unary("Abs");
    if (isa<nn::NegOp>(op))
      return unary("Neg");
    if (isa<nn::SoftplusOp>(op))
      return unary("Softplus");
    if (isa<nn::IdentityOp>(op))
      return unary("Identity");
    if (auto d = dyn_cast<nn::DropoutOp>(op)) // evaluation mode: the identity
      return !d.getTraining() && unary("Identity");
    if (auto l = dyn_cast<nn::LeakyReluOp>(op)) {
      real(node("LeakyRelu", {in(0)}, out), "alpha", l.getAlpha().convertToFloat());
      return true;
    }
    if (auto s = dyn_cast<nn::SoftmaxOp>(op)) {
      integer(node("Softmax", {in(0)}, out), "axis", s.getAxis());
      return true;
    }
    if (auto s = dyn_cast<nn::LogSoftmaxOp>(op)) {
      integer(node("LogSoftmax", {in(0)}, out), "axis", s.getAxis());
      return true;
    }
    if (auto r = dyn_cast<nn::ReshapeOp>(op)) {
      node("Reshape", {in(0), int64s(name(out) + "_shape", r.getShape())}, out);
      return true;
    }
    if (auto t = dyn_cast<nn::TransposeOp>(op)) {
      ints(node("Transpose", {in(0)}, out), "perm", t.getPerm());
      return true;
    }
    if (auto c = dyn_cast<nn::ConcatOp>(op)) {
      onnx::NodeProto &n = *g.add_node();
      n.set_op_type("Concat");
      n.set_name("Concat_" + std::to_string(g.node_size()));
      for (Value v : c.getInputs())
        n.add_input(name(v));
      n.add_output(name(out));
      integer(n, "axis", c.getAxis());
      return true;
    }
    if (auto c = dyn_cast<nn::Conv2dOp>(op)) {
      auto w = cast<RankedTensorType>(c.getWeight().getType());
      onnx::NodeProto &n = node("Conv", {in(0), in(1)}, out);
      ints(n, "kernel_shape", {w.getDimSize(2), w.getDimSize(3)});
      ints(n, "strides", c.getStride());
      auto p = c.getPadding();
      ints(n, "pads", {p[0], p[1], p[0], p[1]});
      integer(n, "group", c.getGroups());
      return true;
    }
    auto pool = [&](const char *type, llvm::ArrayRef<int64_t> k, llvm::ArrayRef<int64_t> s,
                    llvm::ArrayRef<int64_t> p) -> onnx::NodeProto & {
      onnx::NodeProto &n = node(type, {in(0)}, out);
      ints(n, "kernel_shape", k);
      ints(n, "strides", s);
      ints(n, "pads", {p[0], p[1], p[0], p[1]});
      return n;
    };
    if (auto m = dyn_cast<nn::MaxPool2dOp>(op)) {
      pool("MaxPool", m.getKernel(), m.getStride(), m.getPadding());
      return true;
    }
    if (auto a = dyn_cast<nn::AvgPool2dOp>(op)) {
      integer(pool("AveragePool", a.getKernel(), a.getStride(), a.getPadding()), "count_include_pad",
              a.getCountIncludePad());
      return true;
    }
    if (auto b = dyn_cast<nn::BatchNormOp>(op)) {
      if (b.getTraining())
        return false;
      onnx::NodeProto &n = node("BatchNormalization", {in(0), in(1), in(2), in(3), in(4)}, out);
      real(n, "epsilon", b.getEps().convertToFloat());
      real(n, "momentum", 1.0f - b.getMomentum().convertToFloat()); // ONNX weighs the running value
      return true;
    }
    if (auto r = dyn_cast<nn::ReduceSumOp>(op)) {
      onnx::NodeProto &n = node("ReduceSum", {in(0), int64s(name(out) + "_axes", r.getAxes())}, out);
      integer(n, "keepdims", r.getKeepdims());
      return true;
    }
    if (auto r = dyn_cast<nn::ReduceMeanOp>(op)) {
      onnx::NodeProto &n = node("ReduceMean", {in(0)}, out);
      ints(n, "axes", r.getAxes());
      integer(n, "keepdims", r.getKeepdims());
      return true;
    }
    if (auto r = dyn_cast<nn::ReduceMaxOp>(op)) {
      onnx::NodeProto &n = node("ReduceMax", {in(0)}, out);
      ints(n, "axes", r.getAxes());
      integer(n, "keepdims", r.getKeepdims());
      return true;
    }
    if (isa<nn::StepOp>(op)) { // x > 0 as 0 or 1
      float zero = 0.0f;
      floats(name(out) + "_zero", {}, &zero, 1);
      onnx::NodeProto &greater = *g.add_node();
      greater.set_op_type("Greater");
      greater.set_name("Greater_" + std::to_string(g.node_size()));
      greater.add_input(in(0));
      greater.add_input(name(out) + "_zero");
      greater.add_output(name(out) + "_positive");
      onnx::NodeProto &cast = node("Cast", {name(out) + "_positive"}, out);
      integer(cast, "to", onnx::TensorProto::FLOAT);
      return true;
    }
    if (auto n = dyn_cast<nn::GroupNormOp>(op))
      return groupNorm(n);
    if (auto n = dyn_cast<nn::LocalResponseNormOp>(op))
      return localResponseNorm(n);
    if (auto c = dyn_cast<nn::ConstantOp>(op)) {
      auto dense = dyn_cast<DenseElementsAttr>(c.getValue());
      auto type = cast<RankedTensorType>(out.getType());
      if (!dense || !type.getElementType().isF32())
        return false;
      std::vector<float> values(dense.getValues<float>().begin(), dense.getValues<float>().end());
      floats(name(out), type.getShape(), values.data(), values.size());
      return true;
    }
    return false;
  }

private:
  /// A node with inputs and an output named in full.
  onnx::NodeProto &raw(const char *type, std::initializer_list<std::string> inputs, const std::string &output) {
    onnx::NodeProto &n = *g.add_node();
    n.set_op_type(type);
    n.set_name(std::string(type) + "_" + std::to_string(g.node_size()));
    for (const std::string &i : inputs)
      n.add_input(i);
    n.add_output(output);
    return n;
  }

  /// Group normalization (ONNX's own op is opset 18): the groups as the
  /// channels of an InstanceNormalization over [N, G, rest], then the
  /// per-channel scale and shift, as torch.onnx exports it.
  bool groupNorm(nn::GroupNormOp op) {
    auto type = cast<RankedTensorType>(op.getInput().getType());
    if (type.getRank() < 2)
      return false;
    for (int64_t i = 1; i < type.getRank(); ++i)
      if (type.isDynamicDim(i))
        return false;
    int64_t groups = op.getGroups(), channels = type.getDimSize(1);
    std::string base = name(op.getResult());
    std::vector<float> ones(static_cast<size_t>(groups), 1.0f), zeros(static_cast<size_t>(groups), 0.0f);
    floats(base + "_ones", {groups}, ones.data(), ones.size());
    floats(base + "_zeros", {groups}, zeros.data(), zeros.size());
    raw("Reshape", {name(op.getInput()), int64s(base + "_grouped", {0, groups, -1})}, base + "_g");
    real(raw("InstanceNormalization", {base + "_g", base + "_ones", base + "_zeros"}, base + "_n"), "epsilon",
         op.getEps().convertToFloat());
    SmallVector<int64_t> back = {0};
    for (int64_t i = 1; i < type.getRank(); ++i)
      back.push_back(type.getDimSize(i));
    raw("Reshape", {base + "_n", int64s(base + "_shape", back)}, base + "_x");
    SmallVector<int64_t> perChannel = {channels};
    for (int64_t i = 2; i < type.getRank(); ++i)
      perChannel.push_back(1);
    std::string gamma = base + "_gamma", beta = base + "_beta";
    raw("Reshape", {name(op.getGamma()), int64s(base + "_cshape", perChannel)}, gamma);
    raw("Reshape", {name(op.getBeta()), base + "_cshape"}, beta);
    raw("Mul", {base + "_x", gamma}, base + "_scaled");
    node("Add", {base + "_scaled", beta}, op.getResult());
    return true;
  }

  /// Local response normalization: ONNX's LRN for an odd window (the same
  /// channels as PyTorch's); an even one centres its window differently
  /// there, so its sum of squares is a 1x1 convolution with a band of ones.
  bool localResponseNorm(nn::LocalResponseNormOp op) {
    int64_t size = op.getSize();
    float alpha = op.getAlpha().convertToFloat(), beta = op.getBeta().convertToFloat(), k = op.getK().convertToFloat();
    if (size % 2 == 1) {
      onnx::NodeProto &n = node("LRN", {name(op.getInput())}, op.getResult());
      integer(n, "size", size);
      real(n, "alpha", alpha);
      real(n, "beta", beta);
      real(n, "bias", k);
      return true;
    }
    auto type = cast<RankedTensorType>(op.getInput().getType());
    if (type.getRank() != 4)
      return false;
    int64_t c = type.getDimSize(1);
    std::string base = name(op.getResult());
    std::vector<float> band(static_cast<size_t>(c * c), 0.0f);
    for (int64_t o = 0; o < c; ++o)
      for (int64_t i = std::max<int64_t>(0, o - size / 2); i <= std::min(c - 1, o + (size - 1) / 2); ++i)
        band[static_cast<size_t>(o * c + i)] = 1.0f;
    floats(base + "_band", {c, c, 1, 1}, band.data(), band.size());
    float coefficients[3] = {alpha / static_cast<float>(size), k, beta};
    floats(base + "_scale", {}, &coefficients[0], 1);
    floats(base + "_k", {}, &coefficients[1], 1);
    floats(base + "_beta", {}, &coefficients[2], 1);
    raw("Mul", {name(op.getInput()), name(op.getInput())}, base + "_sq");
    raw("Conv", {base + "_sq", base + "_band"}, base + "_sum");
    raw("Mul", {base + "_sum", base + "_scale"}, base + "_a");
    raw("Add", {base + "_a", base + "_k"}, base + "_b");
    raw("Pow", {base + "_b", base + "_beta"}, base + "_d");
    node("Div", {name(op.getInput()), base + "_d"}, op.getResult());
    return true;
  }

  onnx::GraphProto &g;
  llvm::DenseMap<Value, std::string> names;
  int next = 0;
};

void valueInfo(onnx::ValueInfoProto &v, const std::string &n, Type type, ArrayAttr dims) {
  v.set_name(n);
  auto t = cast<RankedTensorType>(type);
  onnx::TypeProto::Tensor &tt = *v.mutable_type()->mutable_tensor_type();
  tt.set_elem_type(t.getElementType().isF32() ? onnx::TensorProto::FLOAT : onnx::TensorProto::INT32);
  for (int64_t i = 0; i < t.getRank(); ++i) {
    onnx::TensorShapeProto::Dimension &d = *tt.mutable_shape()->add_dim();
    if (t.isDynamicDim(i)) {
      auto sym = dims && i < static_cast<int64_t>(dims.size()) ? dyn_cast<StringAttr>(dims[i]) : StringAttr();
      d.set_dim_param(sym ? sym.str() : "B");
    } else {
      d.set_dim_value(t.getDimSize(i));
    }
  }
}

} // namespace

int nnc::driver::exportOnnx(Loaded &m, const std::vector<rt::HostTensor> &tensors, const std::string &path) {
  func::FuncOp fn = m.model;
  onnx::ModelProto model;
  model.set_ir_version(onnx::IR_VERSION);
  model.set_producer_name("nnc");
  model.set_model_version(1);
  onnx::OperatorSetIdProto &opset = *model.add_opset_import();
  opset.set_domain("");
  opset.set_version(13);
  onnx::GraphProto &g = *model.mutable_graph();
  g.set_name(fn.getName().str());
  Exporter x(g);
  // What the outputs read (labels and the loss stay behind).
  auto ret = fn.front().getTerminator();
  std::vector<unsigned> outs;
  for (unsigned i = 0; i < fn.getNumResults(); ++i) {
    auto role = fn.getResultAttrOfType<StringAttr>(i, nn::attr::kRole);
    if (!role || role.getValue() != "loss")
      outs.push_back(i);
  }
  llvm::DenseSet<Value> needed = readByOutputs(fn);
  for (unsigned i = 0; i < fn.getNumArguments(); ++i) {
    Value a = fn.getArgument(i);
    if (!needed.contains(a))
      continue;
    std::string n = fn.getArgAttrOfType<StringAttr>(i, nn::attr::kName).str();
    x.setName(a, n);
    auto role = fn.getArgAttrOfType<StringAttr>(i, nn::attr::kRole);
    if (role && role.getValue() == "input") {
      valueInfo(*g.add_input(), n, a.getType(), fn.getArgAttrOfType<ArrayAttr>(i, nn::attr::kDims));
      continue;
    }
    auto it = std::find_if(tensors.begin(), tensors.end(), [&](const rt::HostTensor &t) { return t.name == n; });
    if (it == tensors.end())
      return userError("the checkpoint has no tensor '" + n + "' for the ONNX graph");
    auto type = cast<RankedTensorType>(a.getType());
    x.floats(n, type.getShape(), it->data.data(), it->data.size());
  }
  for (unsigned i : outs) {
    Value v = ret->getOperand(i);
    if (!isa<BlockArgument>(v))
      x.setName(v, fn.getResultAttrOfType<StringAttr>(i, nn::attr::kName).str());
  }
  std::vector<std::string> unsupported;
  for (Operation &op : fn.front().without_terminator()) {
    if (llvm::none_of(op.getResults(), [&](Value r) { return needed.contains(r); }))
      continue;
    if (!x.op(&op))
      unsupported.push_back(op.getName().getStringRef().str() + " at " + where(&op));
  }
  if (!unsupported.empty()) {
    std::string list;
    for (const std::string &u : unsupported)
      list += "\n  " + u;
    return userError(m.path + ": " + std::to_string(unsupported.size()) + " op(s) without an ONNX counterpart:" + list);
  }
  for (unsigned i : outs) {
    Value v = ret->getOperand(i);
    valueInfo(*g.add_output(), x.name(v), v.getType(), nullptr);
  }
  std::string bytes;
  if (!model.SerializeToString(&bytes))
    return userError("cannot serialize the ONNX model");
  return writeOutput(path, bytes);
}
#endif
