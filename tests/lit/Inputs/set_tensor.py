"""Sets every element of one tensor of a safetensors checkpoint to a value
and writes the result with a valid checksum (nnc.checksum: CRC-32 of the
header with the checksum's digits as zeros, then CRC-32 of the data):
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
header["__metadata__"].pop("nnc.crc32", None)
header["__metadata__"]["nnc.checksum"] = "0" * 16
h = json.dumps(header, separators=(",", ":")).encode()
h += b" " * (-len(h) % 8)
digits = b"%08x%08x" % (zlib.crc32(h), zlib.crc32(bytes(data)))
h = h.replace(b'"nnc.checksum":"' + b"0" * 16 + b'"', b'"nnc.checksum":"' + digits + b'"')
open(dst, "wb").write(struct.pack("<Q", len(h)) + h + bytes(data))
