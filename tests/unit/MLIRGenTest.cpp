//===- MLIRGenTest.cpp - .nn to the nn dialect ----------------------------===//

#include "compiler/frontend/MLIRGen.h"
#include "dialects/nn/NNDialect.h"
#include "dialects/nn/NNOps.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"

#include "llvm/Support/SourceMgr.h"

#include <gtest/gtest.h>

using namespace mlir;

namespace {

struct Lowered {
  MLIRContext ctx;
  llvm::SourceMgr sm;
  OwningOpRef<ModuleOp> module;
  std::vector<std::string> errors;

  explicit Lowered(llvm::StringRef text) {
    ctx.loadDialect<nnc::nn::NNDialect, func::FuncDialect>();
    ScopedDiagnosticHandler handler(&ctx, [&](Diagnostic &d) {
      errors.push_back(d.str());
      return success();
    });
    sm.AddNewSourceBuffer(llvm::MemoryBuffer::getMemBufferCopy(text, "t.nn"), llvm::SMLoc());
    if (auto file = nnc::parseSource(sm, ctx))
      module = nnc::mlirGen(ctx, *file, "t.nn");
  }

  func::FuncOp fn() { return *module->getOps<func::FuncOp>().begin(); }
  std::string argName(unsigned i) {
    return fn().getArgAttrOfType<StringAttr>(i, nnc::nn::attr::kName).str();
  }
  std::string argRole(unsigned i) {
    return fn().getArgAttrOfType<StringAttr>(i, nnc::nn::attr::kRole).str();
  }
};

TEST(MLIRGen, LayersDeclareNamedParameters) {
  Lowered l("model m {\n"
            "  input x: f32[B, 1, 8, 8]\n"
            "  c = relu(batch_norm(conv2d(x, 4, kernel=3, padding=1)))\n"
            "  y = dense(flatten(c), 3)\n"
            "  z = dense(dense(y, 5), 2)\n"
            "  output z\n"
            "}\n");
  ASSERT_TRUE(l.module) << (l.errors.empty() ? "" : l.errors[0]);
  std::vector<std::string> names;
  for (unsigned i = 0; i < l.fn().getNumArguments(); ++i)
    names.push_back(l.argName(i) + ":" + l.argRole(i));
  EXPECT_EQ(names, (std::vector<std::string>{
                       "x:input", "c.w:param", "c.b:param", "c.gamma:param", "c.beta:param",
                       "c.running_mean:state", "c.running_var:state", "y.w:param",
                       "y.b:param", "z.w:param", "z.b:param", "z_1.w:param", "z_1.b:param"}));
  auto w = cast<RankedTensorType>(l.fn().getArgument(1).getType());
  EXPECT_EQ(w.getShape(), (ArrayRef<int64_t>{4, 1, 3, 3}));
  auto dw = cast<RankedTensorType>(l.fn().getArgument(7).getType());
  EXPECT_EQ(dw.getShape(), (ArrayRef<int64_t>{256, 3}));
}

TEST(MLIRGen, TorchDefaultInitRecordsFans) {
  Lowered l("model m {\n  input x: f32[B, 20]\n  y = dense(x, 7)\n  output y\n}\n");
  ASSERT_TRUE(l.module);
  auto init = l.fn().getArgAttrOfType<DictionaryAttr>(2, nnc::nn::attr::kInit);
  ASSERT_TRUE(init);
  EXPECT_EQ(cast<StringAttr>(init.get("kind")).getValue(), "torch_default");
  // The bias takes its fan-in from the weight: uniform(+-1/sqrt(20)).
  EXPECT_EQ(cast<IntegerAttr>(init.get("fan_in")).getInt(), 20);
}

TEST(MLIRGen, NumbersTakeTheTensorsElementType) {
  Lowered l("model m {\n  input y: i32[B]\n  z = y * 2 + 1\n  output z\n}\n");
  ASSERT_TRUE(l.module) << (l.errors.empty() ? "" : l.errors[0]);
  auto result = cast<RankedTensorType>(l.fn().getResultTypes()[0]);
  EXPECT_TRUE(result.getElementType().isInteger(32));
}

TEST(MLIRGen, ReportsEveryIndependentError) {
  Lowered l("model m {\n"
            "  input x: f32[B, 4]\n"
            "  a = relu(q)\n"
            "  b = a + 1\n"
            "  c = sigmod(x)\n"
            "  output b, c\n"
            "}\n");
  EXPECT_FALSE(l.module);
  ASSERT_EQ(l.errors.size(), 2u);
  EXPECT_EQ(l.errors[0], "unknown name 'q'");
  EXPECT_EQ(l.errors[1], "unknown function 'sigmod'; did you mean 'sigmoid'?");
}

TEST(MLIRGen, TrainSettingsBecomeAModuleAttribute) {
  Lowered l("model m {\n  input x: f32[B]\n  output x\n}\n"
            "train {\n  optimizer = adam(lr=0.01)\n  epochs = 3\n}\n");
  ASSERT_TRUE(l.module);
  auto train = (*l.module)->getAttrOfType<DictionaryAttr>(nnc::nn::attr::kTrain);
  ASSERT_TRUE(train);
  auto opt = cast<DictionaryAttr>(train.get("optimizer"));
  EXPECT_EQ(cast<StringAttr>(opt.get("kind")).getValue(), "adam");
  EXPECT_DOUBLE_EQ(cast<FloatAttr>(opt.get("lr")).getValueAsDouble(), 0.01);
  EXPECT_DOUBLE_EQ(cast<FloatAttr>(opt.get("beta2")).getValueAsDouble(), 0.999);
  EXPECT_EQ(cast<IntegerAttr>(train.get("epochs")).getInt(), 3);
}

TEST(MLIRGen, BuiltinTableHasEveryDocumentedFunction) {
  auto names = nnc::builtinNames();
  for (const char *n : {"relu", "sigmoid", "tanh", "softplus", "leaky_relu", "softmax",
                        "log_softmax", "identity", "step", "dense", "conv2d", "max_pool2d",
                        "avg_pool2d", "batch_norm", "group_norm", "local_response_norm",
                        "dropout", "mse", "mae", "binary_cross_entropy", "cross_entropy",
                        "softmax_cross_entropy", "l2", "sum", "mean", "max", "reshape",
                        "flatten", "transpose", "concat", "argmax", "one_hot", "exp", "log",
                        "sqrt", "abs", "neg", "pow"})
    EXPECT_NE(std::find(names.begin(), names.end(), n), names.end()) << n;
}

} // namespace
