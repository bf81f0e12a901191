#!/usr/bin/env python3
"""Data-parallel training with Open MPI (runtime/Distributed.h), 2 ranks on
this machine over loopback: N ranks of batch b train as one process of
batch N*b (per-epoch losses within f32 reduction-order tolerance, the same
accuracy), replicas stay identical, bad launches fail on every rank with
one line from rank 0, a rank that dies stops the run, and a checkpoint
resumes with another number of ranks.

usage: check_data_parallel.py NNC    (exit 77: mpirun is not installed)
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

NNC = os.path.abspath(sys.argv[1])
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = os.path.join(ROOT, "examples")
MNIST = os.path.join(EXAMPLES, "data", "mnist")
MPIRUN = shutil.which("mpirun")
if not MPIRUN:
    print("skipped: mpirun not found (scripts/setup.sh installs openmpi-bin)")
    sys.exit(77)

ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMPI_MCA_btl="self,tcp", OMPI_MCA_btl_tcp_if_include="lo", OMPI_MCA_oob_tcp_if_include="lo",
           OMPI_MCA_rmaps_base_oversubscribe="1", OMPI_MCA_btl_base_warn_component_unused="0")
MPI = [MPIRUN, "-np", "2", "--oversubscribe"]
failures = []


def run(cmd, expect_ok=True, timeout=300):
    p = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=timeout)
    if expect_ok and p.returncode != 0:
        raise SystemExit("command failed (%d): %s\n%s%s" % (p.returncode, " ".join(cmd), p.stdout, p.stderr))
    return p


def check(cond, what):
    print(("ok: " if cond else "FAIL: ") + what)
    if not cond:
        failures.append(what)


def epochs(path):
    rows = [json.loads(line) for line in open(path)]
    return [r for r in rows if "epoch" in r]


def compare(a, b, tol, what, count):
    ea, eb = epochs(a), epochs(b)
    check(len(ea) == len(eb) and len(ea) > 0, what + ": the same epochs")
    for x, y in zip(ea, eb):
        for key in ("train_loss", "test_loss"):
            rel = abs(x[key] - y[key]) / max(abs(x[key]), 1e-12)
            check(rel <= tol, "%s: epoch %d %s %.9g vs %.9g (relative %.2g <= %g)" %
                  (what, x["epoch"], key, x[key], y[key], rel, tol))
        if "test_accuracy" in x:
            apart = abs(x["test_accuracy"] - y["test_accuracy"]) * count
            check(apart <= 1, "%s: epoch %d accuracy %.4f vs %.4f (%g samples apart)" %
                  (what, x["epoch"], x["test_accuracy"], y["test_accuracy"], apart))


def model(tmp, name, text):
    path = os.path.join(tmp, name)
    with open(path, "w") as f:
        f.write(text.replace('"data/mnist"', json.dumps(MNIST)))
    return path


def main():
    tmp = tempfile.mkdtemp(prefix="nnc-dp-")
    common = ["--limit", "1000", "--epochs", "2", "--threads", "1", "--quiet", "--seed", "3"]
    tests = 10000  # the MNIST test set each epoch is scored on

    # 1. The MNIST MLP: 2 ranks of 32 (or --global-batch 64) as one process of 64.
    mlp = os.path.join(EXAMPLES, "mnist_mlp.nn")
    one, two, glob = (os.path.join(tmp, n) for n in ("mlp1.jsonl", "mlp2.jsonl", "mlpg.jsonl"))
    run([NNC, "train", mlp, "--batch", "64", "--metrics", one] + common)
    run(MPI + [NNC, "train", mlp, "--batch", "32", "--metrics", two, "--verify-replicas"] + common)
    run(MPI + [NNC, "train", mlp, "--global-batch", "64", "--metrics", glob] + common)
    compare(one, two, 1e-5, "mlp 2x32 vs 64", tests)
    compare(one, glob, 1e-5, "mlp --global-batch 64 vs 64", tests)
    check(json.loads(open(two).readline())["settings"].get("ranks") == "2", "metrics record 2 ranks")

    # A program made by `nnc build --data-parallel` trains the same way; one
    # built without it refuses several ranks.
    exe, built = os.path.join(tmp, "mlp_dp"), os.path.join(tmp, "built.jsonl")
    run([NNC, "build", mlp, "--data-parallel", "-o", exe])
    run(MPI + [exe, "--batch", "32", "--metrics", built, "--verify-replicas"] + common)
    compare(one, built, 1e-5, "built --data-parallel 2x32 vs 64", tests)

    # 2. The MNIST CNN (batch norm) with sync_batch_norm: global statistics.
    src = open(os.path.join(EXAMPLES, "mnist_cnn.nn")).read()
    cnn = model(tmp, "cnn.nn", src.replace("adam(lr=1e-3)", "sgd(lr=0.01)").replace(
        "  epochs = 10", "  epochs = 10\n  sync_batch_norm = true"))
    one, two = os.path.join(tmp, "cnn1.jsonl"), os.path.join(tmp, "cnn2.jsonl")
    run([NNC, "train", cnn, "--batch", "64", "--metrics", one] + common)
    run(MPI + [NNC, "train", cnn, "--batch", "32", "--metrics", two, "--verify-replicas"] + common)
    compare(one, two, 3e-5, "cnn sync_batch_norm 2x32 vs 64", tests)

    # 3. Dropout too: each rank draws the masks one process draws for its
    #    rows of the global batch.
    dropped = model(tmp, "dropped.nn", open(cnn).read().replace("logits = dense(flatten(p), 10)",
                                                              "logits = dense(dropout(flatten(p), 0.25), 10)"))
    one, two = os.path.join(tmp, "dropped1.jsonl"), os.path.join(tmp, "dropped2.jsonl")
    run([NNC, "train", dropped, "--batch", "64", "--metrics", one] + common)
    run(MPI + [NNC, "train", dropped, "--batch", "32", "--metrics", two] + common)
    compare(one, two, 3e-5, "cnn sync_batch_norm + dropout 2x32 vs 64", tests)

    #    Batch norm with local statistics (DDP's default) and dropout: the
    #    replicas stay identical and training goes on.
    drop = model(tmp, "drop.nn", src.replace("logits = dense(flatten(p), 10)",
                                             "logits = dense(dropout(flatten(p), 0.25), 10)"))
    three = os.path.join(tmp, "drop2.jsonl")
    run(MPI + [NNC, "train", drop, "--batch", "32", "--metrics", three, "--verify-replicas"] + common)
    e = epochs(three)
    check(len(e) == 2 and e[1]["train_loss"] < e[0]["train_loss"], "batch norm + dropout: loss falls, replicas equal")

    # 4. Bad launches: one line from rank 0, every rank fails.
    def refused(cmd, text, env=None, prefix="nnc: error:"):
        p = subprocess.run(cmd, capture_output=True, text=True, env=env or ENV, timeout=120)
        lines = [l for l in p.stderr.splitlines() if l.startswith(prefix)]
        check(p.returncode != 0 and len(lines) == 1 and text in lines[0],
              "refused with one line (%s): %s" % (text, lines))
    refused(MPI + [NNC, "train", mlp, "--global-batch", "63"] + common, "not a multiple of the 2 ranks")
    refused([MPIRUN, "-np", "1", NNC, "train", mlp, "--batch", "32"] + common +
            [":", "-np", "1", NNC, "train", mlp, "--batch", "16"] + common, "differ in their model or settings")
    refused(MPI + [NNC, "train", mlp] + common, "cannot load Open MPI",
            env=dict(ENV, NNC_MPI_LIBRARY=os.path.join(tmp, "no-such-libmpi.so")))
    refused([NNC, "train", mlp, "--global-batch", "64"] + common, "--global-batch is for a data-parallel run")
    # On CUDA devices the gradients travel by NCCL, loaded at run time like MPI.
    refused(MPI + [NNC, "train", mlp, "--target=cuda"] + common, "NCCL could not be loaded",
            env=dict(ENV, NNC_NCCL_LIBRARY=os.path.join(tmp, "no-such-libnccl.so")))
    if not os.path.exists("/dev/nvidiactl") and os.path.exists("/usr/local/cuda/lib64/libnccl.so.2"):
        refused(MPI + [NNC, "train", mlp, "--target=cuda"] + common, "--target=cuda: no CUDA")
    refused(MPI + [NNC, "train", mlp, "--distributed=nccl", "--target=cpu"] + common,
            "--distributed=nccl combines gradients on CUDA devices")
    refused(MPI + [NNC, "train", mlp, "--distributed=mpi", "--target=cuda"] + common,
            "on CUDA devices use --distributed=nccl")
    # Without a launcher nothing of MPI is loaded: a missing library is no error.
    p = subprocess.run([NNC, "train", mlp, "--batch", "64"] + common, capture_output=True, text=True,
                       env=dict(ENV, NNC_MPI_LIBRARY=os.path.join(tmp, "no-such-libmpi.so")), timeout=120)
    check(p.returncode == 0, "one process trains without MPI's library: " + p.stderr[-200:])
    alone = os.path.join(tmp, "mlp_alone")
    run([NNC, "build", mlp, "-o", alone])
    refused(MPI + [alone] + common, "build it with `nnc build --data-parallel`", prefix=alone + ": error:")

    # 5. A rank that dies stops the run (no hang); the checkpoint it left
    #    resumes, here with one process instead of two.
    ckpt = os.path.join(tmp, "dp.safetensors")
    killer = ("if [ \"$OMPI_COMM_WORLD_RANK\" = 1 ]; then (sleep 4; kill -9 $$) & fi; exec \"$@\"")
    p = subprocess.run(MPI + ["sh", "-c", killer, "sh", NNC, "train", mlp, "--batch", "8", "--epochs", "200",
                              "--limit", "2000", "--threads", "1", "--quiet", "--checkpoint", ckpt],
                       capture_output=True, text=True, env=ENV, timeout=120)
    check(p.returncode != 0, "a killed rank ends the run with an error (exit %d)" % p.returncode)
    check(os.path.exists(ckpt), "the killed run left a checkpoint")
    if os.path.exists(ckpt):
        with open(ckpt, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            epoch = int(json.loads(f.read(size))["__metadata__"]["nnc.epoch"])
        r = run([NNC, "train", mlp, "--batch", "16", "--epochs", str(epoch + 1), "--limit", "2000", "--threads", "1",
                 "--checkpoint", ckpt, "--resume"], expect_ok=False)
        check(r.returncode == 0 and ("resuming after epoch %d" % epoch) in r.stdout,
              "its checkpoint (epoch %d) resumes in one process: %s" % (epoch, (r.stdout + r.stderr)[-300:]))

    #    A rank that hangs (stopped, so the launcher sees nothing wrong):
    #    the others stop at the time limit with a message, and so does the run.
    stopper = ("if [ \"$OMPI_COMM_WORLD_RANK\" = 1 ]; then (sleep 3; kill -STOP $$) & fi; exec \"$@\"")
    start = time.time()
    p = subprocess.run(MPI + ["-x", "NNC_DISTRIBUTED_TIMEOUT=4", "sh", "-c", stopper, "sh", NNC, "train", mlp,
                              "--batch", "8", "--epochs", "200", "--limit", "2000", "--threads", "1", "--quiet"],
                       capture_output=True, text=True, env=ENV, timeout=120)
    check(p.returncode != 0 and "no answer from the other ranks for 4 s" in p.stderr,
          "a hung rank stops the run after the time limit (%.0f s, exit %d): %s" %
          (time.time() - start, p.returncode, p.stderr.strip().splitlines()[:1]))

    # 6. A checkpoint of 2 ranks resumes in one process of the global batch.
    ckpt = os.path.join(tmp, "two.safetensors")
    straight, resumed = os.path.join(tmp, "straight.jsonl"), os.path.join(tmp, "resumed.jsonl")
    base = ["--limit", "1000", "--threads", "1", "--quiet", "--seed", "3"]
    run([NNC, "train", mlp, "--batch", "64", "--epochs", "2", "--metrics", straight] + base)
    run(MPI + [NNC, "train", mlp, "--batch", "32", "--epochs", "1", "--checkpoint", ckpt] + base)
    run([NNC, "train", mlp, "--batch", "64", "--epochs", "2", "--checkpoint", ckpt, "--resume",
         "--metrics", resumed] + base)
    a, b = epochs(straight)[1], epochs(resumed)[-1]
    check(b["epoch"] == 2 and abs(a["train_loss"] - b["train_loss"]) <= 1e-5 * abs(a["train_loss"]),
          "resumed with 1 rank after 1 epoch of 2: epoch 2 loss %.9g vs %.9g" % (b["train_loss"], a["train_loss"]))

    shutil.rmtree(tmp, ignore_errors=True)
    if failures:
        print("%d check(s) failed" % len(failures))
        return 1
    print("all data-parallel checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
