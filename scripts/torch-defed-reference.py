"""PyTorch reference training of Defed-Laplacian (the network of the spec, with the key names of
the original authors' checkpoints) on the embedded digits, for comparison with
`defed train denoiser`.

Usage, from the repository root (pip install torch numpy):
    python scripts/torch-defed-reference.py THREADS EPOCHS BATCH ALPHA
    python scripts/torch-defed-reference.py 2 0     # evaluate the authors' noise-40 model instead
Prints per epoch: steps, the original LeNet's accuracy and the PSNR on the first 2,000 real
MNIST test images with sigma = 40 noise (the quality bar of the training issue)."""
import gzip, sys, time, math, json
import numpy as np, torch, torch.nn as nn, torch.nn.functional as F
torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
EPOCHS = int(sys.argv[2]) if len(sys.argv) > 2 else 10
BATCH = int(sys.argv[3]) if len(sys.argv) > 3 else 32
ALPHA = float(sys.argv[4]) if len(sys.argv) > 4 else 1.0
torch.manual_seed(0); np.random.seed(0)
def idx(path):
    b = gzip.open(path).read()
    nd = b[3]; dims = [int.from_bytes(b[4+4*i:8+4*i], 'big') for i in range(nd)]
    return np.frombuffer(b[4+4*nd:], np.uint8).reshape(dims)
X = idx('data/mnist/train-10k-images-idx3-ubyte.gz').astype(np.float32)/255
Y = idx('data/mnist/train-10k-labels-idx1-ubyte.gz').astype(np.int64)
Xt = idx('../shared/data/mnist/t10k-images-idx3-ubyte.gz')[:2000].astype(np.float32)/255
Yt = idx('../shared/data/mnist/t10k-labels-idx1-ubyte.gz')[:2000].astype(np.int64)
perm = np.random.RandomState(0).permutation(10000)
Xtr, Ytr = torch.tensor(X[perm[:9000]])[:, None], torch.tensor(Y[perm[:9000]])
Xte, Yte = torch.tensor(Xt)[:, None], torch.tensor(Yt)
def cbp(i, o, t=False):
    c = nn.ConvTranspose2d(i, o, 3, 1, 1) if t else nn.Conv2d(i, o, 3, 1, 1)
    return nn.Sequential(c, nn.BatchNorm2d(o), nn.PReLU())
def fixed(x, k, pad):
    c = x.shape[1]
    return F.conv2d(F.pad(x, (1,1,1,1), mode=pad), k.expand(c,1,3,3), groups=c)
g = torch.exp(-torch.tensor([1.,0.,1.])/2); g = g/g.sum(); BLUR = (g[:,None]*g[None,:])[None,None]
LAP = torch.ones(1,1,3,3); LAP[0,0,1,1] = -8
class EFE(nn.Module):
    def __init__(s, i, o, t):
        super().__init__(); s.blurConv = cbp(i,o,t); s.edgeConv = cbp(i,o,t); s.orignConv = cbp(i,o,t); s.conv = nn.Conv2d(o,o,1)
    def forward(s, x):
        return s.conv(s.blurConv(fixed(x,BLUR,'reflect')) + s.edgeConv(fixed(x,LAP,'reflect')) + s.orignConv(x))
class Skip(nn.Module):
    def __init__(s, i, o, m, num):
        super().__init__(); L=[nn.Conv2d(i,m,3,1,1)] + [nn.Conv2d(m,m,3,1,1) for _ in range(2*(num-1))] + [nn.Conv2d(m,o,3,1,1)]
        s.layers = nn.Sequential(*L)
    def forward(s, x): return s.layers(x) + x
def cbn(c, t=False, i=None, o=None):
    return nn.Sequential(c, nn.BatchNorm2d(o), nn.PReLU())
