"""Reads the float32 arrays of an .npz file with the standard library.

    npz.py same A.npz B.npz      exit 0 when every array is equal
    npz.py differ A.npz B.npz    exit 0 when some array differs
"""
import struct
import sys
import zipfile


def arrays(path):
    out = {}
    with zipfile.ZipFile(path) as z:
        for name in z.namelist():
            b = z.read(name)
            n = struct.unpack("<H", b[8:10])[0]
            header = b[10:10 + n].decode()
            assert "'<f4'" in header, header
            data = b[10 + n:]
            out[name] = struct.unpack("<%df" % (len(data) // 4), data)
    return out


a, b = arrays(sys.argv[2]), arrays(sys.argv[3])
same = a == b
print("same" if same else "differ")
sys.exit(0 if same == (sys.argv[1] == "same") else 1)
