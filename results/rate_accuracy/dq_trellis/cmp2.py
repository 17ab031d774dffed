import os, sys; sys.path.insert(0, 'scripts')
exec(open(os.path.join(os.path.dirname(__file__), 'dbg.py')).read().split("s = ecq_tensor")[0])
from squeezelab.compression import code as codec
def tbytes(lv):
    st = dq.states_of_levels(lv); k, valid = dq.index_of(st, lv); assert bool(valid.all())
    q0 = st < 2
    tot = 4 * lv.unique().numel() + (int(lv.max() - lv.min()) + 8) // 8
    for part in (k.T[q0.T], k.T[~q0.T]):
        p = part.numpy(); tot += len(codec.encode(p - p.min(), int(p.max() - p.min()) + 1)[1])
    return tot
u = cal.hessian_factor(cxx)
for st in (0.2, 0.3, 0.45):
  for r in (0.0, 0.01, 0.03):
    lv, delta = dq.dq_levels(W, st, r, u)
    raw = (lv.double() * delta).reshape(W.shape).float()
    print('dq', st, r, tbytes(lv), round(outerr(raw)), flush=True)
