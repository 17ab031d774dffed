"""Layer-wise output reconstruction (compression/calibrate.py): the closed-form codebook against numpy's
least squares on an explicit design matrix, GPTQ rounding against nearest rounding, and the method in use."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from squeezelab.compression import calibrate, methods, share
from squeezelab.config import OneShotRecipe, ShareConfig
from squeezelab.data import get_preset, load_dataset
from squeezelab.errors import ConfigError
from squeezelab.models import create_model


class _Images:
    """A calibration set as calibrate expects it: dataset[i][0] is an image, preset.eval a batch transform."""

    def __init__(self, images):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], 0


class _Preset:
    @staticmethod
    def eval(batch):
        return batch.float() / 255 - 0.5


def _pruned_conv(seed=0):
    torch.manual_seed(seed)
    conv = nn.Conv2d(3, 6, 3, padding=1)
    with torch.no_grad():
        conv.weight[conv.weight.abs() < 0.05] = 0
    return nn.Sequential(conv)


def test_codebook_and_bias_are_the_least_squares_solution():
    net = _pruned_conv()
    original = copy.deepcopy(net)
    images = torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8)
    shared = share.share_(net, share.ShareSpec(bits=2))
    out = calibrate.reconstruct_(net, original, shared, (_Images(images), _Preset), 40, seed=0, ridge=0.0)["0"]

    # numpy's lstsq on the explicit design: output (o, p) = sum_k c_k * z[o, k, p] + b_o, c_0 = 0 (pruned)
    x = _Preset.eval(images)
    cols = nn.functional.unfold(x, 3, padding=1).transpose(1, 2).reshape(-1, 27).double().numpy()
    with torch.no_grad():
        target = original(x).movedim(1, -1).reshape(-1, 6).double().numpy()
    codes = shared["0"].codes.reshape(6, -1).numpy()
    k = shared["0"].codebook.numel()
    rows, rhs = [], []
    for o in range(6):
        z = np.stack([cols[:, codes[o] == j].sum(1) for j in range(1, k)], 1)
        onehot = np.zeros((len(cols), 6))
        onehot[:, o] = 1
        rows.append(np.concatenate([z, onehot], 1))
        rhs.append(target[:, o])
    sol = np.linalg.lstsq(np.concatenate(rows), np.concatenate(rhs), rcond=None)[0]
    assert out.codebook[0] == 0 and torch.equal(out.codes, shared["0"].codes)
    np.testing.assert_allclose(out.codebook[1:].numpy(), sol[:k - 1], rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(net[0].bias.detach().numpy(), sol[k - 1:], rtol=1e-3, atol=1e-5)
    assert torch.equal(net[0].weight, out.codebook[out.codes])


def _output_error(w, target, cxx):
    d = (w - target).reshape(w.shape[0], -1).double()
    return float(torch.einsum("oi,ij,oj->", d, cxx, d))


def test_gptq_rounding_beats_nearest_rounding_on_the_layer_output_and_keeps_zeros():
    torch.manual_seed(0)
    mix = torch.randn(16, 16)
    x = torch.randn(4000, 16) @ mix  # correlated inputs: where rounding for the output differs from nearest
    cxx = torch.cov(x.T).double()
    target = torch.randn(32, 16)
    target[target.abs() < 0.3] = 0
    s = share.share_tensor(target, bits=3)
    gptq = calibrate._gptq_codes(s, target, cxx)
    assert torch.equal(gptq == 0, target == 0)  # pruned stay pruned, nothing else becomes code 0
    nearest = _output_error(s.dense(), target, cxx)
    ours = _output_error(s.codebook[gptq], target, cxx)
    assert ours < 0.9 * nearest  # (0.83 here; on SqueezeNet layers the gain is larger)


@pytest.fixture(scope="module")
def digits():
    data = load_dataset("digits", None, "train")
    return data.subset(torch.arange(96), "train"), get_preset("digits")


def _kl(net, reference, x):
    with torch.no_grad():
        return float(nn.functional.kl_div(net(x).log_softmax(1), reference(x).log_softmax(1), log_target=True,
                                          reduction="batchmean"))


@pytest.mark.parametrize("mode", ["codebook", "gptq"])
def test_reconstruction_brings_a_shared_network_closer_to_the_original(digits, mode):
    torch.manual_seed(0)
    original = create_model("squeezenet1_0", num_classes=10, base_e=32, incr_e=32).eval()
    x = digits[1].eval(digits[0].images[:64])
    ctx = methods.Context(seed=0, data=digits)
    plain = methods.apply_one_shot(OneShotRecipe(share=ShareConfig(bits=2)), copy.deepcopy(original), ctx)
    ours = methods.apply_one_shot(OneShotRecipe(share=ShareConfig(bits=2, reconstruct=mode, calibration_images=96)),
                                  copy.deepcopy(original), ctx)
    for name, m in ours.named_modules():
        if isinstance(m, nn.Conv2d):
            assert torch.unique(m.weight).numel() <= 4, name  # still 2 bits a weight
    assert _kl(ours, original, x) < 0.5 * _kl(plain, original, x)


def test_reconstruction_refuses_bias_correction_beside_it_and_needs_data():
    net = create_model("squeezenet1_0", num_classes=10, base_e=32, incr_e=32)
    with pytest.raises(ConfigError, match="reconstruct already"):
        methods.apply_one_shot(OneShotRecipe(share=ShareConfig(bits=4, correct_bias=True, reconstruct="codebook")),
                               net, methods.Context(data=(_Images(torch.zeros(2, 3, 8, 8, dtype=torch.uint8)), _Preset)))
    with pytest.raises(ConfigError, match="training images"):
        methods.apply_one_shot(OneShotRecipe(share=ShareConfig(bits=4, reconstruct="gptq")), net)


def _entropy(codes):
    p = torch.bincount(codes.flatten()).double()
    p = p[p > 0] / p.sum()
    return float(-(p * p.log2()).sum())


def test_a_rate_penalty_trades_output_error_for_fewer_coded_bits():
    torch.manual_seed(1)
    x = torch.randn(4000, 24) @ torch.randn(24, 24)
    cxx = torch.cov(x.T).double()
    target = torch.randn(48, 24)
    s = share.share_tensor(target, bits=4)
    p = torch.bincount(s.codes.flatten(), minlength=s.codebook.numel()).double()
    bits = -(p.clamp(min=1) / p.sum()).log2()
    free = calibrate._gptq_codes(s, target, cxx)
    priced = calibrate._gptq_codes(s, target, cxx, penalty=0.3 * float(target.var()) * bits)
    assert _entropy(priced) < _entropy(free) - 0.1
    assert _output_error(s.codebook[priced], target, cxx) > _output_error(s.codebook[free], target, cxx)


def test_pruning_in_the_same_recipe_is_compensated_towards_the_unpruned_network(digits):
    from squeezelab.config import PruneConfig

    torch.manual_seed(0)
    dense = create_model("squeezenet1_0", num_classes=10, base_e=32, incr_e=32).eval()
    x = digits[1].eval(digits[0].images[:64])
    ctx = methods.Context(seed=0, data=digits)
    prune = PruneConfig(density={"fire*.expand3x3": 0.3})
    quantise = ShareConfig(bits=4, reconstruct="gptq", calibration_images=96)
    together = methods.apply_one_shot(OneShotRecipe(prune=prune, share=quantise), copy.deepcopy(dense), ctx)
    apart = methods.apply_one_shot(OneShotRecipe(prune=prune), copy.deepcopy(dense))
    apart = methods.apply_one_shot(OneShotRecipe(share=quantise), apart, ctx)  # matches the pruned network
    for name in ("fire2.expand3x3", "fire9.expand3x3"):
        w = dict(together.named_modules())[name].weight
        assert abs(float((w != 0).float().mean()) - 0.3) < 0.01, name  # the density pruning set is kept
    assert _kl(together, dense, x) < 0.8 * _kl(apart, dense, x)


def test_a_stage_at_a_time_on_cached_inputs_equals_whole_network_forwards(digits, monkeypatch):
    torch.manual_seed(0)
    original = create_model("squeezenet1_0", num_classes=10, base_e=32, incr_e=32).eval()
    spec = share.ShareSpec(bits=3)

    def solved():
        net = copy.deepcopy(original)
        shared = share.share_(net, spec)
        return calibrate.reconstruct_(net, original, shared, digits, 64, seed=0, codes=True)

    staged = solved()
    monkeypatch.setattr(calibrate, "_stages", lambda model, names: [(None, names)])
    whole = solved()
    assert staged.keys() == whole.keys() and len(staged) == 26
    for name in staged:
        assert torch.equal(staged[name].codes, whole[name].codes), name
        torch.testing.assert_close(staged[name].codebook, whole[name].codebook, rtol=1e-4, atol=1e-6)


def test_ecq_with_gptq_rounding_stays_closer_than_plain_ecq(digits):
    from squeezelab.config import ECQConfig

    torch.manual_seed(0)
    original = create_model("squeezenet1_0", num_classes=10, base_e=32, incr_e=32).eval()
    x = digits[1].eval(digits[0].images[:64])
    ctx = methods.Context(seed=0, data=digits)
    plain = methods.apply_one_shot(OneShotRecipe(ecq=ECQConfig(bits=3, rate_weight=0.02)), copy.deepcopy(original), ctx)
    ours = methods.apply_one_shot(OneShotRecipe(ecq=ECQConfig(bits=3, rate_weight=0.02, reconstruct="gptq",
                                                              calibration_images=96)), copy.deepcopy(original), ctx)
    assert _kl(ours, original, x) < 0.5 * _kl(plain, original, x)


def _sparse_layer(seed=2):
    torch.manual_seed(seed)
    x = torch.randn(4000, 32) @ torch.randn(32, 32)
    target = torch.randn(64, 32)
    target[target.abs() < 1.0] = 0  # ~32% dense, as the authors' expand3x3 layers
    return target, torch.cov(x.T).double()


def test_ecq_code_price_with_free_zeros_adds_each_codes_position_cost():
    from squeezelab.compression.ecq import code_price, ecq_tensor

    target, _ = _sparse_layer()
    s = ecq_tensor(target, 5, 0.05)
    fixed, free = code_price(target, s, 0.05), code_price(target, s, 0.05, "free")
    assert fixed[0] == float("inf") and torch.isfinite(free).all()
    density = float((target != 0).float().mean())
    per_bit = 0.05 * float(target[target != 0].var())
    # a non-zero code's frequency among all weights is its frequency among the kept ones x the density
    torch.testing.assert_close(free[1:], fixed[1:] - per_bit * np.log2(density), rtol=1e-9, atol=1e-12)


def test_ecq_free_zeros_let_gptq_round_kept_weights_to_zero_for_fewer_bytes():
    from squeezelab.compression.ecq import code_price, ecq_tensor
    from squeezelab.weights import sqz

    target, cxx = _sparse_layer()
    s = ecq_tensor(target, 5, 0.1)
    fixed = calibrate._gptq_codes(s, target, cxx, penalty=code_price(target, s, 0.1))
    free = calibrate._gptq_codes(s, target, cxx, penalty=code_price(target, s, 0.1, "free"))
    assert torch.equal(fixed == 0, target == 0)  # fixed: the pruning's zeros, no others
    assert bool((free[target == 0] == 0).all())  # free: pruned weights stay pruned ...
    assert int(((free == 0) & (target != 0)).sum()) > 0.05 * int((target != 0).sum())  # ... and kept ones join them
    pair = (("fixed", fixed), ("free", free))
    size = {k: sum(sqz.encode_tensor("w", s.codebook[c]).sizes().values()) for k, c in pair}
    assert size["free"] < 0.97 * size["fixed"]
    # (whether the trade pays is measured on SqueezeNet's layers: results/rate_accuracy/notes.md; on this
    # small random layer it costs 1.7x the output error for 6% fewer bytes)
    error = {k: _output_error(s.codebook[c], target, cxx) for k, c in pair}
    assert error["fixed"] < error["free"] < 2 * error["fixed"]


def test_ecq_free_zeros_in_the_pipeline_lower_the_pruned_density_and_need_gptq(digits):
    from squeezelab.config import ECQConfig, PruneConfig

    torch.manual_seed(0)
    dense = create_model("squeezenet1_0", num_classes=10, base_e=32, incr_e=32).eval()
    ctx = methods.Context(seed=0, data=digits)
    prune = PruneConfig(density={"fire*.expand3x3": 0.3})
    pruned = methods.apply_one_shot(OneShotRecipe(prune=prune), copy.deepcopy(dense))
    density = {}
    for zeros in ("fixed", "free"):
        ecq = ECQConfig(bits=4, rate_weight=0.05, reconstruct="gptq", calibration_images=96, zeros=zeros)
        net = methods.apply_one_shot(OneShotRecipe(ecq=ecq), copy.deepcopy(pruned), ctx)
        w = dict(net.named_modules())["fire9.expand3x3"].weight
        w0 = dict(pruned.named_modules())["fire9.expand3x3"].weight
        assert bool((w[w0 == 0] == 0).all()), zeros  # what pruning removed stays removed
        density[zeros] = float((w != 0).float().mean())
    assert abs(density["fixed"] - 0.3) < 0.01 and density["free"] < density["fixed"] - 0.005
    for use in (lambda e: methods.methods()["ecq"].check(e, dense),
                lambda e: methods.apply_one_shot(OneShotRecipe(ecq=e), copy.deepcopy(dense))):
        with pytest.raises(ConfigError, match="zeros: free needs ecq.reconstruct: gptq"):
            use(ECQConfig(bits=4, rate_weight=0.05, zeros="free"))
