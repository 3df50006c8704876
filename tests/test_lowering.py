"""Lowered instructions (Datapath.lowered_k / k_order, tcsim.lowering): FP8 mma.sync on sm_90 runs
as two FP16 HMMA steps from zero, the products with k mod 4 in {0, 1} first, and C added last.

Truth, three ways: the hardware corpus (H100/H200 E4M3/E5M2 d_fp16, 20000 rows, recorded with
mma.sync; tests/test_corpus.py replays them with 0 mismatches and this file shows that the
rival lowerings do not); the exact oracle (tcsim.reference) on hypothesis draws; and two
probes derived by hand below."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import describe_routes, recorded_routes
from strategies import decode_codes, values
from tcsim import corpus, load_model, mma, reference
from tcsim.datapath import Datapath
from tcsim.lowering import HOPPER_FP8_MMA_SYNC_K_ORDER
from tcsim.mma import run_datapath

SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _path(acc):
    return load_model("h100").find_path("e4m3", "e4m3", acc, "mma.sync")


def test_the_lowered_paths_and_their_order():
    lo = [k for k in range(32) if k % 4 < 2]
    assert HOPPER_FP8_MMA_SYNC_K_ORDER == tuple(lo + [k for k in range(32) if k % 4 >= 2])
    for acc in ("fp16", "fp32"):
        p = _path(acc)
        assert p.lowered_k == 32 and p.block_size == 16
        assert p.k_order == HOPPER_FP8_MMA_SYNC_K_ORDER
    assert _path("fp16").status == "explained" and _path("fp32").status == "model"
    # h200 inherits them; the default FP8 path stays wgmma
    assert load_model("h200").find_path("e5m2", "e5m2", "fp16", "mma.sync").lowered_k == 32
    assert load_model("h100").find_path("e4m3", "e4m3", "fp16").name == "wgmma"


def _h(x):
    return np.float16(x).view(np.uint16)


def test_hand_probe_c_is_added_last():
    """Products 1 (k = 0, first step) and 2^-11 (k = 2, second step), C = 2^-11, fp16 out.
    Step 1: 1. Step 2: 1 + 2^-11 is a tie between 1 and 1 + 2^-10: RNE gives 1. Then
    1 + C = 1 + 2^-11, again a tie: 1. The exact sum 1 + 2^-10 is an fp16 value, so a unit
    that took C into the second step (or summed everything once) would return 1 + 2^-10."""
    a = np.zeros((1, 32))
    b = np.zeros((32, 1))
    a[0, 0], b[0, 0] = 1.0, 1.0
    a[0, 2], b[2, 0] = 2.0 ** -6, 2.0 ** -5
    c = np.array([[2.0 ** -11]], dtype=np.float16)
    d = mma(a, b, c, model="h100", path="mma.sync", a_format="e4m3", b_format="e4m3",
            acc="fp16")
    assert d.view(np.uint16)[0, 0] == _h(1.0)
    inside = _path("fp16").datapath().replace(lowered_k=None, k_order=())
    d_inside = mma(a, b, c, model=inside, a_format="e4m3", b_format="e4m3", acc="fp16")
    assert d_inside.view(np.uint16)[0, 0] == _h(1 + 2.0 ** -10)


def test_hand_probe_k_order():
    """Products 1 (k = 0), 2^-11 (k = 1) and 2^-11 (k = 2), C = 0. Lowered: the first step sums
    k = 0, 1 (1 + 2^-11, a tie: 1), the second adds k = 2 (again 1). In natural order all three
    share the first 16-block: 1 + 2^-10 exactly."""
    a = np.zeros((1, 32))
    b = np.zeros((32, 1))
    a[0, 0], b[0, 0] = 1.0, 1.0
    for k in (1, 2):
        a[0, k], b[k, 0] = 2.0 ** -6, 2.0 ** -5
    c = np.zeros((1, 1), np.float16)
    d = mma(a, b, c, model="h100", path="mma.sync", a_format="e4m3", b_format="e4m3",
            acc="fp16")
    assert d.view(np.uint16)[0, 0] == _h(1.0)
    natural = _path("fp16").datapath().replace(k_order=())
    d_nat = mma(a, b, c, model=natural, a_format="e4m3", b_format="e4m3", acc="fp16")
    assert d_nat.view(np.uint16)[0, 0] == _h(1 + 2.0 ** -10)


@pytest.mark.parametrize("acc", ["fp16", "fp32"])
@pytest.mark.parametrize("fmt", ["e4m3", "e5m2"])
@SETTINGS
@given(data=st.data())
def test_lowered_kernel_matches_oracle(acc, fmt, data):
    dp = _path(acc)
    m, n = data.draw(st.integers(1, 2)), data.draw(st.integers(1, 2))
    k = data.draw(st.sampled_from([32, 64, 20]))          # 20: the instruction zero-pads
    special = data.draw(st.integers(0, 4)) == 0
    a = data.draw(values(fmt, m * k, special)).reshape(m, k)
    b = data.draw(values(fmt, k * n, special)).reshape(k, n)
    codes = data.draw(st.lists(st.integers(0, (1 << 16) - 1), min_size=m * n, max_size=m * n))
    c = decode_codes(codes, "fp16").reshape(m, n)
    c = np.where(np.isnan(c) & (data.draw(st.integers(0, 4)) != 0), 0.0, c)
    cc = c.astype(np.float16 if acc == "fp16" else np.float32)
    with recorded_routes() as routes:
        got = mma(a, b, cc, model="h100", path="mma.sync", a_format=fmt, b_format=fmt, acc=acc)
    want = reference.mma(a, b, cc.astype(np.float64), dp, fmt, fmt, acc)
    view = np.uint16 if acc == "fp16" else np.uint32
    assert np.array_equal(got.view(view), want.view(view)), (describe_routes(routes), got, want)


def test_rival_lowerings_miss_the_corpus(corpus_root):
    """The corpus pins the lowering: with the groups swapped, K split at 16, or C taken into
    the first step, over a thousand rows of each H100 fp16-output set differ."""
    p = _path("fp16")
    swapped = tuple(k for k in range(32) if k % 4 >= 2) + tuple(k for k in range(32) if k % 4 < 2)
    rivals = {"groups swapped": p.datapath().replace(k_order=swapped),
              "k < 16 first": p.datapath().replace(k_order=()),
              "C in the first step": p.datapath().replace(lowered_k=None, k_order=())}
    for fmt in ("E4M3", "E5M2"):
        cs = corpus.read_set(corpus_root / "H100" / fmt)
        rows, k = cs.a.shape
        c = cs.c_used("fp16")
        want = cs.d_bits["fp16"]

        def bad(dp):
            order = np.array(HOPPER_FP8_MMA_SYNC_K_ORDER) if dp.lowered_k is None else np.arange(k)
            d = run_datapath(cs.a[:, order].reshape(rows, 1, k),
                             cs.b[:, order].reshape(rows, k, 1), c.reshape(rows, 1, 1), dp,
                             cs.fmt, cs.fmt, "fp16").reshape(rows)
            return int(np.count_nonzero(d.astype(np.float32).view(np.uint32) != want))
        assert bad(p.datapath()) == 0
        for name, dp in rivals.items():
            assert bad(dp) > 1000, (fmt, name)


def test_lowering_settings_are_checked():
    base = dict(block_size=16, fraction_bits=25, output_rounding="rne")
    with pytest.raises(ValueError, match="k_order"):
        Datapath(**base, k_order=(1, 0))
    with pytest.raises(ValueError, match="permutation"):
        Datapath(**base, lowered_k=32, k_order=tuple(range(31)) + (0,))
    with pytest.raises(ValueError, match="multiple of block_size"):
        Datapath(**base, lowered_k=24)
    with pytest.raises(ValueError, match="stochastic"):
        Datapath(block_size=16, fraction_bits=25, output_rounding="sr", lowered_k=32)
    assert Datapath(**base, lowered_k=32).k_order == ()


def test_explain_traces_the_lowering():
    """The hand probe of C added last, traced: two HMMA blocks on their k sets, then the add of
    C; the trace's result is checked against tcsim.mma inside explain."""
    from tcsim.explain import explain
    a = np.zeros(32)
    b = np.zeros(32)
    a[0], b[0] = 1.0, 1.0
    a[2], b[2] = 2.0 ** -6, 2.0 ** -5
    ex = explain(a, b, 2.0 ** -11, model="h100", a_format="e4m3", b_format="e4m3",
                 acc="fp16", path="mma.sync")
    assert len(ex.blocks) == 2 and ex.result == 1.0
    assert ex.blocks[0].ks == list(HOPPER_FP8_MMA_SYNC_K_ORDER[:16])
    assert [t.label for t in ex.blocks[1].terms] == ["k=2", "C"]     # C: the first step
    text = ex.text()
    assert "lowered k32" in text and "C added last: 1.0 + 0.00048828125 -> 1.0" in text
    assert "k = 0, 1, 4, 5" in text
    # a promoted GEMM of the lowered instruction is traced too (each partial checked)
    promoted = explain(a, b, 0.0, model="h100", a_format="e4m3", b_format="e4m3", acc="fp16",
                       path="mma.sync", promotion_interval=32)
    assert [p.partial for p in promoted.promotions] == [1.0] and promoted.result == 1.0
    assert "partials' bits equal tcsim.mma" in promoted.checked


