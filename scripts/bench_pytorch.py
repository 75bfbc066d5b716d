"""PyTorch's side of `cargo bench --bench workloads` (same workloads, batch 64, 1x28x28):
Defed + LeNet training step, Defed + LeNet inference, LeNet input gradient, the
defender's latency for one image (3 denoisers), and one PGD adversarial-training step of the
Madry et al. CNN (PGD-10, Linf 0.3, step 0.075, random start, then Adam). Prints
images/second as JSON.

    python scripts/bench_pytorch.py [THREADS] [--device cuda]     (from the repository root)

Interleaved with defed (the fair comparison on a machine whose speed drifts): each round runs
every workload in defed (`DEFED bench --only W`) and then in PyTorch, back to back, and the
ratio is taken per round; prints each round and the median ratio with its range.

    python scripts/bench_pytorch.py THREADS --interleave DEFED_BINARY [ROUNDS] [SECONDS]

`BENCH_ONLY=name,...` restricts the interleaved run to those workloads."""
import json, os, statistics, subprocess, sys, tempfile, time
import torch, torch.nn.functional as F
from torch_defed import ERN, lenet, embedded_digits

interleave = None
if '--interleave' in sys.argv:
    i = sys.argv.index('--interleave')
    interleave = sys.argv[i + 1:]
    sys.argv = sys.argv[:i]
args = [a for a in sys.argv[1:] if not a.startswith('--device')]
dev = 'cuda' if any(a.startswith('--device') for a in sys.argv[1:]) and torch.cuda.is_available() else 'cpu'
if '--device=cpu' in sys.argv or ('--device' in sys.argv and sys.argv[sys.argv.index('--device') + 1] == 'cpu'):
    dev = 'cpu'
args = [a for a in args if a not in ('cuda', 'cpu')]
torch.set_num_threads(int(args[0]) if args else torch.get_num_threads())
torch.manual_seed(0)
X, Y = embedded_digits()
x, y = X[:64].to(dev), Y[:64].to(dev)
clf = lenet().to(dev)


def sync():
    if dev == 'cuda':
        torch.cuda.synchronize()


def rate(fn, images, seconds=5.0):
    fn()
    sync()
    n, t0 = 0, time.time()
    while time.time() - t0 < seconds:
        fn()
        n += 1
    sync()
    return images * n / (time.time() - t0)


net = ERN().to(dev)
opt = torch.optim.Adam(net.parameters(), 1e-3)
xn = (x + torch.randn_like(x) * 40 / 255).clamp(0, 1)


def train_step():
    d = net(xn).clamp(0, 1)
    loss = F.cross_entropy(clf(d), y) + F.mse_loss(d, x)
    opt.zero_grad()
    loss.backward()
    opt.step()


den = ERN().eval().to(dev)


def inference():
    with torch.no_grad():
        clf(den(x).clamp(0, 1))


def input_grad():
    xi = x.clone().requires_grad_(True)
    F.cross_entropy(clf(xi), y, reduction='sum').backward()


dens = [ERN().eval().to(dev) for _ in range(3)]
one = x[:1]


def defender():
    with torch.no_grad():
        pred = clf(one).argmax(1)
        for d in dens:
            out = d(one).clamp(0, 1)
            F.cross_entropy(clf(out), pred) + ((one - out) ** 2).mean()


class MadryCnn(torch.nn.Module):
    """Two 5x5 'same' convolutions (32, 64) with ReLU and 2x2 max-pooling, 1024 hidden units."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 32, 5, padding=2)
        self.conv2 = torch.nn.Conv2d(32, 64, 5, padding=2)
        self.fc1 = torch.nn.Linear(64 * 49, 1024)
        self.fc2 = torch.nn.Linear(1024, 10)

    def forward(self, x):
        h = F.max_pool2d(F.relu(self.conv1(x)), 2)
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)
        return self.fc2(F.relu(self.fc1(h.flatten(1))))


robust = MadryCnn().to(dev)
robust_opt = torch.optim.Adam(robust.parameters(), 1e-3)


def adversarial_step(eps=0.3, steps=10, step=0.075):
    delta = torch.empty_like(x).uniform_(-eps, eps)
    xa = (x + delta).clamp(0, 1)
    for _ in range(steps):
        xa.requires_grad_(True)
        g, = torch.autograd.grad(F.cross_entropy(robust(xa), y, reduction='sum'), xa)
        xa = torch.min(torch.max(xa.detach() + step * g.sign(), x - eps), x + eps).clamp(0, 1)
    loss = F.cross_entropy(robust(xa), y)
    robust_opt.zero_grad()
    loss.backward()
    robust_opt.step()


WORKLOADS = {
    'defed_train_step': (train_step, 64),
    'defed_lenet_inference': (inference, 64),
    'lenet_input_gradient': (input_grad, 64),
    'defender_latency': (defender, 1),
    'madry_pgd10_train_step': (adversarial_step, 64),
}


def defed_rate(binary, name, seconds):
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, 'b.json')
        subprocess.run([binary, 'bench', '--seconds', str(seconds), '--only', name, '--json', out],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return json.load(open(out))['workloads'][0]['images_per_second']


if os.environ.get('BENCH_ONLY'):  # e.g. BENCH_ONLY=madry_pgd10_train_step
    keep = os.environ['BENCH_ONLY'].split(',')
    WORKLOADS = {k: v for k, v in WORKLOADS.items() if k in keep}

if interleave:
    binary = interleave[0]
    rounds = int(interleave[1]) if len(interleave) > 1 else 5
    seconds = float(interleave[2]) if len(interleave) > 2 else 3.0
    ratios = {name: [] for name in WORKLOADS}
    for r in range(rounds):
        for name, (fn, images) in WORKLOADS.items():
            d = defed_rate(binary, name, seconds)
            p = rate(fn, images, seconds)
            ratios[name].append(d / p)
            print(f'round {r + 1} {name:24s} defed {d:10.1f}  pytorch {p:10.1f}  ratio {d / p:.2f}x',
                  flush=True)
    print('median ratio (range), defed / PyTorch; above 1 is defed faster:')
    for name, v in ratios.items():
        print(f'{name:24s} {statistics.median(v):.2f}x ({min(v):.2f}-{max(v):.2f})')
    sys.exit(0)

print(json.dumps({
    'device': dev,
    'threads': torch.get_num_threads(),
    'defed_train_step_img_per_s': rate(train_step, 64),
    'defed_lenet_inference_img_per_s': rate(inference, 64),
    'lenet_input_gradient_img_per_s': rate(input_grad, 64),
    'defender_latency_ms': 1000.0 / rate(defender, 1),
    'madry_pgd10_train_step_img_per_s': rate(adversarial_step, 64),
}, indent=1))
