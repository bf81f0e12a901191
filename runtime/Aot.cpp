//===- Aot.cpp - training binaries made by `nnc build` --------------------===//

#include "runtime/Aot.h"

#include "runtime/CudaModel.h"
#include "runtime/Distributed.h"
#include "runtime/Nccl.h"
#include "runtime/Schedule.h"
#include "runtime/StateDict.h"
#include "runtime/System.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <new>
#include <stdexcept>
#include <malloc.h>
#include <tuple>

using namespace nnc;
using namespace nnc::rt;

namespace {

void usage(const ModelDesc &m, const char *argv0, FILE *out) {
  std::fprintf(out,
               "usage: %s [options]\n"
               "Trains model '%s' (compiled ahead of time by nnc build).\n\n"
               "  --data PATH         training data: a path or KIND(\"path\") (default: %s)\n"
               "  --test PATH         a separate test set, given as --data is\n"
               "  --epochs N          epochs (default %lld)\n"
               "  --batch N           mini-batch size (default %lld)\n"
               "  --seed N            initialization and shuffling seed (default %llu)\n"
               "  --threads N         worker threads (default: every core)\n"
               "  --checkpoint PATH   save a safetensors checkpoint after every epoch\n"
               "  --resume            continue from --checkpoint\n"
               "  --init-from FILE    start from a PyTorch state_dict saved as safetensors\n"
               "  --strict            with --init-from: every tensor must fit exactly\n"
               "  --metrics PATH      per-epoch metrics: CSV, or JSON lines (.json, .jsonl)\n"
               "  --append            append to the --metrics file\n"
               "  --schedule CALL     learning-rate schedule, e.g. cosine(t_max=10) (none: off)\n"
               "  --patience N        stop after N epochs without improvement of --monitor\n"
               "  --monitor M         loss or accuracy (of the validation or test set)\n"
               "  --save-best PATH    keep the checkpoint of the best epoch\n"
               "  --quiet             errors and the last epoch's line only\n"
               "  --verbose           every epoch, and the time spent loading data\n"
               "  --limit N           train on the first N samples only\n"
               "  --validation F      hold out a fraction F of the training set\n"
               "  --distributed MODE  auto (MPI when mpirun or srun started several ranks; NCCL on a CUDA device),\n"
               "                      mpi, nccl or none\n"
               "  --global-batch N    rows per step over all ranks (instead of --batch per rank)\n"
               "  --verify-replicas   check after each epoch that every rank holds the same state\n"
               "  --help              this text\n",
               argv0, m.name.c_str(), m.dataPath.empty() ? "none" : m.dataPath.c_str(),
               static_cast<long long>(m.epochs), static_cast<long long>(m.batch),
               static_cast<unsigned long long>(m.seed));
}

/// A program built with --data-parallel joins the run its launcher started
/// (runtime/Distributed.h): each rank trains on its shard of a global
/// batch, and rank 0 alone prints. Errors are printed by rank 0 alone and
/// fail every rank (the exit code, or 0 to go on).
int joinRun(const ModelDesc &m, std::map<std::string, std::string> &given, TrainOptions &o, const char *tool) {
  LaunchInfo launch = detectLaunch();
  auto refuse = [&](const std::string &message) {
    if (launch.rank == 0)
      std::fprintf(stderr, "%s: error: %s\n", tool, message.c_str());
    return 1;
  };
  DistributedMode mode = DistributedMode::Auto;
  if (given.count("--distributed") && !parseDistributedMode(given["--distributed"], mode))
    return refuse("--distributed must be auto, mpi, nccl or none, got '" + given["--distributed"] + "'");
  // Gradients are combined where they are: by MPI on the CPU, by NCCL on a
  // CUDA device.
  bool gpu = !m.trainStep.call;
  if (mode == DistributedMode::Nccl && !gpu)
    return refuse("--distributed=nccl is for programs built with --target=cuda; this one trains on the CPU (MPI)");
  if (mode == DistributedMode::Mpi && gpu)
    return refuse("--distributed=mpi is for programs that train on the CPU; this one trains on a CUDA device "
                  "(--distributed=nccl)");
  if (!m.dataParallel) {
    if (mode == DistributedMode::Mpi || mode == DistributedMode::Nccl || given.count("--global-batch") ||
        (mode == DistributedMode::Auto && launch.size > 1))
      return refuse("this program trains in one process: build it with `nnc build --data-parallel` to train with " +
                    (launch.size > 1 ? "the " + std::to_string(launch.size) + " ranks " + launch.launcher + " started"
                                     : std::string("MPI")));
    return 0;
  }
  if (Status s = Group::join(mode); !s)
    return refuse(s.message());
  std::atexit(Group::leave);
  if (NcclLibrary nccl; gpu && Group::current())
    if (Status s = loadNccl(nccl); !s)
      return refuse(s.message());
  Group *g = Group::current();
  if (!g)
    return given.count("--global-batch") ? refuse("--global-batch is for a data-parallel run (started by mpirun or "
                                                  "srun); use --batch")
                                         : 0;
  if (given.count("--global-batch")) {
    char *end = nullptr;
    long long global = std::strtoll(given["--global-batch"].c_str(), &end, 10);
    if (*end || global < 1 || given.count("--batch"))
      return refuse("--global-batch takes a positive number of rows, and excludes --batch");
    if (global % g->size() != 0)
      return refuse("--global-batch " + std::to_string(global) + " is not a multiple of the " +
                    std::to_string(g->size()) + " ranks");
    o.batch = global / g->size();
  }
  o.lossIsSum = m.lossIsSum;
  o.verifyReplicas = given.count("--verify-replicas") != 0;
  if (g->rank() != 0) {
    given.erase("--verbose");
    given["--quiet"] = "1";
  }
  if (!given.count("--threads"))
    given["--threads"] = std::to_string(defaultThreadsPerRank(launch));
  return 0;
}

} // namespace

