"""Starts a command, waits until it prints a line starting with WAIT_FOR and
then DELAY seconds more, sends it SIGNAL (COUNT times, back to back), and
prints its standard error and exit code:
    interrupt.py SIGNAL COUNT WAIT_FOR DELAY COMMAND..."""
import signal
import subprocess
import sys
import time

sig, count, wait_for, delay = getattr(signal, sys.argv[1]), int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
proc = subprocess.Popen(sys.argv[5:], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
for line in proc.stdout:
    if line.startswith(wait_for):
        break
time.sleep(delay)
for _ in range(count):
    proc.send_signal(sig)
out, err = proc.communicate(timeout=120)
sys.stdout.write(err)
print("exit code: %d" % proc.returncode)
