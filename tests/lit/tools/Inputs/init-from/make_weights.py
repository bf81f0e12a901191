"""Writes the safetensors files of init-from.test: PyTorch-named weights for
model.nn (fc: Linear(4, 3) as [out, in], a batch norm with its I64
counter, head: Linear(3, 2)); then a file with one tensor missing, one
unexpected and one in another shape."""
import json
import struct
import sys


def save(path, tensors):
    header, blobs, offset = {}, [], 0
    for name, (dtype, shape, values) in tensors.items():
        fmt = {"F32": "f", "I64": "q"}[dtype]
        data = struct.pack("<%d%s" % (len(values), fmt), *values)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


weights = {
    # Linear(4, 3).weight [out, in]: row o holds output o's weights.
    "fc.weight": ("F32", [3, 4], [1, 2, 3, 4, 10, 20, 30, 40, 100, 200, 300, 400]),
    "fc.bias": ("F32", [3], [0.5, 0.25, 0.125]),
    "bn.weight": ("F32", [3], [1, 1, 1]),
    "bn.bias": ("F32", [3], [0, 0, 0]),
    "bn.running_mean": ("F32", [3], [0, 0, 0]),
    "bn.running_var": ("F32", [3], [1, 1, 1]),
    "bn.num_batches_tracked": ("I64", [], [7]),
    "head.weight": ("F32", [2, 3], [1, 0, 0, 0, 1, 0]),
    "head.bias": ("F32", [2], [0, 0]),
}
save(sys.argv[1] + "/exact.st", weights)
partial = dict(weights)
partial["head.weight"] = ("F32", [5, 3], [0] * 15)  # the model's is [2, 3]
partial["extra.weight"] = ("F32", [2], [1, 2])
del partial["bn.running_var"]
save(sys.argv[1] + "/partial.st", partial)
