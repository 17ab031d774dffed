import sys, numpy as np
from squeezelab.weights.sqz import read_sqz
from squeezelab.compression import code as codec

def H(sym, ctx=None):
    sym = np.asarray(sym); 
    if ctx is None: return codec.entropy_bits(sym)
    return sum(codec.entropy_bits(sym[ctx == c]) for c in np.unique(ctx))

def adaptive(sym, ctx, K, alpha=0.5):
    # sequential KT-style adaptive cost, per context counts; order = given order
    bits = 0.0
    for c in np.unique(ctx):
        s = sym[ctx == c]
        n = len(s)
        # cost of adaptive coding = -log2 prod (count_k+alpha)/(i + K alpha)
        cnt = np.bincount(s, minlength=K)
        from scipy.special import gammaln
        lg = (gammaln(cnt + alpha) - gammaln(alpha)).sum() - (gammaln(n + K*alpha) - gammaln(K*alpha))
        bits += -lg / np.log(2)
    return bits

def buckets(x, q):
    edges = np.quantile(x, np.linspace(0, 1, q + 1)[1:-1])
    return np.searchsorted(edges, x)

f = read_sqz(open(sys.argv[1], 'rb').read())
tot = {}
for rec in f.tensors:
    if rec.codebook is None or rec.sparse or len(rec.shape) < 2: continue
    codes = codec.decode(rec.values.codec, rec.values.data, rec.entries, rec.codebook.size)
    K = rec.codebook.size
    O = rec.shape[0]
    c2 = codes.reshape(O, -1)
    w = np.abs(rec.codebook.astype(np.float64)[c2])
    zero = int(np.argmin(np.abs(rec.codebook)))
    res = {}
    res['stored'] = len(rec.values.data) * 8
    res['H0'] = H(codes)
    res['A0'] = adaptive(codes, np.zeros_like(codes), K)
    # row scale (side info 2 bits/row)
    rs = buckets(w.mean(1), 4)[:, None].repeat(c2.shape[1], 1).ravel()
    res['row4'] = adaptive(codes, rs, K) + 2 * O
    cs = buckets(w.mean(0), 4)[None, :].repeat(O, 0).ravel()
    res['col4'] = adaptive(codes, cs, K) + 2 * c2.shape[1]
    res['rowcol16'] = adaptive(codes, rs * 4 + cs, K) + 2 * O + 2 * c2.shape[1]
    # prev symbol in row magnitude bucket (causal)
    prev = np.zeros_like(w); prev[:, 1:] = w[:, :-1]
    pb = np.digitize(prev, np.quantile(w, [0.33, 0.66]))
    res['prev3'] = adaptive(codes, pb.ravel(), K)
    # causal running mean of row (previous elements in row) + column above (previous rows same column)
    cum = np.cumsum(w, 1); runrow = np.zeros_like(w); runrow[:, 1:] = cum[:, :-1] / np.arange(1, w.shape[1])
    cumc = np.cumsum(w, 0); runcol = np.zeros_like(w); runcol[1:, :] = cumc[:-1, :] / np.arange(1, O)[:, None]
    g = np.quantile(w, [0.25, 0.5, 0.75])
    rr = np.digitize(runrow, g); rc = np.digitize(runcol, g)
    res['runrow4'] = adaptive(codes, rr.ravel(), K)
    res['runcol4'] = adaptive(codes, rc.ravel(), K)
    res['runrc16'] = adaptive(codes, (rr * 4 + rc).ravel(), K)
    print(rec.name, rec.shape, K, {k: round(v / 8) for k, v in res.items()})
    for k, v in res.items(): tot[k] = tot.get(k, 0) + v / 8
print({k: round(v) for k, v in tot.items()})