def _per_instruction_route(av, bv, cv, dp, fmt, acc):
    """The lowered chain one instruction at a time (tcsim.lowering before the batched route):
    the truth the batched route must equal bit for bit."""
    from tcsim.lowering import add_rounded
    n = dp.lowered_k
    order = np.asarray(dp.k_order)
    inner = dp.replace(lowered_k=None, k_order=())
    k = av.shape[2]
    pad = -k % n
    av = np.concatenate([av, np.zeros(av.shape[:2] + (pad,))], axis=2)
    bv = np.concatenate([bv, np.zeros((bv.shape[0], pad, bv.shape[2]))], axis=1)
    d = cv.astype(np.float16 if acc == "fp16" else np.float32)
    for start in range(0, k + pad, n):
        idx = start + order
        s = run_datapath(np.ascontiguousarray(av[:, :, idx]), np.ascontiguousarray(bv[:, idx, :]),
                         np.zeros(cv.shape), inner, fmt, fmt, acc)
        d = add_rounded(s, d, acc)
    return d


def test_lowered_chain_runs_in_one_kernel_call(monkeypatch):
    """Issue 15.4: the chain ran one parallel kernel per 32 elements of K (K = 2^20 took 771 s).
    The inner steps start from zero, so all of them go to the kernel as one batch."""
    from tcsim._kernels import blockfma, fused, staged  # run_datapath imports them when it runs
    calls = []
    for module, name in ((blockfma, "exact_kernel"), (staged, "staged_kernel"),
                         (fused, "run")):
        def counting(*args, _real=getattr(module, name)):
            calls.append(args[0].shape)
            return _real(*args)
        monkeypatch.setattr(module, name, counting)
    rng = np.random.default_rng(3)
    k = 4096
    a, b = formats_values(rng, (1, k), "e4m3"), formats_values(rng, (k, 1), "e4m3")
    mma(a, b, model="h100", path="mma.sync", a_format="e4m3", b_format="e4m3")
    assert len(calls) == 1 and calls[0] == (k // 32, 1, 32)


@pytest.mark.parametrize("acc", ["fp16", "fp32"])
@pytest.mark.parametrize("shape", [(1, 1, 4096), (2, 3, 100), (3, 2, 45), (1, 2, 7), (2, 2, 96)])
def test_batched_chain_equals_the_per_instruction_route(acc, shape):
    """Bit for bit against the chain run one instruction at a time and against the exact
    oracle, K a multiple of 32 or not (zero-padded), with Inf/NaN in one instruction only."""
    m, n, k = shape
    rng = np.random.default_rng(k)
    fmt = "e4m3"
    a = formats_values(rng, (m, k), fmt)
    b = formats_values(rng, (k, n), fmt)
    c = (rng.standard_normal((m, n)) * 4).astype(np.float16 if acc == "fp16" else np.float32)
    dp = _path(acc).datapath()
    view = np.uint16 if acc == "fp16" else np.uint32
    got = mma(a, b, c, model="h100", path="mma.sync", a_format=fmt, b_format=fmt, acc=acc)
    old = _per_instruction_route(a[None], b[None], c[None].astype(np.float64), dp, fmt, acc)[0]
    assert np.array_equal(got.view(view), old.view(view))
    if k <= 100:
        want = reference.mma(a, b, c.astype(np.float64), dp, fmt, fmt, acc)
        assert np.array_equal(got.view(view), want.view(view))
    if k > 40:     # a NaN in the second instruction of one output (the kernel's special route)
        a2 = a.copy()
        a2[0, 40] = np.nan
        got = mma(a2, b, c, model="h100", path="mma.sync", a_format=fmt, b_format=fmt, acc=acc)
        old = _per_instruction_route(a2[None], b[None], c[None].astype(np.float64), dp, fmt,
                                     acc)[0]
        assert np.array_equal(got.view(view), old.view(view))
        assert np.isnan(got[0]).all() and not np.isnan(got[1:]).any()


def test_batched_chain_with_a_batch_and_several_kernel_calls(monkeypatch):
    """A batch of products, and a chain split over several kernel calls (memory bound): still
    the per-instruction route's bits."""
    import tcsim.lowering as lowering
    monkeypatch.setattr(lowering, "MAX_BATCH_OUTPUTS", 7)
    rng = np.random.default_rng(11)
    a = formats_values(rng, (3, 2, 300), "e5m2")
    b = formats_values(rng, (3, 300, 2), "e5m2")
    c = rng.standard_normal((3, 2, 2)).astype(np.float32)
    got = mma(a, b, c, model="h100", path="mma.sync", a_format="e5m2", b_format="e5m2")
    old = _per_instruction_route(a, b, c.astype(np.float64), _path("fp32").datapath(), "e5m2",
                                 "fp32")
    assert np.array_equal(got.view(np.uint32), old.view(np.uint32))


def formats_values(rng, shape, fmt):
    """Random values of ``fmt`` over a wide exponent range (some swamp others), zeros included."""
    from tcsim.formats.conversion import decode, encode
    x = rng.standard_normal(shape) * np.exp2(rng.integers(-8, 8, shape))
    x[rng.random(shape) < 0.05] = 0.0
    return decode(encode(x, fmt, overflow="saturate"), fmt)


def _corpus_misses(cs, out, dp):
    """Rows of a corpus set's ``out`` file that ``dp`` does not reproduce."""
    rows, k = cs.a.shape
    d = run_datapath(cs.a.reshape(rows, 1, k), cs.b.reshape(rows, k, 1),
                     cs.c_used(out).reshape(rows, 1, 1), dp, cs.fmt, cs.fmt, out).reshape(rows)
    return int(np.count_nonzero(d.astype(np.float32).view(np.uint32) != cs.d_bits[out]))


@pytest.mark.parametrize("fmt", ["E4M3", "E5M2"])
def test_b200_lowers_fp8_mma_sync_as_hopper(b200_root, fmt):
    """B200's legacy FP8 mma.sync rows (corpus B200, fp32 and fp16 outputs, 20000 rows) are
    Hopper's lowering: the b200 paths equal h100's and reproduce every row, and the rivals miss.
    fp16 output pins the lowering (order, C last, RNE steps); fp32 output rules out C in the
    first step or in one 32-block and the earlier b200 model (C added after the first natural
    16-block), but not one exact sum before C (the unit probe b200-mma-sync-two-hmma-steps)."""
    b200, h100 = load_model("b200"), load_model("h100")
    cs = corpus.read_set(b200_root / "B200" / fmt)
    swapped = tuple(k for k in range(32) if k % 4 >= 2) + tuple(k for k in range(32) if k % 4 < 2)
    for out in ("fp16", "fp32"):
        path = b200.find_path(cs.fmt, cs.fmt, out, "mma.sync")
        assert path.status == "explained"
        p = path.datapath()
        assert p == h100.find_path(cs.fmt, cs.fmt, out, "mma.sync").datapath()
        assert _corpus_misses(cs, out, p) == 0
        rivals = {"C in the first step": p.replace(lowered_k=None, k_order=()),
                  "one 32-block, C inside": p.replace(lowered_k=None, k_order=(), block_size=32)}
        if out == "fp16":
            rivals |= {"groups swapped": p.replace(k_order=swapped),
                       "k < 16 first": p.replace(k_order=()),
                       "RZ steps": p.replace(output_rounding="rz"),
                       "Hopper wgmma f16": h100.find_path(cs.fmt, cs.fmt, "fp16", "wgmma").datapath(),
                       "Ada native FP8": load_model("ada").find_path(cs.fmt, cs.fmt, "fp16").datapath()}
        else:
            rivals["C after the first 16-block (the earlier b200 model)"] = p.replace(
                lowered_k=None, k_order=(), c_placement="after", product_sum_precision=24,
                product_sum_rounding="rz", output_rounding="rne")
            rivals["one 32-block, C inside, RNE"] = rivals["one 32-block, C inside"].replace(
                output_rounding="rne")
        for name, dp in rivals.items():
            assert _corpus_misses(cs, out, dp) > 200, (fmt, out, name)
    # what the fp32 rows leave open: one exact sum of the 32 products, then C with RNE
    one_sum = p.replace(lowered_k=None, k_order=(), block_size=32, c_placement="after",
                        product_sum_precision=24, product_sum_rounding="rz", output_rounding="rne")
    assert _corpus_misses(cs, "fp32", one_sum) == 0