class ERN(nn.Module):
    def __init__(s, C=1):
        super().__init__()
        s.skip1 = Skip(C,C,16,3); s.head = cbp(C,16); s.skip2 = Skip(16,16,16,2)
        s.en_efe_1 = EFE(16,16,False); s.down1 = cbn(nn.Conv2d(16,32,2,2),o=32)
        s.skip3 = Skip(32,32,32,1); s.en_efe_2 = EFE(32,32,False); s.down2 = cbn(nn.Conv2d(32,32,2,2),o=32)
        s.up2 = cbn(nn.ConvTranspose2d(32,32,2,2),o=32); s.de_efe_2 = EFE(32,32,True)
        s.up1 = cbn(nn.ConvTranspose2d(32,16,2,2),o=16); s.de_efe_1 = EFE(16,16,True)
        s.tail = cbn(nn.ConvTranspose2d(16,C,3,1,1),o=C)
    def forward(s, x):
        s1 = s.skip1(x); h = s.head(x); s2 = s.skip2(h)
        h = s.down1(s.en_efe_1(h)); s3 = s.skip3(h)
        h = s.down2(s.en_efe_2(h)); h = s.up2(h)
        h = s.de_efe_2(h) + s3; h = s.up1(h); h = s.de_efe_1(h) + s2
        return s.tail(h) + s1
class LeNet(nn.Module):
    def __init__(s):
        super().__init__()
        s.conv1 = nn.Conv2d(1,6,5); s.conv2 = nn.Conv2d(6,16,5); s.fc1 = nn.Linear(256,120); s.fc2 = nn.Linear(120,84); s.fc3 = nn.Linear(84,10)
    def forward(s, x):
        x = F.max_pool2d(F.relu(s.conv1(x)),2); x = F.max_pool2d(F.relu(s.conv2(x)),2)
        return s.fc3(F.relu(s.fc2(F.relu(s.fc1(x.flatten(1))))))
clf_sd = torch.load('../shared/reference/checkpoints/pytorch/mnist-classifier.pth', map_location='cpu')
clf = LeNet()
try:
    clf.load_state_dict(clf_sd)
except Exception as e:
    print('classifier keys', list(clf_sd.keys())); raise
clf.eval(); [p.requires_grad_(False) for p in clf.parameters()]
def evaluate(net, sigma=40):
    net.eval(); gen = torch.Generator().manual_seed(1); mse=0; correct=0
    with torch.no_grad():
        for i in range(0, 2000, 500):
            x = Xte[i:i+500]; xn = (x + torch.randn(x.shape, generator=gen)*sigma/255).clamp(0,1)
            d = net(xn).clamp(0,1)
            mse += ((d-x)**2).mean(dim=(1,2,3)).sum().item(); correct += (clf(d).argmax(1)==Yte[i:i+500]).sum().item()
    net.train(); m = mse/2000
    return correct/2000, 10*math.log10(1/m)
if EPOCHS == 0:
    net = ERN(); net.load_state_dict(torch.load('../shared/reference/checkpoints/pytorch/mnist-laplacian-alpha=1-noise=40.pth', map_location='cpu'))
    print('authors n40', evaluate(net)); sys.exit()
net = ERN(); opt = torch.optim.Adam(net.parameters(), 1e-3)
t0 = time.time(); step = 0
for ep in range(EPOCHS):
    p = torch.randperm(9000)
    for i in range(0, 9000 - BATCH + 1, BATCH):
        x = Xtr[p[i:i+BATCH]]; y = Ytr[p[i:i+BATCH]]
        xn = (x + torch.randn_like(x)*40/255).clamp(0,1)
        d = net(xn).clamp(0,1)
        loss = ALPHA*F.cross_entropy(clf(d), y) + F.mse_loss(d, x)
        opt.zero_grad(); loss.backward(); opt.step(); step += 1
    acc, psnr = evaluate(net)
    print(json.dumps(dict(epoch=ep+1, steps=step, acc=acc, psnr=round(psnr,2), secs=round(time.time()-t0))), flush=True)
