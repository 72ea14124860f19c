"""Generate extra golden fixtures in the format of test/golden/fixtures/pytorch/README.md with PyTorch
(float64, CPU), to exercise the suite on shapes, uneven shares, weight decay, nesterov,
momenta and layer kinds the shared fixtures do not have.
Usage: /usr/bin/python3 make_variants.py OUT_DIR   (needs python3-torch)"""
import json, os, sys, torch
torch.set_default_dtype(torch.float64)
out = sys.argv[1]; os.makedirs(out, exist_ok=True)
conv = {'layout': 'PyTorch', 'momentum': 'PyTorch convention', 'normalize_with': 'biased', 'running_var_update': 'unbiased'}

def T(t): return {'shape': list(t.shape), 'data': t.reshape(-1).tolist()}

def build(spec, in_shape):
    mods = []
    for l in spec:
        t = l['type']
        if t == 'linear': mods.append(torch.nn.Linear(l['in'], l['out'], bias=l.get('bias', True)))
        elif t == 'conv2d': mods.append(torch.nn.Conv2d(l['in'], l['out'], l['kernel'], stride=l.get('stride', 1), padding=l.get('padding', 0), bias=l.get('bias', True)))
        elif t == 'batchnorm':
            cls = torch.nn.BatchNorm2d if l.get('dims') == 2 else torch.nn.BatchNorm1d
            mods.append(cls(l['channels'], eps=l.get('eps', 1e-5), momentum=l.get('momentum', 0.1), affine=l.get('affine', True)))
        elif t == 'relu': mods.append(torch.nn.ReLU())
        elif t == 'maxpool': mods.append(torch.nn.MaxPool2d(l['kernel'], l.get('stride', l['kernel'])))
        elif t == 'avgpool': mods.append(torch.nn.AvgPool2d(l['kernel'], l.get('stride', l['kernel'])))
        elif t == 'flatten': mods.append(torch.nn.Flatten())
        else: raise ValueError(t)
    return torch.nn.Sequential(*mods)

def state(m): return {'layers.' + k: T(v) for k, v in m.state_dict().items() if not k.endswith('num_batches_tracked')}

def train_fixture(name, spec, in_shape, n, classes, gb, epochs, opt, splits, seed):
    torch.manual_seed(seed)
    m = build(spec, in_shape)
    for mod in m:
        if isinstance(mod, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)) and mod.affine:
            torch.nn.init.uniform_(mod.weight, 0.5, 1.5); torch.nn.init.uniform_(mod.bias, -0.2, 0.2)
    x = torch.randn(n, *in_shape); y = torch.randint(0, classes, (n,))
    init = state(m)
    o = torch.optim.SGD(m.parameters(), lr=opt['lr'], momentum=opt['momentum'], weight_decay=opt['weight_decay'], nesterov=opt['nesterov'])
    losses = []
    steps = 0
    for e in range(epochs):
        for s in range(0, n, gb):
            xb, yb = x[s:s+gb], y[s:s+gb]
            m.train(); o.zero_grad(); l = torch.nn.functional.cross_entropy(m(xb), yb); l.backward(); o.step()
            losses.append(l.item()); steps += 1
    ex = torch.randn(6, *in_shape); m.eval()
    with torch.no_grad(): logits = m(ex)
    def per_step(split):
        out = []
        for e in range(epochs):
            for s in range(0, n, gb):
                rows = min(gb, n - s)
                if rows == gb: out.append(list(split)); continue
                exact = [rows * b / gb for b in split]; sizes = [int(v) for v in exact]
                left = rows - sum(sizes)
                order = sorted(range(len(split)), key=lambda r: (-(exact[r] - int(exact[r])), r))
                for r in order[:left]: sizes[r] += 1
                out.append(sizes)
        return out
    fx = {'what': 'data-parallel training with SyncBN must equal this single-process run on the global batch', 'conventions': conv,
          'model': [dict(index=i, **{k: v for k, v in l.items() if k != 'dims'}) for i, l in enumerate(spec)], 'loss': 'cross-entropy, mean over the GLOBAL batch',
          'optimizer': dict(type='sgd', **opt), 'data': {'x': T(x), 'labels': y.tolist(), 'order': 'no shuffling'}, 'global_batch': gb, 'epochs': epochs,
          'rank_splits': {str(len(s)): s for s in splits}, 'shard_sizes_per_step': {str(len(s)): per_step(s) for s in splits},
          'initial_state': init, 'final_state': state(m), 'loss_per_step': losses, 'eval': {'x': T(ex), 'logits': T(logits)}}
    json.dump(fx, open(os.path.join(out, name + '.json'), 'w'))

# MLP: uneven shares incl. an empty rank, smaller last batch, weight decay, nesterov, BN momentum null and 0.3, eps 1e-3.
train_fixture('variant_mlp_uneven', [
    {'type': 'linear', 'in': 7, 'out': 10, 'bias': False}, {'type': 'batchnorm', 'channels': 10, 'eps': 1e-3, 'momentum': None},
    {'type': 'relu'}, {'type': 'linear', 'in': 10, 'out': 9, 'bias': True}, {'type': 'batchnorm', 'channels': 9, 'eps': 1e-5, 'momentum': 0.3},
    {'type': 'relu'}, {'type': 'linear', 'in': 9, 'out': 4, 'bias': True}],
    [7], 50, 4, 20, 3, {'lr': 0.05, 'momentum': 0.8, 'weight_decay': 0.01, 'nesterov': True}, [[20], [3, 17], [0, 5, 15], [2, 6, 5, 7]], 11)
# CNN: stride 2, padding, maxpool, avgpool, BN2d, uneven shares.
train_fixture('variant_cnn_pool', [
    {'type': 'conv2d', 'in': 3, 'out': 5, 'kernel': 3, 'stride': 2, 'padding': 1, 'bias': True}, {'type': 'batchnorm', 'channels': 5, 'eps': 1e-5, 'momentum': 0.2, 'dims': 2},
    {'type': 'relu'}, {'type': 'maxpool', 'kernel': 2}, {'type': 'conv2d', 'in': 5, 'out': 6, 'kernel': 2, 'stride': 1, 'padding': 0, 'bias': False},
    {'type': 'batchnorm', 'channels': 6, 'eps': 1e-5, 'momentum': 0.1, 'dims': 2}, {'type': 'relu'}, {'type': 'flatten'}, {'type': 'linear', 'in': 6, 'out': 3, 'bias': True}],
    [3, 8, 8], 22, 3, 8, 2, {'lr': 0.1, 'momentum': 0.0, 'weight_decay': 0.001, 'nesterov': False}, [[8], [5, 3], [1, 3, 4]], 5)
print('ok')