static int run(const ModelDesc &m, int argc, char **argv);

int rt::aot::main(const ModelDesc &m, int argc, char **argv) {
  // An allocation failure ends the program with a message, never an abort.
  try {
    return run(m, argc, argv);
  } catch (const std::bad_alloc &) {
    std::fprintf(stderr, "%s: error: out of memory (%s available)\n", argc > 0 ? argv[0] : "train",
                 formatBytes(availableMemory()).c_str());
  } catch (const std::length_error &e) {
    std::fprintf(stderr, "%s: error: a size too large to allocate (%s)\n", argc > 0 ? argv[0] : "train", e.what());
  }
  return 1;
}

static int run(const ModelDesc &m, int argc, char **argv) {
  // Training allocates and frees the same large tensors every step; keep
  // freed memory in the process instead of returning it to the kernel and
  // faulting it back in.
  mallopt(M_MMAP_THRESHOLD, 256 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  const char *tool = argc > 0 ? argv[0] : "train";
  auto bad = [&](const std::string &message) {
    std::fprintf(stderr, "%s: error: %s\n(see --help)\n", tool, message.c_str());
    return 2;
  };
  TrainOptions o;
  o.tool = tool;
  o.epochs = m.epochs;
  o.batch = m.batch;
  o.seed = m.seed;
  o.shuffle = m.shuffle;
  double validation = m.validation;
  DataSource source{m.dataKind, m.dataPath};
  int64_t threads = 0;
  bool strict = false;
  std::map<std::string, std::string> given;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      usage(m, tool, stdout);
      return 0;
    }
    if (a == "--resume") {
      o.resume = true;
      continue;
    }
    if (a == "--strict") {
      strict = true;
      continue;
    }
    if (a == "--quiet" || a == "--verbose" || a == "--append" || a == "--verify-replicas") {
      given[a] = "1";
      continue;
    }
    static const char *valued[] = {"--data",       "--epochs",  "--batch",      "--seed",     "--threads",
                                   "--checkpoint", "--metrics", "--limit",      "--validation", "--init-from",
                                   "--test",       "--schedule", "--patience",  "--monitor",  "--save-best",
                                   "--distributed", "--global-batch"};
    std::string value;
    size_t eq = a.find('=');
    std::string key = eq == std::string::npos ? a : a.substr(0, eq);
    if (std::find(std::begin(valued), std::end(valued), key) == std::end(valued))
      return bad("unknown option '" + a + "'");
    if (eq != std::string::npos) {
      value = a.substr(eq + 1);
    } else {
      if (i + 1 >= argc)
        return bad(key + " needs a value");
      value = argv[++i];
    }
    given[key] = value;
  }
  if (int rc = joinRun(m, given, o, tool))
    return rc;
  auto integer = [&](const std::string &key, int64_t &out, int64_t min) -> bool {
    auto it = given.find(key);
    if (it == given.end())
      return true;
    char *end = nullptr;
    errno = 0;
    long long v = std::strtoll(it->second.c_str(), &end, 10);
    if (it->second.empty() || *end || errno == ERANGE || v < min)
      return false;
    out = v;
    return true;
  };
  int64_t seed = static_cast<int64_t>(o.seed);
  o.patience = m.patience;
  o.topK = m.topK;
  o.minDelta = m.minDelta;
  o.monitor = given.count("--monitor") ? given["--monitor"] : m.monitor;
  if (o.monitor != "loss" && o.monitor != "accuracy")
    return bad("--monitor must be loss or accuracy");
  o.saveBest = given["--save-best"];
  o.append = given.count("--append") != 0;
  if (given.count("--quiet") && given.count("--verbose"))
    return bad("--quiet and --verbose exclude each other");
  o.verbosity = given.count("--quiet") ? 0 : given.count("--verbose") ? 2 : 1;
  std::string schedule = given.count("--schedule") ? given["--schedule"] : m.schedule;
  if (!schedule.empty() && schedule != "none") {
    Status s = parseCall(schedule, o.schedule);
    if (s)
      s = checkSchedule(o.schedule);
    if (!s)
      return bad("--schedule: " + s.message());
  }
  std::vector<Call> transforms;
  if (Status s = parseCallList(m.transforms, transforms); !s)
    return bad(s.message());
  for (auto [key, out, min] : {std::tuple<const char *, int64_t *, int64_t>{"--epochs", &o.epochs, 1},
                               {"--batch", &o.batch, 1},
                               {"--seed", &seed, 0},
                               {"--threads", &threads, 1},
                               {"--limit", &o.limit, 1},
                               {"--patience", &o.patience, 1}})
    if (!integer(key, *out, min))
      return bad(std::string(key) + " needs an integer of at least " + std::to_string(min) +
                 ", got '" + given[key] + "'");
  o.seed = static_cast<uint64_t>(seed);
  if (given.count("--validation")) {
    char *end = nullptr;
    validation = std::strtod(given["--validation"].c_str(), &end);
    if (*end || !(validation >= 0 && validation < 1))
      return bad("--validation needs a fraction in [0, 1), got '" + given["--validation"] + "'");
  }
  source.testKind = m.testKind;
  source.testPath = m.testPath;
  for (auto [flag, kind, path] : {std::tuple{"--data", &source.kind, &source.path},
                                  std::tuple{"--test", &source.testKind, &source.testPath}}) {
    if (!given.count(flag))
      continue;
    const std::string &v = given[flag];
    if (v.find('(') == std::string::npos) {
      *path = v;
      *kind = guessKind(v);
      continue;
    }
    Call call;
    if (Status s = parseCall(v, call); !s || call.args.size() != 1 || !call.args[0].isString)
      return bad(std::string(flag) + " takes a path or KIND(\"path\")");
    *kind = call.name;
    *path = call.args[0].text;
  }
  o.checkpoint = given["--checkpoint"];
  o.metrics = given["--metrics"];
  if (o.resume && o.checkpoint.empty())
    return bad("--resume needs --checkpoint PATH");
  if (source.path.empty())
    return bad("no training data; give --data PATH");
  // The OpenMP runtime reads its thread count when the first parallel loop runs.
  if (threads > 0)
    if (std::string note = setThreads(threads); !note.empty())
      std::fprintf(stderr, "%s: note: %s\n", tool, note.c_str());
  if (o.epochs > kMaxEpochs)
    return bad("--epochs must be at most " + std::to_string(kMaxEpochs));
  // The command that resumes this run: the same arguments and --resume.
  o.resumeCommand = argv[0];
  for (int i = 1; i < argc; ++i)
    if (std::string(argv[i]) != "--resume")
      o.resumeCommand += std::string(" ") + argv[i];
  o.resumeCommand += " --resume";

  auto fail = [&](const Status &s) {
    std::fprintf(stderr, "%s: error: %s\n", tool, s.message().c_str());
    return 1;
  };
  // Code for the CPU, or CUDA modules for a device.
  std::unique_ptr<Trainable> model;
  BoundData data;
  if (m.trainStep.call) {
    // The data first: what must fit is known before the model allocates.
    if (Status s = loadData(source, StepLayout(m.trainStep).inputs, validation, o.seed, data); !s)
      return fail(s);
    int64_t scored = data.hasTest ? data.test.count : data.train.count; // what each epoch evaluates
    int64_t evalBatch = std::min<int64_t>(kEvalChunk, std::max<int64_t>(1, scored));
    int64_t trained = o.limit > 0 ? std::min(o.limit, data.train.count) : data.train.count;
    if (Status s = checkFits(m, std::min(o.batch, std::max<int64_t>(1, trained)), evalBatch,
                             data.train.bytes() + data.test.bytes());
        !s)
      return fail(s);
    auto cpu = std::make_unique<CompiledModel>(m, o.seed, "cpu, ahead of time");
    if (Status s = cpu->initialize(); !s)
      return fail(s);
    model = std::move(cpu);
  } else {
    // A data-parallel rank on the GPU of its place among the machine's ranks.
    CudaDriver driver;
    if (Status s = loadCudaDriver(driver, Group::current() ? detectLaunch().localRank : 0); !s)
      return fail(Status::error("this program trains on a CUDA device: " + s.message()));
    auto gpu = std::make_unique<CudaModel>(m, o.seed, driver);
    if (Status s = gpu->initialize(); !s)
      return fail(s);
    if (Group::current()) {
      std::unique_ptr<NcclComm> comm;
      if (Status s = joinDevices(comm); !s)
        return fail(s);
      if (Status s = gpu->attach(std::move(comm), distributedTimeLimit()); !s)
        return fail(s);
    }
    std::printf("device: %s\n", driver.device.c_str());
    model = std::move(gpu);
  }
  if (!m.trainStep.call)
    if (Status s = loadData(source, model->inputs(), validation, o.seed, data); !s)
      return fail(s);
  if (Status s = setTransforms(data, model->inputs(), transforms, o.seed); !s)
    return fail(s);
  o.settings = {{"program", tool},
                {"data", source.kind + "(" + source.path + ")"},
                {"epochs", std::to_string(o.epochs)},
                {"batch", std::to_string(o.batch)},
                {"seed", std::to_string(o.seed)},
                {"lr", std::to_string(model->learningRate())},
                {"schedule", o.schedule.name.empty() ? "none" : o.schedule.text()},
                {"transform", callListText(transforms)},
                {"validation", std::to_string(validation)}};
  if (std::string from = given["--init-from"]; !from.empty()) {
    std::vector<std::string> names;
    for (const TensorDesc &t : m.trainStep.args)
      if (t.role == "param" || t.role == "frozen" || t.role == "state")
        names.push_back(t.name);
    LoadReport report;
    if (Status s = initFrom(*model, names, from, strict, report); !s)
      return fail(s);
    std::printf("init-from %s", report.describe(from).c_str());
  }
  if (Group::current())
    o.settings.push_back({"ranks", std::to_string(Group::current()->size())});
  if (Status s = checkSameRun(o.settings, m.name); !s) {
    if (isLeader())
      fail(s);
    return 1;
  }
  return train(*model, data, o);
}
