"""Sets every element of one tensor of a safetensors checkpoint to a value
and writes the result with a valid checksum:
    set_tensor.py IN OUT NAME VALUE"""
import json
import struct
import sys
import zlib

src, dst, name, value = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
raw = open(src, "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
header = json.loads(raw[8:8 + n])
data = bytearray(raw[8 + n:])
a, b = header[name]["data_offsets"]
data[a:b] = struct.pack("<%df" % ((b - a) // 4), *([value] * ((b - a) // 4)))
header["__metadata__"]["nnc.crc32"] = str(zlib.crc32(bytes(data)))
h = json.dumps(header).encode()
h += b" " * (-len(h) % 8)
open(dst, "wb").write(struct.pack("<Q", len(h)) + h + bytes(data))
