"""PyTorch reference for defed: the Defed-Laplacian and BaseNet denoisers (the networks of the
spec, with the key names of the original authors' checkpoints) and the original LeNet-5.

Training comparison with `defed train denoiser`, from the repository root
(pip install torch numpy):
    python scripts/torch_defed.py THREADS EPOCHS BATCH ALPHA [WARMUP [MILESTONES]]
    python scripts/torch_defed.py 1 12 32 1 0 8,11   # alpha 1, lr x0.1 after epochs 8 and 11
    python scripts/torch_defed.py 2 0                # evaluate the authors' noise-40 model
DEFED_ARCH=basenet selects BaseNet (default: defed), DEFED_SEED the seed (default 0),
DEFED_INIT=FILE.pth the initial weights. Prints per epoch: steps, the original
LeNet's accuracy and the PSNR on the first 2,000 real MNIST test images with sigma = 40 noise
(the quality bar of the training issue).
`scripts/bench_pytorch.py` imports the networks from here."""
import gzip, os, sys, time, math, json
import numpy as np, torch, torch.nn as nn, torch.nn.functional as F

CKPT = os.environ.get('DEFED_CKPT_DIR', '../shared/reference/checkpoints/pytorch/')


def idx(path):
    b = gzip.open(path).read()
    nd = b[3]
    dims = [int.from_bytes(b[4 + 4 * i:8 + 4 * i], 'big') for i in range(nd)]
    return np.frombuffer(b[4 + 4 * nd:], np.uint8).reshape(dims)


def cbp(i, o, t=False):
    c = nn.ConvTranspose2d(i, o, 3, 1, 1) if t else nn.Conv2d(i, o, 3, 1, 1)
    return nn.Sequential(c, nn.BatchNorm2d(o), nn.PReLU())


def cbn(c, o):
    return nn.Sequential(c, nn.BatchNorm2d(o), nn.PReLU())


def fixed(x, k, pad):
    c = x.shape[1]
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode=pad), k.to(x.device).expand(c, 1, 3, 3), groups=c)


_g = torch.exp(-torch.tensor([1., 0., 1.]) / 2)
_g = _g / _g.sum()
BLUR = (_g[:, None] * _g[None, :])[None, None]
LAP = torch.ones(1, 1, 3, 3)
LAP[0, 0, 1, 1] = -8


class EFE(nn.Module):
    def __init__(s, i, o, t):
        super().__init__()
        s.blurConv, s.edgeConv, s.orignConv = cbp(i, o, t), cbp(i, o, t), cbp(i, o, t)
        s.conv = nn.Conv2d(o, o, 1)

    def forward(s, x):
        return s.conv(s.blurConv(fixed(x, BLUR, 'reflect')) + s.edgeConv(fixed(x, LAP, 'reflect'))
                      + s.orignConv(x))


class Skip(nn.Module):
    def __init__(s, i, o, m, num):
        super().__init__()
        s.layers = nn.Sequential(nn.Conv2d(i, m, 3, 1, 1),
                                 *[nn.Conv2d(m, m, 3, 1, 1) for _ in range(2 * (num - 1))],
                                 nn.Conv2d(m, o, 3, 1, 1))

    def forward(s, x):
        return s.layers(x) + x


class ERN(nn.Module):
    """Defed-Laplacian (the original's class name)."""

    def __init__(s, C=1):
        super().__init__()
        s.skip1, s.head, s.skip2 = Skip(C, C, 16, 3), cbp(C, 16), Skip(16, 16, 16, 2)
        s.en_efe_1, s.down1 = EFE(16, 16, False), cbn(nn.Conv2d(16, 32, 2, 2), 32)
        s.skip3, s.en_efe_2 = Skip(32, 32, 32, 1), EFE(32, 32, False)
        s.down2 = cbn(nn.Conv2d(32, 32, 2, 2), 32)
        s.up2, s.de_efe_2 = cbn(nn.ConvTranspose2d(32, 32, 2, 2), 32), EFE(32, 32, True)
        s.up1, s.de_efe_1 = cbn(nn.ConvTranspose2d(32, 16, 2, 2), 16), EFE(16, 16, True)
        s.tail = cbn(nn.ConvTranspose2d(16, C, 3, 1, 1), C)

    def forward(s, x):
        s1 = s.skip1(x)
        h = s.head(x)
        s2 = s.skip2(h)
        h = s.down1(s.en_efe_1(h))
        s3 = s.skip3(h)
        h = s.up2(s.down2(s.en_efe_2(h)))
        h = s.up1(s.de_efe_2(h) + s3)
        h = s.de_efe_1(h) + s2
        return s.tail(h) + s1


class Wrap(nn.Module):
    """A CBP inside the original BaseNet's `body` (its keys read `body.N.conv.*`)."""

    def __init__(s, i, o, t):
        super().__init__()
        s.conv = cbp(i, o, t)

    def forward(s, x):
        return s.conv(x)


