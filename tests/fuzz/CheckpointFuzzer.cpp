//===- CheckpointFuzzer.cpp - libFuzzer target for the checkpoint reader --===//
//
// Feeds arbitrary bytes to the safetensors reader and, when it accepts
// them, restores them into a small model (an f32 parameter and an i32
// tensor), as `--resume` and `eval` do. Any crash, sanitizer report, leak or
// time-out is a bug: every file must be read or refused with a message.
//
//===----------------------------------------------------------------------===//

#include "runtime/Checkpoint.h"
#include "runtime/Training.h"

#include <cstddef>
#include <cstdint>
#include <string>

namespace {

using namespace nnc::rt;

/// A model holding "w" (f32 [2, 3]) and "n" (i32 [2]).
class Tiny : public Trainable {
public:
  std::string modelName() const override { return "tiny"; }
  const char *backendName() const override { return "fuzz"; }
  const std::vector<ModelInput> &inputs() const override { return ins; }
  Status step(const std::vector<HostTensor> &, double &loss) override {
    loss = 0;
    return Status::ok();
  }
  Status evaluate(const std::vector<HostTensor> &, std::vector<HostTensor> &, double &) override {
    return Status::ok();
  }
  std::vector<std::string> stateNames() const override { return {"w", "n"}; }
  Status getState(const std::string &name, HostTensor &out) const override {
    out = name == "w" ? w : n;
    return Status::ok();
  }
  Status setState(const std::string &name, const HostTensor &value) override {
    (name == "w" ? w : n).data = value.data;
    return Status::ok();
  }
  uint64_t steps() const override { return count; }
  void setSteps(uint64_t s) override { count = s; }
  double learningRate() const override { return 0; }
  void setLearningRate(double) override {}
  bool isInteger(const std::string &name) const override { return name == "n"; }

private:
  std::vector<ModelInput> ins;
  HostTensor w{"w", {2, 3}, Floats(6)}, n{"n", {2}, Floats(2)};
  uint64_t count = 0;
};

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  std::string bytes(reinterpret_cast<const char *>(data), size);
  std::vector<HostTensor> tensors;
  Metadata meta;
  if (!parseCheckpoint(bytes, "fuzz.safetensors", tensors, meta))
    return 0;
  // Accepted files must be self-consistent: every tensor's data matches its shape.
  for (const HostTensor &t : tensors)
    if (static_cast<int64_t>(t.data.size()) != t.numel())
      __builtin_trap();
  Tiny model;
  (void)restoreFrom(model, tensors, meta, "fuzz.safetensors");
  return 0;
}
