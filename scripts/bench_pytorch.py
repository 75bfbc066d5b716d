"""PyTorch's side of `cargo bench --bench workloads` (same workloads, batch 64, 1x28x28):
Defed + LeNet training step, Defed + LeNet inference, LeNet input gradient, and the
defender's latency for one image (3 denoisers). Prints images/second as JSON.

    python scripts/bench_pytorch.py [THREADS]     (from the repository root)"""
import json, sys, time
import torch, torch.nn.functional as F
from torch_defed import ERN, lenet, embedded_digits

torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else torch.get_num_threads())
torch.manual_seed(0)
X, Y = embedded_digits()
x, y = X[:64], Y[:64]
clf = lenet()


def rate(fn, images, seconds=5.0):
    fn()
    n, t0 = 0, time.time()
    while time.time() - t0 < seconds:
        fn()
        n += 1
    return images * n / (time.time() - t0)


net = ERN()
opt = torch.optim.Adam(net.parameters(), 1e-3)
xn = (x + torch.randn_like(x) * 40 / 255).clamp(0, 1)


def train_step():
    d = net(xn).clamp(0, 1)
    loss = F.cross_entropy(clf(d), y) + F.mse_loss(d, x)
    opt.zero_grad()
    loss.backward()
    opt.step()


den = ERN().eval()


def inference():
    with torch.no_grad():
        clf(den(x).clamp(0, 1))


def input_grad():
    xi = x.clone().requires_grad_(True)
    F.cross_entropy(clf(xi), y, reduction='sum').backward()


dens = [ERN().eval() for _ in range(3)]
one = x[:1]


def defender():
    with torch.no_grad():
        pred = clf(one).argmax(1)
        for d in dens:
            out = d(one).clamp(0, 1)
            F.cross_entropy(clf(out), pred) + ((one - out) ** 2).mean()


print(json.dumps({
    'threads': torch.get_num_threads(),
    'defed_train_step_img_per_s': rate(train_step, 64),
    'defed_lenet_inference_img_per_s': rate(inference, 64),
    'lenet_input_gradient_img_per_s': rate(input_grad, 64),
    'defender_latency_ms': 1000.0 / rate(defender, 1),
}, indent=1))