class BaseNet(nn.Module):
    """The ablation without edges or skips, with the original's key names."""

    def __init__(s, C=1):
        super().__init__()
        s.head = cbp(C, 16)
        s.body = nn.Sequential(
            Wrap(16, 16, False), nn.Conv2d(16, 32, 2, 2), nn.BatchNorm2d(32), nn.PReLU(),
            Wrap(32, 32, False), nn.Conv2d(32, 32, 2, 2), nn.BatchNorm2d(32), nn.PReLU(),
            nn.ConvTranspose2d(32, 32, 2, 2), nn.BatchNorm2d(32), nn.PReLU(),
            Wrap(32, 32, True), nn.ConvTranspose2d(32, 16, 2, 2), nn.BatchNorm2d(16), nn.PReLU(),
            Wrap(16, 16, True))
        s.tail = cbn(nn.ConvTranspose2d(16, C, 3, 1, 1), C)

    def forward(s, x):
        return s.tail(s.body(s.head(x)))


ARCHS = {'defed': (ERN, 'mnist-laplacian-alpha=1-noise=40.pth'),
         'basenet': (BaseNet, 'mnist-basenet-alpha=1-noise=40.pth')}


class LeNet(nn.Module):
    def __init__(s):
        super().__init__()
        s.conv1, s.conv2 = nn.Conv2d(1, 6, 5), nn.Conv2d(6, 16, 5)
        s.fc1, s.fc2, s.fc3 = nn.Linear(256, 120), nn.Linear(120, 84), nn.Linear(84, 10)

    def forward(s, x):
        x = F.max_pool2d(F.relu(s.conv1(x)), 2)
        x = F.max_pool2d(F.relu(s.conv2(x)), 2)
        return s.fc3(F.relu(s.fc2(F.relu(s.fc1(x.flatten(1))))))


def lenet():
    clf = LeNet()
    clf.load_state_dict(torch.load(CKPT + 'mnist-classifier.pth', map_location='cpu'))
    clf.eval()
    for p in clf.parameters():
        p.requires_grad_(False)
    return clf


def embedded_digits():
    x = idx('data/mnist/train-10k-images-idx3-ubyte.gz').astype(np.float32) / 255
    y = idx('data/mnist/train-10k-labels-idx1-ubyte.gz').astype(np.int64)
    return torch.tensor(x)[:, None], torch.tensor(y)


def main():
    torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
    epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    batch = int(sys.argv[3]) if len(sys.argv) > 3 else 32
    alpha = float(sys.argv[4]) if len(sys.argv) > 4 else 1.0
    warm = int(sys.argv[5]) if len(sys.argv) > 5 else 0
    miles = [int(v) for v in sys.argv[6].split(',')] if len(sys.argv) > 6 and sys.argv[6] else []
    torch.manual_seed(int(os.environ.get('DEFED_SEED', '0')))
    X, Y = embedded_digits()
    perm = torch.tensor(np.random.RandomState(0).permutation(10000))
    Xtr, Ytr = X[perm[:9000]], Y[perm[:9000]]
    Xte = torch.tensor(idx('../shared/data/mnist/t10k-images-idx3-ubyte.gz')[:2000]
                       .astype(np.float32) / 255)[:, None]
    Yte = torch.tensor(idx('../shared/data/mnist/t10k-labels-idx1-ubyte.gz')[:2000]
                       .astype(np.int64))
    clf = lenet()

    def evaluate(net, sigma=40):
        net.eval()
        gen = torch.Generator().manual_seed(1)
        mse, correct = 0, 0
        with torch.no_grad():
            for i in range(0, 2000, 500):
                x = Xte[i:i + 500]
                xn = (x + torch.randn(x.shape, generator=gen) * sigma / 255).clamp(0, 1)
                d = net(xn).clamp(0, 1)
                mse += ((d - x) ** 2).mean(dim=(1, 2, 3)).sum().item()
                correct += (clf(d).argmax(1) == Yte[i:i + 500]).sum().item()
        net.train()
        return correct / 2000, 10 * math.log10(2000 / mse)

    arch, authors = ARCHS[os.environ.get('DEFED_ARCH', 'defed')]
    if epochs == 0:
        net = arch()
        net.load_state_dict(torch.load(CKPT + authors, map_location='cpu'))
        print('authors noise 40: accuracy %.4f, PSNR %.2f dB' % evaluate(net))
        return
    net = arch()
    if os.environ.get('DEFED_INIT'):
        net.load_state_dict(torch.load(os.environ['DEFED_INIT'], map_location='cpu'))
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    t0, step = time.time(), 0
    for ep in range(epochs):
        a_ep = alpha * (min(1.0, ep / warm) if warm else 1.0)
        for gr in opt.param_groups:
            gr['lr'] = 1e-3 * 0.1 ** sum(ep >= m for m in miles)
        p = torch.randperm(9000)
        for i in range(0, 9000 - batch + 1, batch):
            x, y = Xtr[p[i:i + batch]], Ytr[p[i:i + batch]]
            xn = (x + torch.randn_like(x) * 40 / 255).clamp(0, 1)
            d = net(xn).clamp(0, 1)
            loss = a_ep * F.cross_entropy(clf(d), y) + F.mse_loss(d, x)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
        acc, psnr = evaluate(net)
        print(json.dumps(dict(epoch=ep + 1, alpha=a_ep, lr=opt.param_groups[0]['lr'], steps=step,
                              acc=acc, psnr=round(psnr, 2), secs=round(time.time() - t0))),
              flush=True)


if __name__ == '__main__':
    main()
