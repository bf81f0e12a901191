#!/usr/bin/env python3
"""Checks every ```nn block of a Markdown file with `nnc check`.

usage: check-doc-examples.py NNC FILE.md
Prints one line per block and exits non-zero if any block fails.
"""
import os
import re
import subprocess
import sys
import tempfile


def main():
    nnc, doc = sys.argv[1], sys.argv[2]
    text = open(doc, encoding="utf-8").read()
    blocks = re.findall(r"^```nn\n(.*?)^```", text, flags=re.S | re.M)
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for i, block in enumerate(blocks):
            path = os.path.join(tmp, "block%d.nn" % i)
            with open(path, "w", encoding="utf-8") as f:
                f.write(block)
            proc = subprocess.run([nnc, "check", path], capture_output=True, text=True)
            status = "ok" if proc.returncode == 0 else "FAILED"
            print("block %d: %s" % (i, status))
            if proc.returncode != 0:
                failed += 1
                sys.stderr.write(proc.stderr)
    print("%d blocks, %d failed" % (len(blocks), failed))
    return 1 if failed or not blocks else 0


if __name__ == "__main__":
    sys.exit(main())
