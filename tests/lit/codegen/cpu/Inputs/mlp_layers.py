"""Writes an MLP of N dense+ReLU layers of width 16 (argv[1]) to stdout."""
import sys

n = int(sys.argv[1])
print("model mlp {\n  input x: f32[B, 16]\n  input y: i32[B]\n  h0 = x")
for i in range(1, n + 1):
    print(f"  h{i} = relu(dense(h{i - 1}, 16))")
print(f"  logits = dense(h{n}, 4)\n  loss = softmax_cross_entropy(logits, y)\n  output logits\n  minimize loss\n}}")
print("train {\n  optimizer = sgd(lr=0.1)\n}")
