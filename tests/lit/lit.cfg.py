# lit configuration for nnc: FileCheck tests over nnc, nnc-opt and the docs.
import os
import lit.formats

config.name = "nnc"
config.test_format = lit.formats.ShTest(execute_external=False)
config.suffixes = [".mlir", ".nn", ".test"]
config.excludes = ["lit.cfg.py", "lit.site.cfg.py.in", "Inputs"]
config.test_source_root = os.path.dirname(__file__)
config.test_exec_root = os.path.join(config.nnc_obj_root, "tests", "lit")

config.environment["PATH"] = os.pathsep.join(
    [
        os.path.join(config.nnc_tools_dir, "nnc"),
        os.path.join(config.nnc_tools_dir, "nnc-opt"),
        config.llvm_tools_dir,
        config.environment.get("PATH", os.environ.get("PATH", "")),
    ]
)
config.substitutions.append(("%examples", os.path.join(config.nnc_src_root, "examples")))
config.substitutions.append(("%srcroot", config.nnc_src_root))
config.substitutions.append(("%python", config.python_executable))
config.substitutions.append(("%cc", config.nnc_cc))

# The CUDA Toolkit, when installed: NVRTC (loaded by nnc at run time) and
# ptxas, to check generated kernels down to machine code without a GPU.
cuda_root = os.environ.get("CUDA_HOME", "/usr/local/cuda")
if any(os.path.exists(os.path.join(cuda_root, "lib64", n)) for n in ("libnvrtc.so", "libnvrtc.so.13")):
    config.available_features.add("nvrtc")
ptxas = os.path.join(cuda_root, "bin", "ptxas")
if os.path.exists(ptxas):
    config.available_features.add("ptxas")
    config.substitutions.append(("%ptxas", ptxas))
# Compiled kernels are cached on disk: keep the tests' cache in the build.
config.environment["NNC_CACHE_DIR"] = os.path.join(config.nnc_obj_root, "tests", "lit", "kernel-cache")

# A CUDA driver with a device: tests that run kernels on it.
try:
    import ctypes
    _cuda = ctypes.CDLL("libcuda.so.1")
    _count = ctypes.c_int(0)
    if _cuda.cuInit(0) == 0 and _cuda.cuDeviceGetCount(ctypes.byref(_count)) == 0 and _count.value > 0:
        config.available_features.add("cuda-device")
except OSError:
    pass

# The host CPU's AVX-512, for tests of code built for CPUs with or without it.
try:
    if " avx512f" in open("/proc/cpuinfo").read():
        config.available_features.add("avx512")
except OSError:
    pass
