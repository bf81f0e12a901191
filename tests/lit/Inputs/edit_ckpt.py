"""Edits the header of a safetensors checkpoint, keeping the data:
    edit_ckpt.py IN OUT [--keep-checksum] EDIT...
EDIT is TENSOR.FIELD=JSON (e.g. w.dtype='"I32"', w.data_offsets=[0,8]) or
meta.KEY=STRING (metadata, e.g. meta.nnc.epoch=-4). Without --keep-checksum
the checksum over header and data becomes the older form over the data
alone (nnc.crc32), so the edit reaches the reader's other checks."""
import json
import struct
import sys
import zlib

src, dst, edits = sys.argv[1], sys.argv[2], sys.argv[3:]
raw = open(src, "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
header = json.loads(raw[8:8 + n])
data = raw[8 + n:]
keep = "--keep-checksum" in edits
if not keep:
    header["__metadata__"].pop("nnc.checksum", None)
    header["__metadata__"]["nnc.crc32"] = str(zlib.crc32(data))
for e in edits:
    if e == "--keep-checksum":
        continue
    key, value = e.split("=", 1)
    if key.startswith("meta."):
        header["__metadata__"][key[5:]] = value
    else:
        name, field = key.rsplit(".", 1)
        header[name][field] = json.loads(value)
h = json.dumps(header, separators=(",", ":")).encode()
h += b" " * (-len(h) % 8)
open(dst, "wb").write(struct.pack("<Q", len(h)) + h + data)
