import os, sys; sys.path.insert(0, 'scripts')
exec(open(os.path.join(os.path.dirname(__file__), 'dbg.py')).read().split("s = ecq_tensor")[0])
def nbytes(t):
    t = sqz.encode_tensor('x', t); return sum(t.sizes().values()), t.trellis is not None
for r in (0.005, 0.01, 0.02, 0.04):
    s = ecq_tensor(W, 7, r)
    _, wq, _ = cal.solve_layer(s, W, mom, penalty=code_price(W, s, r))
    print('ecq+gptq', r, nbytes(wq), round(outerr(wq)))
u = cal.hessian_factor(cxx)
for st in (0.15, 0.2, 0.3):
  for r in (0.0, 0.01, 0.03):
    lv, delta = dq.dq_levels(W, st, r, u)
    raw = (lv.double() * delta).reshape(W.shape).float()
    print('dq', st, r, nbytes(raw), round(outerr(raw)), flush=True)
