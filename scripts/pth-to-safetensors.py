#!/usr/bin/env python3
"""Converts a PyTorch checkpoint (.pth: a state_dict, or a dict holding one
under "state_dict" or "model") to a safetensors file of named tensors, as
`nnc train/eval/predict --init-from` read it. Uses the user's own PyTorch;
needs no other package.

    python3 scripts/pth-to-safetensors.py resnet18.pth resnet18.safetensors

Tensors keep their names, shapes and dtypes (nnc reads F32 and skips the
rest, such as batch norm's I64 num_batches_tracked, saying so).
"""
import json
import struct
import sys

try:
    import torch
except ImportError:
    sys.exit("pth-to-safetensors.py: PyTorch is not installed (apt-get install python3-torch)")

DTYPES = {torch.float32: "F32", torch.float64: "F64", torch.float16: "F16", torch.bfloat16: "BF16",
          torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
          torch.bool: "BOOL"}


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    src, dst = sys.argv[1], sys.argv[2]
    try:
        obj = torch.load(src, map_location="cpu")
    except Exception as e:  # a corrupt or foreign file: say which
        sys.exit("pth-to-safetensors.py: %s: cannot read as a PyTorch checkpoint: %s" % (src, e))
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(torch.is_tensor(v) for v in obj.values()):
        sys.exit("pth-to-safetensors.py: %s: not a state_dict (a dict of tensors)" % src)
    header, blobs, offset = {}, [], 0
    for name, t in obj.items():
        if t.dtype not in DTYPES:
            sys.exit("pth-to-safetensors.py: %s: tensor '%s' has dtype %s, which safetensors cannot hold"
                     % (src, name, t.dtype))
        data = t.detach().contiguous().cpu().numpy().tobytes() if t.dtype != torch.bfloat16 else \
            t.detach().contiguous().view(torch.int16).numpy().tobytes()
        header[name] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    tmp = dst + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
    import os
    os.replace(tmp, dst)
    print("wrote %d tensors to %s" % (len(obj), dst))


if __name__ == "__main__":
    main()
