#!/bin/sh
# defed's criterion benches and PyTorch's same workloads, one after the other, with the ratio.
# Needs a Python with torch and numpy: PYTHON=/path/to/venv/bin/python scripts/bench-vs-pytorch.sh
set -e
PYTHON=${PYTHON:-python3}
cargo bench --bench workloads -- --noplot 2>&1 | tee /tmp/defed-bench.txt
$PYTHON scripts/bench_pytorch.py | tee /tmp/pytorch-bench.json
$PYTHON - <<'PY'
import json, re
t = open('/tmp/defed-bench.txt').read()
def thrpt(name):
    m = re.search('/' + name + r'(?:\n|\s+time:).*?thrpt:\s*\[\s*\S+\s+\S+\s+(\S+)\s+(\S+)', t, re.S)
    v, unit = float(m.group(1)), m.group(2)
    return v * {'elem/s': 1, 'Kelem/s': 1e3, 'Melem/s': 1e6}[unit]
p = json.load(open('/tmp/pytorch-bench.json'))
for name, key in [('defed_train_step', 'defed_train_step_img_per_s'),
                  ('defed_lenet_inference', 'defed_lenet_inference_img_per_s'),
                  ('lenet_input_gradient', 'lenet_input_gradient_img_per_s')]:
    d = thrpt(name)
    print(f'{name:24s} defed {d:9.1f} img/s  pytorch {p[key]:9.1f} img/s  ratio {d / p[key]:.2f}x')
d = 1000.0 / thrpt('defender_latency')
print(f'{"defender_latency":24s} defed {d:9.2f} ms     pytorch {p["defender_latency_ms"]:9.2f} ms  ratio {p["defender_latency_ms"] / d:.2f}x (speed)')
PY
