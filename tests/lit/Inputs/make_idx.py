"""Writes an MNIST-format split (IDX images and labels) with the given labels:
    make_idx.py DIR SPLIT LABEL...   (no labels: an empty split)"""
import os
import struct
import sys

d, split, labels = sys.argv[1], sys.argv[2], [int(v) for v in sys.argv[3:]]
os.makedirs(d, exist_ok=True)
with open(os.path.join(d, split + "-images-idx3-ubyte"), "wb") as f:
    f.write(struct.pack(">IIII", 2051, len(labels), 28, 28) + bytes(784 * len(labels)))
with open(os.path.join(d, split + "-labels-idx1-ubyte"), "wb") as f:
    f.write(struct.pack(">II", 2049, len(labels)) + bytes(labels))
