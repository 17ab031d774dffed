import os, sys; sys.path.insert(0, 'scripts')
import torch, numpy as np
import allocate_rates as ar
from squeezelab.compression import calibrate as cal, dq
from squeezelab.compression.ecq import ecq_tensor, code_price
from squeezelab.data import get_preset, load_dataset
from squeezelab.weights import load_weights, model_from_weights, sqz
from squeezelab.compression.layers import weight_layers
torch.set_num_threads(2)
w = load_weights('../shared/data/squeezenet-deep-compression/compressed_SqueezeNet.net')
preset = get_preset(w.preset)
common = {"preset": preset.name, "val_fraction": 0.02, "seed": 0, "in_memory": False, "class_map": '../shared/data/imagenet-val-300/synset_words.txt'}
train = load_dataset("tiny-imagenet", '../shared/data/tiny-imagenet-200', "train", **common)
model = model_from_weights(w).eval()
layers = weight_layers(model, ("*",), ())
name = sys.argv[1]
layers = {name: layers[name]}
mom = ar._moments(model, layers, cal._calibration((train, preset), 64, 0, torch.device("cpu"), "scan"))[name]
cxx = mom[0]
W = layers[name].weight.detach().clone()
def outerr(wq):
    e = (wq - W).reshape(W.shape[0], -1).double()
    return float(torch.einsum('oi,ij,oj->', e, cxx, e))
s = ecq_tensor(W, 7, 0.01)
s2, wq, b = cal.solve_layer(s, W, mom, penalty=code_price(W, s, 0.01))
print('ecq+gptq .01', ar.layer_bytes('x', wq), outerr(wq))
u = cal.hessian_factor(cxx)
for st, r in ((0.25, 0.01), (0.25, 0.0), (0.4, 0.0)):
    lv, delta = dq.dq_levels(W, st, r, u)
    raw = (lv.double() * delta).reshape(W.shape).float()
    print('dq', st, r, 'raw', ar.layer_bytes('x', raw), outerr(raw))
    lv0, _ = dq.dq_levels(W, st, r, None)
    raw0 = (lv0.double() * delta).reshape(W.shape).float()
    print('  no-hessian', ar.layer_bytes('x', raw0), outerr(raw0))
    sh = dq.as_shared(lv, delta, W.shape)
    s3, wq3, _ = cal.solve_layer(sh, W, mom, codes=False)
    print('  lsq', ar.layer_bytes('x', wq3), outerr(wq3))
    t = sqz.encode_tensor('x', wq3); print('  trellis found after lsq', t.trellis is not None, sqz.encode_tensor('x', raw).trellis is not None)
lv, delta = dq.dq_levels(W, 0.25, 0.0, u)
raw = (lv.double() * delta).reshape(W.shape).float()
t = sqz.encode_tensor('x', raw)
print('sizes', t.sizes(), t.trellis.count0, t.trellis.alphabet, t.values.codec, t.trellis.second.codec)
back = sqz.decode_tensor(t)
print('roundtrip', torch.equal(back, raw))
st = dq.states_of_levels(lv); k, valid = dq.index_of(st, lv); print('valid', bool(valid.all()))
from squeezelab.compression import code as codec
print('H(k) bytes', codec.entropy_bits((k - k.min()).flatten().numpy())/8, 'H(n) bytes', codec.entropy_bits((lv-lv.min()).flatten().numpy())/8)
print('numel', lv.numel(), 'unique n', lv.unique().numel(), 'frac zero', float((lv==0).float().mean()))
