"""Runs a command and prints its exit code after its output (lit has no $?)."""
import subprocess
import sys

proc = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
sys.stdout.write(proc.stdout.decode("utf-8", "replace"))
print("exit code: %d" % proc.returncode)
