//===- Training.h - the training loop, on any backend -----------*- C++ -*-===//
//
// What `nnc train`, `nnc eval` and a binary made by `nnc build` share: data
// bound to a model's inputs, the epoch loop (seeded shuffling, mini-batches
// with a ragged last one, progress, evaluation, metrics, checkpoints,
// resume), and scoring. A backend is anything that implements `Trainable`:
// the JIT (through the compiler), the reference evaluator, or code linked
// ahead of time. The same loop over the same compiled code gives the same
// numbers, whichever program runs it.
//
//===----------------------------------------------------------------------===//

#ifndef NNC_RUNTIME_TRAINING_H
#define NNC_RUNTIME_TRAINING_H

#include "runtime/Call.h"
#include "runtime/Checkpoint.h"
#include "runtime/Data.h"
#include "runtime/Status.h"
#include "runtime/Tensor.h"

#include <cstdint>
#include <string>
#include <vector>

namespace nnc::rt {

/// One model input as the data sees it: its sizes after the batch axis.
struct ModelInput {
  std::string name;
  std::vector<int64_t> dims;
  int64_t width = 1; // product of dims
  bool integer = false;
  /// For i32 inputs used as class labels: the class count, so that data is
  /// checked to lie in [0, classes) when it is loaded (0: not a label).
  int64_t classes = 0;
};

/// A model with its state (parameters, statistics, optimizer state, step)
/// on some backend.
class Trainable {
public:
  virtual ~Trainable();
  virtual std::string modelName() const = 0;
  virtual const char *backendName() const = 0;
  virtual const std::vector<ModelInput> &inputs() const = 0;
  /// One training step on a mini-batch (one tensor per input, batch axis
  /// first); `loss` is the loss before the update.
  virtual Status step(const std::vector<HostTensor> &batch, double &loss) = 0;
  /// Starts a training step; a backend that runs steps asynchronously (a
  /// device) writes `*loss` by the next sync() and may hold up to
  /// stepsInFlight() steps before one. By default the step runs at once.
  virtual Status stepAsync(const std::vector<HostTensor> &batch, double *loss) {
    return step(batch, *loss);
  }
  virtual Status sync() { return Status::ok(); }
  virtual int64_t stepsInFlight() const { return 1; }
  /// The model in evaluation mode: its outputs (the loss excluded) and loss.
  virtual Status evaluate(const std::vector<HostTensor> &batch, std::vector<HostTensor> &outputs,
                          double &loss) = 0;
  /// Everything a checkpoint holds, by name, in a fixed order.
  virtual std::vector<std::string> stateNames() const = 0;
  virtual Status getState(const std::string &name, HostTensor &out) const = 0;
  /// Replaces a state tensor; its shape must match.
  virtual Status setState(const std::string &name, const HostTensor &value) = 0;
  virtual uint64_t steps() const = 0;
  virtual void setSteps(uint64_t steps) = 0;
  /// Whether state tensor `name` is a constant of the model, which a
  /// checkpoint may not change: a frozen tensor with written-out values,
  /// which compiled code may have folded in.
  virtual bool isConstant(const std::string &name) const { return false; }
  /// The learning rate the next steps use: the optimizer's `lr` until
  /// setLearningRate changes it (a schedule, between steps).
  virtual double learningRate() const = 0;
  virtual void setLearningRate(double lr) = 0;
  /// In a data-parallel run, the next steps' batch is rows [row, row + B)
  /// of the global batch: dropout draws the masks one process would draw
  /// for those rows. A backend that does not train data-parallel ignores it.
  virtual void setFirstRow(int64_t row) {}
  /// In a data-parallel run, this rank's share of the next steps' global
  /// batch, for a backend whose collectives weight the ranks' gradients
  /// themselves (CUDA's NCCL; the CPU's take it from rt::Group).
  virtual void setShare(double share) {}
  /// In a data-parallel run whose collectives run on the device (CUDA's
  /// NCCL): the seconds they ran and the seconds the computation waited
  /// for them, over the steps synced since the last call. False where the
  /// backend's communication is rt::Group's (the CPU's MPI).
  virtual bool takeDeviceTraffic(double &busy, double &waited) { return false; }
  /// Whether state tensor `name` is i32 (labels, indices): a checkpoint
  /// stores it as I32.
  virtual bool isInteger(const std::string &name) const { return false; }
};

/// Where data comes from: `kind` is mnist (a directory of IDX files,
/// gzipped or not), csv, cifar10, npz, npy (a directory of .npy files) or
/// images (a folder of class folders); the test set comes with the data
/// (MNIST's t10k, CIFAR-10's test_batch, `NAME_test` arrays, a test/
/// folder) or from `testKind` and `testPath`.
struct DataSource {
  std::string kind;
  std::string path;
  std::string testKind, testPath;
};

/// The kind of the data at `path` when none is named: csv and npz by
/// extension; a directory by what it holds.
std::string guessKind(const std::string &path);

/// What turns rows into batches: transforms of input `input` (the model's
/// first f32 input, of sizes `dims`), seeded by `seed`.
struct Pipeline {
  std::vector<Call> transforms;
  int input = -1;
  std::vector<int64_t> dims;
  uint64_t seed = 0;
  bool empty() const { return transforms.empty(); }
};

/// The training set and the set each epoch is scored on, bound to the
/// model's inputs.
struct BoundData {
  Table train, test;
  bool hasTest = false;
  /// What the scored set is called: "test" (a set of its own) or
  /// "validation" (held out of the training set).
  std::string testName = "test";
  /// Class names, when the data names them (an image folder).
  std::vector<std::string> classNames;
  Pipeline pipeline;
};

/// Loads `source` and binds it to `inputs`; `validation` > 0 splits that
/// fraction of the training set off as the scored set (instead of a test
/// set that comes with the data).
Status loadData(const DataSource &source, const std::vector<ModelInput> &inputs,
                double validation, uint64_t seed, BoundData &out);

/// Sets the transforms of `data` (checked against the model's first f32
/// input).
Status setTransforms(BoundData &data, const std::vector<ModelInput> &inputs, const std::vector<Call> &transforms,
                     uint64_t seed);

/// How a table's fields meet the model's inputs: consecutive columns in
/// input order, by type (an image field and a label field), or by name.
enum class Binding { ByPosition, ByType, ByName };

/// ByName when every input names a field of `t` (a CSV header, arrays),
/// else ByPosition.
Binding bindingOf(const Table &t, const std::vector<ModelInput> &inputs);

/// Regroups a data set's fields into one field per model input (ByType:
/// images and labels, moved out of `data`). Checks what the compiled code
/// cannot: i32 inputs hold whole numbers, and labels lie in [0, classes);
/// errors name the file and row.
Status bindInputs(Table &&data, const std::vector<ModelInput> &inputs, Binding binding, Table &out);

/// The tensors of the rows `indices` of a bound table.
Status batchOf(const Table &t, const std::vector<ModelInput> &inputs, const std::vector<int64_t> &indices,
               std::vector<HostTensor> &out);
/// The same into `out`, reusing its storage (a training loop gathers every
/// batch into the same memory instead of fresh pages each step). With a
/// pipeline, its transforms apply: all of them to training batches
/// (`epoch` > 0), the deterministic ones otherwise.
/// An error names a row that cannot be read (a streamed file that fails).
Status batchInto(const Table &t, const std::vector<ModelInput> &inputs, const std::vector<int64_t> &indices,
                 std::vector<HostTensor> &out, const Pipeline *pipeline = nullptr, int64_t epoch = 0);

struct Score {
  double loss = 0;
  /// A classifier (i32 labels against the first output's argmax, or a 0/1
  /// target against the first output thresholded at 0.5): top-1 and top-k
  /// accuracy, and the confusion matrix (row: label, column: prediction).
  bool hasAccuracy = false;
  double accuracy = 0;
  int64_t k = 0;
  double topK = 0;
  int64_t classes = 0;
  std::vector<int64_t> confusion;
  /// A regression (an f32 target the first output estimates, element by
  /// element): mean squared and absolute error, and R^2.
  bool hasRegression = false;
  double mse = 0, mae = 0, r2 = 0;
};

/// Samples score() evaluates at once when no batch is given.
constexpr int64_t kEvalChunk = 1000;

/// Loss and metrics of the model in evaluation mode over a whole table, in
/// batches of `batch` (training's, so that a summed loss means the same as
/// in training's lines); top-`k` accuracy too when `k` > 1.
Status score(Trainable &m, const Table &data, Score &out, int64_t batch = kEvalChunk,
             const Pipeline *pipeline = nullptr, int64_t k = 5);

/// Checkpoints of a model's whole state, with its name, epoch, step, seed
/// and `extra` metadata.
Status saveState(Trainable &m, const std::string &path, int64_t epoch, uint64_t seed,
                 const Metadata &extra = {});
/// Restores every state tensor and the step; `meta` gets the metadata.
Status restoreState(Trainable &m, const std::string &path, Metadata &meta);
/// restoreState from a checkpoint already read (`path` names it in errors):
/// every tensor's presence, shape and dtype and the metadata are checked
/// before any state changes.
Status restoreFrom(Trainable &m, const std::vector<HostTensor> &tensors, Metadata &meta,
                   const std::string &path);

/// Metadata `key` of checkpoint `path` as a whole number in [0, max];
/// absent reads as 0.
Status metaInteger(const std::string &path, Metadata &meta, const char *key, int64_t max, int64_t &out);

/// The most epochs a run or a checkpoint may name.
constexpr int64_t kMaxEpochs = 1000000;

struct TrainOptions {
  int64_t epochs = 1, batch = 32;
  uint64_t seed = 0;
  bool shuffle = true;
  int64_t limit = -1; // train on the first `limit` samples only
  std::string checkpoint, metrics;
  bool resume = false;
  /// Appends to an existing metrics file instead of starting a new one
  /// (a resumed run always appends).
  bool append = false;
  std::string tool = "nnc"; // error messages start with "TOOL: error: "
  /// The command that resumes this run, printed when a signal stops it.
  std::string resumeCommand;
  /// A learning-rate schedule (name empty: the optimizer's rate throughout).
  Call schedule;
  /// Early stopping: after `patience` epochs (0: never) in which `monitor`
  /// ("loss" or "accuracy" of the scored set) did not improve by more
  /// than `minDelta`. `saveBest` keeps the best epoch's state there.
  int64_t patience = 0;
  std::string monitor = "loss";
  double minDelta = 0;
  std::string saveBest;
  /// Top-k accuracy reported beside top-1 (classifiers with more classes).
  int64_t topK = 5;
  /// 0: errors and the final line only; 1: a line per epoch; 2: also where
  /// the time goes (data loading against the steps).
  int verbosity = 1;
  /// A data-parallel run (runtime/Distributed.h): whether the loss sums
  /// over the batch (the ranks' losses add up, instead of averaging), and
  /// whether to check after each epoch that the replicas hold one state.
  bool lossIsSum = false;
  bool verifyReplicas = false;
  /// Every setting of the run, recorded in the metrics file.
  std::vector<std::pair<std::string, std::string>> settings;
};

/// Trains `m` on `data` for the options' epochs, printing a line per epoch
/// (and live progress on a terminal); evaluates after each epoch, appends
/// metrics, saves checkpoints. SIGINT or SIGTERM stops it after the current
/// step, saving a checkpoint that resumes at that step. Returns a process
/// exit code: 0, 1, or 128 + the signal.
int train(Trainable &m, BoundData &data, const TrainOptions &options);

} // namespace nnc::rt

#endif // NNC_RUNTIME_TRAINING_H
