"""Writes small data sets in the formats nnc reads, with the standard
library only (no NumPy): CIFAR-10 binary batches, .npy/.npz arrays, PNG
image folders, gzipped IDX files, and broken variants of each.

    make_data.py KIND OUT [options]
"""
import gzip
import os
import random
import struct
import sys
import zipfile
import zlib


def npy(shape, values, descr="<f4"):
    """The bytes of a .npy file (format 1.0)."""
    fmt = {"<f4": "f", "<f8": "d", "|u1": "B", "<i8": "q", "<i4": "i"}[descr]
    shape_text = "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"
    header = "{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (descr, shape_text)
    header += " " * ((64 - (10 + len(header) + 1) % 64) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + \
        struct.pack("<%d%s" % (len(values), fmt), *values)


def png(width, height, channels, pixels):
    """An 8-bit PNG (grey or RGB), rows unfiltered."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    color = {1: 0, 3: 2}[channels]
    rows = b"".join(b"\x00" + bytes(pixels[y * width * channels:(y + 1) * width * channels])
                    for y in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, color, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def cifar(out, records, seed, short=False, label_max=9):
    rng = random.Random(seed)
    os.makedirs(out, exist_ok=True)
    for name, n in [("data_batch_%d.bin" % i, records) for i in range(1, 6)] + [("test_batch.bin", records)]:
        data = bytearray()
        for _ in range(n):
            data.append(rng.randint(0, label_max))
            data += bytes(rng.randrange(256) for _ in range(3072))
        if short and name == "data_batch_2.bin":
            data = data[:-100]
        open(os.path.join(out, name), "wb").write(bytes(data))


def main():
    kind, out = sys.argv[1], sys.argv[2]
    rng = random.Random(7)
    if kind in ("cifar", "cifar-short", "cifar-label"):
        cifar(out, 12, 1, short=kind == "cifar-short", label_max=10 if kind == "cifar-label" else 9)
    elif kind in ("npz", "npz-missing", "npz-stored"):
        # A regression: y = 2 x0 - x1 + 0.5 plus a little noise; x_test/y_test
        # make the test set (Keras' naming).
        def rows(n):
            xs, ys = [], []
            for _ in range(n):
                a, b = rng.uniform(-1, 1), rng.uniform(-1, 1)
                xs += [a, b]
                ys.append(2 * a - b + 0.5 + rng.gauss(0, 0.01))
            return xs, ys
        xtr, ytr = rows(64)
        xte, yte = rows(16)
        mode = zipfile.ZIP_STORED if kind == "npz-stored" else zipfile.ZIP_DEFLATED
        with zipfile.ZipFile(out, "w", mode) as z:
            z.writestr("x_train.npy", npy((64, 2), xtr, "<f8"))
            if kind != "npz-missing":
                z.writestr("y_train.npy", npy((64, 1), ytr))
            z.writestr("x_test.npy", npy((16, 2), xte))
            z.writestr("y_test.npy", npy((16, 1), yte))
    elif kind == "npy":
        os.makedirs(out, exist_ok=True)
        xs = [rng.uniform(-1, 1) for _ in range(40 * 2)]
        labels = [int(xs[2 * i] + xs[2 * i + 1] > 0) for i in range(40)]
        open(os.path.join(out, "x.npy"), "wb").write(npy((40, 2), xs))
        open(os.path.join(out, "y.npy"), "wb").write(npy((40,), labels, "<i8"))
    elif kind in ("images", "images-corrupt", "images-badbody"):
        # Two classes of 12x12 RGB images: bright ones and dark ones, stored at
        # 16x16 (and resized to the model's 12x12 when read).
        for split, n in (("train", 6), ("test", 2)):
            for label, base in (("bright", 200), ("dark", 30)):
                d = os.path.join(out, split, label)
                os.makedirs(d, exist_ok=True)
                for i in range(n):
                    px = [max(0, min(255, base + rng.randint(-20, 20))) for _ in range(16 * 16 * 3)]
                    open(os.path.join(d, "%d.png" % i), "wb").write(png(16, 16, 3, px))
        p = os.path.join(out, "train", "dark", "1.png")
        data = open(p, "rb").read()
        if kind == "images-corrupt":  # no whole header
            open(p, "wb").write(data[:60])
        if kind == "images-badbody":  # a sound header, pixels that do not inflate
            at = data.index(b"IDAT") + 8
            open(p, "wb").write(data[:at] + bytes(b ^ 0x5a for b in data[at:at + 40]) + data[at + 40:])
    elif kind == "mnist-gz":
        os.makedirs(out, exist_ok=True)
        for split, n in (("train", 64), ("t10k", 16)):
            labels = [rng.randrange(10) for _ in range(n)]
            images = bytearray()
            for l in labels:  # a bright column at 2 * label: learnable
                img = bytearray(784)
                for r in range(28):
                    img[r * 28 + 2 * l] = 255
                images += img
            with gzip.open(os.path.join(out, "%s-images-idx3-ubyte.gz" % split), "wb") as f:
                f.write(struct.pack(">IIII", 2051, n, 28, 28) + bytes(images))
            with gzip.open(os.path.join(out, "%s-labels-idx1-ubyte.gz" % split), "wb") as f:
                f.write(struct.pack(">II", 2049, n) + bytes(labels))
    else:
        sys.exit("unknown kind " + kind)


main()
